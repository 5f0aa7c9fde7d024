"""Destination delivery on the Dagster side (SPEC §13): the destinations channel of the delivery sensor (deliveries.py).

New deliveries: FINISHED pushes `{destinationId, at}` per destination of the record onto its `deliver` list in
the update that ends the export (export_core/records.py). For each entry one delivery is stored (upserted under
a deterministic id: the export, the destination, the end), then the entry is pulled; a crash in between stores
the same delivery again next time: no duplicate, no loss. The destination's type and name are kept on the
delivery, so a CCPA deletion can still say where a file went after the destination was removed.

Sending, by its own sensor and never inside the export's run (a slow partner never holds the one-at-a-time
queue): the export record, the destination and its secrets (decrypted with SECRETS_KEY) are read as the
delivery is claimed, and export_core/destination_delivery.py sends the file(s) in a worker thread whose
transfers stop at the attempt's deadline, so a tick ends within its budget, under Dagster's sensor timeout.
A failure that may pass (a server down, a timeout) is retried with the queue's growing delays; one that
cannot (a host key that is not the pinned one, a refused login, a missing folder, a removed destination or a
deleted export) ends the delivery at once with its reason. Each delivery that ends pushes webhook event
`export.delivered` or `export.delivery_failed` onto the export's `notify` outbox (SPEC §11); one that was
delivered is also added to the record's `deliveredTo` (a CCPA deletion lists it). Log lines name ids, hosts
and folders, never a password or a key.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dagster import SensorDefinition
from pymongo.database import Database

from export_core.clients import s3_client
from export_core.destination_delivery import Reach, deliver
from export_core.destination_store import SECRETS_FIELD, DestinationStore, delivery_view
from export_core.destinations import Delivered, PermanentDeliveryError, RetryableDeliveryError
from export_core.export_types import EXPORT_TYPES
from export_core.outbox import DELIVERED, GAVE_UP, deterministic_id
from export_core.records import DELIVERED_TO_FIELD, DELIVERY_OUTBOX_FIELD, OUTBOX_FIELD, ExportStore, utcnow
from export_core.secrets import SecretBox
from export_core.settings import Settings
from export_core.vocabulary import DELIVERY_EVENTS
from export_core.webhooks import EPOCH
from export_pipelines.deliveries import STORE_BATCH, Channel, Clock, build_delivery_sensor

logger = logging.getLogger(__name__)

ATTEMPT_SECONDS = 40.0  # one attempt's transfers stop after this: a file that needs longer is tried again later
BUDGET_SECONDS = 50.0  # a tick starts an attempt only while it can end within this: under Dagster's 60 s timeout
CONCURRENCY = 2  # deliveries in flight at once (each downloads its file to a scratch folder first)
DESTINATION_REMOVED = "The destination was removed before this export was delivered to it."
EXPORT_DELETED = "The export's files were deleted before they could be delivered."
UNEXPECTED = "The delivery failed unexpectedly; it is tried again later."
DELIVERED_EVENT, FAILED_EVENT = DELIVERY_EVENTS


@dataclass(frozen=True)
class Outcome:
    """One attempt: the files sent, or the sentence that says why not; `final` when trying again cannot help."""

    files: tuple[Delivered, ...] = ()
    error: str | None = None
    final: bool = False

    @property
    def delivered(self) -> bool:
        return self.error is None

    def attempt_fields(self) -> dict[str, Any]:
        sent = [{"remotePath": f.remote_path, "bytes": f.bytes, "sha256": f.sha256} for f in self.files]
        return {"error": self.error, "files": sent}

    def describe(self) -> str:
        if self.error is None:
            return f"delivered {len(self.files)} file(s)"
        return self.error if self.final else f"this error: {self.error}"


@dataclass(frozen=True)
class Target:
    """What sending one delivery needs, read as it is claimed."""

    record: dict[str, Any] | None
    destination: dict[str, Any] | None
    secrets: dict[str, str]


def delivery_id(export_id: str, destination_id: str, at: datetime) -> str:
    """The same for the same (export, destination, end), whoever stores it, whenever."""
    return deterministic_id("dlv_", export_id, destination_id, str(int(at.timestamp() * 1000)))


def store_deliveries(db: Database, *, clock: Clock = utcnow, limit: int = STORE_BATCH) -> int:
    """Turn the `deliver` outbox entries of FINISHED exports into stored deliveries; how many were stored."""
    store, exports = DestinationStore(db), ExportStore(db).collection
    stored = 0
    for record in exports.find({f"{DELIVERY_OUTBOX_FIELD}.at": {"$gt": EPOCH}}).limit(limit):
        for entry in list(record.get(DELIVERY_OUTBOX_FIELD) or []):
            destination_id, at = entry.get("destinationId"), entry.get("at")
            if isinstance(destination_id, str) and isinstance(at, datetime):
                destination = store.destinations.find_one(
                    {"_id": destination_id, "campaignId": record.get("campaignId")}, {SECRETS_FIELD: 0}
                ) or {}  # fmt: skip
                fields = {
                    "exportId": record["_id"],
                    "campaignId": record.get("campaignId"),
                    "destinationId": destination_id,
                    "destinationType": destination.get("type"),
                    "destinationName": destination.get("name"),
                }
                store.deliveries_queue.store(delivery_id(str(record["_id"]), destination_id, at), fields, clock())
                stored += 1
            # Only now, and only this entry.
            exports.update_one({"_id": record["_id"]}, {"$pull": {DELIVERY_OUTBOX_FIELD: entry}})
    return stored


class DestinationSender:
    """Reads what a delivery needs and sends it; one per channel (a tick)."""

    def __init__(self, db: Database, settings: Settings, secret_box: SecretBox) -> None:
        self.store, self.exports = DestinationStore(db), ExportStore(db)
        self.settings, self.secret_box = settings, secret_box
        self.reach = Reach.of(settings)
        self._s3: Any = None

    def target(self, delivery: dict[str, Any]) -> Target:
        """The export and the destination (None when gone) and the decrypted secrets (UnreadableSecret: the
        delivery waits for SECRETS_KEY to have its key back, unattempted)."""
        record = self.exports.get(str(delivery["exportId"]))
        destination = self.store.destinations.find_one(
            {"_id": delivery["destinationId"], "campaignId": delivery.get("campaignId")}, {SECRETS_FIELD: 0}
        )  # fmt: skip
        secrets = self.store.login_secrets(str(delivery["destinationId"]), self.secret_box) if destination else {}
        return Target(record, destination, secrets)

    async def send(self, delivery: dict[str, Any], target: Target, timeout: float) -> Outcome:
        return await asyncio.to_thread(self.attempt, delivery, target, timeout)

    def attempt(self, delivery: dict[str, Any], target: Target, timeout: float) -> Outcome:
        """One attempt, ended by `timeout`; an ending delivery's webhook event is pushed before it is recorded
        (at least once, as every webhook)."""
        outcome = self._outcome(target, time.monotonic() + timeout)
        attempts_made = len(delivery.get("attempts") or []) + 1
        if outcome.delivered or outcome.final or attempts_made >= self.store.deliveries_queue.max_attempts:
            self._notify(delivery, outcome)
        return outcome

    def _outcome(self, target: Target, deadline: float) -> Outcome:
        record, destination = target.record, target.destination
        if destination is None:
            return Outcome(error=DESTINATION_REMOVED, final=True)
        if record is None or record.get("deletion") or (record.get("date") or {}).get("deleted"):
            return Outcome(error=EXPORT_DELETED, final=True)
        try:
            files = deliver(
                record, destination, target.secrets, self.reach,
                s3=self._our_s3(), bucket=self._bucket(record), deadline=deadline,
            )  # fmt: skip
        except PermanentDeliveryError as exc:
            return Outcome(error=str(exc), final=True)
        except RetryableDeliveryError as exc:
            return Outcome(error=str(exc))
        except ValueError as exc:  # a stored hostKey that no longer parses, a template gone wrong
            return Outcome(error=str(exc), final=True)
        except Exception:
            logger.exception("destination delivery to %s failed unexpectedly", destination.get("_id"))
            return Outcome(error=UNEXPECTED)
        logger.info("delivered export %s to destination %s: %d file(s)", record["_id"], destination["_id"], len(files))
        return Outcome(files=tuple(files))

    def _our_s3(self) -> Any:
        if self._s3 is None:
            self._s3 = s3_client(self.settings)
        return self._s3

    def _bucket(self, record: dict[str, Any]) -> str:
        """The bucket the export's objects are in: its record's, or (records from before meta.bucket) its type's."""
        bucket = (record.get("meta") or {}).get("bucket")
        if bucket:
            return str(bucket)
        return self.settings.bucket_for(EXPORT_TYPES[str(record.get("exportType"))].bucket)

    def _notify(self, delivery: dict[str, Any], outcome: Outcome) -> None:
        status = DELIVERED if outcome.delivered else GAVE_UP
        ended = {
            "destinationId": delivery["destinationId"],
            "status": status,
            "attempts": [outcome.attempt_fields()],
            "reason": None if outcome.delivered else outcome.error,
        }
        shown = {k: v for k, v in delivery_view(ended).items() if k not in ("attempts", "createdAt", "nextAttemptAt")}
        now = utcnow()
        push: dict[str, Any] = {
            OUTBOX_FIELD: {
                "event": DELIVERED_EVENT if outcome.delivered else FAILED_EVENT,
                "at": now,
                "delivery": shown,
            }
        }
        if outcome.delivered:
            push[DELIVERED_TO_FIELD] = {
                "destinationId": delivery["destinationId"],
                "type": delivery.get("destinationType"),
                "name": delivery.get("destinationName"),
                "remotePaths": [f.remote_path for f in outcome.files],
                "deliveredAt": now,
            }
        self.exports.collection.update_one({"_id": delivery["exportId"]}, {"$push": push})


