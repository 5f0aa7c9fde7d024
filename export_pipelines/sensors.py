"""Sensors: PENDING records become runs; failed, cancelled or timed-out runs become FAILED/EXPIRED records."""

import contextlib
import json
import math

from dagster import (
    AddDynamicPartitionsRequest,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunRequest,
    RunStatusSensorContext,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    run_failure_sensor,
    run_status_sensor,
    sensor,
)

from export_pipelines.domain.records import IllegalTransition
from export_pipelines.domain.settings import Settings
from export_pipelines.jobs import EXPORT_ID_TAG, EXPORT_JOBS, job_name, partitions_name
from export_pipelines.resources import ExportServiceResource

_settings = Settings.from_env()
POLL_SECONDS = max(1, math.ceil(_settings.polling_interval_ms / 1000))
MAX_RUNTIME_TAG = "dagster/max_runtime"
MONITORED_JOBS = list(EXPORT_JOBS.values())


@sensor(
    minimum_interval_seconds=POLL_SECONDS,
    jobs=MONITORED_JOBS,
    default_status=DefaultSensorStatus.RUNNING,
)
def pending_exports_sensor(
    context: SensorEvaluationContext, service: ExportServiceResource
) -> SensorResult | SkipReason:
    """Launch one run per PENDING export, oldest first; the run queue runs them one at a time.

    The cursor holds the ids already requested that are still PENDING (queued runs), so a
    tick only asks for new ones; `run_key` = export id makes a repeated request a no-op.
    """
    store = service.store()
    pending = store.pending(limit=200)
    already = set(json.loads(context.cursor)) if context.cursor else set()
    new = [r for r in pending if r["_id"] not in already]
    if not new:
        return SkipReason(f"{len(pending)} PENDING export(s), all already launched")
    timeout_seconds = max(1, service.settings.timeout_millis // 1000)
    run_requests, partitions = [], {}
    for record in new:
        export_id, export_type = record["_id"], record["exportType"]
        if export_type not in EXPORT_JOBS:
            with contextlib.suppress(IllegalTransition):
                store.mark_failed(export_id, message=f"Invalid export type: '{export_type}'.")
            continue
        partitions.setdefault(partitions_name(export_type), []).append(export_id)
        run_requests.append(
            RunRequest(
                run_key=export_id,
                job_name=job_name(export_type),
                partition_key=export_id,
                tags={MAX_RUNTIME_TAG: str(timeout_seconds)},
            )
        )
    launched = {r["_id"] for r in pending} & (already | {r.run_key for r in run_requests})
    return SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[AddDynamicPartitionsRequest(name, keys) for name, keys in partitions.items()],
        cursor=json.dumps(sorted(launched)),
    )


@run_failure_sensor(
    monitored_jobs=MONITORED_JOBS, default_status=DefaultSensorStatus.RUNNING, minimum_interval_seconds=1
)
def export_run_failure_sensor(context: RunFailureSensorContext, service: ExportServiceResource) -> None:
    """A failed run ends its record FAILED, or EXPIRED when Dagster stopped it for its max runtime."""
    export_id = context.dagster_run.tags.get(EXPORT_ID_TAG)
    if not export_id:
        return
    message = context.failure_event.message or "export run failed"
    store = service.store()
    try:
        if "maximum runtime" in message:
            store.mark_expired(export_id, message=message)
        else:
            store.mark_failed(export_id, message=message, payload=context.dagster_run.run_id)
    except IllegalTransition:
        pass  # the failure hook (or a later run) already recorded the outcome


@run_status_sensor(
    run_status=DagsterRunStatus.CANCELED,
    monitored_jobs=MONITORED_JOBS,
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=1,
)
def export_run_canceled_sensor(context: RunStatusSensorContext, service: ExportServiceResource) -> None:
    """run_failure_sensor does not fire on cancellation: a cancelled run ends its record FAILED."""
    export_id = context.dagster_run.tags.get(EXPORT_ID_TAG)
    if not export_id:
        return
    with contextlib.suppress(IllegalTransition):
        service.store().mark_failed(export_id, message="export run was canceled", payload=context.dagster_run.run_id)
