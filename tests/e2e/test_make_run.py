"""`make run`'s supervisor: starts everything with demo data, stops everything on a signal, starts
again on the same DATA_DIR with every file; seeds nothing into MONGODB_URI's database; outlives a
closed stdout."""

from __future__ import annotations

import hashlib
import json
import os
import re
import select
import signal
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from pymongo import MongoClient

from devstack.supervisor import curl_example
from export_core.json_logs import EMAIL_PATTERN
from export_core.settings import REPO_ROOT
from tests.conftest import free_port
from tests.e2e.conftest import wait_until

pytestmark = pytest.mark.daemon

LOCAL_VARS = (
    "MONGODB_URI",
    "S3_ENDPOINT_URL",
    "MONGODB_DB",
    "DAGSTER_HOME",
    "JWT_PUBLIC_KEY",
    "JWT_PRIVATE_KEY",
    "SECRETS_KEY",
    "SEED_DEMO",
    "LOG_DIR",
    "DAGSTER_GRAPHQL_URL",
    "DAGSTER_POSTGRES_URL",
)
BANNER_END = "Ctrl-C stops everything"


def stack_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LOCAL_VARS and not k.startswith("AWS_")}
    env.update(DATA_DIR=str(tmp_path / "data"), API_PORT=str(free_port()), DAGSTER_PORT=str(free_port()), **extra)
    return env


def start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "devstack"], cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )


def wait_for_banner(log: Path, runs: int) -> str:
    wait_until(lambda: log.read_text().count(BANNER_END) >= runs, 240, "the banner")
    return log.read_text().rsplit("export-service is running.", 1)[1]


def stop(proc: subprocess.Popen[bytes], children: list[psutil.Process]) -> None:
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    assert proc.wait(timeout=30) == 0  # raises if the stack is not down within 30 s
    time.sleep(0.5)
    assert [c.pid for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE] == [], "no orphans"


def finished(api: str, auth: dict[str, str], export_id: str, timeout: float = 180) -> dict[str, Any]:
    url = f"{api}/campaigns/123/exports/{export_id}"
    record: dict[str, Any] = wait_until(
        lambda: (r := httpx.get(url, headers=auth).json())["status"] in ("FINISHED", "FAILED", "EXPIRED") and r,
        timeout,
        "the export's end",
    )
    assert record["status"] == "FINISHED", record
    return record


