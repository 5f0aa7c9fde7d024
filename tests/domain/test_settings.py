"""Settings (SPEC §8): every variable read once into one typed object, handed on through resources."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
from dagster import EnvVar
from pydantic import AliasChoices

from export_core.clients import local_s3_credentials, s3_client
from export_core.settings import REPO_ROOT, Settings
from export_pipelines.definitions import build_resources


def _variables() -> list[str]:
    names: list[str] = []
    for info in Settings.model_fields.values():
        alias = info.validation_alias
        names.extend(str(a) for a in alias.choices) if isinstance(alias, AliasChoices) else names.append(str(alias))
    return names


@pytest.fixture
def clean(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No settings variable set: each test sets its own."""
    for name in _variables():
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_every_configuration_variable_documented_is_a_field() -> None:
    page = (REPO_ROOT / "docs" / "configuration.md").read_text()
    table = page[page.index("| variable | meaning | local default |") :].split("\n\n", 1)[0]
    documented = {name for row in table.splitlines()[2:] for name in re.findall(r"`([A-Z0-9_]+)`", row.split("|")[1])}
    # make run's own (devstack) and the command-line client's, outside the code location.
    outside = {"SEED_DEMO", "EXPORT_SERVICE_URL", "EXPORT_SERVICE_TOKEN"}
    assert documented - outside <= set(_variables()), documented - outside - set(_variables())
    assert set(_variables()) - documented == {"AWS_ACCESS_KEY_ID"}  # boto3's own; only whether it is set matters


def test_defaults_and_derived_values(clean: pytest.MonkeyPatch) -> None:
    settings = Settings.from_env()
    assert settings.model_fields_set == set()
    assert settings.data_dir == (REPO_ROOT / ".local").resolve()
    assert settings.dagster_graphql_url == "http://127.0.0.1:3000/graphql"
    assert (settings.api_port, settings.timeout_millis, settings.max_rows_per_exported_file) == (
        8000,
        3_600_000,
        100_000,
    )
    assert (settings.aws_region, settings.log_dir, settings.dev_mode, settings.webhook_allow_private) == (
        "us-east-1", None, False, False,
    )  # fmt: skip

    clean.setenv("DAGSTER_PORT", "3100")
    clean.setenv("LOG_DIR", "logs/here")
    assert Settings.from_env().dagster_graphql_url == "http://127.0.0.1:3100/graphql"
    assert Settings.from_env().log_dir == Path("logs/here").resolve()
    clean.setenv("DAGSTER_GRAPHQL_URL", "http://dagster:3000/graphql")
    assert Settings.from_env().dagster_graphql_url == "http://dagster:3000/graphql"


def test_an_empty_variable_is_unset(clean: pytest.MonkeyPatch) -> None:
    for name in ("MONGODB_DB", "API_PORT", "S3_ENDPOINT_URL", "EXPORT_RETENTION_DAYS", "AWS_REGION", "DEV_MODE"):
        clean.setenv(name, "")
    clean.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    settings = Settings.from_env()
    assert (settings.mongodb_db, settings.api_port, settings.s3_endpoint_url) == ("verifiedfan", 8000, None)
    assert settings.export_retention_days is None and settings.dev_mode is False
    assert settings.aws_region == "eu-west-1"  # AWS_REGION empty: AWS_DEFAULT_REGION
    assert settings.model_fields_set == {"aws_region"}
    clean.setenv("AWS_REGION", "ap-south-1")
    assert Settings.from_env().aws_region == "ap-south-1"


def test_schedule_limits_default_and_must_be_at_least_one(clean: pytest.MonkeyPatch) -> None:
    settings = Settings.from_env()
    assert (
        settings.schedule_min_interval_minutes,
        settings.schedule_pause_after_failures,
        settings.max_schedules_per_campaign,
    ) == (5, 5, 20)
    clean.setenv("SCHEDULE_MIN_INTERVAL_MINUTES", "1")
    assert Settings.from_env().schedule_min_interval_minutes == 1
    for value, wrong in (("0", "must be at least 1"), ("five", "must be an integer")):
        clean.setenv("MAX_SCHEDULES_PER_CAMPAIGN", value)
        with pytest.raises(ValueError, match=f"MAX_SCHEDULES_PER_CAMPAIGN {wrong}"):
            Settings.from_env()


@pytest.mark.parametrize(
    ("value", "on"), [("1", True), ("TRUE", True), (" yes ", True), ("on", True), ("0", False), ("maybe", False)]
)
def test_flags(clean: pytest.MonkeyPatch, value: str, on: bool) -> None:
    clean.setenv("WEBHOOK_ALLOW_PRIVATE", value)
    assert Settings.from_env().webhook_allow_private is on


def test_dev_key_files_are_read_in_dev_mode_only(clean: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "dev_public.pem").write_text("PUBLIC")
    (tmp_path / "keys" / "dev_private.pem").write_text("PRIVATE")
    clean.setenv("DATA_DIR", str(tmp_path))
    assert (Settings.from_env().jwt_public_key, Settings.from_env().jwt_private_key) == (None, None)
    clean.setenv("DEV_MODE", "1")
    assert (Settings.from_env().jwt_public_key, Settings.from_env().jwt_private_key) == ("PUBLIC", "PRIVATE")
    clean.setenv("JWT_PUBLIC_KEY", "-----BEGIN\\nline\\n-----END")  # one line, `\n` escapes
    assert Settings.from_env().jwt_public_key == "-----BEGIN\nline\n-----END"


