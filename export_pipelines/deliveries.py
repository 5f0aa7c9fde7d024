"""Deliveries on the Dagster side: one sensor per kind of delivery, storing, then attempting, its deliveries.

A kind of delivery is a `Channel`: its queue (export_core/outbox.py), what turns new events into stored
deliveries, and how one delivery is sent. Webhooks (export_pipelines/webhook_delivery.py) are one;
another kind plugs in its own `store_new`, `target` and `send` and gets the rest from here. Each tick:

1. New events → deliveries (`store_new`): stored under deterministic ids before anything is attempted,
   so a crash in between stores the same ones again next time: no duplicate, no loss.
2. Due deliveries are claimed (a lease: a process that dies mid-attempt leaves them due again
   shortly) and attempted, a few at a time, within a time budget so a slow receiver never holds
   the tick for long; each attempt is recorded with its outcome and the next attempt's time. A kind
   whose attempts take long (file transfers) `launch`es them instead: a Dagster run each, which makes
   its attempt with `attempt_claimed` under its claim (export_pipelines/destination_delivery.py).
   A channel that `announce`s its ends also announces here those a crash left unannounced.
3. Now and then, delivered and given-up deliveries older than DELIVERY_RETENTION are dropped.

Delivery is therefore at least once. Log lines name ids only (`label`), never an address or a secret.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from dagster import (
    DagsterInstance,
    DefaultSensorStatus,
    JobDefinition,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)
from pymongo.database import Database

from export_core.outbox import DeliveryQueue, Outcome
from export_core.records import utcnow
from export_core.secrets import UnreadableSecret
from export_pipelines.resources import MongoResource

SENSOR_INTERVAL_SECONDS = 2
TICK_BUDGET_SECONDS = 25.0  # attempts start only while one more fits: a tick ends within this (+ a little)
CONCURRENCY = 4  # attempts in flight at once
STORE_BATCH = 200  # documents whose events are turned into deliveries per tick (per source)
DUE_BATCH = 40  # deliveries claimed per tick
LEASE = timedelta(seconds=90)  # longer than any tick: a claimed delivery is never attempted twice at once
DELIVERY_RETENTION = timedelta(days=30)  # delivered and given-up deliveries are dropped after this
PURGE_EVERY = timedelta(hours=1)

Clock = Callable[[], datetime]
Log = Callable[[str], None]
T = TypeVar("T")
R = TypeVar("R")


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class Channel(Generic[T]):
    """One kind of delivery.

    - `store_new(clock, limit)`: store the deliveries new events ask for; returns how many were stored.
    - `target(delivery)`: what sending it needs, read before the attempts start; None when what it was
      for is gone (the delivery is then dropped). UnreadableSecret leaves it unattempted until its lease
      ends (a key missing from SECRETS_KEY is a configuration to mend, not a failed attempt).
    - `send(delivery, target, timeout)`: one attempt, bounded by `timeout`.
    - `label(delivery)`: its ids for the log line (no address, no secret).

    - `announce(ended)`: what else an ended delivery changes (its queue `announces`); idempotent, as it runs
      again for an end a crash left unannounced.

    `budget_seconds` and `concurrency` bound a tick's attempts made in the tick (`attempt_due`).
    """

    name: str  # "webhook": log lines say "webhook delivery …", the tick's summary "webhooks: …"
    queue: DeliveryQueue
    ensure_indexes: Callable[[], None]
    store_new: Callable[[Clock, int], int]
    target: Callable[[dict[str, Any]], T | None]
    send: Callable[[dict[str, Any], T, float], Awaitable[Outcome]]
    label: Callable[[dict[str, Any]], str]
    attempt_timeout: float
    budget_seconds: float = TICK_BUDGET_SECONDS
    concurrency: int = CONCURRENCY
    announce: Callable[[dict[str, Any]], None] | None = None


@dataclass
class TickReport:
    name: str
    stored: int = 0
    attempted: int = 0
    delivered: int = 0
    deferred: int = 0  # claimed but not attempted: the tick's time ran out
    run_requests: list[RunRequest] = field(default_factory=list)  # attempts launched as runs of their own

    def summary(self) -> str:
        return (
            f"{self.name}s: {self.stored} delivery(ies) stored, {self.attempted} attempted, {self.delivered} delivered"
            + (f", {self.deferred} left for the next tick" if self.deferred else "")
        )


def attempt_due(
    channel: Channel[Any],
    *,
    clock: Clock = utcnow,
    budget_seconds: float | None = None,
    attempt_timeout: float | None = None,
    concurrency: int | None = None,
    limit: int = DUE_BATCH,
    log: Log = _quiet,
) -> TickReport:
    """Claim the due deliveries and attempt them, at most `concurrency` at once, within `budget_seconds` (both,
    and `attempt_timeout`, the channel's unless given)."""
    queue = channel.queue
    report = TickReport(channel.name)
    now = clock()
    jobs: list[tuple[dict[str, Any], Any]] = []
    for delivery in queue.due(now, limit):
        if not queue.claim(delivery, now, LEASE):
            continue
        target = read_target(channel, delivery, log)
        if target is not None:
            jobs.append((delivery, target))
    if not jobs:
        return report

    timeout = channel.attempt_timeout if attempt_timeout is None else attempt_timeout
    budget = channel.budget_seconds if budget_seconds is None else budget_seconds
    at_once = channel.concurrency if concurrency is None else concurrency
    started = time.monotonic()
    results = _run(_attempt_all(channel, jobs, clock, started, budget, timeout, at_once))
    for (delivery, _), outcome in zip(jobs, results, strict=True):
        if outcome is None:
            queue.release(delivery)
            report.deferred += 1
            continue
        at, result = outcome
        record(channel, delivery, at, result, log)
        report.attempted += 1
        report.delivered += int(result.delivered)
    return report


def read_target(channel: Channel[T], delivery: dict[str, Any], log: Log) -> T | None:
    """What sending a claimed delivery needs; None when it is not to be attempted now: dropped (what it was
    for is gone) or left leased (SECRETS_KEY lost its key: burn no attempt, say so once a lease)."""
    try:
        target = channel.target(delivery)
    except UnreadableSecret as exc:
        log(f"{channel.name} delivery {delivery['_id']} ({channel.label(delivery)}) not attempted: {exc}")
        return None
    if target is None:  # removed meanwhile: nothing to send it to
        channel.queue.drop(delivery)
    return target


def attempt_claimed(
    channel: Channel[Any], delivery: dict[str, Any], claim: int, timeout: float, *, clock: Clock = utcnow, log: Log
) -> dict[str, Any] | None:
    """One attempt of a delivery held by claim `claim` (a run of its own, export_pipelines/destination_delivery.py),
    bounded by `timeout`; what `record` recorded, or None (not attempted, or a later claim took it over)."""
    target = read_target(channel, delivery, log)
    if target is None:
        return None
    at = clock()

    async def send() -> Outcome:
        return await channel.send(delivery, target, timeout)

    outcome = _run(send())
    return record(channel, delivery, at, outcome, log, claim=claim)


def record(
    channel: Channel[Any],
    delivery: dict[str, Any],
    at: datetime,
    outcome: Outcome,
    log: Log,
    *,
    claim: int | None = None,
) -> dict[str, Any] | None:
    """Record an attempt (only while `claim`, when given, still holds the delivery) and log it; an end is then
    announced (`channel.announce`), once."""
    recorded = channel.queue.record_attempt(delivery, at, outcome, claim=claim)
    made = len(delivery.get("attempts") or []) + 1
    if recorded is None:
        log(f"{channel.name} delivery {delivery['_id']} attempt {made} not recorded: a later claim took it over")
        return None
    next_at = recorded.get("nextAttemptAt")
    state = "delivered" if outcome.delivered else f"next attempt at {next_at}" if next_at else "given up"
    log(
        f"{channel.name} delivery {delivery['_id']} ({channel.label(delivery)}) attempt {made}: "
        f"{outcome.describe()}; {state}"
    )
    if channel.announce is not None and next_at is None:
        ended = channel.queue.collection.find_one({"_id": delivery["_id"]})
        if ended is not None:
            _announce(channel, ended)
    return recorded


def _announce(channel: Channel[Any], ended: dict[str, Any]) -> None:
    if channel.announce is not None:
        channel.announce(ended)  # idempotent: a crash before the next line announces it again, to no effect
        channel.queue.mark_announced(ended)


async def _attempt_all(
    channel: Channel[Any],
    jobs: list[tuple[dict[str, Any], Any]],
    clock: Clock,
    started: float,
    budget_seconds: float,
    attempt_timeout: float,
    concurrency: int,
) -> list[tuple[datetime, Outcome] | None]:
    slots = asyncio.Semaphore(concurrency)

    async def one(delivery: dict[str, Any], target: Any) -> tuple[datetime, Outcome] | None:
        async with slots:
            if time.monotonic() - started + attempt_timeout > budget_seconds:
                return None  # would not end within the budget: the next tick takes it
            at = clock()
            return at, await channel.send(delivery, target, attempt_timeout)

    return list(await asyncio.gather(*(one(*job) for job in jobs)))


def _run(coroutine: Coroutine[Any, Any, R]) -> R:
    """Run the attempts on an event loop of their own (in a thread of their own if this one has a loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    box: list[R] = []
    thread = threading.Thread(target=lambda: box.append(asyncio.run(coroutine)), name="delivery-attempts")
    thread.start()
    thread.join()
    return box[0]


_indexed: set[tuple[str, str, str]] = set()


Launch = Callable[[Channel[Any], DagsterInstance, Clock, Log], TickReport]


def deliver(
    channel: Channel[Any],
    *,
    clock: Clock = utcnow,
    last_purge: datetime | None = None,
    log: Log = _quiet,
    launch: Callable[[], TickReport] | None = None,
    **options: Any,
) -> tuple[TickReport, datetime | None]:
    """One tick: store new deliveries, announce ends a crash left unannounced, attempt the due ones (or
    `launch` their attempts as runs), now and then drop old ones.

    Returns the report and when old deliveries were last dropped (the sensor keeps it in its cursor).
    """
    db = channel.queue.collection.database
    key = (repr(db.client.address), db.name, channel.name)
    if key not in _indexed:  # once per process, database and channel: the queries rely on the indexes
        channel.ensure_indexes()
        _indexed.add(key)
    stored = channel.store_new(clock, STORE_BATCH)
    if channel.announce is not None:
        for ended in channel.queue.unannounced(STORE_BATCH):
            _announce(channel, ended)
    report = launch() if launch is not None else attempt_due(channel, clock=clock, log=log, **options)
    report.stored = stored
    now = clock()
    if last_purge is None or now - last_purge >= PURGE_EVERY:
        channel.queue.purge(now - DELIVERY_RETENTION)
        last_purge = now
    return report, last_purge


def build_delivery_sensor(
    name: str,
    description: str,
    channel: Callable[[Database], Channel[Any]],
    *,
    clock: Clock = utcnow,
    launch: Launch | None = None,
    jobs: list[JobDefinition] | None = None,
) -> SensorDefinition:
    """A sensor that runs `deliver` for the channel `channel(db)` every SENSOR_INTERVAL_SECONDS; with `launch`,
    the attempts are runs of `jobs` it requests, not made in the tick."""

    @sensor(
        name=name,
        description=description,
        minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
        default_status=DefaultSensorStatus.RUNNING,
        jobs=jobs,
    )
    def delivery_sensor(context: SensorEvaluationContext, mongo: MongoResource) -> SensorResult:
        cursor = json.loads(context.cursor) if context.cursor else {}
        last_purge = datetime.fromisoformat(cursor["purged"]) if cursor.get("purged") else None
        chosen = channel(mongo.db())
        log = context.log.info
        launched = None if launch is None else (lambda: launch(chosen, context.instance, clock, log))
        report, purged = deliver(chosen, clock=clock, last_purge=last_purge, log=log, launch=launched)
        return SensorResult(
            run_requests=report.run_requests,
            skip_reason=None if report.run_requests else report.summary(),
            cursor=json.dumps({"purged": purged.isoformat() if purged else None}),
        )

    return delivery_sensor