def readme_curl_block() -> str:
    """The curl session README.md shows under "A first export"."""
    text = (REPO_ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n(api=http://127\.0\.0\.1:8000\n.*?)```", text, re.DOTALL)
    assert len(blocks) == 1, "one curl block in the README"
    return str(blocks[0])


def test_local_stack_serves_exports_keeps_its_files_and_stops_without_orphans(tmp_path: Path):
    env = stack_env(tmp_path)
    api = f"http://127.0.0.1:{env['API_PORT']}"
    log = tmp_path / "run.log"
    data = tmp_path / "data"
    proc = start(env, log)
    try:
        text = wait_for_banner(log, 1)
        assert re.search(r"MongoDB +mongodb://127\.0\.0\.1:\d+ .*SecantusDB", text)
        assert re.search(r"S3 +http://127\.0\.0\.1:\d+ .*s3rver, objects in " + re.escape(str(data / "s3")), text)
        waves = re.search(r"Demo campaign 123: seeded just now.*dateKeys (\d+) and (\d+)", text)
        assert waves, text
        assert "rerun 123 EXPORT_ID" in text and f"export EXPORT_SERVICE_URL={api}" in text
        dev_secrets_key = data / "keys" / "dev_secrets.key"  # no SECRETS_KEY: generated, private to its owner
        assert stat.S_IMODE(dev_secrets_key.stat().st_mode) == 0o600
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
        done = finished(api, auth, created.json()["id"])
        assert done["count"] == 50_000, "the demo campaign was seeded"
        download = httpx.get(done["path"])
        assert download.status_code == 200 and download.content.startswith(b"userId,email,")
        digest = hashlib.sha256(download.content).hexdigest()
        # The object is a file of the local S3 server before the record says FINISHED.
        assert (data / "s3" / "exports" / f"{done['key']}._S3rver_object").is_file()

        # The banner's codeWaves example names a wave the demo data has.
        wave = httpx.post(
            f"{api}/campaigns/123/exports", json={"exportType": "codeWaves", "dateKey": waves.group(1)}, headers=auth
        )
        assert wave.status_code == 201
        assert finished(api, auth, wave.json()["id"])["count"] > 0
        hook = {"url": "https://8.8.8.8/hooks", "events": ["export.finished"]}  # its secret stored encrypted
        assert httpx.post(f"{api}/campaigns/123/webhooks", json=hook, headers=auth).status_code == 201

        # The README's curl block, pasted whole, waits for FINISHED and saves the file.
        assert readme_curl_block() == curl_example("http://127.0.0.1:8000") + "\n"
        pasted = subprocess.run(
            ["bash", "-c", curl_example(api)], cwd=tmp_path, capture_output=True, text=True, timeout=240
        )
        assert pasted.returncode == 0, pasted.stdout + pasted.stderr
        assert pasted.stdout.splitlines()[-1] == "FINISHED"
        assert (tmp_path / "entries.csv").read_bytes().startswith(b"userId,email,")

        # The run's log lines are JSON in DATA_DIR/logs/runs.jsonl, carrying the request id; no log
        # line of the API or the run holds the token or anyone's e-mail address.
        logs = data / "logs"
        run_lines = [json.loads(line) for line in (logs / "runs.jsonl").read_text().splitlines()]
        ours = [line for line in run_lines if line.get("export_id") == done["id"]]
        assert ours and all(line["request_id"] == "e2e-req-1" and line.get("run_id") for line in ours)
        assert any("FINISHED" in line["message"] for line in ours)
        for name in ("runs.jsonl", "api.jsonl"):
            text = (logs / name).read_text()
            assert token not in text and not EMAIL_PATTERN.search(text), name

        dev_secrets_key_text = dev_secrets_key.read_text()
        stop(proc, children)

        # Again on the same DATA_DIR: the same database, keys and files; nothing seeded twice.
        proc = start(env, log)
        text = wait_for_banner(log, 2)
        assert "Demo campaign 123: already in the database" in text
        assert dev_secrets_key.read_text() == dev_secrets_key_text, "the same key: stored secrets still decrypt"
        assert f"dateKeys {waves.group(1)} and {waves.group(2)}" in text
        children = psutil.Process(proc.pid).children(recursive=True)
        again = httpx.get(f"{api}/campaigns/123/exports/{done['id']}", headers=auth).json()
        assert again["status"] == "FINISHED"
        download = httpx.get(again["path"])
        assert download.status_code == 200 and hashlib.sha256(download.content).hexdigest() == digest
        stop(proc, children)
    finally:
        if proc.poll() is None:
            proc.kill()
        print(log.read_text()[-3000:])


def read_until(fd: int, marker: bytes, timeout: float) -> bytes:
    """What the process wrote to the pipe until `marker` (the pipe stays open)."""
    seen, deadline = b"", time.monotonic() + timeout
    while marker not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"timed out waiting for {marker!r}; got {seen[-2000:]!r}"
        ready, _, _ = select.select([fd], [], [], min(left, 1.0))
        if ready:
            chunk = os.read(fd, 65536)
            assert chunk, f"the output ended before {marker!r}: {seen[-2000:]!r}"
            seen += chunk
    return seen


def test_a_closed_stdout_stops_nothing_and_mongodb_uri_gets_no_demo_data(tmp_path: Path, mongo_uri: str):
    """`make run | tee run.log`, then Ctrl-C: tee is gone before the supervisor writes "stopping...".
    It must still stop every child and exit 0. With MONGODB_URI set, the demo campaign stays out."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    env = stack_env(tmp_path, MONGODB_URI=mongo_uri, MONGODB_DB=name)
    proc = subprocess.Popen(
        [sys.executable, "-m", "devstack"], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri)
    try:
        text = read_until(proc.stdout.fileno(), BANNER_END.encode(), 240).decode()
        assert "Demo campaign 123: not seeded (MONGODB_URI points at your own database; SEED_DEMO=1" in text
        assert re.search(r"MongoDB +mongodb://127\.0\.0\.1:\d+ +\(MONGODB_URI\)", text)
        assert "seeding" not in text
        assert client[name]["campaigns"].count_documents({}) == 0
        assert not {"entries", "users", "codes", "markets"} & set(client[name].list_collection_names())
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 4, "S3, daemon, webserver, API"

        proc.stdout.close()
        proc.stderr.close()
        stop(proc, children)
    finally:
        if proc.poll() is None:
            proc.kill()
        client.drop_database(name)
        client.close()
        for child in (tmp_path / "data" / "logs").glob("*.log"):
            print(child.name, child.read_text()[-1500:])
