"""What a record becomes when its Dagster run ended without finishing it: EXPIRED or FAILED.

Used by the run status sensors, the reconcile sensor and by each run as it starts (which closes
the records of runs that ended before it, so no record stays TRIGGERED beside the next one while
a sensor has yet to tick).
"""

import contextlib
from collections.abc import Mapping

from dagster import DagsterEventType, DagsterInstance, DagsterRun

from export_pipelines.domain.failures import RUN_FAILED, expired_message
from export_pipelines.domain.records import TRIGGERED, ExportStore, IllegalTransition

# Dagster's run monitoring stops a run after this many seconds (TIMEOUT_MILLIS); being a job
# tag, it applies to sensor runs, re-executions and backfills alike.
MAX_RUNTIME_TAG = "dagster/max_runtime"


def record_run_outcome(
    store: ExportStore, export_id: str, run_id: str | None, dagster_message: str, run_tags: Mapping[str, str]
) -> None:
    """Run `run_id` ended without finishing its export: EXPIRED when stopped for its runtime, else FAILED.

    The record gets a plain sentence (SPEC §4); Dagster's own message stays on the run. Only
    the record's own run decides: a re-execution that has taken the record over is left alone.
    """
    with contextlib.suppress(IllegalTransition):  # already recorded (failure hook, other sensor), or a later run's
        if "maximum runtime" in dagster_message:
            seconds = float(run_tags.get(MAX_RUNTIME_TAG) or 0)
            with contextlib.suppress(IllegalTransition):  # a record never TRIGGERED cannot expire: FAILED
                store.mark_expired(export_id, message=expired_message(seconds), run_id=run_id)
                return
        store.mark_failed(export_id, message=RUN_FAILED, payload="", run_id=run_id)


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
