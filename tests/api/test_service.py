"""Heartbeat, metrics, dev tokens and the generic error paths (404, 405, 500) of SPEC §6."""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from typing import Any

import jwt
import pytest
from pymongo import MongoClient
from starlette.testclient import TestClient

from export_api.app import create_app
from export_api.errors import UNAVAILABLE_MESSAGE
from export_api.state import ApiState
from export_core.settings import Settings
from tests.api.conftest import CAMPAIGN, EXPORTS, assert_error
from tests.conftest import free_port


def api_state(client: TestClient) -> ApiState:
    return client.app.state.api  # type: ignore[attr-defined]


# -- heartbeat --------------------------------------------------------------------------


def test_heartbeat_ok(client: TestClient) -> None:
    response = client.get("/heartbeat")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    # HEAD is answered as GET (load balancers probe with either), and a 405 says it is allowed.
    head = client.head("/heartbeat")
    assert head.status_code == 200 and head.headers["content-type"] == "application/json"
    assert client.delete("/heartbeat").headers["allow"] == "GET, HEAD"


def test_heartbeat_is_503_when_the_database_is_gone(client: TestClient) -> None:
    dead: MongoClient = MongoClient(
        f"mongodb://127.0.0.1:{free_port()}/?directConnection=true", serverSelectionTimeoutMS=200
    )
    state = api_state(client)
    client.app.state.api = dataclasses.replace(state, db=dead["x"])  # type: ignore[attr-defined]
    try:
        started = time.monotonic()
        assert_error(client.get("/heartbeat"), 503, UNAVAILABLE_MESSAGE)
        assert time.monotonic() - started < 3
    finally:
        client.app.state.api = state  # type: ignore[attr-defined]
        dead.close()


# -- metrics ----------------------------------------------------------------------------


def test_metrics_use_route_templates_and_count_exports(client: TestClient, headers: dict[str, str]) -> None:
    created = client.post(EXPORTS, json={"exportType": "entries"}, headers=headers).json()
    client.get(f"{EXPORTS}/{created['id']}", headers=headers)
    client.get(f"{EXPORTS}/no-such-export-4242", headers=headers)
    client.get("/no/such/route/zz-raw-path-zz")

    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for name in (
        "export_api_requests_total",
        "export_api_request_duration_seconds_bucket",
        "export_service_exports",
        "export_service_queue_depth",
        "export_service_store_up",
    ):
        assert f"\n{name}" in text, name
    assert re.search(
        r'export_api_requests_total\{method="POST",route="/campaigns/\{campaignId\}/exports",status="201"\} 1\.0', text
    )
    assert 'route="/campaigns/{campaignId}/exports/{exportId}",status="404"' in text
    assert 'route="<unmatched>",status="404"' in text
    assert 'export_service_exports{export_type="entries",status="PENDING"} 1.0' in text
    assert 'export_service_exports{export_type="entries",status="FINISHED"} 0.0' in text
    assert "export_service_queue_depth 1.0" in text
    assert "export_service_store_up 1.0" in text
    # No user data in labels.
    for raw in (created["id"], CAMPAIGN, "no-such-export-4242", "zz-raw-path-zz", "user-1"):
        assert raw not in text


def test_each_app_has_its_own_registry(settings: Settings) -> None:
    with TestClient(create_app(settings)) as one, TestClient(create_app(settings)) as two:
        one.get("/heartbeat")
        assert 'route="/heartbeat"' in one.get("/metrics").text
        assert 'route="/heartbeat"' not in two.get("/metrics").text


# -- dev token --------------------------------------------------------------------------


def test_dev_token_grants_what_it_says(client: TestClient, jwt_keys: tuple[str, str]) -> None:
    response = client.post("/dev/token", json={"userId": "dev-1", "campaignId": CAMPAIGN, "permissions": ["REPORT"]})
    assert response.status_code == 200
    token = response.json()["token"]
    claims = jwt.decode(token, jwt_keys[1], algorithms=["RS256"])
    assert claims["sub"] == "dev-1" and claims["campaigns"] == {CAMPAIGN: ["REPORT"]}
    assert 3590 <= claims["exp"] - time.time() <= 3600 and "supreme" not in claims
    assert jwt.get_unverified_header(token)["alg"] == "RS256"

    created = client.post(EXPORTS, json={"exportType": "entries"}, headers={"Authorization": f"Bearer {token}"})
    assert created.status_code == 201 and created.json()["requesterUserId"] == "dev-1"


