"""A destination delivery in flight when the whole local stack is killed with SIGKILL (a power loss), then `make
run` again: the delivery resumes in a run of its own and ends `delivered` once, the partner holding the S3 file's
bytes and no partial file.

The transfer is held, observably and without touching the transport, by stopping (SIGSTOP) the test sshd's session
processes once the partial file has begun on the server; they go on (SIGCONT) after the kill, see their client gone
and leave the partial file behind, as a real server would. The export is a FINISHED record written into the stack's
database with a 32 MiB object in its S3 server (an export that large would take minutes to make); its delivery is
stored, launched and sent by the stack's own sensor and runs. DELIVERY_ATTEMPT_MAX_SECONDS=20 keeps the lease of the
killed attempt (20 s + LEASE_MARGIN) short.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import psutil
import pytest
from pymongo import MongoClient
from pymongo.database import Database

from devstack.supervisor import S3RVER_KEY
from export_core.destination_store import DELIVERIES
from export_core.records import ExportStore, RequestOptions
from export_core.settings import Settings
from export_pipelines.destination_delivery import JOB_NAME
from tests.e2e.conftest import wait_until
from tests.e2e.test_crash_recovery import Stack, _token
from tests.sftp_server import SftpServer, sftp_account_fixture, sftp_server_fixture  # noqa: F401 (the fixtures)

pytestmark = pytest.mark.daemon

CAMPAIGN = "dlv-e2e"
SIZE = 32 * 1024 * 1024
RUNS = """
query Runs($name: String!) {
  runsOrError(filter: {pipelineName: $name}) { ... on Runs { results { runId status } } }
}
"""


def _database(stack: Stack) -> Database:
    client: MongoClient[dict[str, Any]] = MongoClient(stack.mongodb_uri(), serverSelectionTimeoutMS=10_000)
    return client[Settings.model_fields["mongodb_db"].default]


def _s3(stack: Stack) -> Any:
    named = re.findall(r"S3\s+(http://\S+)", stack.output())
    assert named, stack.output()[-3000:]
    return boto3.client(
        "s3", endpoint_url=named[-1], region_name="us-east-1", aws_access_key_id=S3RVER_KEY,
        aws_secret_access_key=S3RVER_KEY,
    )  # fmt: skip


def _finished_export(db: Database, s3: Any, destination_id: str, body: bytes) -> dict[str, Any]:
    """A FINISHED record naming the destination, made in a scratch database (so the stack's sensor never sees it
    PENDING) and then written into the stack's."""
    scratch = ExportStore(db.client[f"{db.name}_scratch"])
    record = scratch.create(
        campaign_id=CAMPAIGN, campaign_name="Tour", export_type="codes", requester_user_id="u",
        options=RequestOptions(destinations=(destination_id,)),
    ).record  # fmt: skip
    key = f"codes/{CAMPAIGN}/{record['id']}/Tour - Codes.csv"
    s3.put_object(Bucket="exports", Key=key, Body=body)
    meta = {
        "bucket": "exports",
        "objects": [{"key": key, "bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}],
    }
    scratch.mark_triggered(record["id"], run_id="e2e", preliminary_count=None)
    finished = scratch.mark_finished(record["id"], key=key, count=1, meta=meta)
    db["exports"].insert_one(scratch.collection.find_one({"_id": finished["id"]}))
    db.client.drop_database(scratch.collection.database.name)
    return finished


def _sessions(server: SftpServer) -> list[psutil.Process]:
    """The sshd processes serving connections (the listener's descendants)."""
    assert server.process is not None
    return psutil.Process(server.process.pid).children(recursive=True)


def _signal(processes: list[psutil.Process], sig: int) -> None:
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(sig)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(tmp_path, SEED_DEMO="0", WEBHOOK_ALLOW_PRIVATE="1", DELIVERY_ATTEMPT_MAX_SECONDS="20")
    try:
        yield stack
    finally:
        with contextlib.suppress(Exception):
            stack.stop()
        stack.kill_everything()
        print(stack.output()[-3000:])


def test_a_delivery_killed_mid_transfer_with_the_stack_is_delivered_once_after_the_restart(
    stack: Stack, sftp_server: SftpServer
):
    started = time.monotonic()
    stack.start("first")
    db, auth = _database(stack), _token(stack.api, CAMPAIGN)
    db["campaigns"].insert_one({"_id": CAMPAIGN, "name": "Tour"})
    body = {
        "type": "sftp", "host": sftp_server.host, "port": sftp_server.port, "username": sftp_server.account.username,
        "path": "/upload", "hostKey": sftp_server.known_hosts_line(), "password": sftp_server.account.password,
    }  # fmt: skip
    created = httpx.post(f"{stack.api}/campaigns/{CAMPAIGN}/destinations", json=body, headers=auth, timeout=30)
    assert created.status_code == 201, created.text
    hook = {"url": "http://127.0.0.1:9/hooks", "events": ["export.delivered"]}  # nobody listens: stored, retried
    subscribed = httpx.post(f"{stack.api}/campaigns/{CAMPAIGN}/webhooks", json=hook, headers=auth, timeout=30)
    assert subscribed.status_code == 201, subscribed.text
    data = os.urandom(SIZE)
    record = _finished_export(db, _s3(stack), created.json()["id"], data)
    name = f"Tour - Codes_{record['id']}.csv"

    # The transfer under way (its partial file growing on the server), then held there.
    partial = wait_until(
        lambda: next((p for p in sftp_server.upload_dir.glob(f".{name}.*.partial") if p.stat().st_size), None),
        120, "the transfer began", interval=0.01,
    )  # fmt: skip
    held = _sessions(sftp_server)
    _signal(held, signal.SIGSTOP)
    try:
        assert not sftp_server.local(f"/upload/{name}").exists(), "caught in flight"
        [delivery] = list(db[DELIVERIES].find({"exportId": record["id"]}))
        assert delivery["status"] == "pending" and delivery["attempts"] == [], "the attempt is under way, unrecorded"
        graphql = httpx.post(stack.graphql, json={"query": RUNS, "variables": {"name": JOB_NAME}}, timeout=30).json()
        [run] = graphql["data"]["runsOrError"]["results"]
        assert run["status"] == "STARTED", "the transfer is a Dagster run's"
        leased_for = delivery["nextAttemptAt"] - delivery["createdAt"]
        print(f"in flight: {partial.stat().st_size} of {SIZE} bytes, leased for {leased_for}")
        db.client.close()
        stack.kill_everything()
    finally:
        _signal(held, signal.SIGCONT)  # the sessions see their client gone and end, leaving the partial file
    wait_until(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in held), 30, "sessions end")
    assert list(sftp_server.upload_dir.iterdir()) == [partial], "killed mid-transfer: only the partial file"

    stack.start("second")
    db = _database(stack)

    def ended() -> dict[str, Any] | None:
        [found] = list(db[DELIVERIES].find({"exportId": record["id"]}))
        assert found["status"] != "failed", found
        return found if found["status"] == "delivered" else None

    delivered = wait_until(ended, 240, "delivered after the restart")
    print(f"delivered {time.monotonic() - started:.0f} s after the first start")
    assert sftp_server.local(f"/upload/{name}").read_bytes() == data, "the bytes of the S3 file"
    assert [p.name for p in sftp_server.upload_dir.iterdir()] == [name], "no partial file left"
    assert [a["error"] for a in delivered["attempts"]] == [None], "the killed attempt was never recorded"
    assert delivered["claims"] >= 2, "claimed again once the killed run's lease ended"
    shown = httpx.get(f"{stack.api}/campaigns/{CAMPAIGN}/exports/{record['id']}/deliveries", headers=auth, timeout=30)
    assert [d["status"] for d in shown.json()["deliveries"]] == ["delivered"]
    exported = db["exports"].find_one({"_id": record["id"]}) or {}
    assert len(exported["deliveredTo"]) == 1, "added once"
    announced = wait_until(
        lambda: list(db["webhook_deliveries"].find({"exportId": record["id"], "event": "export.delivered"})),
        30, "the webhook sensor stored the event",
    )  # fmt: skip
    time.sleep(3)  # a second announcement would be stored by the next webhook tick (every 2 s): none is
    assert len(announced) == db["webhook_deliveries"].count_documents({"exportId": record["id"]}) == 1
    runs = httpx.post(stack.graphql, json={"query": RUNS, "variables": {"name": JOB_NAME}}, timeout=30).json()
    statuses = sorted(r["status"] for r in runs["data"]["runsOrError"]["results"])
    assert "SUCCESS" in statuses and "STARTED" not in statuses, f"the killed run ended, the next delivered: {statuses}"
