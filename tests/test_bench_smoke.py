"""`make bench` end to end on a small campaign: it completes and writes its results.

Nothing here is timed: the figures depend on the machine. Only their presence and types are
checked (the targets are judged by `make bench` itself, on the real size).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.run import table, targets
from export_core.settings import REPO_ROOT

REQUIRED = {
    "entries": (
        "n",
        "raw_scan_s",
        "naive_s",
        "ours_s",
        "ours_over_raw",
        "naive_cpu_s",
        "ours_cpu_s",
        "naive_cpu_over_ours_cpu",
        "ours_cpu_us_per_row",
        "peak_rss_mb",
        "peak_rss_mb_small",
    ),
    "reminderEmail": ("n", "raw_scan_s", "ours_s"),
    "queue": ("post_to_triggered_s_median", "gap_s_median"),
    "ccpa": ("median_ms",),
    "api": ("requests_per_s", "errors", "api_cpu_ms_per_request"),
    "incremental": ("n", "new_rows"),
}
STEPS = ("start_export", "extract_rows", "transform_rows", "package_files", "upload_files", "finish_export")
# The bench starts its own servers and stack; nothing of the test session may leak into it.
NOT_INHERITED = (
    "MONGODB_URI",
    "MONGODB_DB",
    "S3_ENDPOINT_URL",
    "DAGSTER_HOME",
    "DAGSTER_GRAPHQL_URL",
    "JWT_PUBLIC_KEY",
    "JWT_PRIVATE_KEY",
    "SECRETS_KEY",
    "API_PORT",
    "DAGSTER_PORT",
)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@pytest.mark.daemon
def test_bench_completes_and_writes_results(tmp_path: Path) -> None:
    results_path = tmp_path / "results.json"
    env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
    env.update(
        BENCH_ENTRIES="5000",  # small: the shape is checked here, not the speed
        BENCH_RESULTS=str(results_path),
        DATA_DIR=str(tmp_path / "data"),
        BENCH_QUEUE_EXPORTS="2",  # medians of two: the shape is what is checked here
        BENCH_QUEUE_ENTRIES="500",
        BENCH_CCPA_RUNS="3",
        BENCH_API_CLIENTS="4",
        BENCH_API_REQUESTS="90",
    )
    done = subprocess.run(
        [sys.executable, "-m", "bench.run"], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "entries: raw scan" in done.stdout  # the table

    results = json.loads(results_path.read_text())
    assert results["complete"] is True and results["n"] == 5_000
    for section, keys in REQUIRED.items():
        for key in keys:
            assert is_number(results[section].get(key)), f"{section}.{key} = {results[section].get(key)!r}"
    assert all(is_number(results["entries"]["steps"][step]) for step in STEPS)
    assert results["entries"]["rows"] == 5_000 == results["entries"]["naive"]["rows"]
    # The run's cost comes from its Dagster event log (finish_export's metadata), the naive one's from its output.
    for who in ("ours", "naive"):
        database = results["entries"]["database"][who]
        assert is_number(database["round_trips_per_1000_rows"]) and is_number(database["bytes_per_1000_rows"]), who
    assert results["api"]["errors"] == 0, results["api"]
    assert all(is_number(results["api"]["by_kind"][kind]["p99_ms"]) for kind in ("get_finished", "list"))
    assert results["targets"] and all(isinstance(t["pass"], bool) for t in results["targets"].values())


def test_targets_and_table_from_figures() -> None:
    results: dict[str, Any] = {
        "n": 1_200_000,
        "date": "2024-01-01T00:00:00+00:00",
        "machine": {"cpus": 2},
        "git": {"commit": "abc"},
        "entries": {
            "n": 1_200_000,
            "n_small": 120_000,
            "raw_scan_s": 40.0,
            "naive_s": 200.0,
            "ours_s": 62.0,
            "naive_cpu_over_ours_cpu": 3.5,
            "ours_cpu_us_per_row": 11.0,
            "server_cpu_s": {"ours": {"db": 50.0}},
            "same_bytes_as_naive": True,
            "peak_rss_mb": 400.0,
            "peak_rss_mb_small": 300.0,
            "steps": {"extract_rows": 40.0},
        },
        "reminderEmail": {"raw_scan_s": 30.0, "ours_s": 61.0, "cpu_us_per_row": 20.0},
        "queue": {"post_to_triggered_s_median": 5.0, "gap_s_median": 2.5},
        "ccpa": {"median_ms": 60.0, "target_ms": 500},
        "api": {"errors": 0, "by_kind": {"get_finished": {"p99_ms": 80.0}, "list": {"p99_ms": 120.0}}},
    }
    verdicts = {name: t["pass"] for name, t in targets(results).items()}
    assert verdicts == {
        "entries_cpu_ratio": True,  # 3.5 >= 3
        "entries_cpu_per_row": False,  # 11 > 10
        "entries_client_never_holds_the_server": True,  # 62 <= 1.1 x 50 + 10
        "reminder_cpu_per_row": True,
        "peak_rss": True,
        "peak_rss_flat": False,  # 400 is 33 % above 300
        "queue_gap": False,  # 2.5 > 2
        "same_bytes_as_naive": True,
        "ccpa": True,
        "api_errors": True,
        "api_get_p99": True,  # 80 < 100
        "api_list_p99": False,  # 120 >= 100
    }
    results["targets"] = targets(results)
    text = table(results)
    assert "FAIL" in text and "pass" in text and "1,200,000" in text
