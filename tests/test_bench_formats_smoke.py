"""bench/formats.py end to end on a tiny campaign, against the suite's servers: it runs and writes its figures.

Nothing here is timed (the figures depend on the machine); only their presence and shape are checked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench.formats import FORMATS, table
from export_core.settings import REPO_ROOT


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def test_the_formats_bench_runs_and_writes_its_figures(env: dict[str, str], tmp_path: Path) -> None:
    results_path = tmp_path / "formats.json"
    run_env = {**os.environ, **env, "BENCH_FORMATS_ENTRIES": "300", "BENCH_FORMATS_RESULTS": str(results_path)}
    run_env["BENCH_DB"] = env["MONGODB_DB"]  # the test's own database on the suite's servers
    done = subprocess.run(
        [sys.executable, "-m", "bench.formats"], env=run_env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(results_path.read_text())
    assert result["n"] == 300 and result["rows"] == 300 and list(result["formats"]) == list(FORMATS)
    for fmt, figures in result["formats"].items():
        assert figures["rows"] == 300 and figures["meta"]["format"] == fmt
        for key in ("bytes", "format_cpu_us_per_row", "cpu_us_per_row", "peak_rss_mb", "rss_after_extract_mb"):
            assert is_number(figures[key]) and figures[key] > 0, (fmt, key)
        assert all(is_number(figures["cpu_s"][stage]) for stage in ("extract", "transform", "package", "upload"))
    for fmt in ("csv.gz", "parquet", "xlsx"):
        assert all(is_number(v) for v in result[f"{fmt}_over_csv"].values()), fmt
    assert isinstance(result["xlsx_peak_rss"]["pass"], bool) and result["xlsx_peak_rss"]["target"] == 1.25
    assert "xlsx peak RSS" in done.stdout and table(result) in done.stdout
    assert not list((Path(env["DATA_DIR"]) / "bench" / "formats").glob("staging/*")), "no staged files left"
