"""deploy/: the Helm values against the chart's schema, the API manifests, the Dockerfile — parsed, not eyeballed."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from export_core.settings import REPO_ROOT, Settings
from tests.deploy.test_dagster_config import LIMITS

DEPLOY = REPO_ROOT / "deploy"
SCHEMA = Path(__file__).parent / "data" / "dagster-helm-values.subset.schema.json"


def _strict(schema: Any) -> Any:
    """Every object that lists its properties refuses others: a key the chart does not know is a typo."""
    if isinstance(schema, dict):
        schema = {k: _strict(v) for k, v in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [_strict(v) for v in schema]
    return schema


def _helm_errors(values: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(_strict(json.loads(SCHEMA.read_text())))
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(values)]


@pytest.fixture
def helm() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "helm" / "dagster-values.yaml").read_text())


@pytest.fixture
def api() -> dict[str, dict[str, Any]]:
    docs = list(yaml.safe_load_all((DEPLOY / "k8s" / "api.yaml").read_text()))
    return {d["kind"]: d for d in docs}


# -- Helm values ------------------------------------------------------------------------


def test_helm_values_match_the_charts_schema(helm: dict[str, Any]) -> None:
    assert _helm_errors(helm) == []


@pytest.mark.parametrize(
    ("path", "key", "value"),
    [
        (("runLauncher", "config", "k8sRunLauncher"), "resource", {}),  # misspelt `resources`
        (("dagsterDaemon", "runCoordinator", "config", "queuedRunCoordinator"), "tagConcurencyLimits", []),
        (("computeLogManager", "config", "s3ComputeLogManager"), "bucketName", "x"),
        (("dagster-user-deployments", "deployments", 0), "dagsterApiGrpcArg", []),
        ((), "runLaunchers", {}),
    ],
)
def test_a_misspelt_helm_key_fails(helm: dict[str, Any], path: tuple[Any, ...], key: str, value: Any) -> None:
    broken = copy.deepcopy(helm)
    node: Any = broken
    for step in path:
        node = node[step]
    node[key] = value
    assert _helm_errors(broken), f"{key} under {path} was accepted"


def test_helm_values_say_what_the_service_needs(helm: dict[str, Any]) -> None:
    launcher = helm["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    resources = launcher["config"]["k8sRunLauncher"]["resources"]
    assert resources == {"requests": {"cpu": "1", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
    coordinator = helm["dagsterDaemon"]["runCoordinator"]
    assert coordinator["enabled"] is True and coordinator["type"] == "QueuedRunCoordinator"
    limits = coordinator["config"]["queuedRunCoordinator"]["tagConcurrencyLimits"]
    assert limits == LIMITS
    assert helm["dagsterDaemon"]["runMonitoring"]["enabled"] is True
    assert helm["postgresql"]["enabled"] is False and helm["postgresql"]["postgresqlHost"]
    assert helm["computeLogManager"]["type"] == "S3ComputeLogManager"
    (deployment,) = helm["dagster-user-deployments"]["deployments"]
    args = deployment["dagsterApiGrpcArgs"]
    module = args[args.index("-m") + 1]
    assert (REPO_ROOT / Path(*module.split("."))).with_suffix(".py").exists()
    assert deployment["includeConfigInLaunchedRuns"] == {"enabled": True}


def test_run_worker_memory_request_covers_the_measured_peak(helm: dict[str, Any]) -> None:
    """The request comes from docs/performance.md: it must stay above the peak RSS measured there."""
    text = (REPO_ROOT / "docs" / "performance.md").read_text()
    peaks = [float(m) for m in re.findall(r"peak RSS of the run at N[^\n]*?\s([\d.]+) MB", text)]
    assert peaks, "docs/performance.md no longer states the run's peak RSS"
    requests = helm["runLauncher"]["config"]["k8sRunLauncher"]["resources"]["requests"]
    assert requests["memory"].endswith("Mi")
    assert int(requests["memory"][:-2]) * 1.048576 > max(peaks) * 1.2, "keep 20 % headroom over the measured peak"


# -- the API on Kubernetes -----------------------------------------------------------------


def test_api_deployment(api: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    deployment = api["Deployment"]
    assert deployment["spec"]["replicas"] >= 2
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["command"][:2] == ["uvicorn", "export_api.app:app"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    probe = container["readinessProbe"]["httpGet"]
    assert probe["path"] == "/heartbeat" and probe["port"] in ports
    assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
    assert container["resources"]["limits"]["memory"]
    env = {e["name"]: e for e in container["env"]}
    for name in ("JWT_PUBLIC_KEY", "MONGODB_URI", "SECRETS_KEY"):
        assert set(env[name]["valueFrom"]) == {"secretKeyRef"}, f"{name} comes from a Secret"
        assert env[name]["valueFrom"]["secretKeyRef"]["key"] == name
    # DEV_MODE as the service itself reads it.
    monkeypatch.setenv("DEV_MODE", env["DEV_MODE"]["value"])
    assert Settings.from_env().dev_mode is False
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()


def test_api_service_reaches_the_pods(api: dict[str, dict[str, Any]]) -> None:
    service, deployment = api["Service"], api["Deployment"]
    pod = deployment["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    names = {p["name"] for c in pod["spec"]["containers"] for p in c["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= names


# -- the image ---------------------------------------------------------------------------


def test_dockerfile_installs_the_lock_and_serves_both_commands(api: dict[str, dict[str, Any]]) -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^RUN pip install -r requirements\.lock$", text, re.M)
    cmd = json.loads(re.findall(r"^CMD (\[.*\])$", text, re.M)[-1])
    assert cmd[:3] == ["dagster", "api", "grpc"] and cmd[cmd.index("-m") + 1] == "export_pipelines.definitions"
    user = re.findall(r"^USER (\d+)$", text, re.M)[-1]
    pod_user = api["Deployment"]["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    assert int(user) == pod_user


def test_dockerfile_copies_every_package_the_project_installs() -> None:
    """A package added to pyproject's `include` and not copied would be missing from the image."""
    text = (DEPLOY / "Dockerfile").read_text()
    pyproject = (DEPLOY.parent / "pyproject.toml").read_text()
    include = re.search(r"^include = \[(.*)\]$", pyproject, re.M)
    assert include is not None
    packages = {name.strip(' "*') for name in include.group(1).split(",")}
    copied = set(re.findall(r"^COPY (\w+) \./\1$", text, re.M))
    assert packages and packages <= copied