def test_secrets_never_reach_repr_or_errors(clean: pytest.MonkeyPatch) -> None:
    clean.setenv("JWT_PRIVATE_KEY", "private-pem-text")
    clean.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEKEY")
    clean.setenv("DAGSTER_POSTGRES_URL", "postgresql://u:hunter2@db/dagster")
    shown = repr(Settings.from_env())
    assert "private-pem-text" not in shown and "AKIAEXAMPLEKEY" not in shown and "hunter2" not in shown
    clean.setenv("DAGSTER_POSTGRES_URL", "mysql://u:hunter2@db/dagster")
    clean.setenv("API_PORT", "80a")
    with pytest.raises(ValueError) as error:
        Settings.from_env()
    message = str(error.value)
    assert "API_PORT must be an integer, got '80a'" in message and "DAGSTER_POSTGRES_URL must look like" in message
    assert "hunter2" not in message and error.value.__suppress_context__


def test_resources_get_envvar_for_what_the_environment_set(clean: pytest.MonkeyPatch) -> None:
    """Set variables reach resources as EnvVar (resolved in the run, never shown in the UI); unset ones as defaults."""
    clean.setenv("MONGODB_URI", "mongodb://user:pw@db:27017/")
    clean.setenv("MAX_ROWS_PER_EXPORTED_FILE", "5000")
    clean.setenv("S3_ENDPOINT_URL", "http://127.0.0.1:4566")
    resources: dict[str, Any] = build_resources(Settings.from_env())
    assert resources["mongo"].uri == EnvVar("MONGODB_URI") and isinstance(resources["mongo"].uri, EnvVar)
    assert resources["mongo"].database == "verifiedfan" and not isinstance(resources["mongo"].database, EnvVar)
    assert resources["files"].max_rows_per_exported_file == EnvVar.int("MAX_ROWS_PER_EXPORTED_FILE")
    assert resources["files"].sfmc_config is None
    assert resources["s3"].endpoint_url == EnvVar("S3_ENDPOINT_URL")
    assert resources["s3"].exports_bucket == "exports" and resources["s3"].local_credentials is True


def test_local_credentials_only_against_a_local_endpoint_without_aws_ones(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Against the suite's S3 server, dummy credentials stand in when AWS_ACCESS_KEY_ID is unset."""
    assert local_s3_credentials(Settings.from_env()) is False
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    settings = Settings.from_env()
    assert local_s3_credentials(settings) is True
    assert isinstance(s3_client(settings).list_buckets()["Buckets"], list)
    monkeypatch.delenv("S3_ENDPOINT_URL")
    assert local_s3_credentials(Settings.from_env()) is False  # AWS itself: boto3's own credential chain


# -- nothing else reads the environment ---------------------------------------------------

PACKAGES = ("export_pipelines", "export_core", "export_api")
# The command-line client reads its own EXPORT_SERVICE_URL / EXPORT_SERVICE_TOKEN.
CLIENT = {"export_cli/cli.py"}
TUNING = "export_pipelines/__init__.py"  # process tuning: os.environ.setdefault only, no reads


def _environment_uses(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, text) of every os.environ / os.getenv / os.putenv use and `from os import environ`-style import."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in {"environ", "environb", "getenv", "putenv", "unsetenv"}:
            found.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            found.extend((node.lineno, f"from os import {a.name}") for a in node.names if a.name != "path")
    return found


def _tuning_only(tree: ast.AST) -> bool:
    """Every use is `os.environ.setdefault(...)` as a statement of its own."""
    calls = [
        n.value.func.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Expr)
        and isinstance(n.value, ast.Call)
        and isinstance(n.value.func, ast.Attribute)
        and n.value.func.attr == "setdefault"
    ]
    return len(calls) == len(_environment_uses(tree)) and all(ast.unparse(c) == "os.environ" for c in calls)


def test_no_module_of_the_service_reads_the_environment_but_settings() -> None:
    offenders: list[str] = []
    modules = [p for package in PACKAGES for p in sorted((REPO_ROOT / package).rglob("*.py"))]
    assert len(modules) > 20
    for path in modules:
        relative = path.relative_to(REPO_ROOT).as_posix()
        tree = ast.parse(path.read_text(), filename=relative)
        if relative in CLIENT or (relative == TUNING and _tuning_only(tree)):
            continue
        offenders.extend(f"{relative}:{line}: {text}" for line, text in _environment_uses(tree))
    assert offenders == []


def test_the_scan_sees_every_form() -> None:
    source = "import os\nfrom os import getenv\nos.environ.get('A')\nos.getenv('B')\nos.environ['C']\n"
    assert sorted(line for line, _ in _environment_uses(ast.parse(source))) == [2, 3, 4, 5]
    assert _tuning_only(ast.parse("import os\nos.environ.setdefault('X', '1')\n"))
    assert not _tuning_only(ast.parse("import os\nos.environ.setdefault('X', '1')\nos.environ.get('Y')\n"))
