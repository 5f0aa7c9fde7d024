"""Webhook subscriptions through the API (SPEC §6, §11), against the suite's real MongoDB-protocol server.

URLs use literal IPs and `localhost`: this machine has no external DNS.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from pymongo.database import Database
from standardwebhooks import Webhook
from starlette.testclient import TestClient

from export_api.app import create_app
from export_api.errors import ApiError
from export_api.models.base import parse_body
from export_api.models.webhooks import WebhookRequest
from export_core import webhooks
from export_core.records import ExportStore, utcnow
from export_core.secrets import SecretBox
from export_core.settings import Settings
from tests.api.conftest import CAMPAIGN, OTHER_CAMPAIGN, LiveServer, TokenFactory, assert_error

HOOKS = f"/campaigns/{CAMPAIGN}/webhooks"
PUBLIC_URL = "https://8.8.8.8/hooks/exports"
WEBHOOK_EVENTS = (
    "export.finished, export.failed, export.expired, export.delivered, export.delivery_failed, schedule.paused"
)
WEBHOOK_EVENTS_NEEDED = f"'events' must be a non-empty list of: {WEBHOOK_EVENTS}."
UNKNOWN_EVENT = f"Unknown event 'export.started'; events are: {WEBHOOK_EVENTS}."
LINK_LOCAL = "The webhook URL's host resolves to a link-local address, which is never allowed."
PRIVATE = "The webhook URL's host resolves to a loopback, private or shared address; only public addresses are allowed."


@pytest.fixture
def private_client(settings: Settings, campaigns: None) -> Iterator[TestClient]:
    """The API with WEBHOOK_ALLOW_PRIVATE=1 (local development, tests)."""
    with TestClient(create_app(settings.model_copy(update={"webhook_allow_private": True}))) as test_client:
        yield test_client


def subscribe(client: TestClient, headers: dict[str, str], url: str = PUBLIC_URL, **body: object) -> httpx.Response:
    return client.post(HOOKS, json={"url": url, "events": ["export.finished"], **body}, headers=headers)


def test_subscribing_shows_the_secret_once_and_lists_never_do(client: TestClient, headers: dict[str, str]):
    created = client.post(
        HOOKS, json={"url": PUBLIC_URL, "events": ["export.finished", "export.failed"]}, headers=headers
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert set(body) == {"id", "campaignId", "url", "events", "createdAt", "createdBy", "secret"}
    assert body["campaignId"] == CAMPAIGN and body["url"] == PUBLIC_URL and body["createdBy"] == "user-1"
    assert body["events"] == ["export.finished", "export.failed"]
    secret = body["secret"]
    assert secret.startswith("whsec_") and len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    Webhook(secret)  # the form the Standard Webhooks libraries read
    assert created.headers["cache-control"] == "no-store"

    listed = client.get(HOOKS, headers=headers)
    assert listed.status_code == 200
    assert listed.json() == {"webhooks": [{k: v for k, v in body.items() if k != "secret"}]}
    deliveries = client.get(f"{HOOKS}/{body['id']}/deliveries", headers=headers)
    assert deliveries.status_code == 200 and deliveries.json() == {"deliveries": [], "page": 0, "limit": 20}
    for response in (listed, deliveries):
        assert secret not in response.text and "whsec_" not in response.text


def test_the_secret_is_stored_encrypted_and_never_comes_back(
    client: TestClient, headers: dict[str, str], db: Database, secret_box: SecretBox
):
    created = subscribe(client, headers).json()
    secret = created["secret"]
    stored = db[webhooks.SUBSCRIPTIONS].find_one({"_id": created["id"]})
    assert stored is not None and "secret" not in stored
    assert secret not in str(stored) and secret.removeprefix("whsec_") not in str(stored)
    assert secret_box.decrypt(stored["encryptedSecret"]) == secret, "SECRETS_KEY decrypts it to sign"
    for response in (
        client.get(HOOKS, headers=headers),
        client.get(f"{HOOKS}/{created['id']}/deliveries", headers=headers),
    ):
        assert response.status_code == 200
        assert "encryptedSecret" not in response.text and stored["encryptedSecret"] not in response.text
        assert secret not in response.text


def test_a_webhook_may_subscribe_to_schedule_paused(client: TestClient, headers: dict[str, str]):
    created = subscribe(client, headers, events=["schedule.paused", "export.failed"])
    assert created.status_code == 201, created.text
    assert created.json()["events"] == ["schedule.paused", "export.failed"]
    assert_error(subscribe(client, headers, events=["schedule.resumed"]), 400)


def test_delete_removes_it_and_another_campaigns_webhook_is_not_found(
    client: TestClient, headers: dict[str, str], db: Database
):
    mine = subscribe(client, headers).json()
    theirs = client.post(
        f"/campaigns/{OTHER_CAMPAIGN}/webhooks", json={"url": PUBLIC_URL, "events": ["export.failed"]}, headers=headers
    ).json()

    assert_error(client.delete(f"{HOOKS}/{theirs['id']}", headers=headers), 404, "Webhook not found.")
    assert_error(client.get(f"{HOOKS}/{theirs['id']}/deliveries", headers=headers), 404, "Webhook not found.")
    assert db[webhooks.SUBSCRIPTIONS].count_documents({"_id": theirs["id"]}) == 1, "untouched"

    removed = client.delete(f"{HOOKS}/{mine['id']}", headers=headers)
    assert removed.status_code == 204 and removed.content == b""
    assert client.get(HOOKS, headers=headers).json() == {"webhooks": []}
    assert_error(client.delete(f"{HOOKS}/{mine['id']}", headers=headers), 404, "Webhook not found.")
    assert_error(client.get(f"{HOOKS}/{mine['id']}/deliveries", headers=headers), 404, "Webhook not found.")


def test_a_campaign_has_at_most_ten(client: TestClient, headers: dict[str, str]):
    ids = [subscribe(client, headers, url=f"{PUBLIC_URL}/{i}").json()["id"] for i in range(10)]
    refused = subscribe(client, headers)
    assert_error(refused, 409, "This campaign already has 10 webhooks; remove one before adding another.")
    assert "whsec_" not in refused.text
    other = client.post(
        f"/campaigns/{OTHER_CAMPAIGN}/webhooks", json={"url": PUBLIC_URL, "events": ["export.failed"]}, headers=headers
    )
    assert other.status_code == 201, "the limit is per campaign"
    assert client.delete(f"{HOOKS}/{ids[3]}", headers=headers).status_code == 204
    assert subscribe(client, headers).status_code == 201
    assert len(client.get(HOOKS, headers=headers).json()["webhooks"]) == 10


def test_concurrent_subscriptions_never_pass_the_limit(live_api: LiveServer, headers: dict[str, str]):
    def post(i: int) -> int:
        body = {"url": f"{PUBLIC_URL}/{i}", "events": ["export.expired"]}
        return httpx.post(f"{live_api.url}{HOOKS}", json=body, headers=headers, timeout=30).status_code

    with ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(post, range(14)))
    assert sorted(statuses) == [201] * 10 + [409] * 4
    listed = httpx.get(f"{live_api.url}{HOOKS}", headers=headers, timeout=10).json()["webhooks"]
    assert len(listed) == 10


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://8.8.8.8/hook", "The webhook URL must start with https://."),
        ("https://127.0.0.1/hook", PRIVATE),
        ("https://localhost:8443/hook", PRIVATE),
        ("https://[::1]/hook", PRIVATE),
        ("https://10.0.0.7/hook", PRIVATE),
        ("https://192.168.1.1/hook", PRIVATE),
        ("https://100.64.0.1/hook", PRIVATE),
        ("https://[fd00::1]/hook", PRIVATE),
        ("https://169.254.169.254/latest/meta-data/", LINK_LOCAL),
        ("https://name.invalid/hook", "The webhook URL's host could not be resolved."),
    ],
)
def test_only_https_to_public_addresses_by_default(client: TestClient, headers: dict[str, str], url: str, message: str):
    error = assert_error(subscribe(client, headers, url=url), 400, message)
    assert error["payload"] == "", "the URL (it may carry a token) is not echoed"
    assert client.get(HOOKS, headers=headers).json() == {"webhooks": []}


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9000/hook", "http://localhost:9000/hook", "https://10.1.2.3/x", "http://[::1]:9/"]
)
def test_webhook_allow_private_allows_http_and_private_addresses(
    private_client: TestClient, headers: dict[str, str], url: str
):
    response = private_client.post(HOOKS, json={"url": url, "events": ["export.failed"]}, headers=headers)
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "https://169.254.0.10/",
        "http://[fe80::1]:8080/",
        "http://[::ffff:169.254.169.254]/",
        "http://0.0.0.0:8000/",
        "http://224.0.0.1/",
    ],
)
def test_link_local_and_special_addresses_are_refused_even_with_webhook_allow_private(
    private_client: TestClient, headers: dict[str, str], url: str
):
    response = private_client.post(HOOKS, json={"url": url, "events": ["export.failed"]}, headers=headers)
    error = assert_error(response, 400)
    assert "link-local" in error["message"] or "cannot receive webhooks" in error["message"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"url": PUBLIC_URL, "events": []}, None),
        ({"url": PUBLIC_URL, "events": ["export.done"]}, None),
        ({"url": PUBLIC_URL}, None),
        ({"events": ["export.failed"]}, "'url' must be a non-empty string."),
        ({"url": PUBLIC_URL, "events": ["export.failed"], "x": 1}, "Unknown field in the request body: 'x'."),
        (["not", "an", "object"], "Request body must be a JSON object."),
    ],
)  # fmt: skip
def test_malformed_bodies_are_400(client: TestClient, headers: dict[str, str], body: object, message: str | None):
    assert_error(client.post(HOOKS, json=body, headers=headers), 400, message)


def test_non_json_and_unknown_campaigns_are_400(client: TestClient, headers: dict[str, str], make_token: TokenFactory):
    assert_error(client.post(HOOKS, content=b"{nope", headers=headers), 400, "Request body must be valid JSON.")
    stranger = {"Authorization": f"Bearer {make_token(campaigns={'nope': ['REPORT']})}"}
    body = {"url": PUBLIC_URL, "events": ["export.failed"]}
    assert_error(client.post("/campaigns/nope/webhooks", json=body, headers=stranger), 400, "Campaign not found.")
    assert_error(client.get("/campaigns/nope/webhooks", headers=stranger), 400, "Campaign not found.")


def test_every_operation_needs_report_on_the_campaign(
    client: TestClient, headers: dict[str, str], make_token: TokenFactory
):
    hook = subscribe(client, headers).json()
    elsewhere = {"Authorization": f"Bearer {make_token(campaigns={OTHER_CAMPAIGN: ['REPORT']})}"}
    read_only = {"Authorization": f"Bearer {make_token(campaigns={CAMPAIGN: ['READ']})}"}
    calls = [
        ("POST", HOOKS, {"url": PUBLIC_URL, "events": ["export.failed"]}),
        ("GET", HOOKS, None),
        ("DELETE", f"{HOOKS}/{hook['id']}", None),
        ("GET", f"{HOOKS}/{hook['id']}/deliveries", None),
    ]
    for method, path, body in calls:
        for auth in ({}, elsewhere, read_only):
            response = client.request(method, path, json=body, headers=auth)
            assert_error(response, 401)
            assert response.headers["www-authenticate"] == "Bearer"
    supreme = {"Authorization": f"Bearer {make_token(campaigns={}, supreme=True)}"}
    assert client.get(HOOKS, headers=supreme).status_code == 200
    assert len(client.get(HOOKS, headers=headers).json()["webhooks"]) == 1, "nothing changed"


def test_deliveries_list_attempts_newest_first_and_why_one_was_given_up(
    client: TestClient, headers: dict[str, str], db: Database
):
    hook = subscribe(client, headers).json()
    store, exports = webhooks.WebhookStore(db), ExportStore(db)
    record = exports.create(
        campaign_id=CAMPAIGN, campaign_name="Summer Tour 2024", export_type="codes", requester_user_id="u"
    )
    exports.mark_triggered(record.record["id"], run_id="r", preliminary_count=None)
    ended = exports.mark_failed(record.record["id"], message="The database was unavailable; the export can be re-run.")
    subscription = db[webhooks.SUBSCRIPTIONS].find_one({"_id": hook["id"]})
    assert subscription is not None
    message_id = store.store_delivery(subscription, ended, ended["notify"][0], utcnow())
    at = utcnow()
    for i in range(webhooks.MAX_ATTEMPTS):
        delivery = db[webhooks.DELIVERIES].find_one({"_id": message_id})
        result = webhooks.AttemptResult(error=webhooks.TIMEOUT) if i % 2 else webhooks.AttemptResult(http_status=503)
        store.deliveries.record_attempt(delivery, at + timedelta(minutes=i), result)

    response = client.get(f"{HOOKS}/{hook['id']}/deliveries", headers=headers)
    assert response.status_code == 200
    [shown] = response.json()["deliveries"]
    assert shown["id"] == message_id and shown["event"] == "export.failed" and shown["exportId"] == ended["id"]
    assert shown["status"] == "failed" and shown["nextAttemptAt"] is None
    assert shown["reason"] == "Gave up after 6 attempts; the last one failed with timeout."
    attempts = shown["attempts"]
    assert len(attempts) == 6 and attempts[0]["at"] > attempts[-1]["at"], "newest first"
    assert attempts[0] == {"at": attempts[0]["at"], "httpStatus": None, "error": "timeout", "nextAttemptAt": None}
    assert attempts[-1]["httpStatus"] == 503 and attempts[-1]["error"] is None and attempts[-1]["nextAttemptAt"]
    assert "body" not in shown and "whsec_" not in response.text
    page = client.get(f"{HOOKS}/{hook['id']}/deliveries?page=1&limit=5", headers=headers).json()
    assert page == {"deliveries": [], "page": 1, "limit": 5}
    assert_error(client.get(f"{HOOKS}/{hook['id']}/deliveries?limit=0", headers=headers), 400)


def test_the_payload_data_is_what_get_shows_without_the_link_and_run(
    client: TestClient, headers: dict[str, str], db: Database
):
    store = ExportStore(db)
    record = store.create(
        campaign_id=CAMPAIGN, campaign_name="Summer Tour 2024", export_type="codes", requester_user_id="u"
    )
    store.mark_triggered(record.record["id"], run_id="run-x", preliminary_count=1)
    finished = store.mark_finished(record.record["id"], key="codes/k.csv", count=1, meta={"bytes": 3})
    shown = client.get(f"/campaigns/{CAMPAIGN}/exports/{finished['id']}", headers=headers).json()
    assert "path" in shown, "GET offers a signed link"
    data = json.loads(webhooks.payload(finished, "export.finished", finished["date"]["finished"]))["data"]
    assert {k: v for k, v in data.items() if k != "href"} == {
        k: v for k, v in shown.items() if k not in ("path", "run")
    }
    assert data["href"] == f"/campaigns/{CAMPAIGN}/exports/{finished['id']}"
    assert client.get(data["href"], headers=headers).json()["id"] == finished["id"], "href is the API path"


def test_no_secret_reaches_the_log(settings: Settings, campaigns: None, headers: dict[str, str], tmp_path: Path):
    logged = settings.model_copy(update={"log_dir": tmp_path / "logs"})
    with TestClient(create_app(logged)) as client:
        secret = subscribe(client, headers).json()["secret"]
        client.get(HOOKS, headers=headers)
    log = (tmp_path / "logs" / "api.jsonl").read_text()
    assert "/webhooks" in log and secret not in log and secret.removeprefix("whsec_") not in log


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "Request body must be a JSON object."),
        ({"url": PUBLIC_URL}, WEBHOOK_EVENTS_NEEDED),
        ({"url": PUBLIC_URL, "events": []}, WEBHOOK_EVENTS_NEEDED),
        ({"url": PUBLIC_URL, "events": ["export.started"]}, UNKNOWN_EVENT),
        ({"url": PUBLIC_URL, "events": ["export.failed", "export.failed"]}, "'events' must not repeat an event."),
        ({"url": "", "events": ["export.failed"]}, "'url' must be a non-empty string."),
        ({"url": 5, "events": ["export.failed"]}, "'url' must be a non-empty string."),
        ({"url": PUBLIC_URL, "events": ["export.failed"], "x": 1}, "Unknown field in the request body: 'x'."),
    ],
)  # fmt: skip
def test_subscription_bodies_are_checked(body: object, message: str):
    with pytest.raises(ApiError) as refused:
        parse_body(WebhookRequest, body)
    assert (refused.value.status, refused.value.message) == (400, message)
