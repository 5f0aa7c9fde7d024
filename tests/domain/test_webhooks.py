"""The webhook rules without a network: URL checks and the address refusals' wording (literal IPs and
`localhost` only: this machine has no external DNS), the body, the signature a Standard Webhooks verifier
accepts, the retry schedule."""

from __future__ import annotations

import base64
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from pymongo.database import Database
from standardwebhooks import Webhook, WebhookVerificationError

from export_core import address_guard, outbox, webhooks
from export_core.secrets import SecretBox
from export_core.webhooks import InvalidWebhook, check_url, parse_url

LINK_LOCAL = "The webhook URL's host resolves to a link-local address, which is never allowed."
PRIVATE = "The webhook URL's host resolves to a loopback, private or shared address; only public addresses are allowed."
SPECIAL = "The webhook URL's host resolves to an address that cannot receive webhooks."
URL = "https://8.8.8.8/"


def test_every_refusal_of_the_guard_has_its_webhook_sentence():
    """The guard's rules (tests/domain/test_address_guard.py) in the words the API answers with (below)."""
    assert set(webhooks.REFUSALS) == set(address_guard.REFUSALS)


@pytest.mark.parametrize(
    ("url", "allow_private", "message"),
    [
        ("http://8.8.8.8/hook", False, "The webhook URL must start with https://."),
        ("ftp://8.8.8.8/hook", True, "The webhook URL must start with https://."),
        ("hooks.example.com/x", False, "The webhook URL must start with https://."),
        ("https://user:pw@8.8.8.8/", False, "The webhook URL must not contain a user name or password."),
        ("https://8.8.8.8/a b", False, "The webhook URL must not contain spaces or control characters."),
        ("https://8.8.8.8/\x00", False, "The webhook URL must not contain spaces or control characters."),
        ("https:///path", False, "The webhook URL must name a host."),
        ("https://8.8.8.8:0/", False, "The webhook URL's port must be from 1 to 65535."),
        ("https://[::1/", False, "The webhook URL is not a valid URL."),
        ("https://8.8.8.8/" + "a" * 2048, False, "The webhook URL must be at most 2048 characters long."),
        ("https://127.0.0.1/hook", False, PRIVATE),
        ("https://localhost:8443/hook", False, PRIVATE),
        ("https://[::1]/hook", False, PRIVATE),
        ("https://10.0.0.7/hook", False, PRIVATE),
        ("https://100.64.1.1/hook", False, PRIVATE),
        ("https://[fd00::1]/hook", False, PRIVATE),
        ("https://169.254.169.254/latest/meta-data/", True, LINK_LOCAL),
        ("http://169.254.169.254/latest/meta-data/", True, LINK_LOCAL),
        ("http://[fe80::1]/", True, LINK_LOCAL),
        ("http://[::ffff:169.254.169.254]/", True, LINK_LOCAL),
        ("http://[::ffff:a9fe:a9fe]/", True, LINK_LOCAL),
        ("http://0.0.0.0:8080/", True, SPECIAL),
        ("https://name.invalid/hook", True, "The webhook URL's host could not be resolved."),
    ],
)
def test_refused_urls_get_one_plain_sentence(url: str, allow_private: bool, message: str):
    with pytest.raises(InvalidWebhook) as refused:
        check_url(url, allow_private=allow_private)
    assert str(refused.value) == message


@pytest.mark.parametrize(
    ("url", "allow_private"),
    [
        ("https://8.8.8.8/hook?token=abc", False),
        ("https://[2606:4700:4700::1111]:8443/x", False),
        ("https://127.0.0.1:9000/hook", True),
        ("http://localhost:9000/hook", True),
        ("http://[::1]:9000/hook", True),
        ("http://192.168.1.20/hook", True),
    ],
)
def test_accepted_urls(url: str, allow_private: bool):
    target = check_url(url, allow_private=allow_private)
    assert str(target.url) == url


def test_the_request_goes_to_the_checked_address_with_the_urls_host_name():
    target = parse_url("https://Hooks.Example.com:8443/in?x=1#frag", allow_private=False)
    assert target.host == "hooks.example.com" and target.port == 8443
    assert target.host_header == "hooks.example.com:8443"
    assert str(target.at_address("203.0.113.9")) == "https://203.0.113.9:8443/in?x=1"
    assert str(target.at_address("2001:db8::5")) == "https://[2001:db8::5]:8443/in?x=1"
    default_port = parse_url("https://bücher.example/", allow_private=False)
    assert default_port.host == "xn--bcher-kva.example" and default_port.port == 443
    assert default_port.host_header == "xn--bcher-kva.example"
    assert parse_url("http://[::1]/", allow_private=True).host_header == "[::1]"


