"""A queue of deliveries that survives restarts: stored before they are attempted, retried, given up with a reason.

One collection of delivery documents per kind of delivery (webhook deliveries, SPEC §11; destination
deliveries, SPEC §13), each queue with its own retry schedule. It knows nothing of what is sent
or how: a delivery's own fields are the caller's, and an attempt's outcome says whether it got through,
what to keep of it, and how to describe its failure.

A delivery document is `{_id, id, ...the caller's fields, status, createdAt, nextAttemptAt, attempts,
lastAttemptAt?, reason?}`. Its id is derived from what it delivers (`deterministic_id`), so storing the
same delivery twice (a crash between storing it and forgetting what asked for it) is a no-op. A claim
is a lease, numbered (`claims`): a process that dies mid-attempt leaves the delivery due again once the
lease ends, and a process holding an older claim can neither extend the lease (`extend`) nor record an
attempt (`record_attempt(claim=…)`): one attempt at a time, one end. Delivery is therefore at least once.

A queue that `announces` its ends keeps `announced: False` on a delivery that ended until its caller
has said so elsewhere (`mark_announced`); `unannounced` finds those a crash left in between.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

PENDING, DELIVERED, GAVE_UP = "pending", "delivered", "failed"  # a delivery's status


class Outcome(Protocol):
    """What one attempt got, as the queue records it."""

    @property
    def delivered(self) -> bool: ...

    @property
    def final(self) -> bool:
        """A failure that trying again cannot mend (a refused host key, say): the delivery is given up at once,
        with `describe()` as its reason."""
        ...

    def attempt_fields(self) -> dict[str, Any]:
        """What the attempt's entry keeps besides `at` and `nextAttemptAt` (plain values, no secret)."""
        ...

    def describe(self) -> str:
        """The failure in a few words, for the reason a delivery was given up."""
        ...


def deterministic_id(prefix: str, *parts: str) -> str:
    """The same id for the same parts, whoever computes it, whenever: `prefix` + 32 hex digits of SHA-256."""
    return prefix + hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def next_attempt_delay(retry_delays: Sequence[timedelta], attempts_made: int) -> timedelta | None:
    """How long after the `attempts_made`-th failed attempt the next one is due; None: give up."""
    return retry_delays[attempts_made - 1] if attempts_made <= len(retry_delays) else None


