"""Which users each export file contains, recorded while the file is written (for CCPA, SPEC §7).

One document per written batch holds the batch's distinct user ids in an array with a
multikey index, so writing costs one insert per batch (not one per row) and "which exports
contain user X" is an index lookup, never a scan of files.
"""

from __future__ import annotations

from collections.abc import Iterable

from pymongo import ASCENDING
from pymongo.database import Database


class MembershipStore:
    def __init__(self, db: Database) -> None:
        self.collection = db["export_members"]

    def ensure_indexes(self) -> None:
        self.collection.create_index([("userIds", ASCENDING)], name="by_user")
        self.collection.create_index([("exportId", ASCENDING)], name="by_export")

    def reset(self, export_id: str) -> None:
        """Forget what an earlier attempt of this export wrote: a re-run records afresh."""
        self.collection.delete_many({"exportId": export_id})

    def add(self, export_id: str, user_ids: Iterable[str | None]) -> None:
        ids = sorted({u for u in user_ids if u})
        if ids:
            self.collection.insert_one({"exportId": export_id, "userIds": ids})

    def exports_containing(self, user_id: str) -> set[str]:
        return {str(e) for e in self.collection.distinct("exportId", {"userIds": user_id})}

    def members_among(self, export_id: str, user_ids: Iterable[str]) -> set[str]:
        """Which of `user_ids` (a short list, e.g. recent CCPA requests) this export contains."""
        candidates = sorted(set(user_ids))
        found: set[str] = set()
        for start in range(0, len(candidates), 1000):
            chunk = candidates[start : start + 1000]
            # One query answers the usual case (none of them); only a hit pays for the per-user lookups.
            if self.collection.find_one({"exportId": export_id, "userIds": {"$in": chunk}}, {"_id": 1}) is None:
                continue
            found |= {u for u in chunk if self.collection.find_one({"exportId": export_id, "userIds": u}, {"_id": 1})}
        return found
