"""The Dagster code location: every export job, the sensors that drive them, the retention schedule, resources.

The environment (SPEC §8) is read here, once, into `Settings` when the code location loads: the
job tag for TIMEOUT_MILLIS, the sensors' polling interval, WEBHOOK_ALLOW_PRIVATE and SECRETS_KEY
(webhook and destination sensors, the latter also S3's endpoint and buckets) and
SCHEDULE_PAUSE_AFTER_FAILURES (schedule sensor) must be known then. Resources take
what may be secret or differ per process as `EnvVar` when the environment set it (resolved when a
run starts, never shown in the UI), else the default.
"""

import math
import warnings
from typing import Any

from dagster import BetaWarning, Definitions, EnvVar

from export_core.clients import local_s3_credentials
from export_core.secrets import SecretBox
from export_core.settings import Settings
from export_pipelines.destination_delivery import build_destination_job, build_destination_sensor
from export_pipelines.jobs import build_export_jobs
from export_pipelines.resources import ExportFilesResource, ExportRunResource, MongoResource, S3Resource
from export_pipelines.retention import export_retention_job, export_retention_schedule
from export_pipelines.schedule_ticks import build_schedule_sensor
from export_pipelines.sensors import build_sensors
from export_pipelines.webhook_delivery import build_webhook_sensor

# Dagster's own run status sensors emit a BetaWarning about `owners` on every load.
warnings.filterwarnings("ignore", category=BetaWarning)


def _env(settings: Settings, field: str) -> Any:
    """The field's variable as an EnvVar when the environment set it, else the field's value (its default)."""
    if field not in settings.model_fields_set:
        return getattr(settings, field)
    if isinstance(getattr(settings, field), int):
        return EnvVar.int(Settings.env_name(field))
    return EnvVar(Settings.env_name(field))


def build_resources(settings: Settings) -> dict[str, Any]:
    mongo = MongoResource(uri=_env(settings, "mongodb_uri"), database=_env(settings, "mongodb_db"))
    s3 = S3Resource(
        endpoint_url=_env(settings, "s3_endpoint_url"),
        region=settings.aws_region,
        exports_bucket=_env(settings, "exports_bucket"),
        scoring_bucket=_env(settings, "scoring_bucket"),
        vf_scoring_bucket=_env(settings, "vf_scoring_bucket"),
        sfmc_bucket=_env(settings, "sfmc_bucket"),
        object_acl=settings.s3_object_acl,
        sse=settings.s3_sse,
        sse_kms_key_id=_env(settings, "s3_sse_kms_key_id"),
        local_credentials=local_s3_credentials(settings),
    )
    files = ExportFilesResource(
        data_dir=str(settings.data_dir),
        max_rows_per_exported_file=_env(settings, "max_rows_per_exported_file"),
        sfmc_config=_env(settings, "sfmc_config"),
        timeout_millis=settings.timeout_millis,
        export_retention_days=settings.export_retention_days,
    )
    return {"mongo": mongo, "s3": s3, "files": files, "export": ExportRunResource(mongo=mongo, s3=s3, files=files)}


def build_definitions(settings: Settings) -> Definitions:
    secret_box = SecretBox.from_settings(settings)  # SecretsKeyMissing outside DEV_MODE without SECRETS_KEY
    jobs = build_export_jobs(settings.timeout_millis)
    delivery_job = build_destination_job(settings=settings, secret_box=secret_box)  # SPEC §13
    return Definitions(
        jobs=[*jobs.values(), export_retention_job, delivery_job],
        schedules=[export_retention_schedule],
        sensors=[
            *build_sensors(jobs, poll_seconds=max(1, math.ceil(settings.polling_interval_ms / 1000))),
            build_webhook_sensor(allow_private=settings.webhook_allow_private, secret_box=secret_box),  # SPEC §11
            build_schedule_sensor(pause_after=settings.schedule_pause_after_failures),  # SPEC §12
            build_destination_sensor(settings=settings, secret_box=secret_box, job=delivery_job),  # SPEC §13
        ],
        resources=build_resources(settings),
    )


_defs: Definitions | None = None


def __getattr__(name: str) -> Any:
    """`export_pipelines.definitions.defs` (the code location's `-a defs`), built from the environment on first
    use, so importing this module for `build_definitions` never reads it. Outside DEV_MODE without SECRETS_KEY
    it raises SecretsKeyMissing: the code location does not load."""
    global _defs
    if name != "defs":
        raise AttributeError(name)
    if _defs is None:
        _defs = build_definitions(Settings.from_env())
    return _defs
