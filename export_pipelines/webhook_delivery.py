"""Webhook delivery on the Dagster side (SPEC §11): a sensor that stores, then attempts, deliveries.

Each tick, in this order:

1. Outbox → deliveries. Every end state (export_core/records.py) pushes `{event, at}` onto the record's
   `notify` list in the same update that sets the status; a schedule that pauses itself pushes
   `schedule.paused` onto the schedule's (export_core/schedule_store.py). For each entry, one delivery
   per matching subscription is stored (upserted under a deterministic id, the `webhook-id`), then the
   entry is pulled. A crash in between stores the same deliveries again next time: no duplicate, no loss.
2. Due deliveries are claimed (a lease: a process that dies mid-attempt leaves them due again
   shortly) and attempted, a few at a time, within a time budget so a slow receiver never holds
   the tick for long; each attempt is recorded with its outcome and the next attempt's time.

Delivery is therefore at least once: a receiver may see a `webhook-id` twice and should ignore
the second. Nothing here logs a URL or a secret.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from dagster import DefaultSensorStatus, SensorDefinition, SensorEvaluationContext, SensorResult, sensor
from pymongo.collection import Collection
from pymongo.database import Database

from export_core import webhooks
from export_core.records import OUTBOX_FIELD, utcnow
from export_pipelines.resources import MongoResource

SENSOR_INTERVAL_SECONDS = 2
TICK_BUDGET_SECONDS = 25.0  # attempts start only while one more fits: a tick ends within this (+ a little)
CONCURRENCY = 4  # attempts in flight at once
OUTBOX_BATCH = 200  # documents drained per tick from each outbox
DUE_BATCH = 40  # deliveries claimed per tick
LEASE = timedelta(seconds=90)  # longer than any tick: a claimed delivery is never attempted twice at once
DELIVERY_RETENTION = timedelta(days=30)  # delivered and given-up deliveries are dropped after this
PURGE_EVERY = timedelta(hours=1)

Log = Callable[[str], None]
T = TypeVar("T")


def _quiet(_: str) -> None:
    pass


def store_deliveries(db: Database, *, clock: webhooks.Clock = utcnow, limit: int = OUTBOX_BATCH) -> int:
    """Turn the outbox entries of ended exports and paused schedules into stored deliveries; returns how
    many were stored."""
    store = webhooks.WebhookStore(db)
    return sum(_drain(db[outbox.collection], outbox, store, clock, limit) for outbox in webhooks.OUTBOXES)


def _drain(
    documents: Collection, outbox: webhooks.Outbox, store: webhooks.WebhookStore, clock: webhooks.Clock, limit: int
) -> int:
    stored = 0
    for document in documents.find({f"{OUTBOX_FIELD}.at": {"$gt": webhooks.EPOCH}}).limit(limit):
        subscriptions: dict[str, list[dict[str, Any]]] = {}
        for entry in list(document.get(OUTBOX_FIELD) or []):
            event, at = entry.get("event"), entry.get("at")
            if event in outbox.events and isinstance(at, datetime):
                if event not in subscriptions:
                    subscriptions[event] = store.matching(str(document.get("campaignId")), event)
                for subscription in subscriptions[event]:
                    store.store_delivery(subscription, document, entry, clock())
                    stored += 1
            # Only now, and only this entry: one pushed meanwhile (a re-run that ended again) stays.
            documents.update_one({"_id": document["_id"]}, {"$pull": {OUTBOX_FIELD: entry}})
    return stored


@dataclass
class TickReport:
    stored: int = 0
    attempted: int = 0
    delivered: int = 0
    deferred: int = 0  # claimed but not attempted: the tick's time ran out
    lines: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"webhooks: {self.stored} delivery(ies) stored, {self.attempted} attempted, {self.delivered} delivered"
            + (f", {self.deferred} left for the next tick" if self.deferred else "")
        )


def attempt_due(
    db: Database,
    *,
    allow_private: bool,
    clock: webhooks.Clock = utcnow,
    budget_seconds: float = TICK_BUDGET_SECONDS,
    attempt_timeout: float = webhooks.ATTEMPT_TIMEOUT_SECONDS,
    concurrency: int = CONCURRENCY,
    limit: int = DUE_BATCH,
    log: Log = _quiet,
) -> TickReport:
    """Claim the due deliveries and attempt them, at most `concurrency` at once, within `budget_seconds`."""
    store = webhooks.WebhookStore(db)
    report = TickReport()
    now = clock()
    jobs: list[tuple[dict[str, Any], str, str]] = []
    for delivery in store.due(now, limit):
        if not store.claim(delivery, now, LEASE):
            continue
        subscription = store.secret(str(delivery["webhookId"]))
        if subscription is None:  # removed meanwhile: nothing to send it to
            store.drop(delivery)
            continue
        jobs.append((delivery, *subscription))
    if not jobs:
        return report

    started = time.monotonic()
    results: list[tuple[datetime, webhooks.AttemptResult] | None] = _run(
        _attempt_all(jobs, allow_private, clock, started, budget_seconds, attempt_timeout, concurrency)
    )
    for (delivery, _, _), outcome in zip(jobs, results, strict=True):
        if outcome is None:
            store.release(delivery)
            report.deferred += 1
            continue
        at, result = outcome
        recorded = store.record_attempt(delivery, at, result)
        report.attempted += 1
        report.delivered += int(result.delivered)
        next_at = recorded.get("nextAttemptAt")
        state = "delivered" if result.delivered else f"next attempt at {next_at}" if next_at else "given up"
        log(
            f"webhook delivery {delivery['_id']} ({delivery['event']}, {_subject(delivery)}, "
            f"webhook {delivery['webhookId']}) attempt {len(delivery.get('attempts') or []) + 1}: "
            f"{result.describe()}; {state}"
        )
    return report


def _subject(delivery: dict[str, Any]) -> str:
    if delivery.get("scheduleId"):
        return f"schedule {delivery['scheduleId']}"
    return f"export {delivery.get('exportId')}"


async def _attempt_all(
    jobs: list[tuple[dict[str, Any], str, str]],
    allow_private: bool,
    clock: webhooks.Clock,
    started: float,
    budget_seconds: float,
    attempt_timeout: float,
    concurrency: int,
) -> list[tuple[datetime, webhooks.AttemptResult] | None]:
    slots = asyncio.Semaphore(concurrency)

    async def one(delivery: dict[str, Any], url: str, secret: str) -> tuple[datetime, webhooks.AttemptResult] | None:
        async with slots:
            if time.monotonic() - started + attempt_timeout > budget_seconds:
                return None  # would not end within the budget: the next tick takes it
            at = clock()
            result = await webhooks.attempt(
                url,
                secret=secret,
                message_id=str(delivery["_id"]),
                body=str(delivery["body"]),
                allow_private=allow_private,
                timeout=attempt_timeout,
            )
            return at, result

    return list(await asyncio.gather(*(one(*job) for job in jobs)))


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run the attempts on an event loop of their own (in a thread of their own if this one has a loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    box: list[T] = []
    thread = threading.Thread(target=lambda: box.append(asyncio.run(coroutine)), name="webhook-attempts")
    thread.start()
    thread.join()
    return box[0]


_indexed: set[tuple[str, str]] = set()


def deliver(
    db: Database,
    *,
    allow_private: bool,
    clock: webhooks.Clock = utcnow,
    last_purge: datetime | None = None,
    log: Log = _quiet,
    **options: Any,
) -> tuple[TickReport, datetime | None]:
    """One tick: store deliveries from the outbox, attempt the due ones, now and then drop old ones.

    Returns the report and when old deliveries were last dropped (the sensor keeps it in its cursor).
    """
    key = (repr(db.client.address), db.name)
    if key not in _indexed:  # once per process and database: the outbox query relies on its index
        webhooks.ensure_indexes(db)
        _indexed.add(key)
    stored = store_deliveries(db, clock=clock)
    report = attempt_due(db, allow_private=allow_private, clock=clock, log=log, **options)
    report.stored = stored
    now = clock()
    if last_purge is None or now - last_purge >= PURGE_EVERY:
        webhooks.WebhookStore(db).purge(now - DELIVERY_RETENTION)
        last_purge = now
    return report, last_purge


def build_webhook_sensor(*, allow_private: bool, clock: webhooks.Clock = utcnow) -> SensorDefinition:
    """The sensor; `allow_private` is WEBHOOK_ALLOW_PRIVATE, read once when the code location loads."""

    @sensor(minimum_interval_seconds=SENSOR_INTERVAL_SECONDS, default_status=DefaultSensorStatus.RUNNING)
    def webhook_delivery_sensor(context: SensorEvaluationContext, mongo: MongoResource) -> SensorResult:
        """Store a delivery for every export end (and paused schedule) a webhook subscribed to, and attempt the
        due ones (SPEC §11)."""
        cursor = json.loads(context.cursor) if context.cursor else {}
        last_purge = datetime.fromisoformat(cursor["purged"]) if cursor.get("purged") else None
        report, purged = deliver(
            mongo.db(), allow_private=allow_private, clock=clock, last_purge=last_purge, log=context.log.info
        )
        return SensorResult(
            skip_reason=report.summary(), cursor=json.dumps({"purged": purged.isoformat() if purged else None})
        )

    return webhook_delivery_sensor
