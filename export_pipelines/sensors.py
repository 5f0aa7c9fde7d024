"""Sensors: PENDING records become runs; failed, cancelled or timed-out runs become FAILED/EXPIRED records.

Built by `build_sensors(jobs, ...)` from the jobs they launch and watch (definitions.py), so no
setting is read when this module is imported.
"""

import json
import time
from datetime import timedelta

from dagster import (
    AddDynamicPartitionsRequest,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    DefaultRunLauncher,
    DefaultSensorStatus,
    DeleteDynamicPartitionsRequest,
    JobDefinition,
    RunFailureSensorContext,
    RunRequest,
    RunsFilter,
    RunStatusSensorContext,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    run_failure_sensor,
    run_status_sensor,
    sensor,
)

from export_core.records import TRIGGERED, ExportStore, utcnow
from export_pipelines import end_states
from export_pipelines.end_states import (
    MAX_RUNTIME_TAG,
    end_run_of_lost_worker,
    record_ended_run,
    record_run_outcome,
    run_end_message,
)
from export_pipelines.jobs import (
    CAMPAIGN_TAG,
    EXPORT_ID_TAG,
    REQUEST_ID_TAG,
    SCHEDULE_ID_TAG,
    job_name,
    partitions_name,
)
from export_pipelines.resources import ExportFilesResource, MongoResource
from export_pipelines.workers import RunWorker

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
            end_states.failed(store, export_id, f"Invalid export type: '{str(export_type)[:100]}'.")
            continue
        partitions.setdefault(partitions_name(export_type), []).append(export_id)
        tags = {CAMPAIGN_TAG: str(record["campaignId"])}
        if record.get("requestId"):
            tags[REQUEST_ID_TAG] = str(record["requestId"])
        if record.get("schedule"):
            tags[SCHEDULE_ID_TAG] = str(record["schedule"]["id"])
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


def _never_began(store: ExportStore, run: DagsterRun, started: float | None) -> bool:
    """`run` started more than GRACE ago and never said who its worker is, nor took its record.

    A live worker tags its run within moments of the run's start (before it touches the
    record), so this is a worker that died in between. A run of an older version, which never
    tags, has taken its record (TRIGGERED by it) and is left alone.
    """
    if started is None or time.time() - started < GRACE.total_seconds():
        return False
    record = store.get(str(run.tags.get(EXPORT_ID_TAG) or ""))
    return not (record and record["status"] == TRIGGERED and record.get("runId") == run.run_id)


def end_runs_of_lost_workers(instance: DagsterInstance, store: ExportStore, job_names: set[str]) -> list[str]:
    """End the runs Dagster shows STARTED or CANCELING whose worker process is gone; returns their export ids.

    Dagster's DefaultRunLauncher (the local stack) has no worker health check, so run monitoring
    never ends a run whose worker died with the machine or with the daemon; its record would stay
    TRIGGERED and the queue blocked until TIMEOUT_MILLIS. A worker that tagged its run (workers.py)
    and ran on this machine is checked by its pid and start: gone, the run ends at once (no
    GRACE). A run with no worker tag a minute after it started, under DefaultRunLauncher, had its
    worker die before the export began. Workers on other machines are left to Dagster's run
    monitoring (K8sRunLauncher and EcsRunLauncher check their workers' health).
    """
    local_launcher = isinstance(instance.run_launcher, DefaultRunLauncher)
    in_progress = RunsFilter(statuses=[DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING])
    ended: list[str] = []
    for run_record in instance.get_run_records(filters=in_progress):
        run = run_record.dagster_run
        if run.job_name not in job_names:
            continue
        worker = RunWorker.of(run)
        if worker is not None and worker.on_this_machine() and worker.is_gone():
            reason = (
                f"The run's worker (pid {worker.pid} on {worker.host}) no longer exists: it ended without "
                "reporting the run's end (a crash, kill -9 or power loss). Ended by stale_exports_sensor; "
                "re-execute from failure to resume the export."
            )
        elif worker is None and local_launcher and _never_began(store, run, run_record.start_time):
            reason = (
                f"The run's worker never began the export within {GRACE.total_seconds():.0f} s of the run's "
                "start: it died before (a crash, kill -9 or power loss). Ended by stale_exports_sensor; "
                "re-execute from failure to resume the export."
            )
        else:
            continue
        export_id = run.tags.get(EXPORT_ID_TAG)
        if end_run_of_lost_worker(instance, store, export_id, run, reason):
            ended.append(str(export_id))
    return ended


def reconcile(
    instance: DagsterInstance, store: ExportStore, timeout: timedelta, export_types: list[str]
) -> SensorResult | SkipReason:
    """Runs whose worker is gone; records still TRIGGERED whose run vanished, ended, or overran; and
    partitions of long-ended exports."""
    now = utcnow()
    fixed = end_runs_of_lost_workers(instance, store, {job_name(t) for t in export_types})
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
        elif run.status == DagsterRunStatus.QUEUED:
            continue  # a re-run accepted by the API waits its turn; its runtime counts from its start
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

        Catches what the run status sensors cannot: a run whose worker on this machine died
        without a word (the whole stack killed, then started again), a run that vanished, a run
        that ended while the daemon was down, a run still going long after TIMEOUT_MILLIS (e.g.
        monitoring was off). Also drops the dynamic partitions of exports that ended long ago.
        """
        timeout = timedelta(milliseconds=files.timeout_millis)
        return reconcile(context.instance, mongo.store(), timeout, export_types)

    return [pending_exports_sensor, export_run_failure_sensor, export_run_canceled_sensor, stale_exports_sensor]