def test_dev_token_supreme_and_expiry(client: TestClient, jwt_keys: tuple[str, str]) -> None:
    body = {"userId": "ops", "campaignId": "x", "permissions": [], "supreme": True, "expiresIn": 60}
    token = client.post("/dev/token", json=body).json()["token"]
    claims = jwt.decode(token, jwt_keys[1], algorithms=["RS256"])
    assert claims["supreme"] is True and 50 <= claims["exp"] - time.time() <= 60
    assert client.get(EXPORTS, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    # 60.0 is an integer to JSON Schema, hence to the document; 60.5 is not.
    whole = client.post("/dev/token", json={**body, "expiresIn": 60.0})
    assert 50 <= jwt.decode(whole.json()["token"], jwt_keys[1], algorithms=["RS256"])["exp"] - time.time() <= 60
    assert_error(client.post("/dev/token", json={**body, "expiresIn": 60.5}), 400)


@pytest.mark.parametrize(
    "body",
    [
        {"campaignId": CAMPAIGN, "permissions": ["REPORT"]},
        {"userId": "u", "permissions": ["REPORT"]},
        {"userId": "u", "campaignId": CAMPAIGN, "permissions": "REPORT"},
        {"userId": "u", "campaignId": CAMPAIGN, "permissions": ["REPORT"], "supreme": "yes"},
        {"userId": "u", "campaignId": CAMPAIGN, "permissions": ["REPORT"], "expiresIn": 0},
        {"userId": "u", "campaignId": CAMPAIGN, "permissions": ["REPORT"], "expiresIn": True},
        ["u"],
    ],
)
def test_dev_token_rejects_bad_bodies(client: TestClient, body: Any) -> None:
    assert_error(client.post("/dev/token", json=body), 400)


def test_dev_token_is_404_outside_dev_mode(settings: Settings) -> None:
    with TestClient(create_app(settings.model_copy(update={"dev_mode": False}))) as client:
        assert_error(client.post("/dev/token", json={"userId": "u", "campaignId": "c", "permissions": []}), 404)


# -- generic errors ---------------------------------------------------------------------


def test_unknown_route_is_404_in_the_error_shape(client: TestClient) -> None:
    assert_error(client.get("/nope"), 404, "Not found.")
    assert_error(client.get(f"/campaigns/{CAMPAIGN}/exports/a/b"), 404)


def test_wrong_method_is_405_with_allow(client: TestClient, headers: dict[str, str]) -> None:
    response = client.put(EXPORTS, json={}, headers=headers)
    assert_error(response, 405, "Method not allowed.")
    assert set(response.headers["allow"].split(", ")) >= {"GET", "POST"}
    assert_error(client.post("/heartbeat"), 405)
    assert_error(client.delete(f"{EXPORTS}/abc", headers=headers), 405)


def test_internal_fault_is_500_without_internals(
    settings: Settings, campaigns: None, token: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(export_id: str) -> None:
        raise RuntimeError("secret internal detail")

    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        monkeypatch.setattr(api_state(client).store, "get", broken)
        with caplog.at_level(logging.ERROR, logger="export_api"):
            response = client.get(f"{EXPORTS}/abc", headers={"Authorization": f"Bearer {token}"})
        assert response.json() == {"error": {"status": 500, "message": "Internal server error.", "payload": ""}}
        assert "secret" not in response.text and "Traceback" not in response.text
        assert "RuntimeError: secret internal detail" in caplog.text  # the operator gets the details ...
        assert token not in caplog.text  # ... but never the caller's token
        assert "/campaigns/{campaignId}/exports/{exportId}" in caplog.text
        assert 'status="500"' in client.get("/metrics").text


def test_app_module_does_not_import_dagster() -> None:
    import subprocess
    import sys

    code = "import export_api.app, sys; assert 'dagster' not in sys.modules; assert 'polars' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
