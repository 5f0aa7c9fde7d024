"""The generic delivery queue against the suite's MongoDB-protocol server: a kind of delivery that is not a
webhook (its own collection, fields and retry schedule) is stored once, claimed under a lease, retried
after its own delays and given up with the reason, and listed, dropped and purged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.database import Database

from export_core.outbox import DELIVERED, GAVE_UP, PENDING, DeliveryQueue, deterministic_id, next_attempt_delay

DELAYS = (timedelta(minutes=1), timedelta(minutes=5))
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=90)


class Upload:
    """An outcome of another kind: what a file transfer might report."""

    def __init__(self, *, sent: int | None = None, error: str | None = None, final: bool = False) -> None:
        self.delivered, self.error, self.final = error is None, error, final
        self.kept = {"bytes": sent, "error": error}

    def attempt_fields(self) -> dict[str, Any]:
        return self.kept

    def describe(self) -> str:
        return str(self.error)


def queue(db: Database) -> DeliveryQueue:
    uploads = DeliveryQueue(db, "upload_deliveries", DELAYS)
    uploads.ensure_indexes()
    return uploads


def stored(uploads: DeliveryQueue, delivery_id: str) -> dict[str, Any]:
    found = uploads.collection.find_one({"_id": delivery_id})
    assert found is not None
    return found


def test_the_id_is_the_same_for_the_same_parts_only():
    first = deterministic_id("dlv_", "dest1", "exp1")
    assert first == deterministic_id("dlv_", "dest1", "exp1") and first.startswith("dlv_") and len(first) == 36
    assert first not in {deterministic_id("dlv_", "dest1", "exp2"), deterministic_id("dlv_", "dest1exp1")}
    assert [next_attempt_delay(DELAYS, n) for n in (1, 2, 3)] == [*DELAYS, None]


def test_storing_twice_keeps_the_first_and_it_is_due_at_once(db: Database):
    uploads = queue(db)
    delivery_id = deterministic_id("dlv_", "dest1", "exp1")
    assert uploads.store(delivery_id, {"destinationId": "dest1", "exportId": "exp1"}, T0) == delivery_id
    uploads.store(delivery_id, {"destinationId": "other"}, T0 + timedelta(hours=1))
    doc = stored(uploads, delivery_id)
    assert doc == {
        "_id": delivery_id, "id": delivery_id, "destinationId": "dest1", "exportId": "exp1", "status": PENDING,
        "createdAt": T0, "nextAttemptAt": T0, "attempts": [],
    }  # fmt: skip
    assert [d["_id"] for d in uploads.due(T0, 10)] == [delivery_id]
    assert uploads.due(T0 - timedelta(seconds=1), 10) == []
    assert list(uploads.collection.database["webhook_deliveries"].find()) == [], "nothing of the webhooks'"


def test_a_claim_is_a_lease_taken_once_and_a_release_gives_it_back(db: Database):
    uploads = queue(db)
    uploads.store("d1", {}, T0)
    [due] = uploads.due(T0, 10)
    assert uploads.claim(due, T0, LEASE)
    assert not uploads.claim(due, T0, LEASE), "another process got there first"
    assert uploads.due(T0 + LEASE - timedelta(seconds=1), 10) == [], "leased"
    [again] = uploads.due(T0 + LEASE, 10)  # the claimer died: due again after the lease
    assert uploads.claim(again, T0 + LEASE, LEASE)
    uploads.release(again)
    assert [d["_id"] for d in uploads.due(T0 + LEASE, 10)] == ["d1"], "due as before the claim"


def test_failures_wait_the_queues_own_delays_and_the_last_gives_up_with_the_reason(db: Database):
    uploads = queue(db)
    uploads.store("d1", {}, T0)
    at = T0
    for error in ("timeout", "refused"):
        recorded = uploads.record_attempt(stored(uploads, "d1"), at, Upload(error=error))
        at = recorded["nextAttemptAt"]
        assert stored(uploads, "d1")["status"] == PENDING and stored(uploads, "d1")["nextAttemptAt"] == at
    assert at == T0 + DELAYS[0] + DELAYS[1]
    final = uploads.record_attempt(stored(uploads, "d1"), at, Upload(error="host_key_mismatch"))
    assert final["status"] == GAVE_UP and final["nextAttemptAt"] is None
    doc = stored(uploads, "d1")
    assert doc["status"] == GAVE_UP and doc["lastAttemptAt"] == at and uploads.max_attempts == 3
    assert doc["reason"] == "Gave up after 3 attempts; the last one failed with host_key_mismatch."
    assert [a["error"] for a in doc["attempts"]] == ["timeout", "refused", "host_key_mismatch"]
    assert doc["attempts"][0] == {"at": T0, "bytes": None, "error": "timeout", "nextAttemptAt": T0 + DELAYS[0]}
    uploads.record_attempt(doc, at, Upload(sent=1))
    assert stored(uploads, "d1")["status"] == GAVE_UP and len(stored(uploads, "d1")["attempts"]) == 3, "ended"


def test_a_final_failure_gives_up_at_once_with_its_own_reason(db: Database):
    uploads = queue(db)
    uploads.store("d1", {}, T0)
    recorded = uploads.record_attempt(
        stored(uploads, "d1"), T0, Upload(error="The host key is not the pinned one.", final=True)
    )
    assert recorded["status"] == GAVE_UP and recorded["nextAttemptAt"] is None
    doc = stored(uploads, "d1")
    assert doc["reason"] == "The host key is not the pinned one." and len(doc["attempts"]) == 1
    assert uploads.due(T0 + timedelta(days=1), 10) == []


def test_a_success_ends_the_delivery_with_what_the_attempt_kept(db: Database):
    uploads = queue(db)
    uploads.store("d1", {}, T0)
    uploads.record_attempt(stored(uploads, "d1"), T0, Upload(sent=2048))
    doc = stored(uploads, "d1")
    assert doc["status"] == DELIVERED and doc["nextAttemptAt"] is None and "reason" not in doc
    assert doc["attempts"] == [{"at": T0, "bytes": 2048, "error": None, "nextAttemptAt": None}]
    assert uploads.due(T0 + timedelta(days=1), 10) == []


def test_listing_dropping_and_purging(db: Database):
    uploads = queue(db)
    for i in range(5):
        uploads.store(f"d{i}", {"destinationId": "a" if i < 4 else "b", "payload": "x" * 10}, T0 + timedelta(i))
    page = uploads.listing({"destinationId": "a"}, page=0, limit=3, hidden=("payload",))
    assert [d["_id"] for d in page] == ["d3", "d2", "d1"] and all("payload" not in d for d in page)
    assert [d["_id"] for d in uploads.listing({"destinationId": "a"}, page=1, limit=3)] == ["d0"]
    uploads.record_attempt(stored(uploads, "d0"), T0, Upload(sent=1))
    uploads.drop(stored(uploads, "d1"))
    assert uploads.purge(T0 + timedelta(days=30)) == 1, "only ended deliveries are purged"
    assert uploads.drop_matching({"destinationId": "a"}) == 2
    assert [d["_id"] for d in uploads.collection.find()] == ["d4"]
