"""`python -m bench.formats`: CPU per row and peak RSS of each export format against csv, on the same export.

The entries export of campaign `bench-{N}` (N = BENCH_FORMATS_ENTRIES, default 120,000; seeded once into
database BENCH_DB, default `bench`, and reused — the same campaign `make bench` uses for its N/10 run) is
made once per format — csv, csv.gz, parquet, xlsx — each in a process of its own, through the real stages
as an export run calls them (build_context, extract, transform, package, upload to S3, finish_fields) on
the local servers (SecantusDB and moto, started unless MONGODB_URI / S3_ENDPOINT_URL are set). Each
process reports the CPU (user + sys, getrusage) of every stage and its peak RSS, so:

- `format_cpu_us_per_row`: transform + package, the part that differs between formats;
- `cpu_us_per_row`: the whole run (extract and upload included);
- `peak_rss_mb`: the run process's high-water mark (`rss_after_extract_mb`: the same after extract).

Prints a table and writes BENCH_FORMATS_RESULTS (default bench/formats.json). `run(env, campaign_id, n,
work_dir)` is what bench/run.py calls to put the same figures in its results. Nothing in the tests is
timed; tests/test_bench_formats_smoke.py runs this on a tiny N.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.stack import LocalServers, run_module
from export_core.settings import REPO_ROOT, Settings

DEFAULT_ENTRIES = 120_000
SEED = 2  # bench/run.py seeds its N/10 campaign with this seed, so either run reuses the other's data
FORMATS = ("csv", "csv.gz", "parquet", "xlsx")
EXPORT_TYPE = "entries"
RSS_TARGET = 1.25  # issue 24: an xlsx run's peak RSS within 25 % of the same export as CSV
STAGES = ("extract", "transform", "package", "upload")
WORKER_TIMEOUT_S = 7200


def log(message: str) -> None:
    print(f"[bench.formats {datetime.now().strftime('%H:%M:%S')}] {message}", flush=True)


def cpu_s() -> float:
    """This process's CPU so far (user + sys)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _max_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def s3_uploader(settings: Settings) -> Any:
    """The export buckets as a run's `s3` resource sees them (upload, delete)."""
    from export_pipelines.resources import S3Resource

    return S3Resource(
        endpoint_url=settings.s3_endpoint_url,
        exports_bucket=settings.exports_bucket,
        scoring_bucket=settings.scoring_bucket,
        vf_scoring_bucket=settings.vf_scoring_bucket,
        sfmc_bucket=settings.sfmc_bucket,
        object_acl=settings.s3_object_acl,
    )


