"""The one writer of an export's end states (FINISHED, FAILED, EXPIRED) and the one remover of scratch.

Whoever finds that an export ended calls this module: the finish op (FINISHED), the failure hook
and the API-less launch of an invalid type (FAILED), the run status sensors, the reconcile sensor,
the dead-worker check and each run as it starts (`close_ended_runs`: the records of runs that
ended before it, so no record stays TRIGGERED beside the next one while a sensor has yet to tick).
Scratch goes here too: an export's staging when it is FINISHED (a failed run keeps it, so a
re-execution from failure resumes), a run's own scratch when the run ends, success or not (SPEC §5).
"""

import contextlib
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dagster import DagsterEventType, DagsterInstance, DagsterRun, DagsterRunStatus

from export_core.failures import RUN_FAILED, WORKER_LOST, expired_message
from export_core.plan import ExportPlan, run_scratch_dir
from export_core.records import FINISHED, TRIGGERED, ExportStore, IllegalTransition

# Dagster's run monitoring stops a run after this many seconds (TIMEOUT_MILLIS); being a job
# tag, it applies to sensor runs, re-executions and backfills alike.
MAX_RUNTIME_TAG = "dagster/max_runtime"


# -- the end states ---------------------------------------------------------------------------


def finished(store: ExportStore, plan: ExportPlan, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The export's files are uploaded: drop its staging first (once FINISHED, the queue starts the
    next export), then mark it FINISHED with `fields` (key, count, meta)."""
    if plan.scratch == "export":
        shutil.rmtree(plan.work_dir, ignore_errors=True)
    try:
        return store.mark_finished(plan.export_id, **fields)
    except IllegalTransition:
        # A retry of the finish step whose first attempt got this far: the same files, FINISHED already.
        record = store.get(plan.export_id)
        if record is not None and record["status"] == FINISHED and record.get("key") == fields.get("key"):
            return record
        raise


def failed(store: ExportStore, export_id: str, message: str, *, payload: str = "", run_id: str | None = None) -> bool:
    """Mark the export FAILED with a plain sentence; False when it had already ended (or a later run owns it)."""
    with contextlib.suppress(IllegalTransition):
        store.mark_failed(export_id, message=message, payload=payload, run_id=run_id)
        return True
    return False


def record_run_outcome(
    store: ExportStore, export_id: str, run_id: str | None, dagster_message: str, run_tags: Mapping[str, str]
) -> None:
    """Run `run_id` ended without finishing its export: EXPIRED when stopped for its runtime, else FAILED.

    The record gets a plain sentence (SPEC §4); Dagster's own message stays on the run. Only
    the record's own run decides: a re-execution that has taken the record over is left alone.
    """
    if "maximum runtime" in dagster_message:
        seconds = float(run_tags.get(MAX_RUNTIME_TAG) or 0)
        with contextlib.suppress(IllegalTransition):  # a record never TRIGGERED cannot expire: FAILED
            store.mark_expired(export_id, message=expired_message(seconds), run_id=run_id)
            return
    failed(store, export_id, RUN_FAILED, run_id=run_id)  # or already recorded (failure hook, other sensor)


def run_end_message(instance: DagsterInstance, run_id: str) -> str | None:
    """Why a run ended: its maximum runtime if that stopped it, else its last failure or cancel message.

    A run stopped for its runtime ends FAILED or CANCELED depending on how the worker died, and
    its worker may add its own RUN_FAILURE ("Steps failed") after monitoring's: the reason wins.
    """
    messages: list[str] = []
    for event_type in (DagsterEventType.RUN_CANCELING, DagsterEventType.RUN_FAILURE):
        messages += [str(event.message) for event in instance.all_logs(run_id, of_type=event_type) if event.message]
    return next((m for m in messages if "maximum runtime" in m), messages[-1] if messages else None)


def close_ended_runs(instance: DagsterInstance, store: ExportStore, *, starting: str) -> list[str]:
    """Record the outcome of every other TRIGGERED export whose run has ended; returns their ids.

    A run stopped for its runtime ends in Dagster's eyes at once, and the queue may start the
    next run before the failure sensor's tick: the next run closes the record first.
    """
    closed = []
    for record in store.with_status(TRIGGERED):
        export_id, run_id = str(record["_id"]), str(record.get("runId") or "")
        run = instance.get_run_by_id(run_id) if run_id and export_id != starting else None
        if run is not None and run.is_finished:
            record_ended_run(instance, store, export_id, run)
            closed.append(export_id)
    return closed


def record_ended_run(instance: DagsterInstance, store: ExportStore, export_id: str, run: DagsterRun) -> None:
    """`run` ended (failed, cancelled, or succeeded) with its export still TRIGGERED: record why."""
    record_run_outcome(store, export_id, run.run_id, run_end_message(instance, run.run_id) or "", run.tags)


def end_run_of_lost_worker(
    instance: DagsterInstance, store: ExportStore, export_id: str | None, run: DagsterRun, reason: str
) -> bool:
    """`run`'s worker no longer exists (`reason`, for the Dagster UI): end the run and its export.

    A STARTED run: the record goes FAILED with a plain sentence first, then the run FAILURE in
    Dagster, so the failure sensor and the next run (`close_ended_runs`), which react to the
    run's end, find the record decided and leave it. A CANCELING run ends CANCELED and its
    record as any cancelled run's (EXPIRED when stopped for its runtime). Nothing happens to a
    run no longer in progress: a worker that reported its run's end before exiting is not lost.
    Returns whether the run was ended.
    """
    current = instance.get_run_by_id(run.run_id)
    if current is None or current.status not in (DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING):
        return False
    if current.status == DagsterRunStatus.CANCELING:
        instance.report_run_canceled(current, reason)
        if export_id:
            record_ended_run(instance, store, export_id, current)
        return True
    if export_id:  # already ended (e.g. FINISHED just before the worker died): left as it is
        failed(store, export_id, WORKER_LOST, run_id=current.run_id)
    instance.report_run_failed(current, reason)
    return True


# -- scratch ------------------------------------------------------------------------------------


def end_run_scratch(data_dir: Path, run_id: str) -> None:
    """The run ended (success or not): its own scratch directory goes (SPEC §5)."""
    shutil.rmtree(run_scratch_dir(data_dir, run_id), ignore_errors=True)


def sweep_killed_run_scratch(data_dir: Path, timeout_millis: int) -> None:
    """Remove run scratch left by runs killed outright (no teardown ran); none that old can be alive."""
    cutoff = time.time() - 2 * timeout_millis / 1000
    for stale in (data_dir / "tmp").glob("*"):
        with contextlib.suppress(OSError):
            if stale.stat().st_mtime < cutoff:
                shutil.rmtree(stale, ignore_errors=True)
