"""POST/GET/list of export records against the real MongoDB and S3 servers (SPEC §4, §6)."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from bson import ObjectId
from pymongo.database import Database
from starlette.testclient import TestClient

from export_api.state import DownloadSigner
from export_core.records import ExportStore
from tests.api.conftest import CAMPAIGN, EXPORTS, OTHER_CAMPAIGN, assert_error

ISO_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


# -- POST -------------------------------------------------------------------------------


@pytest.mark.usefixtures("extra_types")
def test_post_creates_then_returns_the_active_duplicate(client: TestClient, headers: dict[str, str]) -> None:
    first = client.post(EXPORTS, json={"exportType": "entries", "includeAllMarkets": True}, headers=headers)
    assert first.status_code == 201, first.text
    record = first.json()
    assert record["campaignId"] == CAMPAIGN
    assert record["campaignName"] == "Summer Tour 2024"
    assert record["exportType"] == "entries"
    assert record["status"] == "PENDING"
    assert record["requesterUserId"] == "user-1"
    assert record["includeAllMarkets"] is True
    assert ISO_MS.match(record["date"]["created"])
    assert "_id" not in record and "active" not in record
    assert headers["Authorization"].split()[1] not in first.text

    again = client.post(EXPORTS, json={"exportType": "entries"}, headers=headers)
    assert again.status_code == 200
    assert again.json()["id"] == record["id"]

    # A different dateKey is a different request.
    wave = client.post(EXPORTS, json={"exportType": "codeWaves", "dateKey": "1700000000000"}, headers=headers)
    other = client.post(EXPORTS, json={"exportType": "codeWaves", "dateKey": "1700000000001"}, headers=headers)
    assert wave.status_code == other.status_code == 201 and other.json()["id"] != wave.json()["id"]
    assert other.json()["dateKey"] == "1700000000001"


def test_post_after_the_first_finished_creates_a_new_record(
    client: TestClient, headers: dict[str, str], db: Database
) -> None:
    first = client.post(EXPORTS, json={"exportType": "entries"}, headers=headers).json()
    store = ExportStore(db)
    store.mark_triggered(first["id"], run_id="r1", preliminary_count=None)
    store.mark_finished(first["id"], key="k.csv", count=0, meta={})
    second = client.post(EXPORTS, json={"exportType": "entries"}, headers=headers)
    assert second.status_code == 201 and second.json()["id"] != first["id"]


def test_concurrent_identical_posts_create_exactly_one_record(
    client: TestClient, headers: dict[str, str], db: Database
) -> None:
    def post(_: int) -> httpx.Response:
        return client.post(EXPORTS, json={"exportType": "entries"}, headers=headers)

    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(post, range(20)))
    assert sorted(r.status_code for r in responses) == [200] * 19 + [201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert db.exports.count_documents({}) == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"exportType": "bogus"}, "Invalid export type: 'bogus'."),
        ({"exportType": "Entries"}, "Invalid export type: 'Entries'."),
        ({}, "Invalid export type: ''."),
        ({"exportType": "codeWaves", "dateKey": "17000x"}, None),
        ({"exportType": "codeWaves", "dateKey": 1700000000000}, None),
        ({"exportType": "codeWaves", "dateKey": ""}, None),
        ({"exportType": "codeWaves", "dateKey": "1" * 17}, None),
        ({"exportType": "codeWaves", "dateKey": "\u0661\u0662"}, None),  # Arabic-Indic digits are not ASCII
        ({"exportType": "entries", "dateKey": "1700000000000"}, "dateKey is not accepted for exportType 'entries'."),
        ({"exportType": "entries", "dateKey": None}, "dateKey is not accepted for exportType 'entries'."),
        ({"exportType": "codeWaves", "dateKey": None}, None),
        ({"exportType": "entries", "includeAllMarkets": None}, "includeAllMarkets must be true or false."),
        ({"exportType": "entries", "datekey": "1"}, "Unknown field in the request body: 'datekey'."),
        ({"exportType": "entries", "includeAllMarkets": "yes"}, None),
        (["entries"], None),
        ("entries", None),
    ],
)
@pytest.mark.usefixtures("extra_types")
def test_post_rejects_bad_bodies(client: TestClient, headers: dict[str, str], body: Any, message: str | None) -> None:
    assert_error(client.post(EXPORTS, json=body, headers=headers), 400, message)


@pytest.mark.parametrize("raw", [b"", b"{", b"not json", b"\xff\xfe\x00", b"[" * 100_00])
def test_post_rejects_malformed_json(client: TestClient, headers: dict[str, str], raw: bytes) -> None:
    response = client.post(EXPORTS, content=raw, headers={**headers, "Content-Type": "application/json"})
    assert_error(response, 400, "Request body must be valid JSON.")


def test_post_with_a_lone_surrogate_is_a_plain_400(client: TestClient, headers: dict[str, str]) -> None:
    """JSON may escape a lone surrogate; echoing it in the error body once raised (a 500)."""
    raw = b'{"exportType": "\\ud800"}'
    response = client.post(EXPORTS, content=raw, headers={**headers, "Content-Type": "application/json"})
    assert_error(response, 400, "Invalid export type: '?'.")


def test_post_rejects_an_oversized_body(client: TestClient, headers: dict[str, str]) -> None:
    response = client.post(EXPORTS, json={"exportType": "entries", "pad": "x" * 100_000}, headers=headers)
    assert_error(response, 413)


@pytest.mark.usefixtures("extra_types")
def test_post_requires_date_key_where_the_type_does(client: TestClient, headers: dict[str, str]) -> None:
    assert_error(client.post(EXPORTS, json={"exportType": "codeWaves"}, headers=headers), 400)
    ok = client.post(EXPORTS, json={"exportType": "codeWaves", "dateKey": "1700000000000"}, headers=headers)
    assert ok.status_code == 201
    longest = client.post(EXPORTS, json={"exportType": "codeWaves", "dateKey": "9" * 16}, headers=headers)
    assert longest.status_code == 201 and longest.json()["dateKey"] == "9" * 16


def test_post_for_an_unknown_campaign_is_400(client: TestClient, make_token: Any) -> None:
    token = make_token(campaigns={"missing": ["REPORT"]})
    response = client.post(
        "/campaigns/missing/exports", json={"exportType": "entries"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert_error(response, 400, "Campaign not found.")


# -- GET one ----------------------------------------------------------------------------


def test_get_pending_export_without_dagster(client: TestClient, headers: dict[str, str]) -> None:
    created = client.post(EXPORTS, json={"exportType": "entries"}, headers=headers).json()
    response = client.get(f"{EXPORTS}/{created['id']}", headers=headers)
    assert response.status_code == 200
    body = response.json()
    assert {k: v for k, v in body.items() if k != "run"} == created
    assert body["run"] == {"id": None, "status": None, "available": False}
    assert "path" not in body and "paths" not in body


def test_get_unknown_or_foreign_export_is_404(client: TestClient, headers: dict[str, str]) -> None:
    assert_error(client.get(f"{EXPORTS}/does-not-exist", headers=headers), 404, "Export not found.")
    foreign = client.post(f"/campaigns/{OTHER_CAMPAIGN}/exports", json={"exportType": "entries"}, headers=headers)
    assert foreign.status_code == 201
    assert_error(client.get(f"{EXPORTS}/{foreign.json()['id']}", headers=headers), 404, "Export not found.")


def test_get_finished_export_has_a_working_signed_url(
    client: TestClient, headers: dict[str, str], db: Database, s3: Any, settings: Any
) -> None:
    created = client.post(EXPORTS, json={"exportType": "entries"}, headers=headers).json()
    key = f"entries/{created['id']}/Summer Tour 2024 - Entries.csv"
    content = b"userId,email\nu1,a@example.com\n"
    s3.put_object(Bucket=settings.exports_bucket, Key=key, Body=content)
    store = ExportStore(db)
    store.mark_triggered(created["id"], run_id="run-123", preliminary_count=42)
    store.mark_finished(created["id"], key=key, count=1, meta={"bytes": len(content)})

    response = client.get(f"{EXPORTS}/{created['id']}", headers=headers)
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["status"] == "FINISHED" and body["key"] == key and body["count"] == 1
    assert body["preliminaryCount"] == 42 and body["meta"] == {"bytes": len(content)}
    for stamp in ("created", "triggered", "finished"):
        assert ISO_MS.match(body["date"][stamp])
    assert body["run"] == {"id": "run-123", "status": None, "available": False}
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in body["path"] and "X-Amz-Expires=3600" in body["path"]
    download = httpx.get(body["path"])
    assert download.status_code == 200 and download.content == content

    db.exports.update_one({"_id": created["id"]}, {"$set": {"date.deleted": datetime.now(UTC)}})
    deleted = client.get(f"{EXPORTS}/{created['id']}", headers=headers).json()
    assert "path" not in deleted and ISO_MS.match(deleted["date"]["deleted"])


def test_a_signed_url_is_reused_briefly_then_signed_again(s3: Any, settings: Any) -> None:
    key = "entries/reuse/Summer Tour 2024 - Entries.csv"
    s3.put_object(Bucket=settings.exports_bucket, Key=key, Body=b"userId\n")
    signer = DownloadSigner(s3, ttl_seconds=10)  # reused for 1 s at most (TTL / 10)
    first = signer.url(settings.exports_bucket, key)
    assert signer.url(settings.exports_bucket, key) == first
    assert signer.url(settings.exports_bucket, key + "x") != first
    time.sleep(1.1)
    fresh = signer.url(settings.exports_bucket, key)
    assert fresh != first and "Expires=" in fresh
    assert httpx.get(fresh).status_code == 200 and httpx.get(first).status_code == 200


@pytest.mark.usefixtures("extra_types")
def test_get_finished_multi_key_export_lists_paths_in_its_own_bucket(
    client: TestClient, headers: dict[str, str], db: Database, s3: Any, settings: Any
) -> None:
    created = client.post(EXPORTS, json={"exportType": "autoReminderEmail"}, headers=headers).json()
    keys = [f"sfmc/NA/{created['id']}.csv", f"sfmc/UK/{created['id']}.csv"]
    for key in keys:
        s3.put_object(Bucket=settings.sfmc_bucket, Key=key, Body=key.encode())
    store = ExportStore(db)
    store.mark_triggered(created["id"], run_id="run-9", preliminary_count=None)
    store.mark_finished(created["id"], key=keys, count=2, meta={})

    body = client.get(f"{EXPORTS}/{created['id']}", headers=headers).json()
    assert "path" not in body
    assert [p["key"] for p in body["paths"]] == keys
    for entry in body["paths"]:
        assert httpx.get(entry["url"]).content == entry["key"].encode()


def test_failed_export_shows_its_error_and_no_path(client: TestClient, headers: dict[str, str], db: Database) -> None:
    created = client.post(EXPORTS, json={"exportType": "entries"}, headers=headers).json()
    ExportStore(db).mark_failed(created["id"], message="Mongo went away", payload="extract")
    oid = ObjectId()
    db.exports.update_one({"_id": created["id"]}, {"$set": {"meta": {"written_by": oid}}})  # a foreign BSON type
    body = client.get(f"{EXPORTS}/{created['id']}", headers=headers).json()
    assert body["status"] == "FAILED" and body["error"] == {"message": "Mongo went away", "payload": "extract"}
    assert ISO_MS.match(body["date"]["failed"]) and body["meta"] == {"written_by": str(oid)}
    assert "path" not in body


# -- list -------------------------------------------------------------------------------


@pytest.fixture
def listed(db: Database, extra_types: None) -> list[str]:
    """Six records of CAMPAIGN created one minute apart (oldest first), one of another campaign."""
    store = ExportStore(db)
    base = datetime(2024, 1, 15, 10, 30, tzinfo=UTC)
    ids = []
    specs = [
        ("entries", "1"),
        ("codeWaves", "2"),
        ("entries", "3"),
        ("autoReminderEmail", None),
        ("entries", "5"),
        ("codeWaves", "6"),
    ]
    for i, (export_type, date_key) in enumerate(specs):
        record = store.create(
            campaign_id=CAMPAIGN,
            campaign_name="Summer Tour 2024",
            export_type=export_type,
            requester_user_id="u",
            date_key=date_key,
        ).record
        db.exports.update_one({"_id": record["id"]}, {"$set": {"date.created": base + timedelta(minutes=i)}})
        ids.append(record["id"])
    store.mark_failed(ids[0], message="x")
    store.create(campaign_id=OTHER_CAMPAIGN, campaign_name="Winter Tour", export_type="entries", requester_user_id="u")
    return ids


def test_list_is_newest_first_and_paged(client: TestClient, headers: dict[str, str], listed: list[str]) -> None:
    first = client.get(EXPORTS, params={"limit": 4}, headers=headers).json()
    assert first["page"] == 0 and first["limit"] == 4 and first["total"] == 6
    assert [e["id"] for e in first["exports"]] == listed[::-1][:4]
    assert first["exports"][0]["date"]["created"] == "2024-01-15T10:35:00.000Z"
    assert all("_id" not in e and "active" not in e for e in first["exports"])
    second = client.get(EXPORTS, params={"limit": 4, "page": 1}, headers=headers).json()
    assert [e["id"] for e in second["exports"]] == listed[::-1][4:]
    beyond = client.get(EXPORTS, params={"page": 5}, headers=headers).json()
    assert beyond["exports"] == [] and beyond["total"] == 6 and beyond["limit"] == 20


def test_list_sorts_and_filters(client: TestClient, headers: dict[str, str], listed: list[str]) -> None:
    def ids(**params: Any) -> list[str]:
        return [e["id"] for e in client.get(EXPORTS, params=params, headers=headers).json()["exports"]]

    assert ids(sortOrder="asc") == listed
    assert ids(sort="created", sortOrder="desc") == listed[::-1]
    by_status = client.get(EXPORTS, params={"sort": "status", "sortOrder": "asc"}, headers=headers).json()
    assert [e["status"] for e in by_status["exports"]] == ["FAILED"] + ["PENDING"] * 5
    by_type = client.get(EXPORTS, params={"sort": "exportType", "sortOrder": "asc"}, headers=headers).json()
    types = [e["exportType"] for e in by_type["exports"]]
    assert types == sorted(types)
    entries = client.get(EXPORTS, params={"exportType": "entries"}, headers=headers).json()
    assert entries["total"] == 3 and {e["exportType"] for e in entries["exports"]} == {"entries"}
    assert [e["id"] for e in entries["exports"]] == [listed[4], listed[2], listed[0]]


@pytest.mark.parametrize(
    "params",
    [
        {"page": "-1"},
        {"page": "x"},
        {"page": "1.5"},
        {"page": "99999999999999999999"},
        {"page": "9" * 5000},
        {"limit": "0"},
        {"limit": "101"},
        {"limit": ""},
        {"sort": "name"},
        {"sort": "date.created"},
        {"sortOrder": "up"},
        {"sortOrder": "DESC"},
        {"exportType": "bogus"},
    ],
)
def test_list_rejects_bad_query_values(client: TestClient, headers: dict[str, str], params: dict[str, str]) -> None:
    error = assert_error(client.get(EXPORTS, params=params, headers=headers), 400)
    if "exportType" in params:
        assert error["message"] == "Invalid export type: 'bogus'."


def test_list_accepts_the_limits(client: TestClient, headers: dict[str, str]) -> None:
    for limit in ("1", "100"):
        response = client.get(EXPORTS, params={"limit": limit}, headers=headers)
        assert response.status_code == 200 and response.json()["limit"] == int(limit)


def test_a_campaign_created_after_a_refusal_is_usable_at_once(client: TestClient, db: Any, make_token: Any) -> None:
    """Campaign names are kept for a while, but only of campaigns that exist: no 400 lingers."""
    headers = {"Authorization": f"Bearer {make_token(campaigns={'late': ['REPORT']})}"}
    assert_error(client.post("/campaigns/late/exports", json={"exportType": "codes"}, headers=headers), 400)
    db.campaigns.insert_one({"_id": "late", "name": "Late Campaign"})
    response = client.post("/campaigns/late/exports", json={"exportType": "codes"}, headers=headers)
    assert response.status_code == 201 and response.json()["campaignName"] == "Late Campaign"
    assert client.get("/campaigns/late/exports", headers=headers).json()["total"] == 1


def test_list_of_an_unknown_campaign_is_400(client: TestClient, make_token: Any) -> None:
    token = make_token(supreme=True)
    assert_error(
        client.get("/campaigns/missing/exports", headers={"Authorization": f"Bearer {token}"}),
        400,
        "Campaign not found.",
    )