def measure(fmt: str, campaign_id: str, work_dir: Path) -> dict[str, Any]:
    """In this process: one export of `campaign_id` in `fmt` through the real stages; its figures.

    Its object, staged files and membership documents are removed afterwards.
    """
    from pymongo import MongoClient

    from export_core.clients import s3_client
    from export_pipelines import stages

    settings = Settings.from_env()
    client: MongoClient = MongoClient(settings.mongodb_uri, tz_aware=True)
    db = client[settings.mongodb_db]
    s3 = s3_client(settings)
    uploader = s3_uploader(settings)
    export_id = f"bench-format-{uuid.uuid4().hex[:12]}"
    record = {"_id": export_id, "id": export_id, "campaignId": campaign_id, "exportType": EXPORT_TYPE, "format": fmt}
    workspace = stages.Workspace(data_dir=work_dir, buckets=settings.buckets)
    log_ = logging.getLogger("bench.formats")
    cpu: dict[str, float] = {}
    started_wall, start_cpu = time.perf_counter(), cpu_s()
    ctx = stages.build_context(record, db, s3, workspace, log_, run_id=export_id)
    uploaded: stages.Uploaded | None = None
    try:
        before = cpu_s()
        stages.extract(ctx)
        cpu["extract"] = cpu_s() - before
        rss_after_extract = _max_rss_mb()
        before = cpu_s()
        stages.transform(ctx)
        cpu["transform"] = cpu_s() - before
        before = cpu_s()
        packaged = stages.package(ctx)
        cpu["package"] = cpu_s() - before
        before = cpu_s()
        uploaded = stages.upload(ctx, packaged, uploader)
        cpu["upload"] = cpu_s() - before
        fields = stages.finish_fields(ctx, uploaded)
    finally:
        shutil.rmtree(ctx.work_dir, ignore_errors=True)  # what the bench staged
        if uploaded is not None:
            uploader.delete(bucket=uploaded.objects[0].bucket, keys=[o.key for o in uploaded.objects])
        db["export_members"].delete_many({"exportId": export_id})
        client.close()
    rows = int(fields["count"])
    total_cpu = cpu_s() - start_cpu
    return {
        "format": fmt,
        "rows": rows,
        "bytes": fields["meta"]["bytes"],
        "wall_s": round(time.perf_counter() - started_wall, 2),
        "cpu_s": {stage: round(cpu[stage], 3) for stage in STAGES},
        "cpu_s_total": round(total_cpu, 3),
        "format_cpu_us_per_row": round((cpu["transform"] + cpu["package"]) / max(rows, 1) * 1e6, 2),
        "cpu_us_per_row": round(total_cpu / max(rows, 1) * 1e6, 2),
        "rss_after_extract_mb": rss_after_extract,
        "peak_rss_mb": _max_rss_mb(),
        "meta": {k: v for k, v in fields["meta"].items() if k not in ("objects", "bucket")},
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def run(
    env: dict[str, str], campaign_id: str, n: int, work_dir: Path, formats: tuple[str, ...] = FORMATS
) -> dict[str, Any]:
    """Each format's figures (one process each, in the environment `env`) and how they compare with csv."""
    figures: dict[str, dict[str, Any]] = {}
    for fmt in formats:
        log(f"{EXPORT_TYPE} of {campaign_id} as {fmt}, in a process of its own")
        args = ["--worker", fmt, "--campaign", campaign_id, "--work-dir", str(work_dir)]
        output = run_module("bench.formats", args, env, timeout=WORKER_TIMEOUT_S)
        figures[fmt] = json.loads(output.strip().splitlines()[-1])
        f = figures[fmt]
        log(
            f"  {f['rows']:,} rows, {f['bytes'] / 1e6:.1f} MB, transform+package {f['format_cpu_us_per_row']} µs/row, "
            f"whole run {f['cpu_us_per_row']} µs/row, peak RSS {f['peak_rss_mb']} MB"
        )
    rows = {f["rows"] for f in figures.values()}
    if len(rows) != 1:
        raise RuntimeError(f"the formats wrote different row counts: { {k: f['rows'] for k, f in figures.items()} }")
    result: dict[str, Any] = {"n": n, "rows": rows.pop(), "export_type": EXPORT_TYPE, "formats": figures}
    csv = figures.get("csv")
    for fmt, f in figures.items():
        if fmt == "csv" or csv is None:
            continue
        result[f"{fmt}_over_csv"] = {
            "format_cpu": _ratio(f["format_cpu_us_per_row"], csv["format_cpu_us_per_row"]),
            "cpu": _ratio(f["cpu_us_per_row"], csv["cpu_us_per_row"]),
            "peak_rss": _ratio(f["peak_rss_mb"], csv["peak_rss_mb"]),
            "bytes": _ratio(f["bytes"], csv["bytes"]),
        }
    if csv is not None and "xlsx" in figures:
        ratio = result["xlsx_over_csv"]["peak_rss"]
        result["xlsx_peak_rss"] = {
            "over_csv": ratio,
            "target": RSS_TARGET,
            "pass": ratio is not None and ratio <= RSS_TARGET,
        }
    return result


def table(result: dict[str, Any]) -> str:
    lines = [
        f"{result['export_type']} export, {result['rows']:,} rows: each format in a process of its own",
        f"{'format':8} {'MB':>8} {'xform+pkg µs/row':>17} {'run µs/row':>11} {'peak RSS MB':>12} {'vs csv RSS':>11}",
    ]
    for fmt, f in result["formats"].items():
        versus = result.get(f"{fmt}_over_csv", {}).get("peak_rss")
        lines.append(
            f"{fmt:8} {f['bytes'] / 1e6:8.1f} {f['format_cpu_us_per_row']:17.2f} {f['cpu_us_per_row']:11.2f} "
            f"{f['peak_rss_mb']:12.1f} {'' if versus is None else f'{versus:.2f}x':>11}"
        )
    target = result.get("xlsx_peak_rss")
    if target:
        verdict = "pass" if target["pass"] else "FAIL"
        lines.append(f"xlsx peak RSS {target['over_csv']}x csv (target <= {target['target']}x): {verdict}")
    return "\n".join(lines)


def ensure_campaign(settings: Settings, campaign_id: str, n: int, seed: int = SEED) -> None:
    """Seed the campaign unless it is there (its document is written last, so its presence means complete)."""
    from pymongo import MongoClient

    from devstack.seed import seed_campaign

    client: MongoClient = MongoClient(settings.mongodb_uri, tz_aware=True)
    try:
        db = client[settings.mongodb_db]
        if db["campaigns"].find_one({"_id": campaign_id}, {"_id": 1}):
            log(f"campaign {campaign_id}: already seeded, reused")
            return
        log(f"seeding campaign {campaign_id} ({n:,} entries)")
        started = time.perf_counter()
        seed_campaign(db, campaign_id=campaign_id, n_entries=n, seed=seed, campaign_name=f"Bench {n:,}")
        log(f"  seeded in {time.perf_counter() - started:.0f} s")
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.formats", description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=FORMATS, help=argparse.SUPPRESS)
    parser.add_argument("--campaign", help=argparse.SUPPRESS)
    parser.add_argument("--work-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:  # one format, in this process: its figures as the last line of stdout
        logging.getLogger("export_pipelines").setLevel(logging.WARNING)
        print(json.dumps(measure(args.worker, args.campaign, Path(args.work_dir))), flush=True)
        return 0

    raw = os.environ.get("BENCH_FORMATS_ENTRIES")
    n = int(raw.replace("_", "")) if raw else DEFAULT_ENTRIES
    results_path = Path(os.environ.get("BENCH_FORMATS_RESULTS") or REPO_ROOT / "bench" / "formats.json").resolve()
    data_dir = Settings.from_env().data_dir
    work_dir = data_dir / "bench" / "formats"
    log_dir = work_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    servers = LocalServers(data_dir, log_dir)
    try:
        env = {**os.environ, **servers.start(), "MONGODB_DB": os.environ.get("BENCH_DB") or "bench"}
        env["DATA_DIR"] = str(work_dir)
        os.environ.update(env)
        settings = Settings.from_env()
        from export_core.clients import ensure_buckets

        ensure_buckets(settings)
        campaign_id = f"bench-{n}"
        ensure_campaign(settings, campaign_id, n)
        result = run(env, campaign_id, n, work_dir)
    finally:
        servers.stop()
    result["date"] = datetime.now(UTC).isoformat(timespec="seconds")
    results_path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(table(result), flush=True)
    log(f"results in {results_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
