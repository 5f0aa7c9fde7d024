"""`make run`'s supervisor: starts everything with demo data, stops everything on a signal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from export_pipelines.domain.json_logs import EMAIL_PATTERN
from export_pipelines.domain.settings import REPO_ROOT
from tests.conftest import free_port
from tests.e2e.conftest import wait_until

pytestmark = pytest.mark.daemon

LOCAL_VARS = ("MONGODB_URI", "S3_ENDPOINT_URL", "MONGODB_DB", "DAGSTER_HOME", "JWT_PUBLIC_KEY", "JWT_PRIVATE_KEY")


def test_local_stack_starts_serves_an_export_and_stops_without_orphans(tmp_path: Path):
    api_port, dagster_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in LOCAL_VARS and not k.startswith("AWS_")}
    env.update(DATA_DIR=str(tmp_path / "data"), API_PORT=str(api_port), DAGSTER_PORT=str(dagster_port))
    log = (tmp_path / "run.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "devstack"],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    api = f"http://127.0.0.1:{api_port}"
    try:
        wait_until(lambda: "Ctrl-C stops everything" in (tmp_path / "run.log").read_text(), 240, "the banner")
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 5, "database, S3, daemon, webserver, API"
        assert httpx.get(f"{api}/heartbeat").status_code == 200

        token = httpx.post(
            f"{api}/dev/token", json={"userId": "admin", "campaignId": "123", "permissions": ["REPORT"]}
        ).json()["token"]
        auth = {"Authorization": f"Bearer {token}"}
        traced = {**auth, "X-Request-ID": "e2e-req-1"}
        created = httpx.post(f"{api}/campaigns/123/exports", json={"exportType": "entries"}, headers=traced)
        assert created.status_code == 201
        url = f"{api}/campaigns/123/exports/{created.json()['id']}"
        done = wait_until(
            lambda: (r := httpx.get(url, headers=auth).json())["status"] == "FINISHED" and r, 180, "FINISHED"
        )
        assert done["count"] == 50_000, "the demo campaign was seeded"
        download = httpx.get(done["path"])
        assert download.status_code == 200 and download.content.startswith(b"userId,email,")

        # The run's log lines are JSON in DATA_DIR/logs/runs.jsonl, carrying the request id; no log
        # line of the API or the run holds the token or anyone's e-mail address.
        logs = tmp_path / "data" / "logs"
        run_lines = [json.loads(line) for line in (logs / "runs.jsonl").read_text().splitlines()]
        ours = [line for line in run_lines if line.get("export_id") == done["id"]]
        assert ours and all(line["request_id"] == "e2e-req-1" and line.get("run_id") for line in ours)
        assert any("FINISHED" in line["message"] for line in ours)
        for name in ("runs.jsonl", "api.jsonl"):
            text = (logs / name).read_text()
            assert token not in text and not EMAIL_PATTERN.search(text), name

        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        proc.wait(timeout=15)  # raises if the stack is not down within 15 s
        time.sleep(0.5)
        assert [c.pid for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE] == [], "no orphans"
    finally:
        if proc.poll() is None:
            proc.kill()
        print((tmp_path / "run.log").read_text()[-3000:])