class DeliveryQueue:
    """The deliveries of one collection: after the 1st, 2nd, ... failed attempt the next waits
    `retry_delays[0]`, `retry_delays[1]`, ...; after the last, the delivery is given up."""

    def __init__(
        self, db: Database, collection: str, retry_delays: Sequence[timedelta], *, announces: bool = False
    ) -> None:
        self.collection = db[collection]
        self.retry_delays = tuple(retry_delays)
        self.announces = announces

    @property
    def max_attempts(self) -> int:
        return len(self.retry_delays) + 1

    def ensure_indexes(self) -> None:
        """Idempotent: the due deliveries, in the order they are attempted."""
        self.collection.create_index([("status", ASCENDING), ("nextAttemptAt", ASCENDING)], name="due")
        if self.announces:
            self.collection.create_index([("announced", ASCENDING)], name="unannounced", sparse=True)

    def store(self, delivery_id: str, fields: Mapping[str, Any], now: datetime) -> str:
        """Store a delivery due at once; storing the same id again changes nothing (the first stays)."""
        doc = {
            "id": delivery_id,
            **fields,
            "status": PENDING,
            "createdAt": now,
            "nextAttemptAt": now,
            "attempts": [],
        }
        with contextlib.suppress(DuplicateKeyError):  # stored meanwhile by another writer: the same document
            self.collection.update_one({"_id": delivery_id}, {"$setOnInsert": doc}, upsert=True)
        return delivery_id

    def due(self, now: datetime, limit: int) -> list[dict[str, Any]]:
        """The pending deliveries due by `now`, longest waiting first."""
        query = {"status": PENDING, "nextAttemptAt": {"$lte": now}}
        return list(self.collection.find(query).sort([("nextAttemptAt", ASCENDING), ("_id", ASCENDING)]).limit(limit))

    def claim(self, delivery: dict[str, Any], now: datetime, lease: timedelta) -> bool:
        """Take a due delivery for `lease`: if the process dies mid-attempt, it is due again after it.
        False when another process took it first; else this claim's number is `claim_number(delivery)`."""
        claimed = self.collection.update_one(
            {"_id": delivery["_id"], "status": PENDING, "nextAttemptAt": delivery["nextAttemptAt"]},
            {"$set": {"nextAttemptAt": now + lease}, "$inc": {"claims": 1}},
        )
        return claimed.modified_count == 1

    @staticmethod
    def claim_number(delivery: dict[str, Any]) -> int:
        """The number of the claim `claim(delivery, …)` took (the document as it was read before)."""
        return int(delivery.get("claims") or 0) + 1

    def extend(self, delivery_id: str, claim: int, until: datetime) -> dict[str, Any] | None:
        """Move the lease of claim `claim` to `until`; the delivery, or None when a later claim took it over
        (or it ended)."""
        return self.collection.find_one_and_update(
            {"_id": delivery_id, "status": PENDING, "claims": claim},
            {"$set": {"nextAttemptAt": until}},
            return_document=ReturnDocument.AFTER,
        )

    def release(self, delivery: dict[str, Any]) -> None:
        """A claimed delivery that was not attempted (the tick ran out of time): due again as before."""
        self.collection.update_one(
            {"_id": delivery["_id"], "status": PENDING}, {"$set": {"nextAttemptAt": delivery["nextAttemptAt"]}}
        )

    def record_attempt(
        self, delivery: dict[str, Any], at: datetime, outcome: Outcome, *, claim: int | None = None
    ) -> dict[str, Any] | None:
        """Add the attempt; the delivery is delivered, due again after the next delay, or given up.
        Returns the attempt's entry with the fields it set on the delivery; None when `claim` is given and
        is no longer the delivery's (a later claim took it over: this attempt is not recorded)."""
        made = len(delivery.get("attempts") or []) + 1
        delay = None if outcome.delivered or outcome.final else next_attempt_delay(self.retry_delays, made)
        next_at = at + delay if delay is not None else None
        entry = {"at": at, **outcome.attempt_fields(), "nextAttemptAt": next_at}
        fields: dict[str, Any] = {"nextAttemptAt": next_at, "lastAttemptAt": at}
        if outcome.delivered:
            fields["status"] = DELIVERED
        elif next_at is None:
            fields["status"] = GAVE_UP
            fields["reason"] = (
                outcome.describe()
                if outcome.final
                else f"Gave up after {made} attempts; the last one failed with {outcome.describe()}."
            )
        if self.announces and next_at is None:
            fields["announced"] = False
        query: dict[str, Any] = {"_id": delivery["_id"], "status": PENDING}
        if claim is not None:
            query["claims"] = claim
        recorded = self.collection.update_one(query, {"$set": fields, "$push": {"attempts": entry}})
        if claim is not None and recorded.matched_count == 0:
            return None
        return {**entry, **fields}

    def unannounced(self, limit: int) -> list[dict[str, Any]]:
        """Ended deliveries whose end is yet to be announced (`announces` queues only)."""
        return list(self.collection.find({"announced": False}).limit(limit))

    def mark_announced(self, delivery: dict[str, Any]) -> None:
        self.collection.update_one({"_id": delivery["_id"]}, {"$set": {"announced": True}})

    def drop(self, delivery: dict[str, Any]) -> None:
        """Forget one delivery (what it was for is gone)."""
        self.collection.delete_one({"_id": delivery["_id"]})

    def drop_matching(self, query: Mapping[str, Any]) -> int:
        """Forget every delivery matching `query` (all of a removed subscription's, say); how many."""
        return int(self.collection.delete_many(dict(query)).deleted_count)

    def listing(
        self, query: Mapping[str, Any], *, page: int, limit: int, hidden: Sequence[str] = ()
    ) -> list[dict[str, Any]]:
        """One page of the deliveries matching `query`, newest first, without the `hidden` fields."""
        projection = {name: 0 for name in hidden} or None
        cursor = (
            self.collection.find(dict(query), projection)
            .sort([("createdAt", DESCENDING), ("_id", DESCENDING)])
            .skip(page * limit)
            .limit(limit)
        )
        return list(cursor)

    def purge(self, before: datetime) -> int:
        """Drop delivered and given-up deliveries stored before `before`; how many."""
        query = {"status": {"$in": [DELIVERED, GAVE_UP]}, "createdAt": {"$lt": before}}
        return int(self.collection.delete_many(query).deleted_count)