def destination_channel(db: Database, *, settings: Settings, secret_box: SecretBox) -> Channel[Target]:
    """Destination deliveries as the delivery sensor drains and sends them."""
    sender, store = DestinationSender(db, settings, secret_box), DestinationStore(db)
    return Channel(
        name="destination",
        queue=store.deliveries_queue,
        ensure_indexes=store.ensure_indexes,
        store_new=lambda clock, limit: store_deliveries(db, clock=clock, limit=limit),
        target=sender.target,
        send=sender.send,
        label=lambda d: f"export {d.get('exportId')}, destination {d.get('destinationId')}",
        attempt_timeout=ATTEMPT_SECONDS,
        budget_seconds=BUDGET_SECONDS,
        concurrency=CONCURRENCY,
    )


def build_destination_sensor(*, settings: Settings, secret_box: SecretBox, clock: Clock = utcnow) -> SensorDefinition:
    """The sensor; settings (WEBHOOK_ALLOW_PRIVATE, S3) and `secret_box` (SECRETS_KEY) are read once when the code
    location loads."""
    return build_delivery_sensor(
        "destination_delivery_sensor",
        "Store a delivery for every destination a FINISHED export names, and push the due ones to the partners'"
        " SFTP servers, S3 buckets and Marketing Cloud (SPEC §13).",
        lambda db: destination_channel(db, settings=settings, secret_box=secret_box),
        clock=clock,
    )
