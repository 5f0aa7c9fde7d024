"""`DELETE /ccpa/users/{userId}` (SPEC §6, §7) through the app, against the real servers.

The exactness test runs real exports of every registered type, then decides which files
contain a fan by reading the files themselves (every cell of every CSV, inside ZIPs too),
independently of the membership the service recorded, and checks the deletion against that.
"""

from __future__ import annotations

import csv
import io
import json
import time
import uuid
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError
from pymongo.database import Database
from starlette.testclient import TestClient

from devstack.seed import seed_campaign, wave_date_keys
from export_api.app import create_app
from export_core import ccpa
from export_core.ccpa import EXEMPT_TYPES
from export_core.export_types import EXPORT_TYPES
from export_core.records import FINISHED, ExportStore
from export_core.settings import Settings
from tests.api.conftest import TokenFactory, assert_error
from tests.conftest import free_port
from tests.domain.test_ccpa import World
from tests.pipelines.helpers import request_export, run_export

COMPLIANCE = "compliance-bot"
SUMMARY_BLOCKS = ("deleted", "skipped", "alreadyDeleted", "inFlight", "failed", "resumed")


@pytest.fixture
def supreme(make_token: TokenFactory) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(sub=COMPLIANCE, campaigns={}, supreme=True)}"}


def ids(block: dict[str, Any]) -> set[str]:
    return {e["id"] for e in block["exports"]}


# -- who may call it -------------------------------------------------------------------------


def test_only_a_supreme_token_may_delete(client: TestClient, make_token: TokenFactory, headers: dict[str, str]):
    assert_error(client.delete("/ccpa/users/u1"), 401, "Missing bearer token.")
    assert_error(client.delete("/ccpa/users/u1", headers=headers), 401, "Supreme token required.")  # REPORT only
    for token in (
        make_token(campaigns={}, supreme=False),
        make_token(sub=COMPLIANCE, supreme=True, expires_in=-60),
        make_token(sub=COMPLIANCE, supreme=True, key=None) + "x",
    ):
        response = client.delete("/ccpa/users/u1", headers={"Authorization": f"Bearer {token}"})
        assert_error(response, 401)
    assert client.app.state.api.db["ccpa_audit"].count_documents({}) == 0  # type: ignore[attr-defined]


def test_summary_shape_for_a_user_in_no_export(client: TestClient, supreme: dict[str, str]) -> None:
    response = client.delete("/ccpa/users/nobody", headers=supreme)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"userId", "requestedBy", "auditId", "requestedAt", "complete", "message", *SUMMARY_BLOCKS}
    assert body["userId"] == "nobody" and body["requestedBy"] == COMPLIANCE and body["complete"] is True
    assert body["requestedAt"].endswith("Z") and body["message"] == "No export contains this user."
    for block in SUMMARY_BLOCKS:
        assert body[block] == {"total": 0, "byType": {}, "exports": []}
    assert response.headers["cache-control"] == "no-store"


def test_an_unusable_user_id_is_refused(client: TestClient, supreme: dict[str, str]) -> None:
    assert_error(client.delete("/ccpa/users/" + "u" * 300, headers=supreme), 400)
    assert_error(client.delete("/ccpa/users/%20", headers=supreme), 400)


# -- exactness, end to end ----------------------------------------------------------------------


def _request(db: Database, campaign_id: str, export_type: str) -> dict[str, Any]:
    kwargs = {"date_key": wave_date_keys()[1]} if EXPORT_TYPES[export_type].requires_date_key else {}
    return request_export(db, campaign_id, export_type, **kwargs)


def _keys(record: dict[str, Any]) -> list[str]:
    key = record["key"]
    return list(key) if isinstance(key, list) else [key]


