"""schemathesis against the running API's own /openapi.json: no 5xx, every response as documented.

One real API process (uvicorn, DEV_MODE so /dev/token is described and fuzzed too) on the
suite's MongoDB-protocol and S3 servers, fuzzed once with a supreme token and once without
any, every operation, every check, bounded by examples per operation (≈1–2 minutes in all).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pymongo.database import Database

from devstack.supervisor import api_command
from export_core.records import ExportStore
from export_core.settings import Settings
from tests.api.conftest import TokenFactory
from tests.conftest import free_port

SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
MAX_EXAMPLES = os.environ.get("FUZZ_MAX_EXAMPLES", "30")
CONFIG = Path(__file__).with_name("schemathesis.toml")


@pytest.fixture
def api_process(settings: Settings, db: Database, s3: object, tmp_path: Path) -> Iterator[str]:
    """A real API process; demo campaign "123" (the documented example) with a FINISHED export."""
    db.campaigns.insert_one({"_id": "123", "name": "Demo Tour", "type": "standard"})
    store = ExportStore(db)
    record = store.create(campaign_id="123", campaign_name="Demo Tour", export_type="entries", requester_user_id="u")
    store.mark_triggered(record.record["id"], run_id="run-fuzz", preliminary_count=1)
    store.mark_finished(record.record["id"], key="entries/123/x/Demo Tour - Entries.csv", count=1, meta={})
    port = free_port()
    env = {**os.environ, "LOG_DIR": str(tmp_path / "logs")}
    proc = subprocess.Popen(api_command(port), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/heartbeat", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"API did not start: {proc.stderr.read().decode() if proc.stderr else ''}")
        time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=20)


def fuzz(url: str, tmp_path: Path, *headers: str) -> subprocess.CompletedProcess:
    args = [
        SCHEMATHESIS,
        "--config-file",
        str(CONFIG),
        "run",
        f"{url}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        MAX_EXAMPLES,
        # One worker: Python 3.11.7's AST constructor counts its recursion per interpreter, so hypothesis
        # describing a filter's lambda (ast.parse) in two worker threads at once raises SystemError.
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--seed",
        "20261201",
        "--suppress-health-check",
        "too_slow,filter_too_much",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path / "report"),
        *headers,
    ]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "", "NO_COLOR": "1"}
    return subprocess.run(args, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)


def test_fuzzing_finds_no_server_error_and_no_undocumented_response(
    api_process: str, make_token: TokenFactory, tmp_path: Path
) -> None:
    token = make_token(supreme=True, campaigns={"123": ["REPORT"]})
    with_token = fuzz(api_process, tmp_path, "--header", f"Authorization: Bearer {token}")
    assert with_token.returncode == 0, with_token.stdout[-12000:]
    without = fuzz(api_process, tmp_path)
    assert without.returncode == 0, without.stdout[-12000:]
    for result in (with_token, without):
        assert "passed" in result.stdout.lower()
    # The process's JSON log after ~1,000 hostile requests: one object per line, never the token.
    log = (tmp_path / "logs" / "api.jsonl").read_text()
    lines = [json.loads(line) for line in log.splitlines()]
    assert len([line for line in lines if line.get("logger") == "export_api.access"]) > 500
    assert token not in log and "Traceback" not in log
