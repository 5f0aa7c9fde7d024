"""The daily retention job: deletes export files older than EXPORT_RETENTION_DAYS (domain/retention.py).

Uses the `mongo` (MongoResource: `.db()`) and `s3` (S3Resource: `.client()`) resources of the
code location; definitions.py adds `export_retention_job` and `export_retention_schedule` to
its Definitions. The job is not tagged `export-service/queue`: it reads records by index and
deletes objects, so it never holds up, nor waits for, the one export that runs at a time.
(No `from __future__ import annotations` here: Dagster checks the `context` annotation itself.)
"""

from typing import Any, Protocol, cast

from dagster import DefaultScheduleStatus, OpExecutionContext, ScheduleDefinition, job, op
from pymongo.database import Database

from export_pipelines.domain.retention import apply_retention
from export_pipelines.domain.settings import Settings


class _Mongo(Protocol):
    def db(self) -> Database: ...


class _S3(Protocol):
    def client(self) -> Any: ...


@op(required_resource_keys={"mongo", "s3"})
def apply_export_retention(context: OpExecutionContext) -> None:
    """Delete the files of exports finished more than EXPORT_RETENTION_DAYS ago; only logs when it is unset."""
    settings = Settings.from_env()
    if settings.export_retention_days is None:
        context.log.info("EXPORT_RETENTION_DAYS is unset: retention is off, nothing deleted.")
        return
    mongo = cast(_Mongo, context.resources.mongo)
    s3 = cast(_S3, context.resources.s3)
    result = apply_retention(mongo.db(), s3.client(), settings)
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
