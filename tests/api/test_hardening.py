"""Token options, start-up refusal, request limits, re-runs and the dedupe slot, caches (SPEC §4, §6, §8)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from pymongo.database import Database
from starlette.testclient import TestClient

from export_api.app import ConfigurationError, create_app
from export_api.auth import MAX_TOKEN_BYTES
from export_core.records import ExportStore
from export_core.settings import DEV_SECRETS_KEY_FILE, Settings
from tests.api.conftest import CAMPAIGN, EXPORTS, OTHER_CAMPAIGN, FakeDagster, LiveServer, assert_error

# -- tokens -----------------------------------------------------------------------------------


def signed(private_pem: str, **claims: Any) -> dict[str, str]:
    body = {"sub": "user-1", "campaigns": {CAMPAIGN: ["REPORT"]}, "exp": int(time.time()) + 600, **claims}
    body = {k: v for k, v in body.items() if v is not None}
    return {"Authorization": f"Bearer {jwt.encode(body, private_pem, algorithm='RS256')}"}


def app_client(settings: Settings, **changes: Any) -> TestClient:
    return TestClient(create_app(settings.model_copy(update=changes)))


@pytest.mark.usefixtures("campaigns")
def test_aud_is_ignored_unless_an_audience_is_configured(settings: Settings, jwt_keys: tuple[str, str]) -> None:
    with app_client(settings) as client:
        assert client.get(EXPORTS, headers=signed(jwt_keys[0], aud="some-other-service")).status_code == 200
    with app_client(settings, jwt_audience="export-service") as client:
        assert client.get(EXPORTS, headers=signed(jwt_keys[0], aud="export-service")).status_code == 200
        assert client.get(EXPORTS, headers=signed(jwt_keys[0], aud=["x", "export-service"])).status_code == 200
        assert_error(client.get(EXPORTS, headers=signed(jwt_keys[0], aud="some-other-service")), 401, "Invalid token.")
        assert_error(client.get(EXPORTS, headers=signed(jwt_keys[0])), 401, "Invalid token.")


@pytest.mark.usefixtures("campaigns")
def test_issuer_is_required_and_checked_when_configured(settings: Settings, jwt_keys: tuple[str, str]) -> None:
    with app_client(settings, jwt_issuer="https://auth.example") as client:
        assert client.get(EXPORTS, headers=signed(jwt_keys[0], iss="https://auth.example")).status_code == 200
        assert_error(client.get(EXPORTS, headers=signed(jwt_keys[0], iss="https://evil.example")), 401)
        assert_error(client.get(EXPORTS, headers=signed(jwt_keys[0])), 401)
    with app_client(settings) as client:
        assert client.get(EXPORTS, headers=signed(jwt_keys[0], iss="anyone")).status_code == 200


@pytest.mark.usefixtures("campaigns")
def test_clock_leeway_applies_to_exp_nbf_and_iat(settings: Settings, jwt_keys: tuple[str, str]) -> None:
    now = int(time.time())
    skewed = {"exp": now - 10, "nbf": now + 10, "iat": now + 10}
    with app_client(settings) as client:  # default leeway: 30 s
        assert client.get(EXPORTS, headers=signed(jwt_keys[0], **skewed)).status_code == 200
        assert_error(client.get(EXPORTS, headers=signed(jwt_keys[0], exp=now - 60)), 401, "Token expired.")
    with app_client(settings, jwt_leeway_seconds=0) as client:
        for claim, value in skewed.items():
            assert_error(client.get(EXPORTS, headers=signed(jwt_keys[0], **{claim: value})), 401)


@pytest.mark.usefixtures("campaigns")
def test_a_token_over_8_kb_is_refused_even_when_validly_signed(client: TestClient, jwt_keys: tuple[str, str]) -> None:
    big = signed(jwt_keys[0], pad="x" * MAX_TOKEN_BYTES)
    assert len(big["Authorization"]) > MAX_TOKEN_BYTES
    assert_error(client.get(EXPORTS, headers=big), 401, "Token too large.")
    assert client.get(EXPORTS, headers=signed(jwt_keys[0], pad="x" * 4000)).status_code == 200


def test_outside_dev_mode_the_service_refuses_to_start_without_a_public_key(
    settings: Settings, env: dict[str, str], tmp_path: Path
) -> None:
    # A generated dev key pair sits in DATA_DIR: outside DEV_MODE it must not be picked up.
    keys = Path(env["DATA_DIR"]) / "keys"
    keys.mkdir(parents=True)
    (keys / "dev_public.pem").write_text(env["JWT_PUBLIC_KEY"])
    (keys / "dev_private.pem").write_text(env["JWT_PRIVATE_KEY"])
    child_env = {k: v for k, v in os.environ.items() if k not in ("JWT_PUBLIC_KEY", "JWT_PRIVATE_KEY")}
    child_env["DEV_MODE"] = "0"
    result = subprocess.run(
        [sys.executable, "-c", "import export_api.app as m; m.app"], env=child_env, capture_output=True, text=True
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        "export-service API: JWT_PUBLIC_KEY is not set; outside DEV_MODE the API needs it to verify tokens."
    )
    with pytest.raises(ConfigurationError):
        create_app(settings.model_copy(update={"dev_mode": False, "jwt_public_key": None}))
    # In dev mode the generated key file is still the local default.
    child_env["DEV_MODE"] = "1"
    ok = subprocess.run([sys.executable, "-c", "import export_api.app as m; m.app"], env=child_env)
    assert ok.returncode == 0


def test_outside_dev_mode_the_service_refuses_to_start_without_secrets_key(
    settings: Settings, env: dict[str, str]
) -> None:
    # A generated dev key sits in DATA_DIR: outside DEV_MODE it must not be picked up.
    keys = Path(env["DATA_DIR"]) / "keys"
    keys.mkdir(parents=True)
    (keys / DEV_SECRETS_KEY_FILE).write_text(env["SECRETS_KEY"])
    child_env = {k: v for k, v in os.environ.items() if k != "SECRETS_KEY"}
    child_env["DEV_MODE"] = "0"
    app = [sys.executable, "-c", "import export_api.app as m; m.app"]
    result = subprocess.run(app, env=child_env, capture_output=True, text=True)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        "export-service API: SECRETS_KEY is not set; outside DEV_MODE the service needs it to encrypt and decrypt"
        " stored secrets."
    )
    with pytest.raises(ConfigurationError, match="SECRETS_KEY is not set"):
        create_app(settings.model_copy(update={"dev_mode": False, "secrets_key": None}))
    # In dev mode the dev key stands in for it, generated when missing.
    (keys / DEV_SECRETS_KEY_FILE).unlink()
    child_env["DEV_MODE"] = "1"
    assert subprocess.run(app, env=child_env).returncode == 0
    assert (keys / DEV_SECRETS_KEY_FILE).stat().st_mode & 0o777 == 0o600


# -- MAX_PENDING_PER_CAMPAIGN -----------------------------------------------------------------

TYPES = ["entries", "codes", "scoring", "fanlist", "waitlist", "artistOptIn", "livenationOptIn", "verifiedEntries"]


@pytest.mark.usefixtures("campaigns")
def test_pending_limit_is_429_with_retry_after_and_duplicates_still_answer(
    settings: Settings, headers: dict[str, str], db: Database
) -> None:
    with app_client(settings, max_pending_per_campaign=3) as client:
        created = [client.post(EXPORTS, json={"exportType": t}, headers=headers) for t in TYPES[:3]]
        assert [r.status_code for r in created] == [201, 201, 201]
        refused = client.post(EXPORTS, json={"exportType": TYPES[3]}, headers=headers)
        assert_error(refused, 429)
        assert refused.headers["retry-after"].isdigit() and "X-Request-ID" in refused.headers
        again = client.post(EXPORTS, json={"exportType": TYPES[0]}, headers=headers)
        assert again.status_code == 200 and again.json()["id"] == created[0].json()["id"]
        # The limit is per campaign and counts PENDING only.
        other = client.post(f"/campaigns/{OTHER_CAMPAIGN}/exports", json={"exportType": "codes"}, headers=headers)
        assert other.status_code == 201
        ExportStore(db).mark_triggered(created[0].json()["id"], run_id="r", preliminary_count=None)
        assert client.post(EXPORTS, json={"exportType": TYPES[3]}, headers=headers).status_code == 201
    assert db.exports.count_documents({"campaignId": CAMPAIGN, "status": "PENDING"}) == 3


def test_pending_limit_holds_under_concurrent_requests(
    settings: Settings, campaigns: None, headers: dict[str, str], db: Database
) -> None:
    with LiveServer(create_app(settings.model_copy(update={"max_pending_per_campaign": 3}))) as live:

        def post(export_type: str) -> int:
            url = f"{live.url}{EXPORTS}"
            return httpx.post(url, json={"exportType": export_type}, headers=headers, timeout=30).status_code

        with ThreadPoolExecutor(len(TYPES)) as pool:
            statuses = list(pool.map(post, TYPES))
    pending = db.exports.count_documents({"campaignId": CAMPAIGN, "status": "PENDING"})
    # Refused only when every slot is taken: exactly the limit gets in, however the requests race.
    assert sorted(statuses) == [201] * 3 + [429] * (len(TYPES) - 3) and pending == 3, statuses


# -- re-runs take the dedupe slot back --------------------------------------------------------


def failed_export(client: TestClient, headers: dict[str, str], store: ExportStore) -> str:
    export_id = str(client.post(EXPORTS, json={"exportType": "entries"}, headers=headers).json()["id"])
    store.mark_triggered(export_id, run_id="run-1", preliminary_count=None)
    store.mark_failed(export_id, message="The database was unreachable.")
    return export_id


def test_a_rerun_takes_the_dedupe_slot_back(client: TestClient, headers: dict[str, str], db: Database) -> None:
    store = ExportStore(db)
    export_id = failed_export(client, headers, store)
    rerun = store.mark_triggered(export_id, run_id="run-2", preliminary_count=None)
    assert rerun["status"] == "TRIGGERED" and "error" not in rerun
    again = client.post(EXPORTS, json={"exportType": "entries"}, headers=headers)
    assert again.status_code == 200 and again.json()["id"] == export_id
    store.mark_finished(export_id, key="k", count=0, meta={})
    fresh = client.post(EXPORTS, json={"exportType": "entries"}, headers=headers)
    assert fresh.status_code == 201 and fresh.json()["id"] != export_id


def test_a_rerun_while_a_fresh_duplicate_holds_the_slot_runs_without_it(
    client: TestClient, headers: dict[str, str], db: Database
) -> None:
    store = ExportStore(db)
    export_id = failed_export(client, headers, store)
    fresh = client.post(EXPORTS, json={"exportType": "entries"}, headers=headers)
    assert fresh.status_code == 201
    rerun = store.mark_triggered(export_id, run_id="run-2", preliminary_count=7)  # must not raise
    assert rerun["status"] == "TRIGGERED" and rerun["preliminaryCount"] == 7 and "active" not in rerun
    again = client.post(EXPORTS, json={"exportType": "entries"}, headers=headers)
    assert again.status_code == 200 and again.json()["id"] == fresh.json()["id"]
    assert store.mark_finished(export_id, key="k", count=0, meta={})["status"] == "FINISHED"


# -- caches: ended runs' Dagster status, /metrics counts ----------------------------------------


def test_ended_exports_do_not_ask_dagster_on_every_get(
    settings: Settings, campaigns: None, headers: dict[str, str], db: Database, fake_dagster: FakeDagster
) -> None:
    store = ExportStore(db)
    ids = {}
    for export_type, run_id in (("entries", "run-done-1"), ("codes", "run-ok-2"), ("scoring", "run-unknown")):
        record = store.create(campaign_id=CAMPAIGN, campaign_name="S", export_type=export_type, requester_user_id="u")
        store.mark_triggered(record.record["id"], run_id=run_id, preliminary_count=None)
        ids[run_id] = record.record["id"]
    store.mark_finished(ids["run-done-1"], key="k", count=1, meta={})
    store.mark_failed(ids["run-unknown"], message="Gone.")
    with app_client(settings, dagster_graphql_url=fake_dagster.url) as client:
        for _ in range(3):
            for export_id in ids.values():
                assert client.get(f"{EXPORTS}/{export_id}", headers=headers).status_code == 200
        done = client.get(f"{EXPORTS}/{ids['run-done-1']}", headers=headers).json()
    asked = [r["variables"]["runId"] for r in fake_dagster.requests]
    assert done["run"]["status"] == "SUCCESS" and done["run"]["available"] is True
    assert asked.count("run-done-1") == 1  # ended run: asked once, then remembered
    assert asked.count("run-unknown") == 1  # ended export, unknown run: remembered for a few seconds
    assert asked.count("run-ok-2") == 3  # a live export's run is asked every time


def test_metrics_counts_come_from_a_short_cache(client: TestClient, headers: dict[str, str]) -> None:
    collector = client.app.state.api.metrics.exports  # type: ignore[attr-defined]
    client.post(EXPORTS, json={"exportType": "entries"}, headers=headers)
    assert "export_service_queue_depth 1.0" in client.get("/metrics").text
    client.post(EXPORTS, json={"exportType": "codes"}, headers=headers)
    assert "export_service_queue_depth 1.0" in client.get("/metrics").text  # within the TTL: cached
    assert collector.reads == 1
    collector.ttl_seconds = 0
    assert "export_service_queue_depth 2.0" in client.get("/metrics").text
    assert collector.reads == 2
