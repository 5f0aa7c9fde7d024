"""The Dagster code location: every export job, the sensors that drive them, the retention schedule, resources.

The environment (SPEC §8) is read here, once, when the code location loads: the job tag for
TIMEOUT_MILLIS and the sensors' polling interval must be known then. Resources take what may
be secret or differ per process as `EnvVar` (resolved when a run starts, never shown in the
UI); a variable that is unset gets the local default.
"""

import math
import os
import warnings
from typing import Any

from dagster import BetaWarning, Definitions, EnvVar

from export_pipelines.domain.settings import Settings
from export_pipelines.jobs import build_export_jobs
from export_pipelines.resources import ExportFilesResource, ExportRunResource, MongoResource, S3Resource
from export_pipelines.retention import export_retention_job, export_retention_schedule
from export_pipelines.sensors import build_sensors

# Dagster's own run status sensors emit a BetaWarning about `owners` on every load.
warnings.filterwarnings("ignore", category=BetaWarning)


def _env(name: str, default: Any) -> Any:
    """EnvVar(name) when the variable is set, else the local default."""
    return EnvVar(name) if os.environ.get(name) else default


def _env_int(name: str, default: int) -> Any:
    return EnvVar.int(name) if os.environ.get(name) else default


def build_resources(settings: Settings) -> dict[str, Any]:
    mongo = MongoResource(
        uri=_env("MONGODB_URI", settings.mongodb_uri), database=_env("MONGODB_DB", settings.mongodb_db)
    )
    s3 = S3Resource(
        endpoint_url=_env("S3_ENDPOINT_URL", None),
        region=settings.aws_region,
        exports_bucket=_env("EXPORTS_S3_BUCKET", settings.exports_bucket),
        scoring_bucket=_env("SCORING_S3_BUCKET", settings.scoring_bucket),
        vf_scoring_bucket=_env("VF_SCORING_S3_BUCKET", settings.vf_scoring_bucket),
        sfmc_bucket=_env("SFMC_S3_BUCKET", settings.sfmc_bucket),
        object_acl=settings.s3_object_acl,
        sse=settings.s3_sse,
        sse_kms_key_id=_env("S3_SSE_KMS_KEY_ID", None),
    )
    files = ExportFilesResource(
        data_dir=str(settings.data_dir),
        max_rows_per_exported_file=_env_int("MAX_ROWS_PER_EXPORTED_FILE", settings.max_rows_per_exported_file),
        sfmc_config=_env("SFMC_CONFIG", None),
        timeout_millis=settings.timeout_millis,
    )
    return {"mongo": mongo, "s3": s3, "files": files, "export": ExportRunResource(mongo=mongo, s3=s3, files=files)}


def build_definitions(settings: Settings) -> Definitions:
    jobs = build_export_jobs(settings.timeout_millis)
    return Definitions(
        jobs=[*jobs.values(), export_retention_job],
        schedules=[export_retention_schedule],
        sensors=build_sensors(jobs, poll_seconds=max(1, math.ceil(settings.polling_interval_ms / 1000))),
        resources=build_resources(settings),
    )


defs = build_definitions(Settings.from_env())
