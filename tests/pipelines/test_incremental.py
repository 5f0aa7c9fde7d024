"""Incremental schedules (SPEC §12) through the real export jobs: every row in exactly one file.

The oracle: between runs, random inserts — late ones with an old `date.created`, several sharing the
timestamp of the newest row already sent, ordinary new ones — and a run that FAILED and one that
EXPIRED in the middle. At the end the union of the schedule's files equals a full export of the same
type, and no row key repeats.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError
from bson import ObjectId
from pymongo.database import Database

from devstack.seed import seed_campaign
from export_core import ccpa
from export_core.ccpa import CcpaDeletion
from export_core.delivered import DeliveredRows
from export_core.records import FAILED, FINISHED, ExportStore, RequestOptions
from export_core.schedule_store import ScheduleStore, outcome
from export_core.schedules import parse_schedule
from export_core.settings import Settings
from tests.pipelines.helpers import read_csv, request_export, run_export

CAMPAIGN = "c-incr"
# Per type: the collection a new row is written to, and the columns that say which row it is.
IDENTITY = {"entries": ("entries", ("userId", "marketId", "isAdditionalMarket")), "codes": ("codes", ("code",))}


@pytest.fixture
def seeded(db: Database) -> ScheduleStore:
    seed_campaign(db, campaign_id=CAMPAIGN, n_entries=300, seed=11, campaign_name="Incremental")
    store = ScheduleStore(db)
    store.ensure_indexes()
    store.exports.ensure_indexes()
    return store


def schedule(store: ScheduleStore, export_type: str, **fields: Any) -> dict[str, Any]:
    request = parse_schedule(
        {"exportType": export_type, "cron": "0 6 * * *", "incremental": True, **fields}, min_interval_minutes=1
    )
    return store.create(campaign_id=CAMPAIGN, request=request, created_by="tester", limit=20)


def run_tick(store: ScheduleStore, sched: dict[str, Any], tick: datetime) -> dict[str, Any]:
    record = store.queue_run(sched, tick, campaign_name="Incremental").record
    assert run_export(record).success
    done = store.exports.get(record["_id"])
    assert done is not None and done["status"] == FINISHED
    return done


def rows_of(s3: Any, settings: Settings, record: dict[str, Any]) -> list[dict[str, str]]:
    if record.get("key") is None:
        return []
    return read_csv(s3.get_object(Bucket=settings.exports_bucket, Key=record["key"])["Body"].read())


def insert_rows(db: Database, export_type: str, rng: random.Random, number: int) -> None:
    """`number` new rows copied from existing ones: late (old timestamp), tied with the newest, or new."""
    collection, _ = IDENTITY[export_type]
    docs = list(db[collection].find({"campaignId": CAMPAIGN}))
    time_field = "created" if collection == "entries" else "assigned"
    stamps = [d["date"][time_field] for d in docs if isinstance(d.get("date", {}).get(time_field), datetime)]
    newest = max(stamps)
    for _ in range(number):
        doc = dict(rng.choice(docs))
        kind = rng.choice(("late", "tied", "new"))
        at = {
            "late": newest - timedelta(days=rng.randint(30, 400)),
            "tied": newest,
            "new": newest + timedelta(seconds=rng.randint(1, 3600)),
        }[kind]
        doc["_id"] = ObjectId() if rng.random() < 0.5 else f"{CAMPAIGN}-late-{rng.getrandbits(48):012x}"
        doc["date"] = {**doc.get("date", {}), time_field: at}
        if collection == "codes":
            doc["code"] = f"NEW{rng.getrandbits(40):010x}"
        else:  # a fan without a user document: names from the entry's snapshot
            doc["userId"] = f"{CAMPAIGN}-late-user-{rng.getrandbits(48):012x}"
        db[collection].insert_one(doc)


def fail_next_run(db: Database, store: ScheduleStore, sched: dict[str, Any], tick: datetime) -> dict[str, Any]:
    """A tick whose run FAILED (its campaign document was gone for a moment)."""
    campaign = db["campaigns"].find_one_and_delete({"_id": CAMPAIGN})
    try:
        record = store.queue_run(sched, tick, campaign_name="Incremental").record
        run_export(record)
    finally:
        db["campaigns"].insert_one(campaign)
    failed = store.exports.get(record["_id"])
    assert failed is not None and failed["status"] == FAILED
    return failed


def expire_next_run(store: ScheduleStore, sched: dict[str, Any], tick: datetime) -> dict[str, Any]:
    """A tick whose run was stopped past its maximum runtime (EXPIRED) before it got anywhere."""
    record = store.queue_run(sched, tick, campaign_name="Incremental").record
    store.exports.mark_triggered(record["_id"], run_id="r-expired", preliminary_count=None)
    return store.exports.mark_expired(record["_id"], message="expired")


@pytest.mark.parametrize(("export_type", "seed"), [("entries", 1), ("entries", 2), ("codes", 3)])
def test_the_union_of_incremental_files_is_a_full_export_without_repeats(
    db: Database, s3: Any, settings: Settings, seeded: ScheduleStore, export_type: str, seed: int
):
    rng = random.Random(seed)
    extra = {"includeAllMarkets": True} if export_type == "entries" and seed == 2 else {}
    sched = schedule(seeded, export_type, **extra)
    tick = datetime(2027, 3, 13, 11, 0, tzinfo=UTC)
    files: list[list[dict[str, str]]] = []
    for step in range(6):
        tick += timedelta(days=1)
        if step == 2:
            insert_rows(db, export_type, rng, rng.randint(3, 8))
            fail_next_run(db, seeded, sched, tick)
            tick += timedelta(days=1)
        if step == 3:
            expire_next_run(seeded, sched, tick)
            insert_rows(db, export_type, rng, rng.randint(1, 5))
            tick += timedelta(days=1)
        if step > 0:
            insert_rows(db, export_type, rng, rng.randint(0, 12))
        done = run_tick(seeded, sched, tick)
        files.append(rows_of(s3, settings, done))
        assert done["count"] == len(files[-1])
        assert "incremental" in done["key"] if done["key"] else done["meta"]["skipped"] == "empty"

    full = run_export(request_export(db, CAMPAIGN, export_type, include_all_markets=extra.get("includeAllMarkets")))
    assert full.success
    full_record = next(iter(seeded.exports.collection.find({"schedule": {"$exists": False}})))
    expected = rows_of(s3, settings, full_record)
    _, identity = IDENTITY[export_type]
    sent = [tuple(row[c] for c in identity) for rows in files for row in rows]
    repeated = [key for key, n in Counter(sent).items() if n > 1]
    assert not repeated, f"rows sent twice: {repeated[:3]}"
    union = sorted(tuple(sorted(row.items())) for rows in files for row in rows)
    assert union == sorted(tuple(sorted(row.items())) for row in expected)
    assert len(files[0]) > 0 and sum(len(f) for f in files[1:]) > 0, "later runs sent the rows inserted"


def test_a_run_records_its_window_and_an_empty_run_is_skipped(
    db: Database, s3: Any, settings: Settings, seeded: ScheduleStore
):
    sched = schedule(seeded, "entries")
    first = run_tick(seeded, sched, datetime(2027, 3, 14, 10, 0, tzinfo=UTC))
    assert first["window"]["previouslyDelivered"] == 0 and first["window"]["newRows"] == first["count"] > 0
    assert first["key"].endswith(" - incremental 2027-03-14 1000Z.csv")
    assert DeliveredRows(db).keys([first["_id"]]) and first["count"] == 300

    empty = run_tick(seeded, sched, datetime(2027, 3, 15, 10, 0, tzinfo=UTC))
    assert empty["count"] == 0 and empty["key"] is None and empty["meta"]["skipped"] == "empty"
    assert empty["window"]["previouslyDelivered"] == 300 and empty["window"]["newKeysScanned"] == 0
    assert outcome(empty) == "skipped_empty"
    listed = s3.list_objects_v2(Bucket=settings.exports_bucket, Prefix=f"entries/{CAMPAIGN}/{empty['_id']}/")
    assert listed.get("KeyCount", 0) == 0, "an empty skipEmpty run uploads nothing"

    without_skip = schedule(seeded, "entries", skipEmpty=False)
    run_tick(seeded, without_skip, datetime(2027, 3, 14, 10, 0, tzinfo=UTC))
    header_only = run_tick(seeded, without_skip, datetime(2027, 3, 15, 10, 0, tzinfo=UTC))
    assert header_only["count"] == 0 and header_only["key"] and rows_of(s3, settings, header_only) == []

    assert seeded.delete(CAMPAIGN, sched["id"]) and not DeliveredRows(db).keys([first["_id"]])
    assert seeded.exports.get(first["_id"]) is not None, "its exports stay"


def test_since_sends_only_rows_created_after_it(db: Database, s3: Any, settings: Settings, seeded: ScheduleStore):
    stamps = sorted(d["date"]["created"] for d in db["entries"].find({"campaignId": CAMPAIGN}))
    since = stamps[len(stamps) // 2].replace(tzinfo=UTC)
    record = request_export(db, CAMPAIGN, "entries", options=RequestOptions(since=since))
    assert run_export(record).success
    done = ExportStore(db).get(record["_id"])
    assert done is not None and done["status"] == FINISHED
    expected = sum(1 for s in stamps if s.replace(tzinfo=UTC) > since)
    assert done["count"] == expected == len(rows_of(s3, settings, done)) > 0
    assert " - since " in done["key"] and done["window"]["since"] == since


def test_ccpa_finds_the_incremental_file_that_holds_the_user(
    db: Database, s3: Any, settings: Settings, seeded: ScheduleStore
):
    """SPEC §7: a fan whose entry arrived late is in the later incremental file only; CCPA deletes that one."""
    sched = schedule(seeded, "entries")
    first = run_tick(seeded, sched, datetime(2027, 3, 14, 10, 0, tzinfo=UTC))
    entry = dict(db["entries"].find_one({"campaignId": CAMPAIGN}) or {})
    late_fan = f"{CAMPAIGN}-late-fan"
    entry |= {"_id": ObjectId(), "userId": late_fan, "date": {"created": datetime(2020, 1, 1, tzinfo=UTC)}}
    db["entries"].insert_one(entry)
    second = run_tick(seeded, sched, datetime(2027, 3, 15, 10, 0, tzinfo=UTC))
    assert second["count"] == 1 and rows_of(s3, settings, second)[0]["userId"] == late_fan

    ccpa.ensure_indexes(db)
    summary = CcpaDeletion(db, s3, settings.buckets).delete_user(late_fan, requested_by="compliance")
    assert {e["id"] for e in summary["deleted"]["exports"]} == {second["_id"]}
    with pytest.raises(ClientError):
        s3.head_object(Bucket=settings.exports_bucket, Key=second["key"])
    assert s3.head_object(Bucket=settings.exports_bucket, Key=first["key"])  # the first file holds no such fan


def test_a_since_request_is_never_merged_with_a_whole_one(db: Database, seeded: ScheduleStore):
    whole = request_export(db, CAMPAIGN, "entries")
    since = datetime(2024, 1, 1, tzinfo=UTC)
    part = request_export(db, CAMPAIGN, "entries", options=RequestOptions(since=since))
    again = request_export(db, CAMPAIGN, "entries")
    assert part["_id"] != whole["_id"] and again["_id"] == whole["_id"]
    assert "active" not in part and part["since"] == since


def test_a_run_resumed_after_another_run_delivered_sends_none_of_its_rows(
    db: Database, s3: Any, settings: Settings, seeded: ScheduleStore
):
    """A re-execution from failure after its extract (the transform step failed) may follow a later
    tick's run that delivered the same new rows: the resumed run's anti-join leaves them out."""
    import logging

    from export_pipelines import stages
    from tests.pipelines.helpers import workspace

    sched = schedule(seeded, "entries")
    run_tick(seeded, sched, datetime(2027, 3, 14, 10, 0, tzinfo=UTC))
    insert_rows(db, "entries", random.Random(5), 6)
    resumed = seeded.queue_run(sched, datetime(2027, 3, 15, 10, 0, tzinfo=UTC), campaign_name="Incremental").record
    ctx = stages.build_context(resumed, db, s3, workspace(settings), logging.getLogger("test"), run_id="r-resumed")
    stages.extract(ctx)  # ... and its transform step failed here
    later = run_tick(seeded, sched, datetime(2027, 3, 16, 10, 0, tzinfo=UTC))
    assert later["count"] == 6
    assert stages.transform(ctx) == {"data.csv": 0}, "the resumed run sends none of the rows the later one sent"
