"""Exports never get stuck: timeouts, crashes, daemon restarts — with the real daemon."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import psutil
import pytest
from dagster import DagsterInstance, RunsFilter
from pymongo.database import Database

from devstack.seed import seed_campaign
from export_core.records import EXPIRED, FAILED, FINISHED, TRIGGERED, ExportStore
from tests.conftest import FailPoints
from tests.e2e.conftest import BOTH_STORAGES, DagsterProcesses, wait_until
from tests.pipelines.helpers import request_export

pytestmark = pytest.mark.daemon


def _status(store: ExportStore, export_id: str) -> str | None:
    record = store.get(export_id)
    return record["status"] if record else None


@BOTH_STORAGES
def test_timeout_expires_the_export_and_the_next_one_runs(
    db: Database, failpoints: FailPoints, dagster: DagsterProcesses, monkeypatch: pytest.MonkeyPatch
):
    seed_campaign(db, campaign_id="slow", n_entries=200, seed=1)
    monkeypatch.setenv("TIMEOUT_MILLIS", "4000")
    monkeypatch.setenv("MONGODB_URI", failpoints.client_uri)  # the daemon's runs, not the test's `db`
    store = ExportStore(db)
    # The first export's first query (its preliminary count) hangs for 30 s: far beyond its 4 s budget.
    failpoints.set({"times": 1}, failCommands=["aggregate"], blockConnection=True, blockTimeMS=30_000)
    stuck = request_export(db, "slow", "entries")
    following = request_export(db, "slow", "entries", date_key="1")
    dagster.start_daemon()

    # Run monitoring marks the run failed and interrupts its worker (at once, or once the blocked
    # query returns); the interrupted step's retry sees the run stopped and gives up, so the
    # export never finishes. Its runtime limit is why it ends, hence EXPIRED.
    wait_until(lambda: _status(store, stuck["_id"]) == EXPIRED, 120, "stuck export EXPIRED")
    expired = store.get(stuck["_id"])
    assert expired is not None and "maximum runtime" in expired["error"]["message"]
    assert expired["date"]["expired"] > expired["date"]["triggered"]
    wait_until(lambda: _status(store, following["_id"]) == FINISHED, 90, "next export FINISHED")
    finished = store.get(following["_id"])
    assert finished is not None and finished["date"]["triggered"] >= expired["date"]["expired"]


def _run_worker_pids(dagster: DagsterProcesses) -> list[int]:
    """The processes executing a run: spawned (multiprocessing) by the daemon's code server."""
    daemon = psutil.Process(dagster.procs["daemon"].pid)
    return [
        child.pid
        for child in daemon.children(recursive=True)
        if "spawn_main" in " ".join(child.cmdline()) and "resource_tracker" not in " ".join(child.cmdline())
    ]


def test_kill_9_of_the_run_worker_ends_the_export_failed_or_expired(
    db: Database, failpoints: FailPoints, dagster: DagsterProcesses, monkeypatch: pytest.MonkeyPatch
):
    seed_campaign(db, campaign_id="crash", n_entries=200, seed=2)
    monkeypatch.setenv("TIMEOUT_MILLIS", "5000")
    monkeypatch.setenv("MONGODB_URI", failpoints.client_uri)  # the daemon's runs, not the test's `db`
    store = ExportStore(db)
    failpoints.set({"times": 1}, failCommands=["aggregate"], blockConnection=True, blockTimeMS=60_000)
    record = request_export(db, "crash", "entries")
    dagster.start_daemon()
    wait_until(lambda: _status(store, record["_id"]) == TRIGGERED, 60, "export TRIGGERED")
    workers = wait_until(lambda: _run_worker_pids(dagster), 30, "a run worker process")
    for pid in workers:
        os.kill(pid, signal.SIGKILL)

    wait_until(
        lambda: _status(store, record["_id"]) in (FAILED, EXPIRED), 5 + 60, "FAILED/EXPIRED within timeout + 1 min"
    )
    ended = store.get(record["_id"])
    assert ended is not None and ended["error"]["message"], "a readable reason"


def test_daemon_killed_with_exports_queued_runs_each_exactly_once(
    db: Database, settings: Any, dagster: DagsterProcesses
):
    for number in range(3):
        seed_campaign(db, campaign_id=f"d{number}", n_entries=300, seed=number)
    records = [request_export(db, f"d{number}", "entries") for number in range(3)]
    store = ExportStore(db)
    dagster.start_daemon()
    wait_until(lambda: any(_status(store, r["_id"]) != "PENDING" for r in records), 60, "first export started")
    dagster.kill_leader("daemon")  # kill -9 of the daemon alone, mid-queue
    time.sleep(2)
    dagster.start_daemon()

    wait_until(lambda: all(_status(store, r["_id"]) == FINISHED for r in records), 180, "every queued export FINISHED")
    instance = DagsterInstance.get()
    for record in records:
        runs = instance.get_runs(RunsFilter(tags={"dagster/partition": record["_id"]}))
        assert len(runs) == 1, f"export {record['_id']} ran {len(runs)} times"
