"""The whole local stack killed with SIGKILL mid-export (a power loss), then `make run` again: the queue moves on."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from export_api.dagster_status import RUN_STATUS_QUERY
from export_core.failures import WORKER_LOST
from export_core.settings import REPO_ROOT
from tests.conftest import free_port
from tests.e2e.conftest import wait_until
from tests.e2e.test_make_run import LOCAL_VARS
from tests.e2e.test_reruns import REEXECUTE

pytestmark = pytest.mark.daemon

BANNER = "Ctrl-C stops everything"
RECOVERY_SECONDS = 120  # issue 22: within two minutes of the restart


class Stack:
    """`python -m devstack` on one DATA_DIR and fixed ports, started as many times as the test asks."""

    def __init__(self, tmp_path: Path, **env: str) -> None:
        self.tmp_path = tmp_path
        self.env = env  # added to the environment of every start
        self.data_dir = tmp_path / "data"
        self.api_port, self.dagster_port = free_port(), free_port()
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.graphql = f"http://127.0.0.1:{self.dagster_port}/graphql"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: Path | None = None

    def start(self, name: str) -> float:
        """Start the stack, logging to `name`.log; returns when its banner appeared (time.monotonic())."""
        env = {k: v for k, v in os.environ.items() if k not in LOCAL_VARS and not k.startswith("AWS_")}
        env.update(DATA_DIR=str(self.data_dir), API_PORT=str(self.api_port), DAGSTER_PORT=str(self.dagster_port))
        env.update(self.env)
        self.log = self.tmp_path / f"{name}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "devstack"],
            cwd=REPO_ROOT,
            env=env,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        wait_until(lambda: BANNER in self.output() or self.proc.poll() is not None, 240, "the banner")  # type: ignore[union-attr]
        assert self.proc.poll() is None, self.output()[-3000:]
        return time.monotonic()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log else ""

    def mongodb_uri(self) -> str:
        """The database server of the latest start (its banner names it; the port may differ per start)."""
        named = re.findall(r"MongoDB\s+(mongodb://\S+)", self.output())
        assert named, self.output()[-3000:]
        return f"{named[-1]}/?directConnection=true"

    def processes(self) -> dict[int, psutil.Process]:
        """The supervisor, all its descendants, and anything else started with this stack's DAGSTER_HOME."""
        home = str(self.data_dir / "dagster_home")
        found: dict[int, psutil.Process] = {}
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(psutil.NoSuchProcess):
                root = psutil.Process(self.proc.pid)
                found = {p.pid: p for p in [root, *root.children(recursive=True)]}
        for process in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if process.status() != psutil.STATUS_ZOMBIE and process.environ().get("DAGSTER_HOME") == home:
                    found[process.pid] = process
        return found

    def kill_everything(self) -> list[psutil.Process]:
        """SIGKILL every process of the stack at once, as a power loss would; returns those it killed."""
        killed: list[psutil.Process] = []
        while found := self.processes():
            for process in found.values():
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.send_signal(signal.SIGKILL)
            killed += found.values()
            psutil.wait_procs(list(found.values()), timeout=10)
            if self.proc is not None:
                self.proc.wait(timeout=10)
        return killed

    def stop(self) -> None:
        """Ctrl-C, as a user stops `make run`."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(timeout=60)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(tmp_path)
    try:
        yield stack
    finally:
        with contextlib.suppress(Exception):
            stack.stop()
        stack.kill_everything()  # whatever a failed test left behind
        print(stack.output()[-3000:])


def _token(api: str, campaign_id: str = "123") -> dict[str, str]:
    token = httpx.post(
        f"{api}/dev/token", json={"userId": "admin", "campaignId": campaign_id, "permissions": ["REPORT"]}
    ).json()["token"]
    return {"Authorization": f"Bearer {token}"}


def _request(stack: Stack, auth: dict[str, str], export_type: str) -> str:
    created = httpx.post(f"{stack.api}/campaigns/123/exports", json={"exportType": export_type}, headers=auth)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def _export(stack: Stack, auth: dict[str, str], export_id: str) -> dict[str, Any]:
    return dict(httpx.get(f"{stack.api}/campaigns/123/exports/{export_id}", headers=auth, timeout=10).json())


ENDED = ("FINISHED", "FAILED", "EXPIRED")


def _wait_export(
    stack: Stack, auth: dict[str, str], export_id: str, status: str, timeout: float, why: str, run_id: str | None = None
) -> dict[str, Any]:
    """The record once it is `status` (by run `run_id`, if given); fails at once when it ends otherwise."""

    def reached() -> dict[str, Any] | None:
        with contextlib.suppress(httpx.HTTPError):
            record = _export(stack, auth, export_id)
            if run_id is not None and record.get("runId") != run_id:
                return None  # the new run has yet to take the record
            if record["status"] == status:
                return record
            assert record["status"] not in ENDED, f"expected {status} ({why}), got {record}"
        return None

    return dict(wait_until(reached, timeout, f"export {export_id} {status}: {why}", interval=0.1))


def _run_status(stack: Stack, run_id: str) -> str | None:
    """The run's status as the Dagster UI shows it (the webserver's GraphQL, as the API asks it)."""
    query = {"query": RUN_STATUS_QUERY, "variables": {"runId": run_id}}
    run = httpx.post(stack.graphql, json=query, timeout=10).json()["data"]["runOrError"]
    return run.get("status")


def _left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.0)


def test_the_whole_stack_killed_mid_export_then_started_again_moves_the_queue_on(stack: Stack):
    stack.start("first")
    auth = _token(stack.api)
    earlier = _request(stack, auth, "codes")
    done = _wait_export(stack, auth, earlier, "FINISHED", 180, "a file made before the crash")
    download = httpx.get(done["path"])
    assert download.status_code == 200 and download.content

    interrupted = _request(stack, auth, "entries")
    queued = _request(stack, auth, "scoring")
    running = _wait_export(stack, auth, interrupted, "TRIGGERED", 120, "its run worker at work")
    assert running["run"]["id"] and _export(stack, auth, queued)["status"] == "PENDING"
    command_lines = [" ".join(p.cmdline()) for p in stack.processes().values()]
    stack.kill_everything()
    for part in ("secantusd", "dagster-daemon", "dagster-webserver", "uvicorn", "api grpc", "spawn_main"):
        assert any(part in line for line in command_lines), f"{part} was not among the killed: {command_lines}"

    banner = stack.start("second")
    deadline = banner + RECOVERY_SECONDS
    failed = _wait_export(stack, auth, interrupted, "FAILED", _left(deadline), "its worker is gone")
    assert failed["error"]["message"] == WORKER_LOST
    assert failed["run"]["id"] == running["run"]["id"]
    # The record is decided first, then the run is ended in Dagster (end_states): a moment apart.
    run_id = failed["run"]["id"]
    wait_until(lambda: _run_status(stack, run_id) == "FAILURE", _left(deadline), "Dagster no longer shows it STARTED")
    recovered = time.monotonic() - banner
    finished = _wait_export(stack, auth, queued, "FINISHED", _left(deadline), "the next export ran")
    took = time.monotonic() - banner
    print(f"after the restart's banner: FAILED within {recovered:.0f} s, the next export FINISHED within {took:.0f} s")
    assert finished["count"] > 0
    again = httpx.get(_export(stack, auth, earlier)["path"])
    assert again.status_code == 200 and again.content == download.content, "a file FINISHED before the crash"

    # Re-run it the Dagster UI way: re-execute the failed run from failure.
    variables = {"parentRunId": failed["run"]["id"]}
    answer = httpx.post(stack.graphql, json={"query": REEXECUTE, "variables": variables}, timeout=60).json()
    relaunched = answer["data"]["launchRunReexecution"]
    assert relaunched["__typename"] == "LaunchRunSuccess", relaunched
    new_run = relaunched["run"]["runId"]
    rerun = _wait_export(stack, auth, interrupted, "FINISHED", 180, "the re-run", run_id=new_run)
    assert rerun["run"]["id"] == new_run and rerun["count"] == 50_000
    assert httpx.get(rerun["path"]).content.startswith(b"userId,email,")

    children = stack.processes()
    stack.stop()
    time.sleep(0.5)
    alive = [p.pid for p in children.values() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert alive == [], "no orphans"
