"""One Dagster job per export type, made of one op per stage (stages.py does the work).

The export id is the run's partition key (one dynamic partition set per job), so the Dagster
UI can backfill failed exports and re-execution keeps the same export id. The run's
`export` resource moves the record to TRIGGERED once, when the run starts; the first op resolves
the export's plan (export_core/plan.py) and stages it, and each op then does its own stage from that
plan and what the earlier ones staged. The end states go through end_states.py. Types with per-run scratch (the reminder
e-mails, SPEC §5) cannot keep staged files past a failed run, so their job makes and uploads
the files in one op: a re-execution from failure starts there, where its inputs are made.
"""

import resource
from collections.abc import Iterator
from contextlib import contextmanager
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
    MetadataValue,
    OpExecutionContext,
    Output,
    RetryPolicy,
    failure_hook,
    in_process_executor,
    job,
    op,
)

from export_core import ccpa
from export_core.export_types import EXPORT_TYPES, ExportType
from export_core.failures import plain_message
from export_core.records import FAILED
from export_pipelines import end_states, stages
from export_pipelines.end_states import MAX_RUNTIME_TAG
from export_pipelines.exports.contract import ExportContext, PermanentExportError
from export_pipelines.resources import ExportRunResource

QUEUE_TAG = "export-service/queue"  # dagster.yaml limits runs with this tag to one at a time
# The export id is the partition key, so re-executions and backfills carry it too.
EXPORT_ID_TAG = "dagster/partition"
EXPORT_TYPE_TAG = "export-service/export-type"
CAMPAIGN_TAG = "export-service/campaign-id"
REQUEST_ID_TAG = "export-service/request-id"
SCHEDULE_ID_TAG = "export-service/schedule-id"  # runs of a schedule's exports (SPEC §12)

# Connection hiccups are retried with backoff (1 s, 2 s, 4 s); PermanentExportError becomes a
# Failure that forbids retries, so bad data fails at once.
MAX_RETRIES = 3
RETRY_DELAY_SECONDS = 1.0


def partitions_name(export_type: str) -> str:
    return f"{export_type}_exports"


def job_name(export_type: str) -> str:
    return f"{export_type}_export_job"


def run_is_stopped(instance: DagsterInstance, run_id: str) -> bool:
    """True once the run is being canceled or has ended in the instance's eyes.

    Run monitoring marks a run past its max runtime FAILURE while its worker is still busy;
    the interrupted step's retry must not then carry on and finish the export.
    """
    run = instance.get_run_by_id(run_id)
    return run is not None and (run.status == DagsterRunStatus.CANCELING or run.is_finished)


@contextmanager
def stage(context: OpExecutionContext, export: ExportRunResource, *, fresh: bool = False) -> Iterator[ExportContext]:
    """The export's context for this step, from its plan (`fresh`: resolved anew, the run's first step).

    The one place a PermanentExportError (bad data) becomes a Dagster Failure: the step fails at
    once, without retries. A stopped run stops retrying.
    """
    if run_is_stopped(context.instance, context.run_id):
        raise Failure("the run was stopped (canceled, or past its maximum runtime)", allow_retries=False)
    try:
        yield export.fresh_context(context.log) if fresh else export.context(context.log)
    except PermanentExportError as exc:
        raise Failure(description=str(exc), allow_retries=False) from exc


@op
def start_export(context: OpExecutionContext, export: ExportRunResource) -> str:
    """Resolve the export's plan and stage it with its files (export_core/plan.py), with the export's
    preliminary count (SPEC §3, for progress display); every later step reads this plan."""
    with stage(context, export, fresh=True) as ctx:
        export_plan = ctx.plan
        if "preliminaryCount" not in ctx.record:
            count = stages.preliminary_count(ctx)
            if count is not None:
                export.mongo.store().set_preliminary_count(ctx.export_id, count)
                export_plan = export_plan.with_record(preliminaryCount=count)
            context.log.info(f"export {ctx.export_id}: preliminary count {count}")
        export.keep(export_plan)
        context.log.info(
            f"export {ctx.export_id}: {export_plan.packaging} ({export_plan.format}) to bucket {export_plan.bucket}"
        )
    return ctx.export_id


@op
def extract_rows(context: OpExecutionContext, export: ExportRunResource, export_id: str) -> str:
    """Read the export's documents from MongoDB in raw batches into staged parts."""
    with stage(context, export) as ctx:
        stages.extract(ctx)
    return export_id


@op
def transform_rows(context: OpExecutionContext, export: ExportRunResource, export_id: str) -> str:
    """Shape the rows with polars and write formatted CSV files."""
    with stage(context, export) as ctx:
        rows = stages.transform(ctx)
    context.log.info(f"{sum(rows.values())} rows in {len(rows)} file(s)")
    return export_id


@op
def package_files(context: OpExecutionContext, export: ExportRunResource, export_id: str) -> stages.Package:
    """Assemble the object(s) to upload: a CSV, a ZIP or several CSVs."""
    with stage(context, export) as ctx:
        return stages.package(ctx)


@op
def upload_files(context: OpExecutionContext, export: ExportRunResource, staged: stages.Package) -> stages.Uploaded:
    """Upload to the type's bucket with its ACL; an object only appears once complete."""
    with stage(context, export) as ctx:
        return stages.upload(ctx, staged, export.s3)


@op
def make_and_upload_files(context: OpExecutionContext, export: ExportRunResource, export_id: str) -> stages.Uploaded:
    """Extract, transform, package and upload in this run's scratch directory (re-execution starts here)."""
    with stage(context, export) as ctx:
        context.log.info("per-run scratch (SPEC §5): extract, transform, package and upload happen in this step")
        stages.extract(ctx)
        rows = stages.transform(ctx)
        context.log.info(f"{sum(rows.values())} rows in {len(rows)} file(s)")
        return stages.upload(ctx, stages.package(ctx), export.s3)  # the run's end removes its scratch


