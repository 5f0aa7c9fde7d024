"""The daily retention job: deletes export files older than EXPORT_RETENTION_DAYS (export_core/retention.py).

Uses the `mongo` (`.db()`), `s3` (`.client()`, `.bucket_for()`) and `files`
(`.export_retention_days`) resources of the code location; definitions.py adds
`export_retention_job` and `export_retention_schedule` to its Definitions. The job is not tagged
`export-service/queue`: it reads records by index and deletes objects, so it never holds up, nor
waits for, the one export that runs at a time.
(No `from __future__ import annotations` here: Dagster checks the `context` annotation itself.)
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

from dagster import DefaultScheduleStatus, OpExecutionContext, ScheduleDefinition, job, op
from pymongo.database import Database

from export_core.retention import apply_retention
from export_pipelines.resources import LOGICAL_BUCKETS


class _Mongo(Protocol):
    def db(self) -> Database: ...


class _S3(Protocol):
    def client(self) -> Any: ...

    def bucket_for(self, logical: str) -> str: ...


class _Files(Protocol):
    export_retention_days: int | None


@dataclass(frozen=True)
class _Policy:
    export_retention_days: int | None
    buckets: Mapping[str, str]


@op(required_resource_keys={"mongo", "s3", "files"})
def apply_export_retention(context: OpExecutionContext) -> None:
    """Delete the files of exports finished more than EXPORT_RETENTION_DAYS ago; only logs when it is unset."""
    days = cast(_Files, context.resources.files).export_retention_days
    if days is None:
        context.log.info("EXPORT_RETENTION_DAYS is unset: retention is off, nothing deleted.")
        return
    mongo = cast(_Mongo, context.resources.mongo)
    s3 = cast(_S3, context.resources.s3)
    policy = _Policy(days, {name: s3.bucket_for(name) for name in LOGICAL_BUCKETS})
    result = apply_retention(mongo.db(), s3.client(), policy)
    context.log.info(result.message())
    if not result.complete:
        # A failed run is what alerts someone; the records already say what is left, and tomorrow's run retries.
        raise RuntimeError(result.message())


@job(description="Delete export files older than EXPORT_RETENTION_DAYS (records marked deleted, reason retention).")
def export_retention_job() -> None:
    apply_export_retention()


export_retention_schedule = ScheduleDefinition(
    name="export_retention_schedule",
    job=export_retention_job,
    cron_schedule="30 3 * * *",  # daily, at a quiet hour
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Daily retention of export files (a no-op while EXPORT_RETENTION_DAYS is unset).",
)
