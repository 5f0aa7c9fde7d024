"""CCPA deletion (export_core/ccpa.py) against the real MongoDB-protocol and S3 servers."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError
from pymongo.database import Database

from devstack.seed import seed_campaign
from export_core import ccpa
from export_core.ccpa import CcpaDeletion, CcpaDeletionIncomplete
from export_core.export_types import EXPORT_TYPES, ExportType
from export_core.keys import export_key
from export_core.membership import MembershipStore
from export_core.records import FAILED, FINISHED, TRIGGERED, ExportStore, utcnow
from export_core.settings import Settings
from export_core.views import iso_utc
from tests.pipelines.helpers import read_csv, request_export, run_export

USER = "fan-42"
OTHER = "fan-7"
COMPLIANCE = "compliance-bot"


class World:
    """Hand-made export records, their S3 objects and their membership, written directly."""

    def __init__(self, db: Database, s3: Any, settings: Settings) -> None:
        self.db, self.s3, self.settings = db, s3, settings
        self.store = ExportStore(db)
        self.store.ensure_indexes()
        ccpa.ensure_indexes(db)
        self.members = MembershipStore(db)

    def export(
        self,
        export_id: str,
        export_type: str,
        users: list[str],
        *,
        status: str = FINISHED,
        files: int = 1,
        bucket: str | None = None,
        upload: bool = True,
        campaign: str = "c1",
    ) -> dict[str, Any]:
        bucket = bucket or self.settings.bucket_for(EXPORT_TYPES[export_type].bucket)
        keys = [export_key(export_type, campaign, export_id, f"part {i}.csv") for i in range(files)]
        record: dict[str, Any] = {
            "_id": export_id,
            "id": export_id,
            "campaignId": campaign,
            "campaignName": "Tour",
            "exportType": export_type,
            "status": status,
            "requesterUserId": "admin",
            "date": {"created": utcnow()},
        }
        if status == FINISHED:
            record["key"] = keys if files > 1 else keys[0]
            record["count"] = len(users)
            record["meta"] = {"bucket": bucket, "objects": [{"key": k} for k in keys]}
        self.db["exports"].insert_one(record)
        if upload:
            for key in keys:
                self.s3.put_object(Bucket=bucket, Key=key, Body=("userId\n" + "\n".join(users)).encode())
        self.members.add(export_id, users)
        return record

    def exists(self, bucket: str, key: str) -> bool:
        try:
            self.s3.head_object(Bucket=bucket, Key=key)
        except ClientError:
            return False
        return True

    def keys_of(self, record: dict[str, Any]) -> list[str]:
        key = record.get("key")
        return key if isinstance(key, list) else [key]

    def bucket_of(self, record: dict[str, Any]) -> str:
        return str(record["meta"]["bucket"])

    def service(self) -> CcpaDeletion:
        return CcpaDeletion(self.db, self.s3, self.settings.buckets)


@pytest.fixture
def world(db: Database, s3: Any, settings: Settings) -> World:
    return World(db, s3, settings)


@pytest.fixture
def regional_type(monkeypatch: pytest.MonkeyPatch) -> str:
    """A non-exempt multi-key type outside the exports bucket (types are still being added)."""
    monkeypatch.setitem(
        EXPORT_TYPES,
        "regionalFiles",
        ExportType(name="regionalFiles", bucket="sfmcS3", packaging="multi_csv"),
    )
    return "regionalFiles"


def ids(block: dict[str, Any]) -> set[str]:
    return {e["id"] for e in block["exports"]}


def test_deletes_exactly_the_exports_whose_files_contain_the_user(world: World, regional_type: str) -> None:
    mine = world.export("a-entries", "entries", [USER, OTHER])
    not_mine = world.export("b-optin", "artistOptIn", [OTHER])  # the user did not opt in
    multi = world.export("c-regional", regional_type, [USER], files=3)
    exempt = [
        world.export("d-scoring", "scoring", [USER]),
        world.export("e-verified", "verifiedEntries", [USER]),
        world.export("f-auto", "autoReminderEmail", [USER, OTHER], files=2),
    ]
    world.export("g-running", "entries", [USER], status=TRIGGERED)
    # A failed attempt uploaded its file but never recorded the key: the object still goes.
    failed = world.export("h-failed", "fanlist", [USER], status=FAILED)
    orphan = export_key("fanlist", "c1", "h-failed", "part 0.csv")

    summary = world.service().delete_user(USER, requested_by=COMPLIANCE)

    assert summary["complete"] is True
    assert ids(summary["deleted"]) == {"a-entries", "c-regional", "h-failed"}
    assert summary["deleted"]["byType"] == {"entries": 1, "fanlist": 1, regional_type: 1}
    assert ids(summary["skipped"]) == {"d-scoring", "e-verified", "f-auto"}
    assert summary["skipped"]["byType"] == {"autoReminderEmail": 1, "scoring": 1, "verifiedEntries": 1}
    assert ids(summary["inFlight"]) == {"g-running"}
    assert summary["alreadyDeleted"]["total"] == summary["failed"]["total"] == summary["resumed"]["total"] == 0
    by_id = {e["id"]: e for e in summary["deleted"]["exports"]}
    assert sorted(by_id["c-regional"]["keys"]) == sorted(multi["key"])  # every key of a multi-key export
    assert by_id["c-regional"]["bucket"] == world.settings.sfmc_bucket
    assert by_id["h-failed"]["keys"] == [orphan]

    for record in (mine, multi):
        assert not any(world.exists(world.bucket_of(record), k) for k in world.keys_of(record))
    assert not world.exists(world.settings.exports_bucket, orphan)
    for record in (not_mine, *exempt):
        assert all(world.exists(world.bucket_of(record), k) for k in world.keys_of(record))

    for export_id in ("a-entries", "c-regional", "h-failed"):
        record = world.store.get(export_id)
        assert record is not None and record["date"]["deleted"] and record["deletedBy"] == COMPLIANCE
        assert record["deletion"]["status"] == "complete" and record["deletion"]["auditId"] == summary["auditId"]
        assert USER not in json.dumps(record, default=str)  # the fan's id never lands on a record admins read
    assert sorted(world.store.get("c-regional")["deletion"]["keysDeleted"]) == sorted(multi["key"])  # type: ignore[index]
    for export_id in ("b-optin", "d-scoring", "e-verified", "f-auto", "g-running"):
        record = world.store.get(export_id)
        assert record is not None and "deletion" not in record and "deleted" not in record["date"]
    assert failed["status"] == world.store.get("h-failed")["status"] == FAILED  # type: ignore[index]

    audit = list(world.db["ccpa_audit"].find())
    assert len(audit) == 1
    entry = audit[0]
    assert entry["_id"] == summary["auditId"] and entry["source"] == "api"
    assert entry["userId"] == USER and entry["requestedBy"] == COMPLIANCE and entry["status"] == "completed"
    assert entry["date"]["completed"] >= entry["date"]["requested"]
    assert {e["id"]: sorted(e["keys"]) for e in entry["exports"]} == {
        "a-entries": [mine["key"]],
        "c-regional": sorted(multi["key"]),
        "h-failed": [orphan],
    }
    assert {e["id"] for e in entry["skipped"]} == {"d-scoring", "e-verified", "f-auto"}
    assert {e["id"] for e in entry["inFlight"]} == {"g-running"}


def test_a_user_in_no_export_gets_an_empty_summary_and_an_audit_entry(world: World) -> None:
    world.export("a", "entries", [OTHER])
    summary = world.service().delete_user("nobody", requested_by=COMPLIANCE)
    assert summary["message"] == "No export contains this user."
    assert all(summary[k]["total"] == 0 for k in ("deleted", "skipped", "alreadyDeleted", "inFlight", "failed"))
    assert world.db["ccpa_audit"].count_documents({"userId": "nobody", "status": "completed"}) == 1
    assert world.store.get("a")["status"] == FINISHED and "deletion" not in world.store.get("a")  # type: ignore[index,operator]


def test_a_second_request_deletes_nothing_more_and_says_so(world: World) -> None:
    world.export("a", "entries", [USER])
    world.export("b", "artistOptIn", [USER])
    world.export("c", "scoring", [USER])
    first = world.service().delete_user(USER, requested_by=COMPLIANCE)
    deleted_at = world.store.get("a")["date"]["deleted"]  # type: ignore[index]

    second = world.service().delete_user(USER, requested_by="someone-else")

    assert ids(first["deleted"]) == {"a", "b"}
    assert second["deleted"]["total"] == 0
    assert ids(second["alreadyDeleted"]) == {"a", "b"}
    assert ids(second["skipped"]) == {"c"}
    assert second["message"].startswith("Nothing more to delete: 2 export(s)")
    record = world.store.get("a")
    assert record is not None and record["date"]["deleted"] == deleted_at and record["deletedBy"] == COMPLIANCE
    entries = list(world.db["ccpa_audit"].find({"userId": USER}).sort("date.requested", 1))
    assert [e["requestedBy"] for e in entries] == [COMPLIANCE, "someone-else"]
    assert [len(e["exports"]) for e in entries] == [2, 0]
    tombstone = world.db["ccpa_tombstones"].find_one({"_id": USER})
    assert tombstone is not None and tombstone["requests"] == 2


def test_an_s3_failure_midway_leaves_consistent_records_and_a_retry_completes(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    outage = f"ccpa-outage-{uuid.uuid4().hex[:10]}"  # S3 refuses every call on this bucket: it does not exist
    a = world.export("a", "entries", [USER])
    b = world.export("b", "artistOptIn", [USER], bucket=outage, upload=False)
    c = world.export("c", "fanlist", [USER])

    with pytest.raises(CcpaDeletionIncomplete) as raised:
        world.service().delete_user(USER, requested_by=COMPLIANCE)

    summary = raised.value.summary
    assert str(raised.value) == "CCPA deletion incomplete: deleted 1 of 3 export(s); retry the request to finish."
    assert summary["complete"] is False
    assert ids(summary["deleted"]) == {"a"}
    failures = {e["id"]: e for e in summary["failed"]["exports"]}
    assert set(failures) == {"b", "c"}
    assert failures["b"]["error"] == ccpa.STORAGE_REFUSED  # no hosts, no library names, no traces
    assert failures["c"]["error"] == ccpa.NOT_ATTEMPTED
    # Records say exactly what went and what did not; none of b, c offers a download any more.
    assert world.store.get("a")["deletion"]["status"] == "complete"  # type: ignore[index]
    for export_id in ("b", "c"):
        record = world.store.get(export_id)
        assert record is not None and record["deletion"]["status"] == "failed" and "deleted" not in record["date"]
    # The record says it plainly; the S3 error itself is for the operator's log.
    assert world.store.get("b")["deletion"]["error"] == ccpa.STORAGE_REFUSED  # type: ignore[index]
    assert "NoSuchBucket" in caplog.text
    assert not world.exists(world.bucket_of(a), a["key"])
    assert world.exists(world.bucket_of(c), c["key"])
    audit = world.db["ccpa_audit"].find_one({"_id": summary["auditId"]})
    assert audit is not None and audit["status"] == "failed" and audit["date"]["failed"]
    assert [e["id"] for e in audit["failed"]] == ["b", "c"]

    # S3 is back (the bucket, with the file, is there again): the same request finishes the job.
    world.s3.create_bucket(Bucket=outage)
    world.s3.put_object(Bucket=outage, Key=b["key"], Body=b"userId\nfan-42\n")
    retry = world.service().delete_user(USER, requested_by=COMPLIANCE)

    assert retry["complete"] is True
    assert ids(retry["deleted"]) == {"b", "c"} and ids(retry["alreadyDeleted"]) == {"a"}
    assert not world.exists(outage, b["key"]) and not world.exists(world.bucket_of(c), c["key"])
    for export_id in ("a", "b", "c"):
        record = world.store.get(export_id)
        assert record is not None and record["deletion"]["status"] == "complete" and record["date"]["deleted"]
        assert "error" not in record["deletion"]


def test_the_lookups_of_a_request_are_index_scans(world: World) -> None:
    for i in range(50):
        world.members.add(f"e{i}", [f"u{j}" for j in range(i, i + 20)])
    for collection, query in (
        ("export_members", {"userIds": "u7"}),  # which exports contain the user (multikey)
        ("exports", {"deletion.status": {"$in": ["pending", "failed"]}}),  # unfinished deletions
        ("ccpa_tombstones", {"date.last": {"$gte": utcnow()}}),  # what a finishing export checks
    ):
        plan = json.dumps(world.db[collection].find(query).explain()["queryPlanner"]["winningPlan"])
        assert "IXSCAN" in plan and "COLLSCAN" not in plan, (collection, plan)
    assert world.members.exports_containing("u7") == {f"e{i}" for i in range(8)}
    assert world.members.members_among("e3", ["u0", "u3", "u22", "u23"]) == {"u3", "u22"}
    assert world.members.members_among("e3", ["nobody"]) == set()


# -- exports that are queued or running when the request arrives ---------------------------------


@pytest.fixture
def seeded(db: Database) -> str:
    seed_campaign(db, campaign_id="cc", n_entries=120, seed=3, campaign_name="CCPA Tour")
    return "cc"


def _file_users(world: World, record: dict[str, Any], column: str) -> set[str]:
    body = world.s3.get_object(Bucket=world.bucket_of(record), Key=record["key"])["Body"].read()
    return {row[column] for row in read_csv(body)}


def test_an_export_running_when_the_request_arrives_deletes_its_own_file(world: World, seeded: str) -> None:
    db = world.db
    opted_out = db["entries"].find_one({"campaignId": seeded, "optIns.allowMarketing": False})
    assert opted_out is not None
    user = str(opted_out["userId"])
    entries = request_export(db, seeded, "entries")  # queued: no file, no members yet
    opt_in = request_export(db, seeded, "artistOptIn")  # will not contain the user

    summary = world.service().delete_user(user, requested_by=COMPLIANCE)
    assert summary["message"] == "No export contains this user."  # nothing to see yet

    assert run_export(entries).success and run_export(opt_in).success
    done = world.store.get(entries["_id"])
    assert done is not None and done["status"] == FINISHED
    assert done["date"]["deleted"] and done["deletedBy"] == COMPLIANCE and done["deletion"]["status"] == "complete"
    assert not world.exists(world.bucket_of(done), done["key"])
    entry = db["ccpa_audit"].find_one({"source": "export-finish"})
    assert entry is not None and entry["userIds"] == [user] and entry["requests"] == [summary["auditId"]]
    assert entry["status"] == "completed" and [e["keys"] for e in entry["exports"]] == [[done["key"]]]

    kept = world.store.get(opt_in["_id"])
    assert kept is not None and "deletion" not in kept and world.exists(world.bucket_of(kept), kept["key"])
    assert user not in _file_users(world, kept, "userId")  # exact: it really does not contain the user

    # The next request sees the export as deleted already.
    again = world.service().delete_user(user, requested_by=COMPLIANCE)
    assert ids(again["alreadyDeleted"]) == {entries["_id"]} and again["deleted"]["total"] == 0


def test_a_request_older_than_the_export_does_not_delete_it(world: World, seeded: str) -> None:
    user = str(world.db["entries"].find_one({"campaignId": seeded})["userId"])  # type: ignore[index]
    long_ago = utcnow() - ccpa.CLOCK_SKEW - timedelta(minutes=1)
    world.db["ccpa_tombstones"].insert_one({"_id": user, "date": {"first": long_ago, "last": long_ago}})
    record = request_export(world.db, seeded, "entries")
    assert run_export(record).success
    done = world.store.get(record["_id"])
    assert done is not None and "deletion" not in done and world.exists(world.bucket_of(done), done["key"])
    assert user in _file_users(world, done, "userId")


def test_a_rerun_of_a_deleted_export_is_deleted_again_as_soon_as_it_finishes(world: World) -> None:
    record = world.export("a", "entries", [OTHER])
    world.store.mark_deleted("a", by=COMPLIANCE, keys_deleted=[record["key"]], audit_id="earlier")
    # (the re-run wrote the file again, then turned FINISHED)
    entry = world.service().enforce_on_finish("a")
    assert entry is not None and entry["status"] == "completed" and entry["userIds"] == []
    assert not world.exists(world.bucket_of(record), record["key"])
    assert world.store.get("a")["deletion"]["auditId"] == entry["_id"]  # type: ignore[index]


def test_an_export_without_tombstoned_users_is_left_alone(world: World) -> None:
    world.export("a", "entries", [OTHER])
    world.db["ccpa_tombstones"].insert_one({"_id": USER, "date": {"first": utcnow(), "last": utcnow()}})
    assert world.service().enforce_on_finish("a") is None
    world.export("s", "scoring", [USER])  # exempt: never touched, even with a tombstoned member
    assert world.service().enforce_on_finish("s") is None
    assert "deletion" not in world.store.get("a") and "deletion" not in world.store.get("s")  # type: ignore[operator]


def test_an_s3_failure_at_finish_is_left_on_the_record_and_the_next_request_finishes_it(world: World) -> None:
    outage = f"ccpa-outage-{uuid.uuid4().hex[:10]}"
    record = world.export("a", "entries", [USER], bucket=outage, upload=False)
    world.db["ccpa_tombstones"].insert_one(
        {"_id": USER, "date": {"first": utcnow(), "last": utcnow()}, "lastRequestedBy": COMPLIANCE}
    )

    entry = world.service().enforce_on_finish("a")  # does not raise: the run itself succeeded

    assert entry is not None and entry["status"] == "failed"
    failed = world.store.get("a")
    assert failed is not None and failed["deletion"]["status"] == "failed" and "deleted" not in failed["date"]

    world.s3.create_bucket(Bucket=outage)
    world.s3.put_object(Bucket=outage, Key=record["key"], Body=b"userId\nfan-42\n")
    summary = world.service().delete_user("someone-else", requested_by="compliance-2")
    assert ids(summary["resumed"]) == {"a"} and summary["deleted"]["total"] == 0
    done = world.store.get("a")
    assert done is not None and done["deletion"]["status"] == "complete" and done["deletedBy"] == COMPLIANCE
    assert not world.exists(outage, record["key"])


def test_each_deleted_export_lists_the_destinations_it_had_been_delivered_to(world: World) -> None:
    """SPEC §7, §13: compliance learns which partners hold a copy (the service deletes nothing there)."""
    world.export("a", "entries", [USER])
    world.export("b", "artistOptIn", [USER])
    at = utcnow()
    sent = {"destinationId": "d-sftp", "type": "sftp", "name": "Partner SFTP",
            "remotePaths": ["/incoming/Tour - Entries_a.csv"], "deliveredAt": at}  # fmt: skip
    world.db["exports"].update_one({"_id": "a"}, {"$push": {"deliveredTo": sent}})  # as the delivery sensor does
    summary = world.service().delete_user(USER, requested_by=COMPLIANCE)
    by_id = {e["id"]: e for e in summary["deleted"]["exports"]}
    assert by_id["a"]["deliveredTo"] == [{**sent, "deliveredAt": iso_utc(at)}]
    assert by_id["b"]["deliveredTo"] == []
    audit = world.db["ccpa_audit"].find_one({"_id": summary["auditId"]}) or {}
    assert [e["deliveredTo"] for e in audit["exports"] if e["id"] == "a"][0][0]["destinationId"] == "d-sftp"