@op
def finish_export(context: OpExecutionContext, export: ExportRunResource, uploaded: stages.Uploaded) -> Output[None]:
    """Mark the export FINISHED with key, count and meta, then drop its staging files.

    The record carries what users need (rows, bytes, checksums, keys); what the run itself cost
    (run_cost) goes to the run: its log and this step's output metadata, where the bench reads it.
    """
    with stage(context, export) as ctx:
        fields = stages.finish_fields(ctx, uploaded)
        end_states.finished(export.mongo.store(), ctx.plan, fields)  # its staging goes with it
        # After FINISHED, never before: a CCPA request that arrived while this export ran either
        # saw it FINISHED or is seen here (export_core/ccpa.py), so its file cannot escape the deletion.
        ccpa.enforce_on_finish(ctx.db, ctx.s3, ctx.buckets, ctx.export_id, log=context.log)
        cost = run_cost(export)
    context.log.info(f"export {ctx.export_id} FINISHED: {fields['count']} rows at {fields['key']}")
    context.log.info("run cost: " + ", ".join(f"{name} {value}" for name, value in cost.items()))
    return Output(None, metadata={**run_metadata(ctx, fields, uploaded), **cost_metadata(cost)})


def run_metadata(ctx: ExportContext, fields: dict[str, Any], uploaded: stages.Uploaded) -> dict[str, Any]:
    """What a data engineer sees on the run page: rows, bytes, checksum, where, and a masked preview."""
    meta = fields["meta"]
    keys = fields["key"] if isinstance(fields["key"], list) else [fields["key"]]
    return {
        "rows": MetadataValue.int(fields["count"]),
        "bytes": MetadataValue.int(meta["bytes"]),
        "sha256": MetadataValue.text(meta["sha256"] or ", ".join(o["sha256"] for o in meta["objects"])),
        "bucket": MetadataValue.text(meta["bucket"]),
        "key": MetadataValue.text("\n".join(k for k in keys if k)),
        "campaign": MetadataValue.text(ctx.plan.campaign_name),
        "export_type": MetadataValue.text(ctx.export_type.name),
        "preview": MetadataValue.md(uploaded.preview or "(no rows)"),
    }


def process_usage() -> dict[str, float]:
    """CPU seconds and peak RSS of this run's process so far: what the export cost us (not the DB)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpuSeconds": round(usage.ru_utime + usage.ru_stime, 3), "peakRssMb": round(usage.ru_maxrss / 1024, 1)}


def run_cost(export: ExportRunResource) -> dict[str, float | int]:
    """What the run cost by its end: this process's CPU and peak RSS, and what it asked of the
    database (commands, i.e. round trips, and bytes received; the bytes only where the kernel
    says, TCP_INFO)."""
    usage: dict[str, float | int | None] = {**process_usage(), **export.mongo.usage()}
    return {name: value for name, value in usage.items() if value is not None}


def cost_metadata(cost: dict[str, float | int]) -> dict[str, Any]:
    """run_cost as output metadata: the run page shows it, bench/run.py reads it (by these labels)."""
    return {
        name: MetadataValue.int(value) if isinstance(value, int) else MetadataValue.float(float(value))
        for name, value in cost.items()
    }


@failure_hook(required_resource_keys={"export"})
def record_failure(context: HookContext) -> None:
    """Mark the record FAILED the moment a step gives up, before the next export can start."""
    export: ExportRunResource = context.resources.export
    run = context.instance.get_run_by_id(context.run_id)
    export_id = run.tags.get(EXPORT_ID_TAG) if run else None
    if not export_id:
        return
    error = context.op_exception
    if isinstance(error, DagsterExecutionInterruptedError) or run_is_stopped(context.instance, context.run_id):
        return  # terminated (cancel or timeout): the run status sensors decide FAILED vs EXPIRED
    message = plain_message(error)
    end_states.failed(export.mongo.store(), export_id, message, payload=context.step_key or "", run_id=context.run_id)
    context.log.error(f"export {export_id} {FAILED}: {message} (detail: {error!r})")


def build_export_job(export_type: ExportType, timeout_millis: int, retry_delay: float) -> JobDefinition:
    per_run_scratch = export_type.scratch == "run"
    retry = RetryPolicy(max_retries=MAX_RETRIES, delay=retry_delay, backoff=Backoff.EXPONENTIAL)
    start, extract, transform, package, upload, make_and_upload, finish = (
        o.with_retry_policy(retry)
        for o in (
            start_export,
            extract_rows,
            transform_rows,
            package_files,
            upload_files,
            make_and_upload_files,
            finish_export,
        )
    )

    @job(
        name=job_name(export_type.name),
        description=f"Export `{export_type.name}` rows of one campaign to S3 (partition = export id).",
        partitions_def=DynamicPartitionsDefinition(name=partitions_name(export_type.name)),
        executor_def=in_process_executor,
        tags={
            QUEUE_TAG: "exports",
            EXPORT_TYPE_TAG: export_type.name,
            MAX_RUNTIME_TAG: str(max(1, timeout_millis // 1000)),
        },
        hooks={record_failure},
    )
    def export_job() -> None:
        export_id = start()
        if per_run_scratch:
            finish(make_and_upload(export_id))
        else:
            finish(upload(package(transform(extract(export_id)))))

    return export_job


def build_export_jobs(timeout_millis: int, retry_delay: float = RETRY_DELAY_SECONDS) -> dict[str, JobDefinition]:
    """One job per registered type; tests pass a short `retry_delay`."""
    return {name: build_export_job(t, timeout_millis, retry_delay) for name, t in EXPORT_TYPES.items()}
