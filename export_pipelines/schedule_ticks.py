"""Schedule ticks (SPEC §12): one sensor evaluates every schedule and queues one export record per due tick.

Schedules are user data, so they are not Dagster ScheduleDefinitions: `schedule_ticks_sensor` reads
them from MongoDB every TICK_SECONDS. For each unpaused schedule, in order:

1. SCHEDULE_PAUSE_AFTER_FAILURES failed or expired runs in a row (since it was created or resumed)
   pause it, with `pausedReason` and a `schedule.paused` webhook event (ScheduleStore).
2. The ticks due since `evaluatedUntil` (its last handled tick, or its creation): the latest is
   queued through the ordinary queue (ExportStore.create with `schedule: {id, scheduledFor}`; the
   pending-exports sensor launches it, tagged `export-service/schedule-id`); any before it were
   missed while the stack was down and are recorded as `missed`.
3. `evaluatedUntil` moves to that tick.

Exactly once: a crash between 2 and 3 evaluates the same ticks again, and the unique index of one
record per tick (export_core/records.py) turns the second insert into "already queued". Stopping the
sensor (Dagster UI, or `dagster sensor stop schedule_ticks_sensor`) pauses every schedule at once;
started again, it queues one catch-up run per schedule and records the rest as missed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from dagster import DefaultSensorStatus, SensorDefinition, SensorEvaluationContext, SkipReason, sensor
from pymongo.database import Database

from export_core.records import utcnow
from export_core.schedule_store import ScheduleStore
from export_core.schedules import runs_between
from export_pipelines.resources import MongoResource

TICK_SECONDS = 15

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass
class TickReport:
    queued: list[str] = field(default_factory=list)  # "schedule at time → export"
    missed: int = 0
    paused: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def summary(self, schedules: int) -> str:
        parts = [f"{schedules} unpaused schedule(s)", f"{len(self.queued)} run(s) queued"]
        if self.missed:
            parts.append(f"{self.missed} missed tick(s) recorded")
        if self.paused:
            parts.append(f"{len(self.paused)} schedule(s) paused after failures")
        if self.errors:
            parts.append(f"{len(self.errors)} schedule(s) not evaluated (see the log)")
        return ", ".join(parts) + "".join(f"; {line}" for line in self.queued + self.paused)


_indexed: set[tuple[str, str]] = set()


def evaluate_schedules(
    db: Database, *, pause_after: int, now: datetime | None = None, log: Log = _quiet
) -> tuple[TickReport, int]:
    """One evaluation of every unpaused schedule; returns what it did and how many schedules it looked at."""
    key = (repr(db.client.address), db.name)
    if key not in _indexed:  # once per process and database: the one-record-per-tick index above all
        store = ScheduleStore(db)
        store.ensure_indexes()
        store.exports.ensure_indexes()
        _indexed.add(key)
    store = ScheduleStore(db)
    now = now or utcnow()
    report = TickReport()
    schedules = store.unpaused()
    for schedule in schedules:
        try:
            _evaluate(db, store, schedule, now, pause_after, report)
        except Exception as exc:  # noqa: BLE001 - one broken schedule must not stop the others
            report.errors.append(str(schedule["_id"]))
            log(f"schedule {schedule['_id']} not evaluated: {type(exc).__name__}")
    for line in report.queued + report.paused:
        log(line)
    return report, len(schedules)


def _evaluate(
    db: Database, store: ScheduleStore, schedule: dict[str, Any], now: datetime, pause_after: int, report: TickReport
) -> None:
    schedule_id = str(schedule["_id"])
    failed = store.failure_streak(schedule, pause_after)
    if failed and store.pause_after_failures(schedule, failed) is not None:
        report.paused.append(f"schedule {schedule_id} paused after {len(failed)} failed or expired runs")
        return
    due = runs_between(str(schedule["cron"]), str(schedule["timezone"]), schedule["evaluatedUntil"], now)
    if not due:
        return
    *missed, latest = due
    store.record_missed(schedule, missed)
    report.missed += len(missed)
    campaign = db["campaigns"].find_one({"_id": schedule["campaignId"]}, {"name": 1}) or {}
    result = store.queue_run(schedule, latest, campaign_name=str(campaign.get("name") or ""))
    state = "queued" if result.created else "already queued"
    report.queued.append(f"schedule {schedule_id} at {latest.isoformat()}: export {result.record['id']} {state}")
    store.advance(schedule, latest)


def build_schedule_sensor(*, pause_after: int) -> SensorDefinition:
    """The sensor; `pause_after` is SCHEDULE_PAUSE_AFTER_FAILURES, read once when the code location loads."""

    @sensor(minimum_interval_seconds=TICK_SECONDS, default_status=DefaultSensorStatus.RUNNING)
    def schedule_ticks_sensor(context: SensorEvaluationContext, mongo: MongoResource) -> SkipReason:
        """Queue one export per due schedule tick (missed ones recorded), pause schedules that keep failing."""
        report, schedules = evaluate_schedules(mongo.db(), pause_after=pause_after, log=context.log.info)
        return SkipReason(report.summary(schedules))

    return schedule_ticks_sensor
