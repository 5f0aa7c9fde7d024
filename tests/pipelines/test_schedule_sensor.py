"""The schedule sensor (SPEC §12) against the test's database: ticks queue exactly one record each."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from dagster import DagsterInstance, SkipReason, build_sensor_context
from pymongo.database import Database

from export_core.records import PENDING, ExportStore
from export_core.schedule_store import PAUSED_EVENT, ScheduleStore
from export_core.schedules import parse_schedule
from export_core.settings import Settings
from export_pipelines.jobs import SCHEDULE_ID_TAG
from export_pipelines.schedule_ticks import build_schedule_sensor, evaluate_schedules
from export_pipelines.sensors import build_sensors
from tests.pipelines.helpers import export_jobs, export_resources

CAMPAIGN = "c-sched"
T0 = datetime(2026, 11, 1, 12, 0, 30, tzinfo=UTC)  # half a minute past a whole minute


@pytest.fixture
def schedules(db: Database) -> ScheduleStore:
    db["campaigns"].insert_one({"_id": CAMPAIGN, "name": "Scheduled"})
    store = ScheduleStore(db)
    store.ensure_indexes()
    store.exports.ensure_indexes()
    return store


def add(store: ScheduleStore, cron: str = "* * * * *", at: datetime = T0, **fields: Any) -> dict[str, Any]:
    """A schedule created at `at` (as if the API had made it then)."""
    request = parse_schedule({"exportType": "entries", "cron": cron, **fields}, min_interval_minutes=1)
    doc = store.create(campaign_id=CAMPAIGN, request=request, created_by="u1", limit=20)
    store.schedules.update_one({"_id": doc["_id"]}, {"$set": {"createdAt": at, "evaluatedUntil": at}})
    return store.schedules.find_one({"_id": doc["_id"]}) or {}


def records(db: Database, schedule: dict[str, Any]) -> list[dict[str, Any]]:
    return list(db["exports"].find({"schedule.id": schedule["id"]}).sort("schedule.scheduledFor", 1))


def test_a_due_tick_queues_one_record_and_a_new_schedule_nothing_from_before_it(db: Database, schedules: ScheduleStore):
    schedule = add(schedules)
    report, looked_at = evaluate_schedules(db, pause_after=5, now=T0 + timedelta(seconds=20))
    assert looked_at == 1 and not report.queued, "12:00 was before the schedule existed"
    evaluate_schedules(db, pause_after=5, now=T0 + timedelta(seconds=35))  # 12:01:05
    (record,) = records(db, schedule)
    assert record["schedule"] == {"id": schedule["id"], "scheduledFor": datetime(2026, 11, 1, 12, 1, tzinfo=UTC)}
    assert record["status"] == PENDING and "active" not in record, "a tick takes no dedupe slot"
    assert (record["exportType"], record["campaignName"], record["requesterUserId"]) == ("entries", "Scheduled", "u1")
    again, _ = evaluate_schedules(db, pause_after=5, now=T0 + timedelta(seconds=50))
    assert not again.queued and len(records(db, schedule)) == 1


def test_an_evaluation_repeated_after_a_crash_queues_nothing_twice(db: Database, schedules: ScheduleStore):
    schedule = add(schedules)
    now = T0 + timedelta(seconds=40)
    evaluate_schedules(db, pause_after=5, now=now)
    # A crash between the insert and moving `evaluatedUntil` on: the next evaluation sees the same tick.
    schedules.schedules.update_one({"_id": schedule["_id"]}, {"$set": {"evaluatedUntil": T0}})
    report, _ = evaluate_schedules(db, pause_after=5, now=now)
    assert [line.endswith("already queued") for line in report.queued] == [True]
    assert len(records(db, schedule)) == 1
    # Two sensors racing on the same tick: the unique index refuses the second record.
    result = schedules.queue_run(schedule, datetime(2026, 11, 1, 12, 1, tzinfo=UTC), campaign_name="Scheduled")
    assert not result.created and len(records(db, schedule)) == 1


def test_two_overlapping_evaluations_queue_each_tick_once(db: Database, schedules: ScheduleStore):
    """Two sensor evaluations at once (a daemon and a second one, or a slow tick overlapping the next)."""
    every_minute = [add(schedules) for _ in range(4)]
    every_five = [add(schedules, cron="*/5 * * * *") for _ in range(2)]
    start = threading.Barrier(2)
    rounds = [(T0 + timedelta(seconds=40), every_minute), (T0 + timedelta(minutes=11), every_minute + every_five)]
    for now, due in rounds:

        def evaluate(at: datetime = now) -> list[str]:
            start.wait()
            report, _ = evaluate_schedules(db, pause_after=5, now=at)
            assert not report.errors
            return report.queued

        with ThreadPoolExecutor(2) as pool:
            reports = list(pool.map(lambda _: evaluate(), range(2)))
        created = [line for queued in reports for line in queued if not line.endswith("already queued")]
        assert len(created) == len(due), "each due tick created by one of the two"
    for schedule in every_minute:
        ticks = [r["schedule"]["scheduledFor"] for r in records(db, schedule)]
        assert ticks == [datetime(2026, 11, 1, 12, 1, tzinfo=UTC), datetime(2026, 11, 1, 12, 11, tzinfo=UTC)]
        assert [r["outcome"] for r in schedules.runs(schedule["id"])] == ["queued", *["missed"] * 9, "queued"]
    for schedule in every_five:
        ticks = [r["schedule"]["scheduledFor"] for r in records(db, schedule)]
        assert ticks == [datetime(2026, 11, 1, 12, 10, tzinfo=UTC)]
        assert [r["outcome"] for r in schedules.runs(schedule["id"])] == ["queued", "missed"]


def test_ticks_missed_while_down_give_one_catch_up_run_and_are_listed_missed(db: Database, schedules: ScheduleStore):
    schedule = add(schedules, cron="*/5 * * * *")
    down_until = T0 + timedelta(minutes=17)  # 12:05, 12:10 and 12:15 passed while nothing ran
    report, _ = evaluate_schedules(db, pause_after=5, now=down_until)
    assert report.missed == 2
    (record,) = records(db, schedule)
    assert record["schedule"]["scheduledFor"] == datetime(2026, 11, 1, 12, 15, tzinfo=UTC)
    evaluate_schedules(db, pause_after=5, now=down_until)
    schedules.record_missed(schedule, [datetime(2026, 11, 1, 12, 5, tzinfo=UTC)])  # again: changes nothing
    runs = schedules.runs(schedule["id"])
    assert [(r["scheduledFor"], r["outcome"]) for r in runs] == [
        ("2026-11-01T12:15:00.000Z", "queued"),
        ("2026-11-01T12:10:00.000Z", "missed"),
        ("2026-11-01T12:05:00.000Z", "missed"),
    ]
    assert runs[0]["exportId"] == record["id"] and runs[1]["exportId"] is None


def test_hand_made_requests_and_ticks_are_never_merged(db: Database, schedules: ScheduleStore):
    exports = ExportStore(db)
    by_hand = exports.create(campaign_id=CAMPAIGN, campaign_name="x", export_type="entries", requester_user_id="u")
    schedule = add(schedules)
    evaluate_schedules(db, pause_after=5, now=T0 + timedelta(seconds=40))
    (tick,) = records(db, schedule)
    assert tick["_id"] != by_hand.record["_id"]
    again = exports.create(
        campaign_id=CAMPAIGN, campaign_name="x", export_type="entries", requester_user_id="u", max_pending=20
    )
    assert not again.created and again.record["_id"] == by_hand.record["_id"], "hand-made duplicates still merge"
    # The tick runs and fails, then is re-run: it never takes the hand-made request's slot.
    exports.mark_failed(by_hand.record["_id"], message="x")
    exports.mark_triggered(tick["_id"], run_id="r1", preliminary_count=None)
    exports.mark_failed(tick["_id"], message="boom")
    claimed = exports.claim_rerun(tick["_id"], campaign_id=CAMPAIGN, requested_by="u")
    assert claimed is not None and "active" not in (exports.get(tick["_id"]) or {})
    fresh = exports.create(
        campaign_id=CAMPAIGN, campaign_name="x", export_type="entries", requester_user_id="u", max_pending=20
    )
    assert fresh.created and fresh.record["_id"] not in (tick["_id"], by_hand.record["_id"])


def test_a_manual_run_is_a_run_of_its_own_even_at_a_ticks_instant(db: Database, schedules: ScheduleStore):
    schedule = add(schedules)
    at = datetime(2026, 11, 1, 12, 1, tzinfo=UTC)
    tick = schedules.queue_run(schedule, at, campaign_name="Scheduled")
    manual = schedules.queue_run(schedule, at, campaign_name="Scheduled", manual=True)
    assert tick.created and manual.created and manual.record["schedule"]["manual"] is True
    runs = schedules.runs(schedule["id"])
    assert sorted(r.get("manual", False) for r in runs) == [False, True]
    assert {r["exportId"] for r in runs} == {tick.record["id"], manual.record["id"]}


def test_runs_failing_in_a_row_pause_the_schedule_once_with_a_reason_and_an_event(
    db: Database, schedules: ScheduleStore
):
    exports = ExportStore(db)
    schedule = add(schedules)
    for minute in range(1, 4):
        record = schedules.queue_run(schedule, T0.replace(minute=minute, second=0), campaign_name="S").record
        exports.mark_failed(record["_id"], message="boom")
    report, _ = evaluate_schedules(db, pause_after=4, now=T0 + timedelta(seconds=10))
    assert not report.paused, "three failures are not four"
    ok = schedules.queue_run(schedule, T0.replace(minute=4, second=0), campaign_name="S").record
    exports.mark_triggered(ok["_id"], run_id="r", preliminary_count=None)
    exports.mark_finished(ok["_id"], key="k", count=1, meta={})
    for minute in range(5, 9):
        record = schedules.queue_run(schedule, T0.replace(minute=minute, second=0), campaign_name="S").record
        exports.mark_failed(record["_id"], message="boom")
    report, _ = evaluate_schedules(db, pause_after=4, now=T0 + timedelta(seconds=10))
    assert len(report.paused) == 1
    paused = schedules.schedules.find_one({"_id": schedule["_id"]}) or {}
    assert paused["paused"] is True and "4 failed or expired runs in a row" in paused["pausedReason"]
    assert [entry["event"] for entry in paused["notify"]] == [PAUSED_EVENT]
    report, looked_at = evaluate_schedules(db, pause_after=4, now=T0 + timedelta(minutes=30))
    assert looked_at == 0 and not report.queued, "a paused schedule does not tick"
    # Resumed: the old failures no longer count, and the paused time's ticks never fire.
    resumed = schedules.update(CAMPAIGN, schedule["id"], {"paused": False}) or {}
    assert resumed["pausedReason"] is None and resumed["evaluatedUntil"] > T0 + timedelta(minutes=30)
    assert schedules.failure_streak(resumed, 4) == []


def test_the_sensor_queues_and_its_run_is_tagged_with_the_schedule(db: Database, schedules: ScheduleStore):
    settings = Settings.from_env()
    schedule = add(schedules, at=datetime.now(UTC) - timedelta(minutes=2, seconds=1))
    sensor = build_schedule_sensor(pause_after=5)
    resources = export_resources(settings)
    instance = DagsterInstance.ephemeral()
    with build_sensor_context(instance=instance, resources={"mongo": resources["mongo"]}) as context:
        result = sensor(context)
    assert isinstance(result, SkipReason) and "1 run(s) queued" in str(result.skip_message)
    assert "1 missed tick(s)" in str(result.skip_message)
    (record,) = records(db, schedule)
    pending = {s.name: s for s in build_sensors(export_jobs(), poll_seconds=1)}["pending_exports_sensor"]
    with build_sensor_context(instance=instance, resources={"mongo": resources["mongo"]}) as context:
        launched = pending(context)
    (request,) = launched.run_requests
    assert request.run_key == record["_id"] and request.tags[SCHEDULE_ID_TAG] == schedule["id"]
