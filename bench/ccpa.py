"""CCPA deletion benchmark (SPEC §7: "within 500 ms for a user found in 8 exports").

1,000 FINISHED exports (records, S3 objects, membership documents; written directly, no
jobs) in a database of their own; one fan is in 8 of them, as in Use Case 5 / Scenario 3:
3 entries, 2 artistOptIn, 1 codes, 1 waitlist and 1 scoring (exempt), so each call deletes
7 exports and skips 1. `DELETE /ccpa/users/{fan}` is timed over real HTTP against the app
served by uvicorn in a thread, talking to the real MongoDB-protocol and S3 servers; the 7
are restored between calls. Local servers only: it refuses to run against real AWS.

    python -m bench.ccpa    # starts its own servers unless MONGODB_URI / S3_ENDPOINT_URL are set

`run(settings)` is what `make bench` calls; `__main__` merges the result under "ccpa" into
bench/results.json.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import statistics
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import uvicorn
from cryptography.fernet import Fernet
from pymongo import MongoClient

from devstack.supervisor import rsa_pem_pair
from export_api.app import create_app
from export_core import ccpa
from export_core.clients import ensure_buckets, s3_client
from export_core.export_types import EXPORT_TYPES
from export_core.keys import export_key
from export_core.membership import MembershipStore
from export_core.records import FINISHED, ExportStore, utcnow
from export_core.settings import Settings
from export_core.storage import delete_objects

RESULTS = Path(__file__).resolve().parent / "results.json"
N_EXPORTS = 1000
FAN_TYPES = ("entries", "entries", "entries", "artistOptIn", "artistOptIn", "codes", "waitlist", "scoring")
# The other 992: a mix of types and buckets, some of them multi-key.
OTHER_TYPES = ("entries", "artistOptIn", "codes", "waitlist", "fanlist", "scoring", "verifiedEntries",
               "promoterEmailOptIn", "autoReminderEmail")  # fmt: skip
MEMBERS_PER_EXPORT = 200  # 200k membership index entries in all
USER_POOL = 100_000
TARGET_MS = 500


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _build(settings: Settings, s3: Any, db: Any, fan: str, tag: str) -> list[dict[str, Any]]:
    """Insert the 1,000 records, their objects and membership; returns the fan's 8 records."""
    rng = random.Random(7)
    fan_slots = dict(zip(range(60, N_EXPORTS, N_EXPORTS // len(FAN_TYPES)), FAN_TYPES, strict=False))
    created = utcnow() - timedelta(days=1)
    records, members, objects = [], [], []
    for i in range(N_EXPORTS):
        export_type = fan_slots.get(i) or OTHER_TYPES[i % len(OTHER_TYPES)]
        export_id = f"{tag}-{i:04d}"
        campaign = f"{tag}-c{i % 50:02d}"
        bucket = settings.bucket_for(EXPORT_TYPES[export_type].bucket)
        multi = EXPORT_TYPES[export_type].packaging == "multi_csv"
        keys = [export_key(export_type, campaign, export_id, f"part {n}.csv") for n in range(3 if multi else 1)]
        users = {f"u{rng.randrange(USER_POOL):06d}" for _ in range(MEMBERS_PER_EXPORT)}
        if i in fan_slots:
            users.add(fan)
        records.append(
            {
                "_id": export_id,
                "id": export_id,
                "campaignId": campaign,
                "campaignName": campaign,
                "exportType": export_type,
                "status": FINISHED,
                "requesterUserId": "bench",
                "date": {"created": created, "triggered": created, "finished": created},
                "key": keys if multi else keys[0],
                "count": len(users),
                "meta": {"bucket": bucket, "objects": [{"key": k} for k in keys]},
            }
        )
        members.append({"exportId": export_id, "userIds": sorted(users)})
        objects += [(bucket, k, ("userId\n" + "\n".join(sorted(users)) + "\n").encode()) for k in keys]
    db["exports"].insert_many(records)
    db["export_members"].insert_many(members)
    _put(s3, objects)
    return [r for i, r in enumerate(records) if i in fan_slots]


def _put(s3: Any, objects: list[tuple[str, str, bytes]]) -> None:
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda o: s3.put_object(Bucket=o[0], Key=o[1], Body=o[2]), objects))


def _restore(db: Any, s3: Any, fan_records: list[dict[str, Any]]) -> None:
    """Undo the last deletion: the records as they were, their objects back in S3."""
    ids = [r["_id"] for r in fan_records]
    db["exports"].update_many({"_id": {"$in": ids}}, {"$unset": {"date.deleted": "", "deletedBy": "", "deletion": ""}})
    objects = []
    for record in fan_records:
        keys = record["key"] if isinstance(record["key"], list) else [record["key"]]
        objects += [(record["meta"]["bucket"], k, b"userId\n") for k in keys]
    _put(s3, objects)


class _Server:
    """The API app under uvicorn in a background thread, on a free port."""

    def __init__(self, settings: Settings) -> None:
        self.port = _free_port()
        config = uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="bench-ccpa-api", daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the API did not start")
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def run(settings: Settings, runs: int = 15) -> dict[str, Any]:
    """Median latency of DELETE /ccpa/users/{id} with 1,000 exports stored and the user in 8."""
    if not settings.s3_endpoint_url:
        raise RuntimeError("the CCPA benchmark writes and deletes objects: local S3 only (set S3_ENDPOINT_URL)")
    private, public = rsa_pem_pair()
    tag = f"bench-ccpa-{uuid.uuid4().hex[:8]}"
    database = tag.replace("-", "_")
    # A production-like API: no dev mode, its own token key and SECRETS_KEY.
    production = {"jwt_public_key": public, "secrets_key": Fernet.generate_key().decode(), "dev_mode": False}
    settings = settings.model_copy(update={"mongodb_db": database, **production})
    ensure_buckets(settings)
    s3 = s3_client(settings)
    mongo: MongoClient = MongoClient(settings.mongodb_uri, tz_aware=True)
    db = mongo[settings.mongodb_db]
    fan = "u-ccpa-fan"
    created_keys: dict[str, list[str]] = {}
    try:
        started = time.perf_counter()
        ExportStore(db).ensure_indexes()
        ccpa.ensure_indexes(db)
        fan_records = _build(settings, s3, db, fan, tag)
        setup_s = time.perf_counter() - started
        assert MembershipStore(db).exports_containing(fan) == {r["_id"] for r in fan_records}
        for record in db["exports"].find({}, {"key": 1, "meta.bucket": 1}):
            keys = record["key"] if isinstance(record["key"], list) else [record["key"]]
            created_keys.setdefault(record["meta"]["bucket"], []).extend(keys)
        token = jwt.encode(
            {"sub": "bench-compliance", "supreme": True, "exp": int(time.time()) + 3600}, private, algorithm="RS256"
        )
        timings: list[float] = []
        with _Server(settings) as base_url, httpx.Client(base_url=base_url, timeout=30) as client:
            headers = {"Authorization": f"Bearer {token}"}
            for attempt in range(runs + 1):  # the first call warms the process up and is not counted
                _restore(db, s3, fan_records)
                t0 = time.perf_counter()
                response = client.delete(f"/ccpa/users/{fan}", headers=headers)
                elapsed_ms = (time.perf_counter() - t0) * 1000
                body = response.json()
                if response.status_code != 200 or body["deleted"]["total"] != 7 or body["skipped"]["total"] != 1:
                    raise RuntimeError(f"unexpected answer: {response.status_code} {response.text[:500]}")
                if attempt:
                    timings.append(elapsed_ms)
        ordered = sorted(timings)
        return {
            "median_ms": round(statistics.median(timings), 1),
            "p95_ms": round(ordered[max(0, int(len(ordered) * 0.95) - 1)], 1),
            "min_ms": round(ordered[0], 1),
            "max_ms": round(ordered[-1], 1),
            "runs": len(timings),
            "exports": N_EXPORTS,
            "user_in": len(fan_records),
            "deleted_per_call": 7,
            "skipped_per_call": 1,
            "members_per_export": MEMBERS_PER_EXPORT,
            "target_ms": TARGET_MS,
            "setup_s": round(setup_s, 1),
        }
    finally:
        for bucket, keys in created_keys.items():
            delete_objects(s3, bucket=bucket, keys=keys)
        mongo.drop_database(settings.mongodb_db)
        mongo.close()


def _with_local_servers() -> list[Any]:
    """Start SecantusDB / moto for whichever of MONGODB_URI / S3_ENDPOINT_URL is unset."""
    started: list[Any] = []
    if not os.environ.get("MONGODB_URI"):
        from secantus import SecantusDBServer

        mongo = SecantusDBServer(host="127.0.0.1", port=0, storage_path=":memory:")
        mongo.start()
        host, port = mongo.address
        os.environ["MONGODB_URI"] = f"mongodb://{host}:{port}/?directConnection=true"
        started.append(mongo)
    if not os.environ.get("S3_ENDPOINT_URL"):
        from moto.server import ThreadedMotoServer

        port = _free_port()
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        moto.start()
        os.environ["S3_ENDPOINT_URL"] = f"http://127.0.0.1:{port}"
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
        started.append(moto)
    return started


def main() -> int:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server logs every request
    servers = _with_local_servers()
    try:
        result = run(Settings.from_env())
    finally:
        for server in servers:
            server.stop()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["ccpa"] = result
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(json.dumps(result, indent=2))
    print(f"CCPA deletion, 1,000 exports, user in 8: median {result['median_ms']} ms (target < {TARGET_MS} ms)")
    return 0 if result["median_ms"] < TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
