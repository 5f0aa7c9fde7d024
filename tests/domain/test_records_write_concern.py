"""Export records are written with w=majority even when the URI asks for less (docs/deploy.md)."""

from __future__ import annotations

from typing import Any

from pymongo import MongoClient, monitoring

from export_core.records import ExportStore
from export_core.settings import Settings


class Commands(monitoring.CommandListener):
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.sent.append({"name": event.command_name, **event.command})

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def test_every_record_write_carries_majority_write_concern(settings: Settings, mongo_uri: str) -> None:
    commands = Commands()
    client: MongoClient = MongoClient(f"{mongo_uri}&w=1", tz_aware=True, event_listeners=[commands])
    try:
        db = client[settings.mongodb_db]
        store = ExportStore(db)
        store.ensure_indexes()
        result = store.create(campaign_id="c1", campaign_name="Tour", export_type="entries", requester_user_id="u1")
        store.mark_triggered(result.record["_id"], run_id="run-1", preliminary_count=None)
        writes = [c for c in commands.sent if c["name"] in ("insert", "update", "findAndModify", "delete")]
        assert {c["name"] for c in writes} >= {"insert", "findAndModify"}
        assert all(c.get("writeConcern") == {"w": "majority"} for c in writes), writes
        # Other collections keep the URI's own write concern.
        db["elsewhere"].insert_one({"_id": 1})
        assert commands.sent[-1]["writeConcern"] == {"w": 1}
    finally:
        client.drop_database(settings.mongodb_db)
        client.close()
