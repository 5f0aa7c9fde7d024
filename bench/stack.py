"""The processes `make bench` measures against: local servers and the real export stack.

`LocalServers` starts SecantusDB (persistent files under DATA_DIR/bench-mongodb, so a seed is
reused by the next run) and moto's S3 server, unless MONGODB_URI / S3_ENDPOINT_URL point
elsewhere. `ExportStack` starts what `make run` starts — Dagster daemon, Dagster webserver
and the API — with a throw-away DAGSTER_HOME, and drives exports through the API exactly as a
client would: POST, then GET until the record is FINISHED. Process handling is devstack's
`Supervisor` (own sessions, SIGTERM then SIGKILL of the whole group, death signal on exit).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

from devstack.supervisor import (
    DAEMON_COMMAND,
    MIGRATE_COMMAND,
    Supervisor,
    api_command,
    mongodb_command,
    s3_command,
    webserver_command,
)
from export_core.settings import REPO_ROOT

END_STATES = ("FINISHED", "FAILED", "EXPIRED")
UNREACHABLE_S = 600
PICKUP_TIMEOUT_S = 180  # the sensor picks a request up within seconds; minutes mean it never will

STEP_STATS_QUERY = """
query BenchRunSteps($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run {
      runId
      status
      startTime
      endTime
      stepStats { stepKey status startTime endTime }
    }
  }
}
"""
# The run's own cost: the output metadata of its finish_export step (export_pipelines/jobs.py run_cost).
RUN_COST_QUERY = """
query BenchRunCost($runId: ID!, $afterCursor: String) {
  logsForRun(runId: $runId, afterCursor: $afterCursor) {
    __typename
    ... on EventConnection {
      cursor
      hasMore
      events {
        __typename
        ... on ExecutionStepOutputEvent {
          stepKey
          metadataEntries {
            label
            ... on IntMetadataEntry { intRepr }
            ... on FloatMetadataEntry { floatValue }
          }
        }
      }
    }
  }
}
"""
RUN_COST_STEP = "finish_export"
RUN_COST_LABELS = ("cpuSeconds", "peakRssMb", "dbRequests", "dbBytesReceived")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, name: str, timeout: float = 120.0, sup: Supervisor | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        if sup is not None:
            sup.check()
        time.sleep(0.2)
    raise RuntimeError(f"{name} did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


def parse_date(value: str) -> datetime:
    """The API's `2024-01-15T10:30:00.000Z`."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class CpuMeter:
    """CPU seconds (user + sys) used by one local server process (and its children) so far."""

    def __init__(self, pid: int | None) -> None:
        self.process = psutil.Process(pid) if pid else None

    def read(self) -> float | None:
        if self.process is None:
            return None
        try:
            procs = [self.process, *self.process.children(recursive=True)]
            total = 0.0
            for proc in procs:
                times = proc.cpu_times()
                total += times.user + times.system
            return total
        except psutil.Error:
            return None


class LocalServers:
    """SecantusDB and moto as child processes, for whichever of MONGODB_URI / S3_ENDPOINT_URL is unset."""

    def __init__(self, data_dir: Path, log_dir: Path) -> None:
        self.data_dir, self.log_dir = data_dir, log_dir
        self.env: dict[str, str] = {}
        self.sup = Supervisor(dict(os.environ), log_dir)
        self.db_pid: int | None = None
        self.s3_pid: int | None = None

    def start(self) -> dict[str, str]:
        """Start what is needed; returns MONGODB_URI, S3_ENDPOINT_URL and AWS variables to use."""
        mongo_uri = os.environ.get("MONGODB_URI")
        if not mongo_uri:
            port = free_port()
            storage = self.data_dir / "bench-mongodb"
            storage.mkdir(parents=True, exist_ok=True)
            self.db_pid = self.sup.start("mongodb", mongodb_command(port, storage)).pid
            wait_for_port(port, "MongoDB-protocol server", sup=self.sup)
            mongo_uri = f"mongodb://127.0.0.1:{port}/?directConnection=true"
        s3_url = os.environ.get("S3_ENDPOINT_URL")
        if not s3_url:
            port = free_port()
            self.s3_pid = self.sup.start("s3", s3_command(port)).pid
            wait_for_port(port, "S3 server", sup=self.sup)
            s3_url = f"http://127.0.0.1:{port}"
        self.env = {"MONGODB_URI": mongo_uri, "S3_ENDPOINT_URL": s3_url}
        if self.s3_pid:
            self.env["AWS_ACCESS_KEY_ID"] = os.environ.get("AWS_ACCESS_KEY_ID") or "bench"
            self.env["AWS_SECRET_ACCESS_KEY"] = os.environ.get("AWS_SECRET_ACCESS_KEY") or "bench"
        self.env["AWS_DEFAULT_REGION"] = os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        return self.env

    def cpu(self) -> dict[str, float | None]:
        """Cumulative CPU seconds of the servers this process started (None: not ours)."""
        return {"db": CpuMeter(self.db_pid).read(), "s3": CpuMeter(self.s3_pid).read()}

    def stop(self) -> None:
        for name in ("s3", "mongodb"):
            self.sup.stop(name)


