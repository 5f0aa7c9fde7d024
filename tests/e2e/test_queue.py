"""The queue with the real daemon: requests become runs, one export at a time, oldest first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg2
import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
from pymongo.database import Database

from devstack.seed import seed_campaign
from export_core.records import FINISHED, ExportStore
from tests.e2e.conftest import BOTH_STORAGES, DagsterProcesses, wait_until
from tests.pipelines.helpers import request_export

pytestmark = pytest.mark.daemon


@BOTH_STORAGES
def test_exports_requested_at_once_run_one_after_another(
    db: Database, settings: Any, dagster: DagsterProcesses, dagster_storage: str | None, dagster_home: Path
):
    for number in range(3):
        seed_campaign(db, campaign_id=f"q{number}", n_entries=300, seed=number)
    records = [request_export(db, f"q{number}", "entries") for number in range(3)]
    records.append(request_export(db, "q0", "entries", date_key="1700000000000"))  # another request key
    store = ExportStore(db)
    dagster.start_daemon()

    overlaps: list[list[str]] = []

    def all_finished() -> bool:
        current = [store.get(r["_id"]) for r in records]
        triggered = [r["_id"] for r in current if r and r["status"] == "TRIGGERED"]
        if len(triggered) > 1:
            overlaps.append(triggered)
        failed = [r for r in current if r and r["status"] in ("FAILED", "EXPIRED")]
        assert not failed, f"{failed}\n{dagster.log('daemon')[-3000:]}"
        return all(r and r["status"] == FINISHED for r in current)

    wait_until(all_finished, 240, "all exports FINISHED", interval=0.1)
    assert overlaps == [], "never two exports TRIGGERED at the same time"

    finished = [store.get(r["_id"]) for r in records]
    spans = sorted((f["date"]["triggered"], f["date"]["finished"]) for f in finished if f)
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert end <= start, "record TRIGGERED→FINISHED windows never overlap"
    assert [f["runId"] for f in finished if f] and all(f["count"] == 300 for f in finished if f)

    instance = DagsterInstance.get()

    # A record is FINISHED by the run's last step, a moment before Dagster marks the run SUCCESS.
    def all_runs_succeeded() -> list[Any] | None:
        found = instance.get_run_records(RunsFilter(statuses=[DagsterRunStatus.SUCCESS]))
        return found if len(found) == len(records) else None

    runs = wait_until(all_runs_succeeded, 30, "every run SUCCESS")
    assert {r.dagster_run.tags["dagster/partition"] for r in runs} == {r["_id"] for r in records}
    windows = sorted((r.start_time, r.end_time) for r in runs)
    for (_, end), (start, _) in zip(windows, windows[1:], strict=False):
        assert end is not None and start is not None and end <= start, "Dagster runs never overlap"
    # Oldest request first.
    by_start = [r.dagster_run.tags["dagster/partition"] for r in sorted(runs, key=lambda r: r.start_time or 0)]
    assert by_start == [r["_id"] for r in records]

    if dagster_storage is not None:
        assert_runs_in_postgres(dagster_storage, {r.dagster_run.run_id for r in runs}, dagster_home)


def assert_runs_in_postgres(url: str, run_ids: set[str], dagster_home: Path) -> None:
    """The daemon's runs and their events are rows in PostgreSQL, and Dagster wrote no SQLite file."""
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT run_id, status FROM runs")
            rows = dict(cursor.fetchall())
            cursor.execute("SELECT COUNT(*) FROM event_logs WHERE run_id = ANY(%s)", (list(run_ids),))
            (events,) = cursor.fetchone() or (0,)
            cursor.execute("SELECT COUNT(*) FROM jobs")  # schedule storage: the sensors' state
            (sensors,) = cursor.fetchone() or (0,)
    finally:
        conn.close()
    assert {run_id: rows.get(run_id) for run_id in run_ids} == dict.fromkeys(run_ids, "SUCCESS")
    assert events > 0 and sensors > 0
    sqlite = [p for p in dagster_home.rglob("*") if p.is_file() and p.read_bytes()[:16] == b"SQLite format 3\x00"]
    assert sqlite == [], f"SQLite files in DAGSTER_HOME: {sqlite}"
    assert not list(dagster_home.rglob("*.db"))
