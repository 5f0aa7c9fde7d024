"""`python -m export_pipelines.indexes`: create every MongoDB index the service relies on, and migrate
stored data, idempotently.

Run it once per deployment (a Kubernetes Job or an ECS task before the new version starts,
see docs/deploy.md), and whenever an index is added here. Dagster-free: the API, the export
runs, the seed (devstack/seed.py) and the tests call `ensure_indexes` too, so every database
the service meets has the same indexes. Creating an index that exists with the same keys and
options is a no-op on MongoDB, so running it again changes nothing.

Migrations (here only, never at a process's start): webhook secrets stored in plain text before
SECRETS_KEY are encrypted, and secrets encrypted with another key than SECRETS_KEY's first are made
anew with it (`encrypt_secrets`, key rotation). A migrated document no longer matches, so a second
run changes nothing; a secret no key decrypts is reported on a line of its own and left as it is.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from pymongo import ASCENDING
from pymongo.database import Database

from export_core import ccpa, webhooks
from export_core.clients import mongo_client
from export_core.destination_store import DESTINATIONS, DestinationStore
from export_core.records import ExportStore, utcnow
from export_core.schedule_store import ScheduleStore
from export_core.secrets import SecretBox, SecretsKeyMissing
from export_core.settings import Settings

PROG = "python -m export_pipelines.indexes"

# The campaign data the exports read (SPEC §2): each export query filters on campaignId.
DATA_INDEXES: dict[str, list[tuple[str, int]]] = {
    "entries": [("campaignId", ASCENDING), ("marketId", ASCENDING), ("_id", ASCENDING)],
    "scoring": [("campaignId", ASCENDING)],
    "codes": [("campaignId", ASCENDING)],
    "markets": [("campaignId", ASCENDING)],
}


def ensure_data_indexes(db: Database[Any]) -> None:
    """Indexes on the campaign data the export queries rely on."""
    for collection, keys in DATA_INDEXES.items():
        db[collection].create_index(keys)


def ensure_indexes(db: Database[Any]) -> None:
    """Every index: campaign data, export records (the race-free dedupe, one record per schedule tick), CCPA
    membership/tombstones/audit, webhooks (subscription slots, due deliveries, the exports' outbox), schedules,
    destinations (their slots)."""
    ensure_data_indexes(db)
    ExportStore(db).ensure_indexes()
    ccpa.ensure_indexes(db)
    webhooks.ensure_indexes(db)
    ScheduleStore(db).ensure_indexes()
    DestinationStore(db).ensure_indexes()


def encrypt_secrets(db: Database[Any], secret_box: SecretBox) -> list[str]:
    """Encrypt the stored secrets still in plain text and rotate the others to the first key; the lines
    that say so, warnings (a secret no key decrypts, named by its webhook's id only) last."""
    done = webhooks.WebhookStore(db).encrypt_stored_secrets(secret_box, utcnow())
    lines = [
        f"{db.name}.{webhooks.SUBSCRIPTIONS}: {done.encrypted} plain secret(s) encrypted, {done.rotated} made anew"
        " with the first key of SECRETS_KEY"
    ]
    rotated, unreadable = DestinationStore(db).rotate_secrets(secret_box)
    lines.append(
        f"{db.name}.{DESTINATIONS}: {rotated} destination secret(s) made anew with the first key of SECRETS_KEY"
    )
    lines += [
        f"warning: webhook {webhook_id}: its stored secret cannot be decrypted with any key of SECRETS_KEY;"
        " left as it is, and its deliveries wait (put the key that encrypted it back into SECRETS_KEY, or"
        " remove the webhook and subscribe again)"
        for webhook_id in done.unreadable
    ]
    lines += [
        f"warning: destination {destination_id}: its stored password or key cannot be decrypted with any key of"
        " SECRETS_KEY; left as it is, and its deliveries wait (put the key that encrypted it back into"
        " SECRETS_KEY, or remove the destination and add it again)"
        for destination_id in unreadable
    ]
    return lines


def index_summary(db: Database[Any]) -> dict[str, list[str]]:
    """Index names per collection, as the server reports them."""
    return {name: sorted(ix["name"] for ix in db[name].list_indexes()) for name in sorted(db.list_collection_names())}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Create the MongoDB indexes export-service needs (MONGODB_URI, MONGODB_DB) and encrypt its"
        " stored secrets (SECRETS_KEY); safe to repeat.",
    )
    parser.parse_args(argv)
    settings = Settings.from_env()
    try:
        secret_box = SecretBox.from_settings(settings)
    except SecretsKeyMissing as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    client = mongo_client(settings)
    try:
        db = client[settings.mongodb_db]
        ensure_indexes(db)
        for collection, names in index_summary(db).items():
            print(f"{settings.mongodb_db}.{collection}: {', '.join(names)}")
        for line in encrypt_secrets(db, secret_box):
            print(line, file=sys.stderr if line.startswith("warning:") else sys.stdout)
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
