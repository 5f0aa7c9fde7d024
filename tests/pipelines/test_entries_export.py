"""The `entries` export end to end through its Dagster job, against the real servers."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from pymongo.database import Database

from devstack.seed import seed_campaign
from export_core.export_types import EXPORT_TYPES
from export_core.records import FAILED, FINISHED, ExportStore
from export_core.settings import Settings
from export_pipelines.stages import staging_dir
from tests.pipelines.expected import expected_entries
from tests.pipelines.helpers import read_csv, read_header, request_export, run_export

EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
REQUIRED_COLUMNS = [
    "userId", "email", "firstName", "lastName", "phoneNumber", "marketId", "marketName", "localeId",
    "entryDate", "allowMarketing", "allowLiveNation", "allowPromoter", "allowSms", "codes",
]  # fmt: skip


def _download(s3: Any, settings: Settings, record: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    obj = s3.get_object(Bucket=settings.exports_bucket, Key=record["key"])
    return obj["Body"].read(), obj


@pytest.fixture
def seeded(db: Database) -> str:
    seed_campaign(db, campaign_id="c1", n_entries=1500, seed=7, campaign_name='Tour: "Zoë" / 2025 ☃')
    return "c1"


def test_entries_csv_matches_an_independent_computation(db: Database, s3: Any, settings: Settings, seeded: str):
    record = request_export(db, seeded, "entries")
    result = run_export(record)
    assert result.success
    done = ExportStore(db).get(record["_id"])
    assert done is not None and done["status"] == FINISHED
    body, obj = _download(s3, settings, done)

    header = read_header(body)
    assert set(REQUIRED_COLUMNS) <= set(header)
    assert header == list(EXPORT_TYPES["entries"].columns)
    rows = read_csv(body)
    expected = expected_entries(db, seeded)
    assert len(rows) == len(expected) == done["count"] == 1500
    assert rows == expected  # every row, every cell, in order
    # The awkward cases really were exercised, not just absent.
    assert any(r["firstName"].startswith("'") for r in rows), "formula-like names are escaped"
    assert any("\n" in v for r in rows for v in r.values()), "newlines inside values survive"
    assert any(not c.isascii() for r in rows for c in r["firstName"]), "unicode names survive"

    assert done["preliminaryCount"] == 1500
    assert done["meta"]["bytes"] == len(body)
    assert len(done["meta"]["sha256"]) == 64
    assert done["date"]["finished"] >= done["date"]["triggered"] >= done["date"]["created"]
    assert done["key"].startswith(f"entries/{seeded}/{record['_id']}/")
    assert done["key"].endswith(" - Entries.csv")
    assert "/" not in done["key"].split("/", 3)[3] and '"' not in done["key"], "campaign name made key-safe"
    acl = s3.get_object_acl(Bucket=settings.exports_bucket, Key=done["key"])
    assert [g["Permission"] for g in acl["Grants"]] == ["FULL_CONTROL"], "private: owner only"
    assert not staging_dir(settings.data_dir, record["_id"]).exists(), "scratch files removed after success"
    assert done["progress"] == {"stage": "finished", "rows": 1500, "total": 1500}
    assert "process" not in done["meta"], "the run's own cost is the run's, not the user's record"

    # What a data engineer sees on the Dagster run page: the output metadata of finish_export.
    (output,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT" and e.step_key == "finish_export"]
    metadata = {k: v.value for k, v in output.step_output_data.metadata.items()}  # type: ignore[union-attr]
    # ... and what the run cost, which the bench reads from there (bench/stack.py run_cost).
    assert metadata["cpuSeconds"] > 0 and metadata["peakRssMb"] > 0
    assert metadata["dbRequests"] > 0 and metadata["dbBytesReceived"] > len(body) / 2, "what we asked of the database"
    assert (metadata["rows"], metadata["bytes"], metadata["sha256"]) == (1500, len(body), done["meta"]["sha256"])
    assert (metadata["key"], metadata["bucket"], metadata["export_type"]) == (
        done["key"],
        settings.exports_bucket,
        "entries",
    )
    preview = metadata["preview"]
    assert preview.count("\n") == 11, "a header, its rule and ten rows"
    assert "[email]" in preview and not EMAIL.search(preview), "e-mail addresses are masked"
    phones = {r["phoneNumber"].lstrip("'") for r in rows if r["phoneNumber"]}
    assert phones and not any(p in preview for p in phones), "phone numbers are masked"


def test_include_all_markets_adds_a_row_per_additional_market(db: Database, s3: Any, settings: Settings, seeded: str):
    record = request_export(db, seeded, "entries", include_all_markets=True)
    assert run_export(record).success
    done = ExportStore(db).get(record["_id"])
    assert done is not None
    rows = read_csv(_download(s3, settings, done)[0])
    expected = expected_entries(db, seeded, include_all_markets=True)
    assert rows == expected
    extra = sum(len(e.get("additionalMarkets") or []) for e in db["entries"].find({"campaignId": seeded}))
    assert extra > 0 and len(rows) == 1500 + extra


def test_name_fallback_and_escaping_on_hand_made_documents(db: Database, s3: Any, settings: Settings):
    created = datetime(2024, 1, 15, 10, 30, 0, 123000, tzinfo=UTC)
    db["campaigns"].insert_one({"_id": "c2", "name": "Small", "type": "standard"})
    db["markets"].insert_one({"_id": "m1", "campaignId": "c2", "name": "=HYPERLINK(1)", "countryCode": "US"})
    db["users"].insert_one({"_id": "u1", "firstName": "Ōtani", "email": "@home", "phone": "+15550001"})
    db["entries"].insert_many(
        [
            {
                "_id": "e1", "campaignId": "c2", "userId": "u1", "marketId": "m1",
                "date": {"created": created}, "user": {"firstName": "Snap", "lastName": "Last, \"Q\"", "email": "s@x"},
                "optIns": {"allowMarketing": True, "allowSms": False}, "codes": ["-A1", "B2"],
            },
            {
                "_id": "e2", "campaignId": "c2", "userId": "missing", "marketId": "m1",
                "date": {"created": created}, "user": {"firstName": "🎸 Rocker", "lastName": "\tTab", "email": "r@x"},
                "phoneNumber": "-1", "optIns": {},
            },
        ]
    )  # fmt: skip
    record = request_export(db, "c2", "entries")
    assert run_export(record).success
    done = ExportStore(db).get(record["_id"])
    assert done is not None
    first, second = read_csv(_download(s3, settings, done)[0])
    assert (first["firstName"], first["lastName"], first["email"]) == ("Ōtani", 'Last, "Q"', "'@home")
    assert first["phoneNumber"] == "'+15550001" and first["codes"] == "'-A1;B2"
    assert first["marketName"] == "'=HYPERLINK(1)" and first["entryDate"] == "2024-01-15T10:30:00.123Z"
    assert (first["allowMarketing"], first["allowSms"], first["allowPromoter"]) == ("true", "false", "")
    assert (second["firstName"], second["lastName"], second["email"]) == ("🎸 Rocker", "'\tTab", "r@x")
    assert second["phoneNumber"] == "'-1"


def test_campaign_without_markets_fails_with_no_markets_found(db: Database, settings: Settings):
    db["campaigns"].insert_one({"_id": "empty", "name": "No markets"})
    record = request_export(db, "empty", "entries")
    result = run_export(record)
    assert not result.success
    failed = ExportStore(db).get(record["_id"])
    assert failed is not None and failed["status"] == FAILED
    assert "NoMarketsFound" in failed["error"]["message"]
    assert failed["date"]["failed"]
    # Permanent: not retried (one attempt of the failing step).
    attempts = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert attempts == []


def test_campaign_with_markets_but_no_entries_writes_only_the_header(db: Database, s3: Any, settings: Settings):
    db["campaigns"].insert_one({"_id": "quiet", "name": "Quiet"})
    db["markets"].insert_one({"_id": "m", "campaignId": "quiet", "name": "M"})
    record = request_export(db, "quiet", "entries")
    assert run_export(record).success
    done = ExportStore(db).get(record["_id"])
    assert done is not None and done["status"] == FINISHED and done["count"] == 0
    body = _download(s3, settings, done)[0]
    assert read_csv(body) == [] and read_header(body)[:2] == ["userId", "email"]


def test_uploads_follow_the_acl_and_encryption_settings(db: Database, s3: Any, settings: Settings):
    """S3_OBJECT_ACL=none (buckets with ACLs disabled) and S3_SSE reach the export's own upload."""
    seed_campaign(db, campaign_id="sse", n_entries=20, seed=9)
    record = request_export(db, "sse", "entries")
    assert run_export(record, object_acl="none", sse="AES256").success
    done = ExportStore(db).get(record["_id"])
    assert done is not None and done["status"] == FINISHED
    head = s3.head_object(Bucket=settings.exports_bucket, Key=done["key"])
    assert head["ServerSideEncryption"] == "AES256"
