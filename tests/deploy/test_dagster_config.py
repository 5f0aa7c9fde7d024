"""deploy/dagster.yaml and the ECS variant load with Dagster's own instance-config validation.

Dagster validates the top level when an instance loads (`dagster_instance_config`) and each
configurable class (storage, run launcher, coordinator, compute logs) against that class's own
schema only when it instantiates it — which here would need a cluster. So this does the second
step the way `ConfigurableClassData.rehydrate` does, without the instantiation: a misspelt key
or a wrong type anywhere fails here, not at deploy time.
"""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster._config import process_config, resolve_to_config_type
from dagster._core.errors import DagsterInvalidConfigError
from dagster._core.instance.config import dagster_instance_config
from dagster._core.instance.ref import InstanceRef

from export_core.settings import REPO_ROOT
from export_pipelines.destination_delivery import DELIVERY_TAG, RUNS_AT_ONCE
from export_pipelines.jobs import QUEUE_TAG

# One export at a time; destination deliveries, runs of their own, as many as their sensor launches at once.
LIMITS = [{"key": QUEUE_TAG, "limit": 1}, {"key": DELIVERY_TAG, "limit": RUNS_AT_ONCE}]

FILES = {
    "kubernetes": REPO_ROOT / "deploy" / "dagster.yaml",
    "ecs": REPO_ROOT / "deploy" / "ecs" / "dagster.yaml",
}
ENV = {
    "DAGSTER_POSTGRES_URL": "postgresql://dagster:pw@postgres:5432/dagster",
    "EXPORT_SERVICE_IMAGE": "registry.example.com/export-service:1.0.0",
    "DAGSTER_K8S_NAMESPACE": "export-service",
    "DAGSTER_COMPUTE_LOGS_BUCKET": "dagster-logs",
    "AWS_REGION": "us-east-1",
}


def validated(path: Path, tmp_path: Path) -> dict[str, Any]:
    """Every configurable class of the instance file, checked against its own config schema."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copyfile(path, home / "dagster.yaml")
    dagster_instance_config(str(home))  # top level, incl. concurrency vs run_queue
    ref = InstanceRef.from_dir(str(home))
    classes = {
        "storage": ref.storage_data,
        "run_launcher": ref.run_launcher_data,
        "run_coordinator": ref.run_coordinator_data,
        "compute_logs": ref.compute_logs_data,
    }
    checked: dict[str, Any] = {}
    for section, data in classes.items():
        assert data is not None, section
        klass = getattr(importlib.import_module(data.module_name), data.class_name)
        result = process_config(resolve_to_config_type(klass.config_type()), yaml.safe_load(data.config_yaml) or {})
        if not result.success:
            where = f"{path.name}: {section} ({data.class_name})"
            raise DagsterInvalidConfigError(where, result.errors, data.config_yaml)
        checked[section] = (data.class_name, result.value)
    return checked


@pytest.fixture(autouse=True)
def _deploy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)


def test_kubernetes_instance(tmp_path: Path) -> None:
    checked = validated(FILES["kubernetes"], tmp_path)
    assert checked["storage"][0] == "DagsterPostgresStorage"
    assert checked["storage"][1]["postgres_url"] == ENV["DAGSTER_POSTGRES_URL"]
    launcher, config = checked["run_launcher"]
    assert launcher == "K8sRunLauncher"
    assert config["resources"] == {"requests": {"cpu": "1", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
    assert checked["run_coordinator"][0] == "QueuedRunCoordinator"
    assert checked["compute_logs"][0] == "S3ComputeLogManager"
    assert checked["compute_logs"][1]["bucket"] == "dagster-logs"
    _queue_and_monitoring(FILES["kubernetes"])


def test_ecs_instance(tmp_path: Path) -> None:
    checked = validated(FILES["ecs"], tmp_path)
    launcher, config = checked["run_launcher"]
    assert launcher == "EcsRunLauncher" and config["run_resources"] == {"cpu": "1024", "memory": "2048"}
    assert checked["storage"][0] == "DagsterPostgresStorage"
    assert checked["compute_logs"][0] == "S3ComputeLogManager"
    _queue_and_monitoring(FILES["ecs"])


def _queue_and_monitoring(path: Path) -> None:
    raw = yaml.safe_load(path.read_text())
    assert raw["concurrency"]["runs"]["tag_concurrency_limits"] == LIMITS
    assert raw["run_monitoring"]["enabled"] is True
    # The same queue as the local instance (dagster.yaml), so production behaves as the tests do.
    local = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    assert raw["concurrency"] == local["concurrency"] and raw["run_coordinator"] == local["run_coordinator"]


def _misspelt_namespace(raw: dict[str, Any]) -> None:
    raw["run_launcher"]["config"]["job_namespce"] = raw["run_launcher"]["config"].pop("job_namespace")


def _string_for_a_bool(raw: dict[str, Any]) -> None:
    raw["run_launcher"]["config"]["load_incluster_config"] = "yes"


def _misspelt_bucket(raw: dict[str, Any]) -> None:
    raw["compute_logs"]["config"]["bukket"] = raw["compute_logs"]["config"].pop("bucket")


def _misspelt_postgres_url(raw: dict[str, Any]) -> None:
    raw["storage"]["postgres"] = {"postgres_uri": raw["storage"]["postgres"]["postgres_url"]}


@pytest.mark.parametrize("breaks", [_misspelt_namespace, _string_for_a_bool, _misspelt_bucket, _misspelt_postgres_url])
def test_a_typo_fails(tmp_path: Path, breaks: Any) -> None:
    raw = yaml.safe_load(FILES["kubernetes"].read_text())
    breaks(raw)
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(raw))
    with pytest.raises(DagsterInvalidConfigError):
        validated(broken, tmp_path)
