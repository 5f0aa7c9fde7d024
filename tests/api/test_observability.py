"""X-Request-ID on every response and on the record; JSON log lines without tokens, e-mails or phones."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from pymongo.database import Database
from starlette.testclient import TestClient

from export_api.app import create_app
from export_api.state import ApiState
from export_core.json_logs import JsonFormatter, scrub
from export_core.settings import Settings
from tests.api.conftest import EXPORTS, TokenFactory

HEX_ID = re.compile(r"^[0-9a-f]{32}$")
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
PHONE = re.compile(r"\+\d[\d ().-]{6,}\d|\b\d{3}[-. ]\d{3}[-. ]\d{4}\b")


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("req-abc_123:x.y", True),
        ("r" * 128, True),
        ("r" * 129, False),
        ("has space", False),
        ("tab\there", False),
        ("fan@example.com", False),  # ids are logged and stored: nothing that looks like personal data
        ("+15551234567", False),
        ("", False),
    ],
)
def test_request_id_is_echoed_when_valid_else_generated(
    client: TestClient, headers: dict[str, str], sent: str, kept: bool
) -> None:
    response = client.get(EXPORTS, headers={**headers, "X-Request-ID": sent})
    assert response.status_code == 200
    returned = response.headers["x-request-id"]
    assert returned == sent if kept else HEX_ID.match(returned)


def test_every_response_carries_a_request_id_errors_included(
    settings: Settings, campaigns: None, headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        responses = {
            "ok": client.get("/heartbeat"),
            "401": client.get(EXPORTS),
            "404": client.get("/no/such/route"),
            "405": client.put(EXPORTS, headers=headers),
            "docs": client.get("/docs"),
            "asset": client.get("/docs/assets/swagger-ui.css"),
        }
        state: ApiState = client.app.state.api  # type: ignore[attr-defined]

        def broken(export_id: str) -> None:
            raise RuntimeError("boom")

        monkeypatch.setattr(state.store, "get", broken)
        responses["500"] = client.get(f"{EXPORTS}/abc", headers={**headers, "X-Request-ID": "trace-500"})
    assert responses["500"].status_code == 500
    assert responses["500"].headers["x-request-id"] == "trace-500"
    ids = [r.headers["x-request-id"] for name, r in responses.items() if name != "500"]
    assert all(HEX_ID.match(i) for i in ids) and len(set(ids)) == len(ids)


def test_post_stores_the_request_id_on_the_record(client: TestClient, headers: dict[str, str], db: Database) -> None:
    created = client.post(EXPORTS, json={"exportType": "entries"}, headers={**headers, "X-Request-ID": "order-77"})
    assert created.status_code == 201 and created.json()["requestId"] == "order-77"
    assert db.exports.find_one({"_id": created.json()["id"]})["requestId"] == "order-77"
    generated = client.post(EXPORTS, json={"exportType": "codes"}, headers=headers)
    assert db.exports.find_one({"_id": generated.json()["id"]})["requestId"] == generated.headers["x-request-id"]
    # A duplicate returns the original record, with the original request's id.
    again = client.post(EXPORTS, json={"exportType": "entries"}, headers={**headers, "X-Request-ID": "order-78"})
    assert again.status_code == 200 and again.json()["requestId"] == "order-77"


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_json_log_lines_carry_ids_and_route_templates_but_no_personal_data(
    settings: Settings, campaigns: None, token: str, make_token: TokenFactory, tmp_path: Path
) -> None:
    log_dir = tmp_path / "logs"
    auth = {"Authorization": f"Bearer {token}"}
    email_campaign = "fan.name+vip@example.com"
    phone_user = "+1 (555) 123-4567"
    bad_token = make_token(key=None, expires_in=-3600)  # expired: refused, must not be logged either
    with TestClient(create_app(settings.model_copy(update={"log_dir": log_dir}))) as client:
        created = client.post(EXPORTS, json={"exportType": "entries"}, headers={**auth, "X-Request-ID": "trace-1"})
        export_id = created.json()["id"]
        client.get(f"{EXPORTS}/{export_id}", headers={**auth, "X-Request-ID": "trace-2"})
        client.get(EXPORTS, headers={"Authorization": f"Bearer {bad_token}"})
        client.get(EXPORTS, headers={"Authorization": "Bearer not-even-a-jwt"})
        supreme = {"Authorization": f"Bearer {make_token(supreme=True)}"}
        assert client.get(f"/campaigns/{email_campaign}/exports", headers=supreme).status_code == 400
        client.post(f"/campaigns/{email_campaign}/exports", json={"exportType": "entries"}, headers=auth)
        client.get(f"{EXPORTS}/{phone_user}", headers=auth)
        assert client.delete(f"/ccpa/users/{phone_user}", headers=supreme).status_code == 200
        client.delete(f"/ccpa/users/{email_campaign}", headers=auth)
        client.get("/heartbeat", headers={"X-Request-ID": email_campaign})
        logging.getLogger("export_api").warning("user %s asked with %s", email_campaign, f"Bearer {token}")
        metrics = client.get("/metrics").text
    lines = read_lines(log_dir / "api.jsonl")
    access = [line for line in lines if line["logger"] == "export_api.access"]
    assert len(access) >= 10
    for line in access:
        assert {"time", "level", "message", "request_id", "method", "route", "status", "duration_ms"} <= set(line)
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", line["time"])
    by_id = {line["request_id"]: line for line in access}
    assert by_id["trace-1"]["route"] == "/campaigns/{campaignId}/exports" and by_id["trace-1"]["status"] == 201
    assert by_id["trace-1"]["export_id"] == export_id
    assert by_id["trace-2"]["route"] == "/campaigns/{campaignId}/exports/{exportId}"
    assert by_id["trace-2"]["export_id"] == export_id and by_id["trace-2"]["status"] == 200
    assert {401, 400, 404, 200, 201} <= {line["status"] for line in access}
    text = (log_dir / "api.jsonl").read_text()
    for haystack in (text, metrics):
        assert token not in haystack and bad_token not in haystack and "not-even-a-jwt" not in haystack
        assert not EMAIL.search(haystack), EMAIL.search(haystack)
        assert not PHONE.search(haystack), PHONE.search(haystack)
    assert "[email]" in text and "[token]" in text  # the stray warning above was scrubbed, not dropped


def test_formatter_takes_run_and_step_from_dagster_records() -> None:
    record = logging.LogRecord("dagster", logging.INFO, __file__, 1, "step %s done for fan@x.org", ("extract",), None)
    record.dagster_meta = {"run_id": "run-1", "step_key": "extract_rows"}  # type: ignore[attr-defined]
    record.export_id = "exp-1"  # type: ignore[attr-defined]
    line = json.loads(JsonFormatter().format(record))
    assert line["run_id"] == "run-1" and line["step"] == "extract_rows" and line["export_id"] == "exp-1"
    assert line["message"] == "step extract done for [email]" and line["level"] == "INFO"


def test_scrub_leaves_ids_counts_and_dates_alone() -> None:
    text = "export 3f2a9c0d1e2b4a5f8c7d6e5f4a3b2c1d wrote 1200000 rows at 2024-01-15T10:30:00.000Z key 1718000000000"
    assert scrub(text) == text
    assert scrub("call +44 20 7946 0958 or 555-123-4567") == "call [phone] or [phone]"
