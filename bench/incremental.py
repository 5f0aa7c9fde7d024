"""`python -m bench.incremental`: an incremental run of 1 % new rows beside the full export (SPEC §12).

On campaign `bench-{N}` (N = BENCH_ENTRIES, default 1,200,000; seeded once into BENCH_DB, default
`bench`, with the seed bench/run.py uses, and reused), in this one process, through the real stages as
an export run calls them (build_context, extract, transform, package, upload, finish_fields):

1. `full`: the entries export, as a one-off request makes it;
2. `first`: a schedule's first incremental run (nothing delivered yet: every row, its keys saved);
3. N/100 new entries are written (BENCH_INCREMENTAL_NEW): copies of existing ones, a third with an
   old `date.created` (late), a third tied with the newest, a third new;
4. `incremental`: the schedule's next run, which must send exactly those.

Each run reports its wall time, CPU (user + sys), the database commands (round trips) and bytes
received (TCP_INFO) — what it asks of the database, which carries over to a production MongoDB — and
its rows. The entries written, the records, objects, delivered keys and membership documents are
removed afterwards. Prints a table and writes BENCH_INCREMENTAL_RESULTS (default
bench/incremental.json); bench/run.py calls `run` for its results.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bson import ObjectId

from bench.formats import cpu_s, ensure_campaign, s3_uploader
from bench.stack import LocalServers
from export_core.settings import REPO_ROOT, Settings

DEFAULT_ENTRIES = 1_200_000
SEED = 1  # bench/run.py seeds its N campaign with this seed: either run reuses the other's data
NEW_SHARE = 0.01


def log(message: str) -> None:
    print(f"[bench.incremental {datetime.now().strftime('%H:%M:%S')}] {message}", flush=True)


class Exports:
    """Makes exports of one campaign through the real stages, counting what each asks of the database."""

    def __init__(self, settings: Settings, campaign_id: str, work_dir: Path) -> None:
        from pymongo import MongoClient

        from export_core.clients import CommandCounter, s3_client
        from export_core.records import ExportStore

        self.commands = CommandCounter()
        self.client: MongoClient = MongoClient(settings.mongodb_uri, tz_aware=True, event_listeners=[self.commands])
        self.db = self.client[settings.mongodb_db]
        self.store = ExportStore(self.db)
        self.s3 = s3_client(settings)
        self.uploader = s3_uploader(settings)
        self.settings, self.campaign_id, self.work_dir = settings, campaign_id, work_dir
        self.made: list[dict[str, Any]] = []

    def _received(self) -> int:
        from export_core.clients import bytes_received_from

        address = self.client.address
        return (bytes_received_from(address[1]) if address else None) or 0

    def run(self, name: str, **fields: Any) -> dict[str, Any]:
        """One export of the campaign's entries with the record `fields`; it ends FINISHED, as a run's would."""
        from export_pipelines import stages

        export_id = f"bench-incr-{uuid.uuid4().hex[:12]}"
        record = {"_id": export_id, "id": export_id, "campaignId": self.campaign_id, "exportType": "entries"}
        record |= {"format": "csv", "status": "TRIGGERED", "requesterUserId": "bench", **fields}
        self.db["exports"].insert_one(record)
        self.made.append(record)
        workspace = stages.Workspace(data_dir=self.work_dir, buckets=self.settings.buckets)
        commands, received, cpu, wall = self.commands.commands, self._received(), cpu_s(), time.perf_counter()
        ctx = stages.build_context(record, self.db, self.s3, workspace, logging.getLogger("bench"), run_id=export_id)
        try:
            stages.extract(ctx)
            stages.transform(ctx)
            uploaded = stages.upload(ctx, stages.package(ctx), self.uploader)
            finished = self.store.mark_finished(export_id, **stages.finish_fields(ctx, uploaded))
        finally:
            shutil.rmtree(ctx.work_dir, ignore_errors=True)
        figures = {
            "run": name,
            "rows": finished["count"],
            "wall_s": round(time.perf_counter() - wall, 2),
            "cpu_s": round(cpu_s() - cpu, 2),
            "db_requests": self.commands.commands - commands,
            "db_bytes_received": self._received() - received,
            "bytes": finished["meta"]["bytes"],
            "window": {k: str(v) for k, v in (finished.get("window") or {}).items()},
        }
        figures["cpu_us_per_row"] = round(figures["cpu_s"] / max(figures["rows"], 1) * 1e6, 1)
        log(
            f"  {name}: {figures['rows']:,} rows, {figures['wall_s']} s, {figures['cpu_s']} s CPU, "
            f"{figures['db_requests']} DB requests, {figures['db_bytes_received'] / 1e6:.1f} MB from the DB"
        )
        return figures

    def clean(self) -> None:
        from export_core.delivered import DELIVERED

        for record in self.made:
            done = self.store.get(record["_id"]) or {}
            if done.get("key"):
                self.uploader.delete(bucket=done["meta"]["bucket"], keys=[done["key"]])
            self.db["export_members"].delete_many({"exportId": record["_id"]})
            self.db[DELIVERED].delete_many({"exportId": record["_id"]})
        self.db["exports"].delete_many({"_id": {"$in": [r["_id"] for r in self.made]}})
        self.client.close()


def insert_new_entries(db: Any, campaign_id: str, number: int, rng: random.Random) -> list[Any]:
    """`number` entries copied from existing ones: late (an old `date.created`), tied with the newest, new."""
    newest = db["entries"].find_one({"campaignId": campaign_id}, sort=[("date.created", -1)])["date"]["created"]
    sample = list(db["entries"].aggregate([{"$match": {"campaignId": campaign_id}}, {"$sample": {"size": number}}]))
    docs = []
    for number_, doc in enumerate(sample):
        created = (newest - timedelta(days=rng.randint(30, 300)), newest, newest + timedelta(seconds=number_))[
            number_ % 3
        ]
        docs.append({**doc, "_id": ObjectId(), "date": {**doc["date"], "created": created}})
    db["entries"].insert_many(docs)
    return [doc["_id"] for doc in docs]


def run(settings: Settings, campaign_id: str, n: int, work_dir: Path) -> dict[str, Any]:
    """The three runs' figures and the incremental run's ratios to the full export."""
    exports = Exports(settings, campaign_id, work_dir)
    new_ids: list[Any] = []
    try:
        full = exports.run("full")
        first_tick = datetime.now(UTC)
        schedule = {"id": f"bench-schedule-{uuid.uuid4().hex[:8]}", "scheduledFor": first_tick}
        first = exports.run("first", incremental=True, skipEmpty=True, schedule=schedule)
        number = max(1, int(n * NEW_SHARE))
        log(f"writing {number:,} new entries (late, tied and new timestamps)")
        new_ids = insert_new_entries(exports.db, campaign_id, number, random.Random(n))
        later = {**schedule, "scheduledFor": first_tick + timedelta(days=1)}
        incremental = exports.run("incremental", incremental=True, skipEmpty=True, schedule=later)
        if incremental["rows"] != number or first["rows"] != full["rows"]:
            raise RuntimeError(f"rows: full {full['rows']}, first {first['rows']}, incremental {incremental['rows']}")
    finally:
        if new_ids:
            exports.db["entries"].delete_many({"_id": {"$in": new_ids}})
        exports.clean()

    def share(key: str) -> float | None:
        return round(incremental[key] / full[key], 3) if full[key] else None

    return {
        "n": n,
        "new_rows": incremental["rows"],
        "runs": {"full": full, "first": first, "incremental": incremental},
        "incremental_over_full": {k: share(k) for k in ("wall_s", "cpu_s", "db_requests", "db_bytes_received")},
    }


def table(result: dict[str, Any]) -> str:
    lines = [
        f"entries of a {result['n']:,}-entry campaign: full export, first incremental run, then "
        f"{result['new_rows']:,} new rows",
        f"{'run':12} {'rows':>10} {'wall s':>8} {'CPU s':>7} {'DB requests':>12} {'MB from DB':>11}",
    ]
    for name, f in result["runs"].items():
        lines.append(
            f"{name:12} {f['rows']:>10,} {f['wall_s']:8.1f} {f['cpu_s']:7.1f} {f['db_requests']:12,} "
            f"{f['db_bytes_received'] / 1e6:11.1f}"
        )
    lines.append(f"incremental / full: {result['incremental_over_full']}")
    return "\n".join(lines)


def main() -> int:
    raw = os.environ.get("BENCH_ENTRIES")
    n = int(raw.replace("_", "")) if raw else DEFAULT_ENTRIES
    results_path = Path(os.environ.get("BENCH_INCREMENTAL_RESULTS") or REPO_ROOT / "bench" / "incremental.json")
    data_dir = Settings.from_env().data_dir
    work_dir = data_dir / "bench" / "incremental"
    log_dir = work_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    servers = LocalServers(data_dir, log_dir)
    try:
        os.environ.update({**servers.start(), "MONGODB_DB": os.environ.get("BENCH_DB") or "bench"})
        settings = Settings.from_env()
        from export_core.clients import ensure_buckets

        ensure_buckets(settings)
        campaign_id = f"bench-{n}"
        ensure_campaign(settings, campaign_id, n, seed=SEED)
        result = run(settings, campaign_id, n, work_dir)
    finally:
        servers.stop()
    result["date"] = datetime.now(UTC).isoformat(timespec="seconds")
    results_path.write_text(json.dumps(result, indent=2))
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
