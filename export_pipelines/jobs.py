"""One Dagster job per export type, all made from the same five ops.

The export id is the run's partition key (one dynamic partition set per job), so the
Dagster UI can backfill failed exports, and re-execution keeps the same export id.
"""

import resource
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from dagster import (
    Backoff,
    DagsterExecutionInterruptedError,
    DagsterInstance,
    DagsterRunStatus,
    DynamicPartitionsDefinition,
    Failure,
    HookContext,
    JobDefinition,
    OpExecutionContext,
    RetryPolicy,
    failure_hook,
    in_process_executor,
    job,
    op,
)

from export_pipelines import stages
from export_pipelines.domain import ccpa
from export_pipelines.domain.export_types import EXPORT_TYPES, ExportType
from export_pipelines.domain.records import FAILED, FINISHED, TRIGGERED, IllegalTransition
from export_pipelines.domain.settings import Settings
from export_pipelines.exports.base import ExportContext, PermanentExportError
from export_pipelines.resources import ExportServiceResource

QUEUE_TAG = "export-service/queue"  # dagster.yaml limits runs with this tag to one at a time
# The export id is the partition key, so re-executions and backfills carry it too.
EXPORT_ID_TAG = "dagster/partition"
EXPORT_TYPE_TAG = "export-service/export-type"

# Dagster's run monitoring stops a run after this many seconds (TIMEOUT_MILLIS); being a job
# tag, it applies to sensor runs, re-executions and backfills alike.
MAX_RUNTIME_TAG = "dagster/max_runtime"

# Connection hiccups are retried with backoff; PermanentExportError is raised as a Failure
# that forbids retries, so bad data fails at once.
TRANSIENT_RETRY = RetryPolicy(max_retries=3, delay=1.0, backoff=Backoff.EXPONENTIAL)


def partitions_name(export_type: str) -> str:
    return f"{export_type}_exports"


def job_name(export_type: str) -> str:
    return f"{export_type}_export_job"


@contextmanager
def export_context(context: OpExecutionContext, service: ExportServiceResource) -> Iterator[ExportContext]:
    """The export this run works on; a re-executed run takes a FAILED/EXPIRED record back to TRIGGERED."""
    export_id = context.partition_key
    if _being_stopped(context.instance, context.run_id):
        # A step retried after Dagster began cancelling the run (e.g. for its runtime) must not
        # carry on and finish the export behind the cancellation's back.
        raise Failure("the run is being canceled", allow_retries=False)
    store = service.store()
    record = store.get(export_id)
    if record is None:
        raise Failure(f"export record {export_id} not found", allow_retries=False)
    if record["status"] == FINISHED:
        raise Failure(
            f"export {export_id} is already FINISHED; only FAILED or EXPIRED exports are re-run", allow_retries=False
        )
    if record["status"] != TRIGGERED:  # PENDING: first start; FAILED/EXPIRED: a re-run
        record = store.mark_triggered(export_id, run_id=context.run_id, preliminary_count=None)
        context.log.info(f"export {export_id} TRIGGERED by run {context.run_id}")
    elif record.get("runId") != context.run_id:  # re-executed while the old run was never recorded as ended
        store.attach_run(export_id, context.run_id)
    try:
        yield stages.build_context(
            record, service.db(), service.s3(), service.settings, context.log, run_id=context.run_id
        )
    except PermanentExportError as exc:
        raise Failure(description=str(exc), allow_retries=False) from exc


@op(retry_policy=TRANSIENT_RETRY)
def start_export(context: OpExecutionContext, service: ExportServiceResource) -> str:
    """Mark the export TRIGGERED (before anything can fail), then store its preliminary count."""
    with export_context(context, service) as ctx:
        if "preliminaryCount" not in ctx.record:
            count = stages.preliminary_count(ctx)
            if count is not None:
                service.store().set_preliminary_count(ctx.export_id, count)
            context.log.info(f"export {ctx.export_id}: preliminary count {count}")
    return ctx.export_id


@op(retry_policy=TRANSIENT_RETRY)
def extract_rows(context: OpExecutionContext, service: ExportServiceResource, export_id: str) -> str:
    """Read the export's documents from MongoDB in batches into Parquet parts."""
    with export_context(context, service) as ctx:
        stages.extract(ctx)
    return export_id