@dataclass
class Finished:
    """One export as the API returned it when it ended, plus what the client saw."""

    record: dict[str, Any]
    posted_at: float  # time.time() just before the POST
    seen_finished_at: float  # time.time() when a GET first showed an end state

    @property
    def status(self) -> str:
        return str(self.record["status"])

    def date(self, name: str) -> datetime:
        return parse_date(self.record["date"][name])

    @property
    def post_to_triggered_s(self) -> float:
        return (self.date("triggered") - self.date("created")).total_seconds()

    @property
    def post_to_finished_s(self) -> float:
        return (self.date("finished") - self.date("created")).total_seconds()

    @property
    def client_wall_s(self) -> float:
        return self.seen_finished_at - self.posted_at


class ExportStack:
    """Dagster daemon + webserver + API on free ports, sharing one environment and DAGSTER_HOME.

    `base_env` carries the servers, MONGODB_DB, DATA_DIR and the JWT key pair (JWT_PRIVATE_KEY /
    JWT_PUBLIC_KEY) that POST /dev/token signs with.
    """

    def __init__(self, base_env: dict[str, str], work_dir: Path, log_dir: Path) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="dagster_home-", dir=work_dir))
        shutil.copyfile(REPO_ROOT / "dagster.yaml", self.home / "dagster.yaml")
        self.api_port, self.dagster_port = free_port(), free_port()
        self.env = {
            **base_env,
            "DAGSTER_HOME": str(self.home),
            "DEV_MODE": "1",
            "API_PORT": str(self.api_port),
            "DAGSTER_PORT": str(self.dagster_port),
            "DAGSTER_GRAPHQL_URL": f"http://127.0.0.1:{self.dagster_port}/graphql",
            "PYTHONUNBUFFERED": "1",
        }
        self.sup = Supervisor(self.env, log_dir)
        self.api = httpx.Client(base_url=f"http://127.0.0.1:{self.api_port}", timeout=60, trust_env=False)
        self.graphql = httpx.Client(timeout=30, trust_env=False)
        self.tokens: dict[str, str] = {}
        self.unavailable_answers = 0  # 503s and timeouts seen while polling (the local DB was busy)

    def start(self) -> None:
        # Create the instance's SQLite storages first: daemon, webserver and code server creating
        # them at once in a fresh DAGSTER_HOME can leave two alembic heads, and then no process
        # can load the code ("Version table 'alembic_version' has more than one head present").
        subprocess.run(
            MIGRATE_COMMAND,
            env=self.env,
            cwd=REPO_ROOT,
            check=True,
            capture_output=True,
            timeout=120,
        )
        self.sup.start("dagster-daemon", DAEMON_COMMAND)
        self.sup.start("dagster-webserver", webserver_command(self.dagster_port))
        self.sup.start("api", api_command(self.api_port))
        wait_for_port(self.api_port, "API", sup=self.sup)
        wait_for_port(self.dagster_port, "Dagster webserver", timeout=180, sup=self.sup)

    def stop(self) -> None:
        self.api.close()
        self.graphql.close()
        for name in ("api", "dagster-webserver", "dagster-daemon"):
            self.sup.stop(name)
        shutil.rmtree(self.home, ignore_errors=True)

    def token(self, campaign_id: str) -> str:
        """A REPORT token for the campaign from the stack's /dev/token, one per campaign."""
        if campaign_id not in self.tokens:
            body = {"userId": "bench", "campaignId": campaign_id, "permissions": ["REPORT"], "expiresIn": 86_400}
            response = self.api.post("/dev/token", json=body)
            response.raise_for_status()
            self.tokens[campaign_id] = response.json()["token"]
        return self.tokens[campaign_id]

    def _headers(self, campaign_id: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(campaign_id)}"}

    def pid(self, name: str) -> int:
        """The process id of one of the stack's processes ("api", "dagster-daemon", ...)."""
        return next(proc.pid for child, proc in self.sup.children if child == name)

    def post(self, campaign_id: str, export_type: str, **extra: Any) -> tuple[dict[str, Any], float]:
        """POST an export request; returns the new record and the time just before the request."""
        headers = self._headers(campaign_id)
        posted_at = time.time()
        response = self.api.post(
            f"/campaigns/{campaign_id}/exports", json={"exportType": export_type, **extra}, headers=headers
        )
        if response.status_code != 201:
            raise RuntimeError(f"POST export: {response.status_code} {response.text[:500]}")
        return response.json(), posted_at

    def get(self, campaign_id: str, export_id: str) -> dict[str, Any]:
        response = self.api.get(f"/campaigns/{campaign_id}/exports/{export_id}", headers=self._headers(campaign_id))
        response.raise_for_status()
        return dict(response.json())

    def wait(self, pending: list[tuple[dict[str, Any], float]], timeout: float) -> list[Finished]:
        """GET each record until all have ended (fast polls first, then every second)."""
        done: dict[str, Finished] = {}
        started = last_change = time.monotonic()
        seen: dict[str, str] = {}
        while len(done) < len(pending):
            elapsed = time.monotonic() - started
            if elapsed > timeout:
                raise RuntimeError(f"exports not finished after {timeout:.0f} s; see the logs in {self.sup.log_dir}")
            self.sup.check()
            statuses = set()
            for record, posted_at in pending:
                if record["id"] in done:
                    continue
                try:
                    current = self.get(record["campaignId"], record["id"])
                except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                    # The local DB server answers one request at a time, so a GET can wait behind a
                    # long export query (e.g. the preliminary count at 1.2 M) until the API gives up
                    # and answers 503, as it does when MongoDB is unreachable; a client retries. Only
                    # an API that stays unavailable, or any other error status, stops the bench.
                    if isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code != 503:
                        raise
                    self.unavailable_answers += 1
                    if time.monotonic() - last_change > UNREACHABLE_S:
                        raise RuntimeError(f"the API was unavailable for {UNREACHABLE_S} s: {exc!r}") from exc
                    statuses.add("?")
                    time.sleep(1.0)
                    continue
                statuses.add(current["status"])
                if seen.get(record["id"]) != current["status"]:
                    seen[record["id"]], last_change = current["status"], time.monotonic()
                if current["status"] in END_STATES:
                    done[record["id"]] = Finished(current, posted_at, time.time())
            if statuses == {"PENDING"} and time.monotonic() - last_change > PICKUP_TIMEOUT_S:
                # Nothing running and nothing picked up: the daemon cannot launch runs.
                raise RuntimeError(
                    f"no export was picked up within {PICKUP_TIMEOUT_S} s; the daemon's log ends with:\n"
                    + self.log_tail("dagster-daemon")
                )
            time.sleep(0.2 if elapsed < 10 else 1.0)
        finished = [done[record["id"]] for record, _ in pending]
        failed = [f.record for f in finished if f.status != "FINISHED"]
        if failed:
            raise RuntimeError(f"export(s) did not finish: {failed}")
        return finished

    def run_export(self, campaign_id: str, export_type: str, timeout: float = 7200, **extra: Any) -> Finished:
        return self.wait([self.post(campaign_id, export_type, **extra)], timeout)[0]

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.sup.log_dir / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def step_stats(self, run_id: str) -> dict[str, Any]:
        """The run's start/end and each step's duration, from the webserver's GraphQL API."""
        response = self.graphql.post(
            self.env["DAGSTER_GRAPHQL_URL"], json={"query": STEP_STATS_QUERY, "variables": {"runId": run_id}}
        )
        response.raise_for_status()
        run = response.json()["data"]["runOrError"]
        if run.get("__typename") != "Run":
            raise RuntimeError(f"run {run_id} not found: {run}")
        steps = {
            s["stepKey"]: round(s["endTime"] - s["startTime"], 3)
            for s in run["stepStats"]
            if s.get("startTime") is not None and s.get("endTime") is not None
        }
        return {"run_start": run["startTime"], "run_end": run["endTime"], "steps": steps, "raw": run["stepStats"]}

    def run_cost(self, run_id: str) -> dict[str, float | int]:
        """What the run cost its process (CPU, peak RSS) and asked of the database (commands, bytes),
        from its finish_export output metadata in Dagster's event log (GraphQL)."""
        cursor: str | None = None
        while True:
            variables = {"runId": run_id, "afterCursor": cursor}
            response = self.graphql.post(
                self.env["DAGSTER_GRAPHQL_URL"], json={"query": RUN_COST_QUERY, "variables": variables}
            )
            response.raise_for_status()
            logs = response.json()["data"]["logsForRun"]
            if logs.get("__typename") != "EventConnection":
                raise RuntimeError(f"no event log for run {run_id}: {logs}")
            for event in logs["events"]:
                if event["__typename"] == "ExecutionStepOutputEvent" and event["stepKey"] == RUN_COST_STEP:
                    return parse_cost(event["metadataEntries"])
            if not logs["hasMore"]:
                raise RuntimeError(f"run {run_id} has no {RUN_COST_STEP} output")
            cursor = logs["cursor"]


def parse_cost(entries: list[dict[str, Any]]) -> dict[str, float | int]:
    """The RUN_COST_LABELS of a step's metadata entries (ints read from their text: GraphQL's
    intValue is 32-bit, and a large export receives more bytes than that)."""
    cost: dict[str, float | int] = {}
    for entry in entries:
        if entry["label"] in RUN_COST_LABELS:
            cost[entry["label"]] = int(entry["intRepr"]) if "intRepr" in entry else float(entry["floatValue"])
    return cost


def run_module(module: str, args: list[str], env: dict[str, str], timeout: float) -> str:
    """`python -m module args` in the repo; its stdout, or an error with its stderr."""
    result = subprocess.run(
        [sys.executable, "-m", module, *args], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise RuntimeError(f"{module} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result.stdout
