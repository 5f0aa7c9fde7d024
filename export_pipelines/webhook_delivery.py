"""Webhook delivery on the Dagster side (SPEC §11): the webhook channel of the delivery sensor (deliveries.py).

New events: every end state (export_core/records.py) pushes `{event, at}` onto the record's `notify`
list in the same update that sets the status; a schedule that pauses itself pushes `schedule.paused`
onto the schedule's (export_core/schedule_store.py). For each entry, one delivery per matching
subscription is stored (upserted under a deterministic id, the `webhook-id`), then the entry is
pulled. A crash in between stores the same deliveries again next time: no duplicate, no loss.

Sending: the subscription's URL and secret (decrypted) are read as the delivery is claimed (a removed
subscription gets nothing), and `webhooks.attempt` POSTs the stored body, signed anew. A receiver may see a
`webhook-id` twice and should ignore the second. Nothing here logs a URL or a secret.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from dagster import SensorDefinition
from pymongo.collection import Collection
from pymongo.database import Database

from export_core import webhooks
from export_core.outbox import Outcome
from export_core.records import OUTBOX_FIELD, utcnow
from export_core.secrets import SecretBox
from export_pipelines.deliveries import STORE_BATCH, Channel, Clock, build_delivery_sensor

Signing = tuple[str, str]  # (url, secret) of a subscription


def store_deliveries(db: Database, *, clock: Clock = utcnow, limit: int = STORE_BATCH) -> int:
    """Turn the outbox entries of ended exports and paused schedules into stored deliveries; returns how
    many were stored."""
    store = webhooks.WebhookStore(db)
    return sum(_drain(db[source.collection], source, store, clock, limit) for source in webhooks.SOURCES)


def _drain(
    documents: Collection, source: webhooks.EventSource, store: webhooks.WebhookStore, clock: Clock, limit: int
) -> int:
    stored = 0
    for document in documents.find({f"{OUTBOX_FIELD}.at": {"$gt": webhooks.EPOCH}}).limit(limit):
        subscriptions: dict[str, list[dict[str, Any]]] = {}
        for entry in list(document.get(OUTBOX_FIELD) or []):
            event, at = entry.get("event"), entry.get("at")
            if event in source.events and isinstance(at, datetime):
                if event not in subscriptions:
                    subscriptions[event] = store.matching(str(document.get("campaignId")), event)
                for subscription in subscriptions[event]:
                    store.store_delivery(subscription, document, entry, clock())
                    stored += 1
            # Only now, and only this entry: one pushed meanwhile (a re-run that ended again) stays.
            documents.update_one({"_id": document["_id"]}, {"$pull": {OUTBOX_FIELD: entry}})
    return stored


def webhook_channel(db: Database, *, allow_private: bool, secret_box: SecretBox) -> Channel[Signing]:
    """Webhook deliveries as the delivery sensor drains and sends them, signed with secrets `secret_box`
    decrypts."""
    store = webhooks.WebhookStore(db)

    async def send(delivery: dict[str, Any], signing: Signing, timeout: float) -> Outcome:
        url, secret = signing
        return await webhooks.attempt(
            url,
            secret=secret,
            message_id=str(delivery["_id"]),
            body=str(delivery["body"]),
            allow_private=allow_private,
            timeout=timeout,
        )

    return Channel(
        name="webhook",
        queue=store.deliveries,
        ensure_indexes=store.ensure_indexes,
        store_new=lambda clock, limit: store_deliveries(db, clock=clock, limit=limit),
        target=lambda delivery: store.signing(str(delivery["webhookId"]), secret_box),
        send=send,
        label=_label,
        attempt_timeout=webhooks.ATTEMPT_TIMEOUT_SECONDS,
    )


def _label(delivery: dict[str, Any]) -> str:
    """`export.finished, export E, webhook W` (a schedule's event names the schedule)."""
    if delivery.get("scheduleId"):
        subject = f"schedule {delivery['scheduleId']}"
    else:
        subject = f"export {delivery.get('exportId')}"
    return f"{delivery['event']}, {subject}, webhook {delivery['webhookId']}"


def build_webhook_sensor(*, allow_private: bool, secret_box: SecretBox, clock: Clock = utcnow) -> SensorDefinition:
    """The sensor; `allow_private` (WEBHOOK_ALLOW_PRIVATE) and `secret_box` (SECRETS_KEY) are read once when
    the code location loads."""
    return build_delivery_sensor(
        "webhook_delivery_sensor",
        "Store a delivery for every export end (and paused schedule) a webhook subscribed to, and attempt the"
        " due ones (SPEC §11).",
        lambda db: webhook_channel(db, allow_private=allow_private, secret_box=secret_box),
        clock=clock,
    )