def test_secrets_are_standard_webhooks_secrets_and_never_repeat():
    made = {webhooks.new_secret() for _ in range(50)}
    assert len(made) == 50
    for secret in made:
        assert secret.startswith("whsec_") and len(base64.b64decode(secret.removeprefix("whsec_"))) == 32


def test_a_signed_body_verifies_with_the_standardwebhooks_package_and_a_changed_one_does_not():
    secret = webhooks.new_secret()
    body = json.dumps({"type": "export.finished", "data": {"campaignName": "Tournée d'été"}}, ensure_ascii=False)
    headers = webhooks.signed_headers(secret, "msg_1", body, datetime.now(UTC))
    assert Webhook(secret).verify(body.encode(), headers)["data"]["campaignName"] == "Tournée d'été"
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace("été", "ete").encode(), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(webhooks.new_secret()).verify(body.encode(), headers)
    with pytest.raises(WebhookVerificationError):  # too old: a new attempt is signed anew
        Webhook(secret).verify(
            body.encode(), webhooks.signed_headers(secret, "msg_1", body, datetime.now(UTC) - timedelta(minutes=6))
        )


def test_the_delivery_id_depends_on_the_end_and_nothing_else():
    at = datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=UTC)
    first = webhooks.delivery_id("wh1", "exp1", "export.failed", at)
    assert first == webhooks.delivery_id("wh1", "exp1", "export.failed", at) and first.startswith("msg_")
    others = {
        webhooks.delivery_id("wh2", "exp1", "export.failed", at),
        webhooks.delivery_id("wh1", "exp2", "export.failed", at),
        webhooks.delivery_id("wh1", "exp1", "export.finished", at),
        webhooks.delivery_id("wh1", "exp1", "export.failed", at + timedelta(milliseconds=1)),  # ended again
    }
    assert first not in others and len(others) == 4


def test_the_payload_is_the_record_as_get_shows_it_without_links_or_storage_fields():
    at = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    record = {
        "_id": "e1", "id": "e1", "campaignId": "c1", "exportType": "entries", "status": "FINISHED",
        "active": True, "pendingSlot": 3, "notify": [{"event": "export.finished", "at": at}],
        "key": "entries/c1/e1.csv", "count": 2, "date": {"created": at, "finished": at},
    }  # fmt: skip
    body = json.loads(webhooks.payload(record, "export.finished", at))
    assert body == {
        "type": "export.finished",
        "timestamp": "2024-05-01T12:00:00.000Z",
        "data": {
            "id": "e1", "campaignId": "c1", "exportType": "entries", "status": "FINISHED",
            "key": "entries/c1/e1.csv", "count": 2,
            "date": {"created": "2024-05-01T12:00:00.000Z", "finished": "2024-05-01T12:00:00.000Z"},
            "format": "csv",  # a record without one (made before formats) shows as csv, as GET shows it
            "href": "/campaigns/c1/exports/e1",
        },
    }  # fmt: skip


def test_the_retry_schedule_grows_and_ends_after_the_sixth_attempt():
    delays = [outbox.next_attempt_delay(webhooks.RETRY_DELAYS, n) for n in range(1, 7)]
    minutes = [None if d is None else d.total_seconds() / 60 for d in delays]
    assert minutes == [5 / 60, 0.5, 2, 10, 60, None]


def test_a_campaign_never_gets_more_than_ten_subscriptions_even_when_asked_at_once(db: Database, secret_box: SecretBox):
    store = webhooks.WebhookStore(db)
    store.ensure_indexes()

    def subscribe(i: int) -> str:
        try:
            store.create(
                campaign_id="c", url=f"https://8.8.8.8/{i}", events=["export.finished"], created_by="u",
                secret_box=secret_box,
            )  # fmt: skip
            return "created"
        except webhooks.TooManyWebhooks:
            return "refused"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(subscribe, range(16)))
    assert outcomes.count("created") == 10 and outcomes.count("refused") == 6
    assert sorted(d["slot"] for d in db[webhooks.SUBSCRIPTIONS].find()) == list(range(10))
    store.create(
        campaign_id="other", url="https://8.8.8.8/", events=["export.failed"], created_by="u", secret_box=secret_box
    )
    listed = store.for_campaign("c")
    assert len(listed) == 10 and not any({"secret", "encryptedSecret"} & set(d) for d in listed)