@op(retry_policy=TRANSIENT_RETRY)
def transform_rows(context: OpExecutionContext, service: ExportServiceResource, export_id: str) -> str:
    """Shape the rows with polars and write formatted CSV files."""
    with export_context(context, service) as ctx:
        rows = stages.transform(ctx)
    context.log.info(f"{sum(rows.values())} rows in {len(rows)} file(s)")
    return export_id


@op(retry_policy=TRANSIENT_RETRY)
def package_files(context: OpExecutionContext, service: ExportServiceResource, export_id: str) -> list[dict[str, str]]:
    """Assemble the object(s) to upload: a CSV, a ZIP or several CSVs."""
    with export_context(context, service) as ctx:
        artifacts = stages.package(ctx)
    return [{"path": str(a.path), "key": a.key} for a in artifacts]


@op(retry_policy=TRANSIENT_RETRY)
def upload_files(
    context: OpExecutionContext, service: ExportServiceResource, artifacts: list[dict[str, str]]
) -> list[dict[str, Any]]:
    """Upload to the type's bucket with its ACL; an object only appears once complete."""
    with export_context(context, service) as ctx:
        uploaded = stages.upload(ctx, [stages.Artifact(path=Path(a["path"]), key=a["key"]) for a in artifacts])
    return [u.__dict__ for u in uploaded]


@op(retry_policy=TRANSIENT_RETRY)
def finish_export(context: OpExecutionContext, service: ExportServiceResource, uploaded: list[dict[str, Any]]) -> None:
    """Mark the export FINISHED with key, count and meta, then drop its staging files."""
    with export_context(context, service) as ctx:
        fields = stages.finish_fields(ctx, [stages.UploadedObject(**u) for u in uploaded])
        fields["meta"]["process"] = process_usage()
        service.store().mark_finished(ctx.export_id, **fields)
        # After FINISHED, never before: a CCPA request that arrived while this export ran either
        # saw it FINISHED or is seen here (domain/ccpa.py), so its file cannot escape the deletion.
        ccpa.enforce_on_finish(ctx.db, ctx.s3, ctx.settings, ctx.export_id, log=context.log)
        stages.clean_up(ctx)
    context.log.info(f"export {ctx.export_id} FINISHED: {fields['count']} rows at {fields['key']}")


def process_usage() -> dict[str, float]:
    """CPU seconds and peak RSS of this run's process so far: what the export cost us (not the DB)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpuSeconds": round(usage.ru_utime + usage.ru_stime, 3), "peakRssMb": round(usage.ru_maxrss / 1024, 1)}


def _being_stopped(instance: DagsterInstance, run_id: str) -> bool:
    run = instance.get_run_by_id(run_id)
    return run is not None and run.status in (DagsterRunStatus.CANCELING, DagsterRunStatus.CANCELED)


@failure_hook(required_resource_keys={"service"})
def record_failure(context: HookContext) -> None:
    """Mark the record FAILED the moment a step gives up, before the next export can start."""
    # The run ends here: per-run scratch (reminder e-mails) must not outlive it, SPEC §5.
    stages.discard_run_scratch(context.resources.service.settings, context.run_id)
    export_id = context.instance.get_run_by_id(context.run_id).tags.get(EXPORT_ID_TAG)  # type: ignore[union-attr]
    if not export_id:
        return
    error = context.op_exception
    if isinstance(error, DagsterExecutionInterruptedError) or _being_stopped(context.instance, context.run_id):
        return  # terminated (cancel or timeout): the run status sensors decide FAILED vs EXPIRED
    message = (error.description if isinstance(error, Failure) else None) or repr(error)
    with suppress(IllegalTransition):
        context.resources.service.store().mark_failed(export_id, message=message, payload=context.step_key or "")
    context.log.error(f"export {export_id} {FAILED}: {message}")


def build_export_job(export_type: ExportType) -> JobDefinition:
    @job(
        name=job_name(export_type.name),
        description=f"Export `{export_type.name}` rows of one campaign to S3 (partition = export id).",
        partitions_def=DynamicPartitionsDefinition(name=partitions_name(export_type.name)),
        executor_def=in_process_executor,
        tags={
            QUEUE_TAG: "exports",
            EXPORT_TYPE_TAG: export_type.name,
            MAX_RUNTIME_TAG: str(max(1, Settings.from_env().timeout_millis // 1000)),
        },
        hooks={record_failure},
    )
    def export_job() -> None:
        finish_export(upload_files(package_files(transform_rows(extract_rows(start_export())))))

    return export_job


EXPORT_JOBS: dict[str, JobDefinition] = {name: build_export_job(t) for name, t in EXPORT_TYPES.items()}
