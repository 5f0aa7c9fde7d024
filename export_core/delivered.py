"""The rows a schedule's incremental runs have delivered (SPEC §12), kept beside its export records.

`delivered_rows` holds, per export, the row keys (the source document's `_id` as text) its file
holds, in chunks of CHUNK_KEYS keys (a JSON list, zlib-compressed): a chunk stays far below
MongoDB's 16 MB document limit, and 1.2 M keys are a few dozen documents. An export's chunks are
written before it is marked FINISHED and count only once it is: a run that FAILED, EXPIRED or died
in between delivered nothing, and the next successful run sends its rows (docs/schedules.md).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Sequence

from bson.binary import Binary
from pymongo import ASCENDING
from pymongo.database import Database

from export_core.records import FINISHED

DELIVERED = "delivered_rows"
CHUNK_KEYS = 200_000


class DeliveredRows:
    """Save the row keys of one export's file; read the keys a schedule's FINISHED exports delivered."""

    def __init__(self, db: Database) -> None:
        self.collection = db[DELIVERED]
        self.exports = db["exports"]

    def ensure_indexes(self) -> None:
        self.collection.create_index([("exportId", ASCENDING), ("chunk", ASCENDING)], name="by_export")
        self.collection.create_index([("scheduleId", ASCENDING)], name="by_schedule")

    def save(self, *, schedule_id: str, export_id: str, keys: Sequence[str]) -> None:
        """Store the keys of `export_id`'s file; a second save (a retried finish) replaces the first."""
        chunks = [keys[i : i + CHUNK_KEYS] for i in range(0, len(keys), CHUNK_KEYS)]
        for number, chunk in enumerate(chunks):
            packed = Binary(zlib.compress(json.dumps(list(chunk)).encode(), 1))
            self.collection.replace_one(
                {"_id": f"{export_id}:{number}"},
                {"scheduleId": schedule_id, "exportId": export_id, "chunk": number, "rows": len(chunk), "keys": packed},
                upsert=True,
            )
        self.collection.delete_many({"exportId": export_id, "chunk": {"$gte": len(chunks)}})

    def delivered_exports(self, schedule_id: str, *, exclude: str | None = None) -> list[str]:
        """Ids of the schedule's FINISHED exports (their rows are delivered), but `exclude`."""
        query = {"schedule.id": schedule_id, "status": FINISHED, "_id": {"$ne": exclude}}
        return [str(doc["_id"]) for doc in self.exports.find(query, {"_id": 1})]

    def keys(self, export_ids: Iterable[str]) -> set[str]:
        """Every row key the given exports' files hold."""
        delivered: set[str] = set()
        ids = list(export_ids)
        if not ids:
            return delivered
        for doc in self.collection.find({"exportId": {"$in": ids}}, {"keys": 1}):
            delivered.update(json.loads(zlib.decompress(doc["keys"])))
        return delivered

    def forget_schedule(self, schedule_id: str) -> None:
        """A deleted schedule's keys (its exports stay; no run of it will read them again)."""
        self.collection.delete_many({"scheduleId": schedule_id})
