"""Webhooks (SPEC §11, Standard Webhooks): subscriptions, the events and their body, signing, one HTTP attempt.

Dagster-free: the API creates and lists subscriptions; the webhook sensor
(export_pipelines/webhook_delivery.py) stores deliveries from the `notify` outboxes of export records
and schedules (SOURCES) and attempts the due ones with `attempt`.

- `webhooks`: one document per subscription `{id, campaignId, url, events, encryptedSecret, slot, ...}`.
  A campaign has at most MAX_PER_CAMPAIGN: each subscription holds a `slot` 0..MAX-1 that a
  unique index keeps to one per campaign, so concurrent requests can never pass the limit.
  The secret (needed to sign) is stored encrypted (export_core/secrets.py), decrypted only to sign,
  and only ever shown in the response that created it. Subscriptions made before secrets were
  encrypted hold a plain `secret` until `python -m export_pipelines.indexes` encrypts it
  (`encrypt_stored_secrets`).
- `webhook_deliveries`: a delivery queue (export_core/outbox.py, retried after RETRY_DELAYS) with one
  document per (subscription, outbox entry): its id is the `webhook-id` header, derived from the
  subscription, the export (or schedule), the event and its time. It keeps the exact body besides
  what the queue keeps (every attempt, the next attempt's time, the reason it was given up).

Addresses are checked when subscribing and again at each attempt, on the very addresses the
attempt then connects to (export_core/address_guard.py): https only and public addresses only, unless
WEBHOOK_ALLOW_PRIVATE also allows http and loopback/private/shared addresses. Redirects are not
followed. Nothing here logs a URL or a secret.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import random
import secrets
import ssl
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import httpx
from pymongo import ASCENDING, DESCENDING
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError
from standardwebhooks import Webhook

from export_core import address_guard
from export_core.address_guard import AddressRefused
from export_core.outbox import DeliveryQueue, deterministic_id
from export_core.records import utcnow
from export_core.schedule_store import SCHEDULES, schedule_view
from export_core.secrets import SecretBox, UnreadableSecret
from export_core.views import iso_utc, record_view, to_json
from export_core.vocabulary import EXPORT_EVENTS, SCHEDULE_EVENTS

MAX_PER_CAMPAIGN = 10
# After the 1st, 2nd, ... failed attempt the next one waits this long; after the last, it is given up.
RETRY_DELAYS = (
    timedelta(seconds=5),
    timedelta(seconds=30),
    timedelta(minutes=2),
    timedelta(minutes=10),
    timedelta(hours=1),
)
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1
ATTEMPT_TIMEOUT_SECONDS = 10.0  # the whole attempt: name lookup, connect, TLS, request, response headers
MAX_URL_LENGTH = 2048
SECRET_BYTES = 32
USER_AGENT = "export-service-webhooks/1"

SUBSCRIPTIONS = "webhooks"
DELIVERIES = "webhook_deliveries"

# Attempt error classes (the deliveries endpoint shows them; no URL, host or library text).
TIMEOUT = "timeout"
CONNECTION_ERROR = "connection_error"
TLS_ERROR = "tls_error"
DNS_ERROR = "dns_error"
ADDRESS_REFUSED = "address_refused"
REDIRECT = "redirect_not_followed"

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SECRET_FIELDS = {"secret": 0, "encryptedSecret": 0}  # the plain one of old subscriptions, and the encrypted one


class InvalidWebhook(Exception):
    """A subscription request that cannot be accepted; the message is one plain sentence for a 400."""


class TooManyWebhooks(Exception):
    """The campaign has MAX_PER_CAMPAIGN subscriptions already."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"This campaign already has {limit} webhooks; remove one before adding another.")
        self.limit = limit


# -- the subscription request ------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where a webhook URL points: what the request is sent to, and as what host."""

    url: httpx.URL
    host: str  # ASCII (IDNA) host name or IP literal, without brackets
    port: int

    @property
    def https(self) -> bool:
        return self.url.scheme == "https"

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.url.port is None else f"{host}:{self.url.port}"

    def at_address(self, address: str) -> httpx.URL:
        """The same URL with the host replaced by one of its checked addresses."""
        return self.url.copy_with(host=address, port=self.port, fragment=None)


