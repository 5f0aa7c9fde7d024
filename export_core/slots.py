"""A per-campaign limit that concurrent requests cannot pass: each document holds a `slot` 0..limit-1 that a
unique index on (campaignId, slot) keeps to one per campaign."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError


def insert_in_free_slot(
    collection: Collection, campaign_id: str, limit: int, doc: Callable[[], dict[str, Any]], full: Exception
) -> dict[str, Any]:
    """Insert `doc()` (a fresh one per attempt) in a free slot of the campaign; raise `full` when none is free."""
    for _ in range(limit * 2):
        taken = {d.get("slot") for d in collection.find({"campaignId": campaign_id}, {"slot": 1})}
        free = sorted(set(range(limit)) - taken)
        if not free:
            raise full
        attempt = {**doc(), "slot": random.choice(free)}  # random: concurrent requests rarely pick the same one
        try:
            collection.insert_one(attempt)
            return attempt
        except DuplicateKeyError:
            continue  # a concurrent request took that slot: look again
    raise RuntimeError("could not insert: concurrent requests kept taking its slot")
