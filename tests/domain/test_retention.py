"""Retention (export_core/retention.py, export_pipelines/retention.py) against the real servers."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import jwt
import pytest
from pymongo.database import Database
from starlette.testclient import TestClient

from export_api.app import create_app
from export_core.records import EXPIRED, FAILED, FINISHED, PENDING, TRIGGERED, utcnow
from export_core.retention import REASON, apply_retention
from export_core.settings import Settings
from tests.domain.test_ccpa import COMPLIANCE, USER, World

DAYS = 30


@pytest.fixture
def world(db: Database, s3: Any, settings: Settings) -> World:
    return World(db, s3, settings)


@pytest.fixture
def policy(settings: Settings) -> Settings:
    return settings.model_copy(update={"export_retention_days": DAYS})


def _finished(world: World, export_id: str, export_type: str, age_days: float, **kwargs: Any) -> dict[str, Any]:
    """A FINISHED export with its objects, finished `age_days` ago."""
    record = world.export(export_id, export_type, ["fan-1"], **kwargs)
    finished = utcnow() - timedelta(days=age_days)
    world.db["exports"].update_one({"_id": export_id}, {"$set": {"date.finished": finished}})
    return {**record, "date": {**record["date"], "finished": finished}}


def _objects_of(world: World, record: dict[str, Any]) -> list[bool]:
    return [world.exists(world.bucket_of(record), k) for k in world.keys_of(record)]


def test_off_when_unset(world: World, settings: Settings) -> None:
    old = _finished(world, "old", "entries", 400)
    result = apply_retention(world.db, world.s3, settings)
    assert result.cutoff is None and result.deleted == [] and "EXPORT_RETENTION_DAYS is unset" in result.message()
    assert _objects_of(world, old) == [True]
    assert "deletion" not in world.store.get("old")  # type: ignore[operator]


def test_deletes_old_files_and_marks_their_records_only(world: World, policy: Settings) -> None:
    old = _finished(world, "old", "entries", DAYS + 1)
    multi = _finished(world, "old-multi", "autoReminderEmail", DAYS + 5, files=3)
    young = _finished(world, "young", "entries", DAYS - 1)
    others = {
        status: world.export(f"s-{status}", "fanlist", ["fan-1"], status=status)
        for status in (PENDING, TRIGGERED, FAILED, EXPIRED)
    }
    for status in others:  # as old as can be, yet not FINISHED: never touched
        world.db["exports"].update_one(
            {"_id": f"s-{status}"}, {"$set": {"date.created": utcnow() - timedelta(days=999)}}
        )
    before = {r["_id"]: r for r in world.db["exports"].find({"_id": {"$in": ["young", *[f"s-{s}" for s in others]]}})}

    result = apply_retention(world.db, world.s3, policy)

    assert sorted(result.deleted) == ["old", "old-multi"] and result.complete
    assert _objects_of(world, old) == [False]
    assert _objects_of(world, multi) == [False, False, False]  # every key of a multi-key export
    assert _objects_of(world, young) == [True]
    for export_id in ("old", "old-multi"):
        record = world.store.get(export_id)
        assert record is not None and record["status"] == FINISHED
        assert record["date"]["deleted"] and record["deletedBy"] == REASON
        assert record["deletion"]["status"] == "complete" and record["deletion"]["reason"] == REASON
    assert sorted(world.store.get("old-multi")["deletion"]["keysDeleted"]) == sorted(multi["key"])  # type: ignore[index]
    after = {r["_id"]: r for r in world.db["exports"].find({"_id": {"$in": list(before)}})}
    assert after == before

    # Idempotent: a second run finds nothing and changes nothing.
    snapshot = list(world.db["exports"].find().sort("_id", 1))
    again = apply_retention(world.db, world.s3, policy)
    assert again.deleted == [] and again.failed == []
    assert list(world.db["exports"].find().sort("_id", 1)) == snapshot


def test_a_record_claimed_by_ccpa_is_left_to_ccpa(world: World, policy: Settings) -> None:
    outage = f"ret-ccpa-{uuid.uuid4().hex[:10]}"  # this CCPA deletion fails: the bucket does not exist
    _finished(world, "ccpa-failed", "entries", DAYS + 3, bucket=outage, upload=False)
    world.members.add("ccpa-failed", [USER])
    with pytest.raises(Exception, match="CCPA deletion incomplete"):
        world.service().delete_user(USER, requested_by=COMPLIANCE)
    claimed = world.store.get("ccpa-failed")

    assert apply_retention(world.db, world.s3, policy).deleted == []
    assert world.store.get("ccpa-failed") == claimed


def test_an_s3_failure_midway_leaves_consistent_records_and_the_next_run_completes(
    world: World, policy: Settings
) -> None:
    outage = f"ret-outage-{uuid.uuid4().hex[:10]}"
    a = _finished(world, "a", "entries", DAYS + 30)  # oldest first: a, then b, then c
    b = _finished(world, "b", "artistOptIn", DAYS + 20, bucket=outage, upload=False)
    c = _finished(world, "c", "fanlist", DAYS + 10)

    first = apply_retention(world.db, world.s3, policy)

    assert first.deleted == ["a"] and first.failed == ["b", "c"] and not first.complete
    assert "NoSuchBucket" not in str(first.error) and "refused" in str(first.error), "one plain sentence"
    assert "next run retries" in first.message()
    assert _objects_of(world, a) == [False] and _objects_of(world, c) == [True]
    assert world.store.get("a")["deletion"]["status"] == "complete"  # type: ignore[index]
    for export_id in ("b", "c"):
        record = world.store.get(export_id)
        assert record is not None and record["deletion"]["status"] == "failed" and "deleted" not in record["date"]

    world.s3.create_bucket(Bucket=outage)
    world.s3.put_object(Bucket=outage, Key=b["key"], Body=b"userId\nfan-1\n")
    second = apply_retention(world.db, world.s3, policy)

    assert second.deleted == ["b", "c"] and second.complete
    assert _objects_of(world, b) == [False] and _objects_of(world, c) == [False]
    for export_id in ("a", "b", "c"):
        record = world.store.get(export_id)
        assert record is not None and record["date"]["deleted"] and record["deletion"]["status"] == "complete"
        assert "error" not in record["deletion"]


def test_the_api_shows_the_deletion_and_offers_no_download(
    world: World, policy: Settings, db: Database, jwt_keys: tuple[str, str]
) -> None:
    db["campaigns"].insert_one({"_id": "c1", "name": "Tour"})
    _finished(world, "gone", "entries", DAYS + 1)
    apply_retention(world.db, world.s3, policy)
    claims = {"sub": "admin-1", "campaigns": {"c1": ["REPORT"]}, "exp": int(utcnow().timestamp()) + 600}
    token = jwt.encode(claims, jwt_keys[0], algorithm="RS256")
    with TestClient(create_app(policy)) as client:
        body = client.get("/campaigns/c1/exports/gone", headers={"Authorization": f"Bearer {token}"}).json()
    assert body["deleted"] is True and body["deletedBy"] == REASON and body["deletion"]["reason"] == REASON
    assert body["date"]["deleted"].endswith("Z")
    assert "path" not in body and "paths" not in body


# -- the Dagster job (export_pipelines/retention.py), with the real servers behind its resources -------------


class _Mongo:
    def __init__(self, db: Database) -> None:
        self._db = db

    def db(self) -> Database:
        return self._db


class _S3:
    def __init__(self, client: Any, buckets: dict[str, str]) -> None:
        self._client, self._buckets = client, buckets

    def bucket_for(self, logical: str) -> str:
        return self._buckets[logical]

    def client(self) -> Any:
        return self._client


def test_the_job_deletes_with_the_setting_and_only_logs_without_it(world: World, settings: Settings) -> None:
    from dagster import DagsterInstance

    from export_pipelines.resources import ExportFilesResource
    from export_pipelines.retention import export_retention_job, export_retention_schedule

    old = _finished(world, "old", "entries", DAYS + 1)
    resources = {"mongo": _Mongo(world.db), "s3": _S3(world.s3, settings.buckets)}
    data_dir = str(settings.data_dir)
    with DagsterInstance.ephemeral() as instance:
        off_files = ExportFilesResource(data_dir=data_dir)  # EXPORT_RETENTION_DAYS unset
        off = export_retention_job.execute_in_process(resources={**resources, "files": off_files}, instance=instance)
        assert off.success and _objects_of(world, old) == [True]
        logs = [e.user_message for e in instance.all_logs(off.run_id)]
        assert any("retention is off" in m for m in logs)

        on_files = ExportFilesResource(data_dir=data_dir, export_retention_days=DAYS)
        on = export_retention_job.execute_in_process(resources={**resources, "files": on_files}, instance=instance)
        assert on.success and _objects_of(world, old) == [False]
        assert world.store.get("old")["deletion"]["reason"] == REASON  # type: ignore[index]
    assert export_retention_schedule.cron_schedule == "30 3 * * *"
    assert export_retention_schedule.job_name == "export_retention_job"