def parse_url(url: str, *, allow_private: bool) -> Target:
    """The URL's parts, or InvalidWebhook: https (http too with `allow_private`), a host, no credentials."""
    if len(url) > MAX_URL_LENGTH:
        raise InvalidWebhook(f"The webhook URL must be at most {MAX_URL_LENGTH} characters long.")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise InvalidWebhook("The webhook URL must not contain spaces or control characters.")
    try:
        parsed = httpx.URL(url)
        host = parsed.raw_host.decode("ascii")
        port = parsed.port
    except (httpx.InvalidURL, UnicodeError, ValueError):
        raise InvalidWebhook("The webhook URL is not a valid URL.") from None
    schemes = ("https", "http") if allow_private else ("https",)
    if parsed.scheme not in schemes:
        raise InvalidWebhook("The webhook URL must start with https://.")
    if not host:
        raise InvalidWebhook("The webhook URL must name a host.")
    if parsed.userinfo:
        raise InvalidWebhook("The webhook URL must not contain a user name or password.")
    if port is not None and not 1 <= port <= 65535:
        raise InvalidWebhook("The webhook URL's port must be from 1 to 65535.")
    return Target(parsed, host, port or (443 if parsed.scheme == "https" else 80))


# -- addresses: the guard's rules, in the words a subscriber is told ---------------------------------

REFUSALS = {
    address_guard.LINK_LOCAL: "The webhook URL's host resolves to a link-local address, which is never allowed.",
    address_guard.SPECIAL: "The webhook URL's host resolves to an address that cannot receive webhooks.",
    address_guard.PRIVATE: "The webhook URL's host resolves to a loopback, private or shared address; only public"
    " addresses are allowed.",
    address_guard.UNRESOLVED: "The webhook URL's host could not be resolved.",
}


def check_url(url: str, *, allow_private: bool) -> Target:
    """The whole check of a subscription's URL (scheme, form, resolved addresses); InvalidWebhook otherwise."""
    target = parse_url(url, allow_private=allow_private)
    try:
        address_guard.allowed_addresses(target.host, target.port, allow_private=allow_private)
    except AddressRefused as refused:
        raise InvalidWebhook(REFUSALS[refused.reason]) from None
    return target


# -- signing and the payload ---------------------------------------------------------------------


