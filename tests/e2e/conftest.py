"""The real Dagster daemon (and webserver) as subprocesses, pointed at the test's servers."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from dagster import DagsterInstance

from devstack.supervisor import DAEMON_COMMAND, webserver_command, write_instance_config
from export_core.settings import REPO_ROOT
from tests.conftest import free_port
from tests.postgres import PostgresCluster, postgres_cluster

# The e2e tests that also run with Dagster on PostgreSQL: `@BOTH_STORAGES` above the test.
BOTH_STORAGES = pytest.mark.parametrize("dagster_storage", ["sqlite", "postgres"], indirect=True)


def wait_until(predicate: Callable[[], Any], timeout: float, message: str, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s: {message}")


class DagsterProcesses:
    """Each process starts with the test's environment as it is then (monkeypatched values included)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.graphql_url: str | None = None
        self.orphan_groups: list[int] = []

    def _start(self, name: str, args: list[str]) -> None:
        log = (self.home / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            args, env=dict(os.environ), cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def start_daemon(self) -> None:
        self._start("daemon", DAEMON_COMMAND)

    def start_webserver(self) -> str:
        port = free_port()
        self._start("webserver", webserver_command(port))
        self.graphql_url = f"http://127.0.0.1:{port}/graphql"
        wait_until(lambda: _answers(f"http://127.0.0.1:{port}/server_info"), 120, "webserver up")
        return self.graphql_url

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def kill_leader(self, name: str) -> None:
        """SIGKILL the process alone (like `kill -9 <pid>`); its children live on until teardown."""
        proc = self.procs.pop(name)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        self.orphan_groups.append(proc.pid)

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)
        for group in self.orphan_groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        # A code server the daemon started outlives it while it still counts a run in flight (a
        # run stopped mid-query by its max runtime): it names this test's DAGSTER_HOME, so end it.
        for proc in psutil.process_iter(["cmdline"]):
            if any(str(self.home) in part for part in proc.info["cmdline"] or []):
                with contextlib.suppress(psutil.Error):
                    proc.kill()

    def log(self, name: str) -> str:
        return (self.home / f"{name}.log").read_text(errors="replace")


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """One throw-away PostgreSQL server for the session; each test gets a database of its own."""
    with postgres_cluster(free_port()) as cluster:
        yield cluster


@pytest.fixture
def dagster_storage(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """Dagster's storage for this test: SQLite (the default), or a fresh PostgreSQL database (BOTH_STORAGES).

    Returns the database URL (also in DAGSTER_POSTGRES_URL, as production sets it), or None.
    """
    if getattr(request, "param", "sqlite") == "sqlite":
        monkeypatch.delenv("DAGSTER_POSTGRES_URL", raising=False)
        return None
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    url = cluster.create_database()
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", url)
    return url


@pytest.fixture
def dagster_home(
    env: dict[str, str], dagster_storage: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    home = tmp_path / "dagster_home"
    # The same instance config `make run` writes (devstack/supervisor.py).
    write_instance_config(home, postgres=dagster_storage is not None)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    # Create the storage once, here: a daemon and a webserver starting together on an empty
    # DAGSTER_HOME race each other's schema migrations ("more than one head present").
    with DagsterInstance.get() as instance:
        instance.upgrade()
    return home


@pytest.fixture
def dagster(settings: Any, dagster_home: Path) -> Iterator[DagsterProcesses]:
    """Daemon (and, on request, webserver) sharing the test's DAGSTER_HOME and environment."""
    processes = DagsterProcesses(dagster_home)
    yield processes
    processes.stop_all()