def _cells(s3: Any, record: dict[str, Any]) -> set[str]:
    """Every cell value of every CSV the export wrote (inside ZIPs too): what the files contain."""
    cells: set[str] = set()

    def add(text: bytes) -> None:
        for row in csv.reader(io.StringIO(text.decode("utf-8"), newline="")):
            cells.update(row)

    for key in _keys(record):
        body = s3.get_object(Bucket=record["meta"]["bucket"], Key=key)["Body"].read()
        if key.endswith(".zip"):
            with zipfile.ZipFile(io.BytesIO(body)) as archive:
                for name in archive.namelist():
                    add(archive.read(name))
        else:
            add(body)
    return cells


def _exists(s3: Any, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError:
        return False
    return True


@pytest.fixture
def exported(db: Database, s3: Any, settings: Settings) -> Iterator[tuple[str, dict[str, dict[str, Any]]]]:
    """A seeded campaign and one FINISHED export of every registered type: (campaign id, records by type)."""
    campaign_id = f"ccpa-{uuid.uuid4().hex[:8]}"
    seed_campaign(
        db, campaign_id=campaign_id, n_entries=150, seed=5, s3_client=s3, vf_scoring_bucket=settings.vf_scoring_bucket
    )
    records = {}
    for export_type in sorted(EXPORT_TYPES):
        record = _request(db, campaign_id, export_type)
        run_export(record)
        done = ExportStore(db).get(record["_id"])
        assert done is not None and done["status"] == FINISHED, (export_type, done and done.get("error"))
        records[export_type] = done
    yield campaign_id, records


def test_deletes_exactly_the_files_that_contain_the_user(
    client: TestClient,
    db: Database,
    s3: Any,
    supreme: dict[str, str],
    make_token: TokenFactory,
    exported: tuple[str, dict[str, dict[str, Any]]],
) -> None:
    campaign_id, records = exported
    assert {"entries", "artistOptIn", "waitlist", "scoring", "verifiedEntries", "autoReminderEmail"} <= set(records)
    contents = {t: _cells(s3, r) for t, r in records.items()}  # decided from the files, before anything goes

    def containing(user: str) -> set[str]:
        return {t for t, cells in contents.items() if user in cells}

    users = sorted(str(e["userId"]) for e in db["entries"].find({"campaignId": campaign_id}, {"userId": 1}))
    # A fan who did not opt in to the artist's marketing and is on the waitlist (so was not selected) ...
    fan = next(u for u in users if {"entries", "waitlist"} <= containing(u) and "artistOptIn" not in containing(u))
    # ... and a selected fan who did opt in: in the reminder e-mails, not on the waitlist.
    selected = next(
        u for u in users if {"artistOptIn", "reminderEmail"} <= containing(u) and "waitlist" not in containing(u)
    )
    for user in (fan, selected):
        assert containing(user) & EXEMPT_TYPES, "the fan must be in an exempt file too"
        assert set(records) - EXEMPT_TYPES - containing(user), "and not in every other file"
    # Queued when the request arrives, so the request cannot see it; it writes the fan, then deletes itself.
    queued = _request(db, campaign_id, "entries")

    response = client.delete(f"/ccpa/users/{fan}", headers=supreme)

    assert response.status_code == 200, response.text
    body = response.json()
    expected = containing(fan) - EXEMPT_TYPES
    by_type = {t: r["_id"] for t, r in records.items()}
    assert ids(body["deleted"]) == {by_type[t] for t in expected}
    assert body["deleted"]["byType"] == dict.fromkeys(sorted(expected), 1)
    assert ids(body["skipped"]) == {by_type[t] for t in containing(fan) & EXEMPT_TYPES}
    assert body["complete"] is True and body["failed"]["total"] == 0 and body["inFlight"]["total"] == 0
    for export_type, record in records.items():
        gone = export_type in expected
        for key in _keys(record):
            assert _exists(s3, record["meta"]["bucket"], key) is not gone, (export_type, key)

    # GET of a deleted export says so and offers no download; the others still do.
    report = {"Authorization": f"Bearer {make_token(campaigns={campaign_id: ['REPORT']})}"}
    entries = client.get(f"/campaigns/{campaign_id}/exports/{by_type['entries']}", headers=report).json()
    assert entries["deleted"] is True and entries["deletedBy"] == COMPLIANCE and entries["date"]["deleted"]
    assert entries["status"] == FINISHED and "path" not in entries and "paths" not in entries
    opt_in = client.get(f"/campaigns/{campaign_id}/exports/{by_type['artistOptIn']}", headers=report).json()
    assert "deleted" not in opt_in and opt_in["path"].startswith("http")

    # The queued export runs now: it contains the fan, so it deletes its own file as it finishes.
    assert run_export(queued).success
    late = ExportStore(db).get(queued["_id"])
    assert late is not None and late["date"]["deleted"] and late["deletedBy"] == COMPLIANCE
    assert not _exists(s3, late["meta"]["bucket"], late["key"])

    # Idempotent: the same request again deletes nothing more and says so.
    again = client.delete(f"/ccpa/users/{fan}", headers=supreme).json()
    assert again["deleted"]["total"] == 0 and again["message"].startswith("Nothing more to delete")
    assert ids(again["alreadyDeleted"]) == {by_type[t] for t in expected} | {queued["_id"]}

    # A second fan: what the first request deleted already is reported as such, the rest goes now.
    second = client.delete(f"/ccpa/users/{selected}", headers=supreme).json()
    expected_second = containing(selected) - EXEMPT_TYPES
    assert ids(second["deleted"]) == {by_type[t] for t in expected_second - expected}
    # (the queued entries export holds every entrant, so this fan too)
    assert ids(second["alreadyDeleted"]) == {by_type[t] for t in expected_second & expected} | {queued["_id"]}
    for export_type, record in records.items():
        gone = export_type in expected | expected_second
        assert all(_exists(s3, record["meta"]["bucket"], k) is not gone for k in _keys(record)), export_type

    audit = list(db["ccpa_audit"].find({"source": "api", "userId": {"$in": [fan, selected]}}))
    assert len(audit) == 3 and {a["requestedBy"] for a in audit} == {COMPLIANCE}


# -- S3 down midway ---------------------------------------------------------------------------


def test_s3_down_gives_500_with_the_error_body_and_a_retry_completes(
    client: TestClient, db: Database, s3: Any, settings: Settings, supreme: dict[str, str]
) -> None:
    world = World(db, s3, settings)
    records = [world.export(f"x{i}", "entries", ["fan-1", "fan-2"]) for i in range(3)]
    down = settings.model_copy(update={"s3_endpoint_url": f"http://127.0.0.1:{free_port()}"})  # nothing listens

    started = time.monotonic()
    with TestClient(create_app(down)) as broken:
        response = broken.delete("/ccpa/users/fan-1", headers=supreme)
    error = assert_error(
        response, 500, "CCPA deletion incomplete: deleted 0 of 3 export(s); retry the request to finish."
    )
    assert time.monotonic() - started < 30
    payload = json.loads(error["payload"])
    assert payload["complete"] is False and ids(payload["failed"]) == {"x0", "x1", "x2"}
    assert [e["error"] for e in payload["failed"]["exports"]][0] == ccpa.STORAGE_UNREACHABLE
    assert "127.0.0.1" not in response.text and "Traceback" not in response.text
    for record in records:
        stored = ExportStore(db).get(record["_id"])
        assert stored is not None and stored["deletion"]["status"] == "failed" and "deleted" not in stored["date"]
        assert _exists(s3, settings.exports_bucket, record["key"])
    assert db["ccpa_audit"].find_one({"_id": payload["auditId"]})["status"] == "failed"  # type: ignore[index]

    retry = client.delete("/ccpa/users/fan-1", headers=supreme)
    assert retry.status_code == 200, retry.text
    assert ids(retry.json()["deleted"]) == {"x0", "x1", "x2"} and retry.json()["complete"] is True
    for record in records:
        assert not _exists(s3, settings.exports_bucket, record["key"])
        assert ExportStore(db).get(record["_id"])["deletion"]["status"] == "complete"  # type: ignore[index]