def new_secret() -> str:
    """`whsec_` + base64 of 32 random bytes: the form the Standard Webhooks libraries read."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def delivery_id(webhook_id: str, subject_id: str, event: str, at: datetime) -> str:
    """The `webhook-id` of one event of an export (or schedule) for one subscription: the same whoever
    computes it, whenever."""
    return deterministic_id("msg_", webhook_id, subject_id, event, str(math.floor(at.timestamp() * 1000)))


def export_href(record: dict[str, Any]) -> str:
    return f"/campaigns/{record.get('campaignId')}/exports/{record.get('id') or record.get('_id')}"


def export_data(record: dict[str, Any]) -> dict[str, Any]:
    """The record as GET shows it (no signed link; a scheduled run's `schedule` included) plus `href`."""
    return {**record_view(record), "href": export_href(record)}


def schedule_data(schedule: dict[str, Any]) -> dict[str, Any]:
    """The schedule as GET shows it (no storage field; a schedule holds no secret) plus `href`."""
    href = f"/campaigns/{schedule.get('campaignId')}/schedules/{schedule.get('id') or schedule.get('_id')}"
    return {**schedule_view(schedule), "href": href}


@dataclass(frozen=True)
class EventSource:
    """A collection whose documents carry a `notify` outbox of `{event, at}` entries (SPEC §11–12).

    `subject` is the delivery's field naming the document; `data` renders it as the body's `data`.
    """

    collection: str
    events: tuple[str, ...]
    subject: str
    data: Callable[[dict[str, Any]], dict[str, Any]]


EXPORT_SOURCE = EventSource("exports", EXPORT_EVENTS, "exportId", export_data)
# A schedule that paused itself pushes `{event, at, exportId}`: the run whose failure paused it.
SCHEDULE_SOURCE = EventSource(SCHEDULES, SCHEDULE_EVENTS, "scheduleId", schedule_data)
SOURCES = (EXPORT_SOURCE, SCHEDULE_SOURCE)
_SOURCE_OF = {event: source for source in SOURCES for event in source.events}


def source_of(event: str) -> EventSource:
    return _SOURCE_OF[event]


def payload(document: dict[str, Any], event: str, at: datetime, delivery: dict[str, Any] | None = None) -> str:
    """The body: `{type, timestamp, data}`, data the export record (or schedule) as GET shows it; for a
    delivery event, with the delivery to the destination as `data.delivery`."""
    data = source_of(event).data(document)
    if delivery is not None:
        data["delivery"] = delivery
    body = {"type": event, "timestamp": iso_utc(at), "data": data}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def signed_headers(secret: str, message_id: str, body: str, sent_at: datetime) -> dict[str, str]:
    """The Standard Webhooks headers for one attempt, signed by the `standardwebhooks` package."""
    sent_at = sent_at.replace(microsecond=0)
    signature = Webhook(secret).sign(msg_id=message_id, timestamp=sent_at, data=body)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(math.floor(sent_at.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


# -- one attempt ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttemptResult:
    """What one attempt got: an HTTP status, or the class of error that stopped it (or both, for a 3xx)."""

    http_status: int | None = None
    error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.error is None and self.http_status is not None and 200 <= self.http_status < 300

    @property
    def final(self) -> bool:
        return False  # a receiver may answer tomorrow: every failure is tried again, up to the last attempt

    def attempt_fields(self) -> dict[str, Any]:
        return {"httpStatus": self.http_status, "error": self.error}

    def describe(self) -> str:
        if self.http_status is not None:
            return f"HTTP {self.http_status}" + (" (redirects are not followed)" if self.error == REDIRECT else "")
        return str(self.error)


@cache
def _tls_context() -> ssl.SSLContext:
    """Certificate and host name verification on, against the host name of the URL (SNI)."""
    return httpx.create_ssl_context()


async def attempt(
    url: str,
    *,
    secret: str,
    message_id: str,
    body: str,
    allow_private: bool,
    timeout: float = ATTEMPT_TIMEOUT_SECONDS,
    sent_at: datetime | None = None,
) -> AttemptResult:
    """POST the signed body once; the whole attempt is bounded by `timeout`.

    The host is resolved, every address checked (as when subscribing), and the connection made to
    a checked address with the URL's host name as `Host` and for TLS (SNI and certificate
    verification), so a name that re-resolves elsewhere meanwhile is never reached. Redirects
    are answers like any other non-2xx: not followed.
    """
    try:
        return await asyncio.wait_for(
            _attempt(url, secret, message_id, body, allow_private, timeout, sent_at), timeout=timeout
        )
    except TimeoutError:
        return AttemptResult(error=TIMEOUT)


async def _attempt(
    url: str,
    secret: str,
    message_id: str,
    body: str,
    allow_private: bool,
    timeout: float,
    sent_at: datetime | None,
) -> AttemptResult:
    try:
        target = parse_url(url, allow_private=allow_private)
    except InvalidWebhook:
        return AttemptResult(error=ADDRESS_REFUSED)
    try:
        addresses = await address_guard.allowed_addresses_async(target.host, target.port, allow_private=allow_private)
    except AddressRefused as refused:
        return AttemptResult(error=DNS_ERROR if refused.reason == address_guard.UNRESOLVED else ADDRESS_REFUSED)
    headers = {"host": target.host_header, **signed_headers(secret, message_id, body, sent_at or datetime.now(UTC))}
    extensions = {"sni_hostname": target.host} if target.https else {}
    content = body.encode("utf-8")
    error = CONNECTION_ERROR
    for address in addresses:
        # A client per address and attempt: a pooled connection opened for another host name
        # (another subscription on the same address) must never carry this request.
        async with httpx.AsyncClient(
            verify=_tls_context(), follow_redirects=False, trust_env=False, timeout=timeout
        ) as client:
            try:
                request = client.build_request(
                    "POST", target.at_address(address), headers=headers, content=content, extensions=extensions
                )
                response = await client.send(request, stream=True)  # the status is all we need
                await response.aclose()
            except httpx.TimeoutException:
                return AttemptResult(error=TIMEOUT)
            except httpx.ConnectError as exc:
                error = TLS_ERROR if _is_tls(exc) else CONNECTION_ERROR
                continue  # the next address, if any
            except httpx.TransportError:
                return AttemptResult(error=CONNECTION_ERROR)
        if 300 <= response.status_code < 400:
            return AttemptResult(http_status=response.status_code, error=REDIRECT)
        return AttemptResult(http_status=response.status_code)
    return AttemptResult(error=error)


def _is_tls(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


# -- the collections -----------------------------------------------------------------------------


def ensure_indexes(db: Database) -> None:
    """Idempotent: subscription slots (the limit), lists, due deliveries, and the exports' outbox."""
    WebhookStore(db).ensure_indexes()


def delivery_queue(db: Database) -> DeliveryQueue:
    """The webhook deliveries: `webhook_deliveries`, retried after RETRY_DELAYS."""
    return DeliveryQueue(db, DELIVERIES, RETRY_DELAYS)


@dataclass
class SecretsMigration:
    """What `encrypt_stored_secrets` did: plain secrets encrypted, secrets made anew with the first key, and
    the ids of subscriptions whose secret no key decrypts."""

    encrypted: int = 0
    rotated: int = 0
    unreadable: list[str] = field(default_factory=list)


class WebhookStore:
    """Subscriptions, and what a delivery of theirs holds."""

    def __init__(self, db: Database) -> None:
        self.subscriptions = db[SUBSCRIPTIONS]
        self.deliveries = delivery_queue(db)
        self.exports = db["exports"]

    def ensure_indexes(self) -> None:
        self.subscriptions.create_index(
            [("campaignId", ASCENDING), ("slot", ASCENDING)], name="one_per_slot", unique=True
        )
        self.deliveries.ensure_indexes()
        self.deliveries.collection.create_index(
            [("webhookId", ASCENDING), ("createdAt", DESCENDING)], name="by_webhook"
        )
        # Sparse: only records whose end is not yet turned into deliveries are in it (a handful).
        self.exports.create_index([("notify.at", ASCENDING)], name="webhook_outbox", sparse=True)

    # -- subscriptions --

    def create(
        self, *, campaign_id: str, url: str, events: Sequence[str], created_by: str, secret_box: SecretBox
    ) -> dict[str, Any]:
        """Insert a subscription with a fresh secret, encrypted, in a free slot; TooManyWebhooks when none is
        free. Returns the stored document and the plain `secret`, for the one answer that shows it."""
        secret = new_secret()
        for _ in range(MAX_PER_CAMPAIGN * 2):
            taken = {d.get("slot") for d in self.subscriptions.find({"campaignId": campaign_id}, {"slot": 1})}
            free = sorted(set(range(MAX_PER_CAMPAIGN)) - taken)
            if not free:
                raise TooManyWebhooks(MAX_PER_CAMPAIGN)
            webhook_id = uuid.uuid4().hex
            doc = {
                "_id": webhook_id,
                "id": webhook_id,
                "campaignId": campaign_id,
                "url": url,
                "events": list(events),
                "encryptedSecret": secret_box.encrypt(secret),
                "slot": random.choice(free),  # random: concurrent requests rarely pick the same one
                "createdBy": created_by,
                "createdAt": utcnow(),
            }
            try:
                self.subscriptions.insert_one(doc)
                return {**doc, "secret": secret}
            except DuplicateKeyError:
                continue  # a concurrent request took that slot: look again
        raise RuntimeError("could not create webhook: concurrent requests kept taking its slot")

    def for_campaign(self, campaign_id: str) -> list[dict[str, Any]]:
        """The campaign's subscriptions, oldest first, without their secrets."""
        found = self.subscriptions.find({"campaignId": campaign_id}, SECRET_FIELDS)
        return sorted(found, key=lambda d: (d.get("createdAt") or EPOCH, str(d["_id"])))

    def get(self, campaign_id: str, webhook_id: str) -> dict[str, Any] | None:
        """One of the campaign's subscriptions (never another campaign's), without its secret."""
        return self.subscriptions.find_one({"_id": webhook_id, "campaignId": campaign_id}, SECRET_FIELDS)

    def delete(self, campaign_id: str, webhook_id: str) -> bool:
        """Remove the subscription and its deliveries (pending ones are not attempted any more)."""
        removed = self.subscriptions.delete_one({"_id": webhook_id, "campaignId": campaign_id}).deleted_count == 1
        if removed:
            self.deliveries.drop_matching({"webhookId": webhook_id})
        return removed

    def matching(self, campaign_id: str, event: str) -> list[dict[str, Any]]:
        """The campaign's subscriptions to `event`, without their secrets."""
        return list(self.subscriptions.find({"campaignId": campaign_id, "events": event}, SECRET_FIELDS))

    def signing(self, webhook_id: str, secret_box: SecretBox) -> tuple[str, str] | None:
        """(url, secret) of a subscription, decrypted to sign with; None when it was removed.
        UnreadableSecret when no key of SECRETS_KEY decrypts its secret."""
        doc = self.subscriptions.find_one({"_id": webhook_id}, {"url": 1, "secret": 1, "encryptedSecret": 1})
        if doc is None:
            return None
        if "encryptedSecret" in doc:
            return str(doc["url"]), secret_box.decrypt(str(doc["encryptedSecret"]))
        return str(doc["url"]), str(doc["secret"])  # made before secrets were encrypted, not migrated yet

    def encrypt_stored_secrets(self, secret_box: SecretBox, now: datetime) -> SecretsMigration:
        """Encrypt the plain secrets of subscriptions made before secrets were encrypted (marked
        `secretMigratedAt`), and make anew with the first key of SECRETS_KEY the secrets another key made
        (rotation). Idempotent: a second run finds nothing to do. A secret that no key decrypts is left
        as it is and reported by the subscription's id."""
        report = SecretsMigration()
        for doc in self.subscriptions.find({"secret": {"$type": "string"}}, {"secret": 1}):
            update = {
                "$set": {"encryptedSecret": secret_box.encrypt(doc["secret"]), "secretMigratedAt": now},
                "$unset": {"secret": ""},
            }
            report.encrypted += self.subscriptions.update_one(
                {"_id": doc["_id"], "secret": doc["secret"]}, update
            ).modified_count
        for doc in self.subscriptions.find({"encryptedSecret": {"$exists": True}}, {"encryptedSecret": 1}):
            try:
                token = secret_box.rotated(str(doc["encryptedSecret"]))
            except UnreadableSecret:
                report.unreadable.append(str(doc["_id"]))
                continue
            if token is not None:
                report.rotated += self.subscriptions.update_one(
                    {"_id": doc["_id"], "encryptedSecret": doc["encryptedSecret"]}, {"$set": {"encryptedSecret": token}}
                ).modified_count
        return report

    # -- deliveries --

    def store_delivery(
        self, subscription: dict[str, Any], document: dict[str, Any], entry: dict[str, Any], now: datetime
    ) -> str:
        """Store the delivery of one outbox entry `{event, at, ...}` of an export record (or schedule), due
        at once; storing the same one again changes nothing."""
        event, at = str(entry["event"]), entry["at"]
        subject_id = str(document["_id"])
        fields = {
            "webhookId": subscription["_id"],
            "campaignId": document.get("campaignId"),
            "exportId": entry.get("exportId"),  # a schedule's entry names its run; an export's is the line below
            source_of(event).subject: subject_id,
            "event": event,
            "body": payload(document, event, at, entry.get("delivery")),
        }
        # Two destinations' deliveries may end in the same millisecond: each is an event of its own.
        subject = subject_id if "delivery" not in entry else f"{subject_id}/{entry['delivery']['destinationId']}"
        return self.deliveries.store(delivery_id(str(subscription["_id"]), subject, event, at), fields, now)

    def list_deliveries(self, webhook_id: str, *, page: int, limit: int) -> list[dict[str, Any]]:
        return self.deliveries.listing({"webhookId": webhook_id}, page=page, limit=limit, hidden=("body",))


# -- what the API shows --------------------------------------------------------------------------


def subscription_view(doc: dict[str, Any], *, secret: bool = False) -> dict[str, Any]:
    """A subscription as the API shows it; the secret only when just created (`secret=True`)."""
    view = {k: doc.get(k) for k in ("id", "campaignId", "url", "events", "createdAt", "createdBy")}
    if secret:
        view["secret"] = doc["secret"]
    return dict(to_json(view))


def delivery_view(doc: dict[str, Any]) -> dict[str, Any]:
    """A delivery as the API shows it: its attempts newest first, and why it was given up if it was.

    `exportId` of a `schedule.paused` delivery is the run whose failure paused the schedule (`scheduleId`).
    """
    view: dict[str, Any] = {
        k: doc.get(k) for k in ("id", "event", "exportId", "status", "createdAt", "nextAttemptAt", "lastAttemptAt")
    }
    if doc.get("scheduleId"):
        view["scheduleId"] = doc["scheduleId"]
    if doc.get("reason"):
        view["reason"] = doc["reason"]
    view["attempts"] = list(reversed(doc.get("attempts") or []))
    return dict(to_json(view))
