"""Sensors: PENDING records become runs; failed, cancelled or timed-out runs become FAILED/EXPIRED records.

Built by `build_sensors(jobs, ...)` from the jobs they launch and watch (definitions.py), so no
setting is read when this module is imported.
"""

import contextlib
import json
from datetime import timedelta

from dagster import (
    AddDynamicPartitionsRequest,
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    DeleteDynamicPartitionsRequest,
    JobDefinition,
    RunFailureSensorContext,
    RunRequest,
    RunStatusSensorContext,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    run_failure_sensor,
    run_status_sensor,
    sensor,
)

from export_pipelines.domain.records import TRIGGERED, ExportStore, IllegalTransition, utcnow
from export_pipelines.jobs import (
    CAMPAIGN_TAG,
    EXPORT_ID_TAG,
    REQUEST_ID_TAG,
    job_name,
    partitions_name,
)
from export_pipelines.resources import ExportFilesResource, MongoResource
from export_pipelines.run_outcomes import MAX_RUNTIME_TAG, record_ended_run, record_run_outcome, run_end_message

RECONCILE_SECONDS = 15
GRACE = timedelta(seconds=60)  # let the run status sensors act first
# Partitions (one per export) of exports that ended this long ago are dropped, keeping the
# partition count far below Dagster's ~100k guidance; their records and files stay.
PARTITION_RETENTION = timedelta(days=30)
PENDING_BATCH = 200


def launch_pending(
    context: SensorEvaluationContext, store: ExportStore, job_names: set[str]
) -> SensorResult | SkipReason:
    """One run per PENDING export, oldest first; the run queue runs them one at a time.

    The cursor holds the ids already requested that are still PENDING (queued runs), so a
    tick only asks for new ones; `run_key` = export id makes a repeated request a no-op.
    """
    pending = store.pending(limit=PENDING_BATCH)
    already = set(json.loads(context.cursor)) if context.cursor else set()
    new = [r for r in pending if r["_id"] not in already]
    if not new:
        return SkipReason(f"{len(pending)} PENDING export(s), all already launched")
    run_requests: list[RunRequest] = []
    partitions: dict[str, list[str]] = {}
    for record in new:
        export_id, export_type = record["_id"], record["exportType"]
        if job_name(export_type) not in job_names:
            with contextlib.suppress(IllegalTransition):
                store.mark_failed(export_id, message=f"Invalid export type: '{str(export_type)[:100]}'.")
            continue
        partitions.setdefault(partitions_name(export_type), []).append(export_id)
        tags = {CAMPAIGN_TAG: str(record["campaignId"])}
        if record.get("requestId"):
            tags[REQUEST_ID_TAG] = str(record["requestId"])
        run_requests.append(
            RunRequest(run_key=export_id, job_name=job_name(export_type), partition_key=export_id, tags=tags)
        )
    launched = {r["_id"] for r in pending} & (already | {r.run_key for r in run_requests})
    return SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[AddDynamicPartitionsRequest(name, keys) for name, keys in partitions.items()],
        cursor=json.dumps(sorted(launched)),
    )


def _terminate(instance: DagsterInstance, run_id: str) -> bool:
    """Ask the run launcher to stop the run; a launcher that cannot (or fails to) answers False."""
    try:
        return bool(instance.run_launcher.terminate(run_id))
    except Exception:  # noqa: BLE001 - e.g. a launcher without termination, or its API unreachable
        return False


