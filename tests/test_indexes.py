"""`python -m export_pipelines.indexes` against the real MongoDB-protocol server: every index, idempotently."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from pymongo.database import Database

from devstack.seed import seed_campaign
from export_pipelines.domain.settings import REPO_ROOT


def _run(env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "export_pipelines.indexes"],
        env={**os.environ, **env}, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def _specs(db: Database) -> dict[str, dict[str, Any]]:
    """Every index of every collection: keys and options as the server reports them."""
    return {
        f"{name}.{ix['name']}": {k: v for k, v in ix.items() if k not in ("v", "ns")}
        for name in db.list_collection_names()
        for ix in db[name].list_indexes()
    }


def test_creates_every_index_and_a_second_run_changes_nothing(env: dict[str, str], db: Database) -> None:
    first = _run(env)
    specs = _specs(db)
    dedupe = specs["exports.one_active_per_request"]
    assert dedupe["unique"] is True and dedupe["partialFilterExpression"] == {"active": True}
    assert list(dedupe["key"].items()) == [("campaignId", 1), ("exportType", 1), ("dateKey", 1)]
    assert list(specs["exports.queue"]["key"].items()) == [("status", 1), ("date.created", 1)]
    slots = specs["exports.pending_slots"]
    assert slots["unique"] is True and list(slots["key"].items()) == [("campaignId", 1), ("pendingSlot", 1)]
    assert specs["exports.by_deletion_status"]["sparse"] is True
    assert list(specs["export_members.by_user"]["key"].items()) == [("userIds", 1)]
    assert "ccpa_tombstones.by_last_request" in specs and "ccpa_audit.by_export" in specs
    assert list(specs["entries.campaignId_1_marketId_1__id_1"]["key"].items()) == [
        ("campaignId", 1), ("marketId", 1), ("_id", 1),
    ]  # fmt: skip
    for name in ("scoring", "codes", "markets"):
        assert list(specs[f"{name}.campaignId_1"]["key"].items()) == [("campaignId", 1)]
    exports = "_id_, by_campaign, by_deletion_status, one_active_per_request, pending_slots, queue"
    assert f"{env['MONGODB_DB']}.exports: {exports}" in first

    assert _run(env) == first
    assert _specs(db) == specs


def test_the_seed_creates_the_same_indexes(env: dict[str, str], db: Database, mongo_uri: str) -> None:
    from pymongo import MongoClient

    seed_campaign(db, campaign_id="ix", n_entries=20)
    seeded = _specs(db)
    client: MongoClient = MongoClient(mongo_uri)
    other = client[f"{env['MONGODB_DB']}_cmd"]
    try:
        _run({**env, "MONGODB_DB": other.name})
        assert set(_specs(other)) <= set(seeded)
        assert {k: v for k, v in seeded.items() if k in _specs(other)} == _specs(other)
    finally:
        client.drop_database(other.name)
        client.close()
