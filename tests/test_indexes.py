"""`python -m export_pipelines.indexes` against the real MongoDB-protocol server: every index, idempotently."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from pymongo.database import Database

from devstack.seed import seed_campaign
from export_core.settings import REPO_ROOT


def _command(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "export_pipelines.indexes"],
        env={**os.environ, **env}, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def _run(env: dict[str, str]) -> str:
    done = _command(env)
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
    dedupe = specs["exports.one_active_per_request_format"]
    assert dedupe["unique"] is True and dedupe["partialFilterExpression"] == {"active": True}
    assert list(dedupe["key"].items()) == [("campaignId", 1), ("exportType", 1), ("dateKey", 1), ("format", 1)]
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
    exports = (
        "_id_, by_campaign, by_deletion_status, destination_outbox, one_active_per_request_format,"
        " one_record_per_schedule_tick, pending_slots, queue, webhook_outbox"
    )
    ticks = specs["exports.one_record_per_schedule_tick"]
    assert ticks["unique"] is True and ticks["partialFilterExpression"] == {"schedule.id": {"$exists": True}}
    assert list(ticks["key"]) == ["schedule.id", "schedule.scheduledFor", "schedule.manual"]
    slot = specs["schedules.one_per_slot"]
    assert slot["unique"] is True and list(slot["key"].items()) == [("campaignId", 1), ("slot", 1)]
    assert "schedule_ticks.by_schedule" in specs and specs["schedules.schedule_outbox"]["sparse"] is True
    assert specs["exports.webhook_outbox"]["sparse"] is True
    slot = specs["webhooks.one_per_slot"]
    assert slot["unique"] is True and list(slot["key"].items()) == [("campaignId", 1), ("slot", 1)]
    assert list(specs["webhook_deliveries.due"]["key"].items()) == [("status", 1), ("nextAttemptAt", 1)]
    slot = specs["destinations.one_per_slot"]
    assert slot["unique"] is True and list(slot["key"].items()) == [("campaignId", 1), ("slot", 1)]
    assert specs["exports.destination_outbox"]["sparse"] is True
    assert list(specs["destination_deliveries.due"]["key"].items()) == [("status", 1), ("nextAttemptAt", 1)]
    assert list(specs["destination_deliveries.by_export"]["key"].items()) == [("exportId", 1)]
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


def test_an_existing_database_is_migrated_to_the_duplicate_rule_with_formats(env: dict[str, str], db: Database) -> None:
    """A database from before formats: its dedupe index (without `format`) is replaced, and its records, which
    have no `format`, are csv: a csv request still finds the active one, another format is another export."""
    from pymongo import ASCENDING

    from export_core.records import ExportStore, utcnow

    exports = db["exports"]
    exports.create_index(
        [("campaignId", ASCENDING), ("exportType", ASCENDING), ("dateKey", ASCENDING)],
        name="one_active_per_request", unique=True, partialFilterExpression={"active": True},
    )  # fmt: skip
    old = {"campaignId": "c1", "dateKey": None, "requesterUserId": "u", "date": {"created": utcnow()}}
    exports.insert_many(
        [
            {**old, "_id": "pending", "id": "pending", "exportType": "entries", "status": "PENDING", "active": True},
            {**old, "_id": "failed", "id": "failed", "exportType": "codes", "status": "FAILED"},
            {**old, "_id": "done", "id": "done", "exportType": "codes", "status": "FINISHED", "key": "k.csv"},
        ]
    )
    _run(env)
    names = {ix["name"]: ix for ix in exports.list_indexes()}
    assert "one_active_per_request" not in names
    assert list(names["one_active_per_request_format"]["key"]) == ["campaignId", "exportType", "dateKey", "format"]
    # What may hold the slot (active, or re-runnable) is csv now; a FINISHED record is left as it was.
    assert {d["_id"]: d.get("format") for d in exports.find()} == {"pending": "csv", "failed": "csv", "done": None}

    store = ExportStore(db)
    same = store.create(campaign_id="c1", campaign_name="", export_type="entries", requester_user_id="u")
    assert not same.created and same.record["_id"] == "pending", "a csv request is the old record's duplicate"
    other = store.create(
        campaign_id="c1", campaign_name="", export_type="entries", requester_user_id="u", format="parquet"
    )
    assert other.created and other.record["format"] == "parquet", "another format is another export"
    # A re-run of the old FAILED record takes the csv slot back, so a csv request finds it.
    store.mark_triggered("failed", run_id="r", preliminary_count=None)
    again = store.create(campaign_id="c1", campaign_name="", export_type="codes", requester_user_id="u", max_pending=5)
    assert not again.created and again.record["_id"] == "failed"

    # A record written by the old version after the migration (no `format`) is still found by a csv request.
    exports.insert_one(
        {**old, "_id": "late", "id": "late", "exportType": "fanlist", "status": "PENDING", "active": True}
    )
    late = store.create(campaign_id="c1", campaign_name="", export_type="fanlist", requester_user_id="u", max_pending=5)
    assert not late.created and late.record["_id"] == "late"

    before = {ix["name"]: ix for ix in exports.list_indexes()}
    _run(env)  # a second run changes nothing
    assert {ix["name"]: ix for ix in exports.list_indexes()} == before


def test_plain_webhook_secrets_are_encrypted_once_rotated_to_the_first_key_and_an_unreadable_one_reported(
    env: dict[str, str], db: Database
) -> None:
    from cryptography.fernet import Fernet

    from export_core.secrets import SecretBox
    from export_core.webhooks import SUBSCRIPTIONS, new_secret

    key_a, key_b, lost = env["SECRETS_KEY"], Fernet.generate_key().decode(), Fernet.generate_key().decode()
    by_a, by_lost = SecretBox([key_a]), SecretBox([lost])
    plain, recent, unreadable = new_secret(), new_secret(), new_secret()
    hooks = db[SUBSCRIPTIONS]
    base = {"campaignId": "c1", "url": "https://8.8.8.8/", "events": ["export.finished"]}
    hooks.insert_many(
        [
            {**base, "_id": "w-plain", "id": "w-plain", "slot": 0, "secret": plain},  # from before SECRETS_KEY
            {**base, "_id": "w-new", "id": "w-new", "slot": 1, "encryptedSecret": by_a.encrypt(recent)},
            {**base, "_id": "w-lost", "id": "w-lost", "slot": 2, "encryptedSecret": by_lost.encrypt(unreadable)},
        ]
    )
    warning = (
        "warning: webhook w-lost: its stored secret cannot be decrypted with any key of SECRETS_KEY; left as it is,"
        " and its deliveries wait (put the key that encrypted it back into SECRETS_KEY, or remove the webhook and"
        " subscribe again)"
    )

    first = _command(env)
    assert first.returncode == 0, "an unreadable secret is reported, not crashed on"
    assert f"{env['MONGODB_DB']}.webhooks: 1 plain secret(s) encrypted, 0 made anew with the first key" in first.stdout
    assert first.stderr.strip() == warning
    migrated = {d["_id"]: d for d in hooks.find()}
    assert "secret" not in migrated["w-plain"] and migrated["w-plain"]["secretMigratedAt"]
    assert by_a.decrypt(migrated["w-plain"]["encryptedSecret"]) == plain
    assert "secretMigratedAt" not in migrated["w-new"]
    for secret in (plain, recent, unreadable):
        assert secret not in first.stdout + first.stderr and secret not in str(migrated["w-plain"])

    again = _command(env)
    assert "1 plain" not in again.stdout and "0 plain secret(s) encrypted, 0 made anew" in again.stdout
    assert again.stderr.strip() == warning
    assert {d["_id"]: d for d in hooks.find()} == migrated, "a second run changes nothing"

    rotating = {**env, "SECRETS_KEY": f"{key_b},{key_a}"}
    assert "0 plain secret(s) encrypted, 2 made anew with the first key" in _run(rotating)
    assert "0 plain secret(s) encrypted, 0 made anew" in _run(rotating)
    only_b = SecretBox([key_b])
    rotated = {d["_id"]: d for d in hooks.find()}
    assert only_b.decrypt(rotated["w-plain"]["encryptedSecret"]) == plain
    assert only_b.decrypt(rotated["w-new"]["encryptedSecret"]) == recent
    assert rotated["w-lost"] == migrated["w-lost"], "left as it is"


def test_outside_dev_mode_it_refuses_without_secrets_key(env: dict[str, str], db: Database) -> None:
    child = {k: v for k, v in env.items() if k != "SECRETS_KEY"}
    os_env = {k: v for k, v in os.environ.items() if k != "SECRETS_KEY"}
    done = subprocess.run(
        [sys.executable, "-m", "export_pipelines.indexes"], env={**os_env, **child, "DEV_MODE": "0"}, cwd=REPO_ROOT,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1 and done.stdout == "" and "Traceback" not in done.stderr
    assert done.stderr.strip() == (
        "python -m export_pipelines.indexes: SECRETS_KEY is not set; outside DEV_MODE the service needs it to"
        " encrypt and decrypt stored secrets."
    )
    assert db.list_collection_names() == [], "nothing done without it"