def reconcile(
    instance: DagsterInstance, store: ExportStore, timeout: timedelta, export_types: list[str]
) -> SensorResult | SkipReason:
    """Records still TRIGGERED whose run vanished, ended, or overran; and partitions of long-ended exports."""
    now = utcnow()
    fixed: list[str] = []
    for record in store.with_status(TRIGGERED):
        export_id, run_id = str(record["_id"]), str(record.get("runId") or "")
        run = instance.get_run_by_id(run_id) if run_id else None
        since = now - record["date"]["triggered"]
        if since < GRACE:
            continue
        if run is None:
            record_run_outcome(
                store, export_id, run_id or None, f"its Dagster run {run_id or '(none)'} no longer exists", {}
            )
        elif run.is_finished:
            record_ended_run(instance, store, export_id, run)
        elif since > timeout + GRACE:
            message = f"Exceeded maximum runtime of {timeout.total_seconds():.0f} seconds (TIMEOUT_MILLIS)"
            instance.report_run_canceling(run, message=message)
            if not _terminate(instance, run.run_id):
                instance.report_run_failed(run, message)
            record_run_outcome(store, export_id, run.run_id, message, {MAX_RUNTIME_TAG: str(timeout.total_seconds())})
        else:
            continue
        fixed.append(export_id)

    ended_long_ago = store.ended_before(now - PARTITION_RETENTION)
    deletions = []
    for export_type in export_types:
        name = partitions_name(export_type)
        stale = sorted(set(instance.get_dynamic_partitions(name)) & ended_long_ago)
        if stale:
            deletions.append(DeleteDynamicPartitionsRequest(name, stale))
    dropped = sum(len(d.partition_keys) for d in deletions)
    if not fixed and not deletions:
        return SkipReason(f"nothing to reconcile: {dropped} old partition(s)")
    return SensorResult(dynamic_partitions_requests=deletions)


def build_sensors(jobs: dict[str, JobDefinition], poll_seconds: int) -> list[SensorDefinition]:
    """The four sensors of the export jobs: launch PENDING exports, and three ways of ending them."""
    monitored = list(jobs.values())
    names = {job.name for job in monitored}
    export_types = list(jobs)

    @sensor(minimum_interval_seconds=poll_seconds, jobs=monitored, default_status=DefaultSensorStatus.RUNNING)
    def pending_exports_sensor(context: SensorEvaluationContext, mongo: MongoResource) -> SensorResult | SkipReason:
        """Launch one run per PENDING export, oldest first; the run queue runs them one at a time."""
        return launch_pending(context, mongo.store(), names)

    @run_failure_sensor(
        monitored_jobs=monitored, default_status=DefaultSensorStatus.RUNNING, minimum_interval_seconds=1
    )
    def export_run_failure_sensor(context: RunFailureSensorContext, mongo: MongoResource) -> None:
        """A failed run ends its record FAILED, or EXPIRED when Dagster stopped it for its max runtime."""
        export_id = context.dagster_run.tags.get(EXPORT_ID_TAG)
        if export_id:
            message = context.failure_event.message or ""
            record_run_outcome(mongo.store(), export_id, context.dagster_run.run_id, message, context.dagster_run.tags)

    @run_status_sensor(
        run_status=DagsterRunStatus.CANCELED,
        monitored_jobs=monitored,
        default_status=DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=1,
    )
    def export_run_canceled_sensor(context: RunStatusSensorContext, mongo: MongoResource) -> None:
        """run_failure_sensor does not fire on cancellation: a cancelled run ends its record FAILED."""
        export_id = context.dagster_run.tags.get(EXPORT_ID_TAG)
        if export_id:
            message = run_end_message(context.instance, context.dagster_run.run_id) or ""
            record_run_outcome(mongo.store(), export_id, context.dagster_run.run_id, message, context.dagster_run.tags)

    @sensor(minimum_interval_seconds=RECONCILE_SECONDS, default_status=DefaultSensorStatus.RUNNING)
    def stale_exports_sensor(
        context: SensorEvaluationContext, mongo: MongoResource, files: ExportFilesResource
    ) -> SensorResult | SkipReason:
        """Reconcile records with their runs so none stays TRIGGERED forever, and bound the partitions.

        Catches what the run status sensors cannot: a run that vanished, a run that ended while
        the daemon was down, a run still going long after TIMEOUT_MILLIS (e.g. monitoring was
        off). Also drops the dynamic partitions of exports that ended long ago.
        """
        timeout = timedelta(milliseconds=files.timeout_millis)
        return reconcile(context.instance, mongo.store(), timeout, export_types)

    return [pending_exports_sensor, export_run_failure_sensor, export_run_canceled_sensor, stale_exports_sensor]
