"""bench/incremental.py end to end on a small campaign, against the suite's servers: it runs and writes its figures.

Nothing here is timed (the figures depend on the machine); the rows each run sent are checked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench.incremental import table
from export_core.settings import REPO_ROOT


def test_the_incremental_bench_runs_and_writes_its_figures(env: dict[str, str], tmp_path: Path) -> None:
    results_path = tmp_path / "incremental.json"
    run_env = {**os.environ, **env, "BENCH_ENTRIES": "500", "BENCH_INCREMENTAL_RESULTS": str(results_path)}
    run_env["BENCH_DB"] = env["MONGODB_DB"]  # the test's own database on the suite's servers
    done = subprocess.run(
        [sys.executable, "-m", "bench.incremental"],
        env=run_env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(results_path.read_text())
    runs = result["runs"]
    assert (
        runs["full"]["rows"] == runs["first"]["rows"] == 500 and runs["incremental"]["rows"] == result["new_rows"] == 5
    )
    for figures in runs.values():
        assert figures["db_requests"] > 0 and figures["cpu_s"] >= 0
    assert set(result["incremental_over_full"]) == {"wall_s", "cpu_s", "db_requests", "db_bytes_received"}
    assert table(result) in done.stdout
