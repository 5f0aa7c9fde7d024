"""POST /campaigns/{id}/exports/{exportId}/rerun and `export-service rerun` with the real daemon and webserver.

The API (a real uvicorn) launches re-runs through the webserver's GraphQL API; the daemon's
queue runs them. Who may re-run what (401/404/409) and a failed launch (503) need no Dagster:
tests/api/test_rerun.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from dagster import DagsterInstance, DagsterRunStatus
from pymongo.database import Database

from export_api.app import create_app
from export_core.keys import export_key
from export_core.records import FAILED, FINISHED, ExportStore
from export_core.settings import Settings
from tests.api.conftest import LiveServer
from tests.e2e.conftest import DagsterProcesses, wait_until
from tests.pipelines.helpers import request_export

pytestmark = pytest.mark.daemon

PARTITION_RUNS = """
query PartitionRuns($key: String!) {
  runsOrError(filter: {tags: [{key: "dagster/partition", value: $key}]}) {
    ... on Runs { results { runId status tags { key value } } }
  }
}
"""


def _campaign(db: Database, campaign_id: str, *, entries: int) -> None:
    db["campaigns"].insert_one({"_id": campaign_id, "name": f"Campaign {campaign_id}", "type": "standard"})
    if entries:
        _add_market_and_entries(db, campaign_id, entries)


def _add_market_and_entries(db: Database, campaign_id: str, n: int) -> None:
    db["markets"].insert_one({"_id": f"{campaign_id}-m", "campaignId": campaign_id, "name": "Fixed"})
    created = datetime(2024, 5, 1, tzinfo=UTC)
    db["entries"].insert_many(
        [
            {"_id": f"{campaign_id}-e{i}", "campaignId": campaign_id, "userId": f"u{i}", "marketId": f"{campaign_id}-m",
             "date": {"created": created}, "user": {"firstName": f"F{i}", "email": f"u{i}@x"}}
            for i in range(n)
        ]
    )  # fmt: skip


def _partition_runs(graphql: str, export_id: str) -> list[dict[str, Any]]:
    answer = httpx.post(graphql, json={"query": PARTITION_RUNS, "variables": {"key": export_id}}, timeout=30).json()
    return list(answer["data"]["runsOrError"]["results"])


def _token(api: LiveServer, campaign_id: str) -> str:
    body = {"userId": "ops", "campaignId": campaign_id, "permissions": ["REPORT"]}
    return str(httpx.post(f"{api.url}/dev/token", json=body).json()["token"])


def _wait_status(store: ExportStore, export_id: str, status: str, dagster: DagsterProcesses) -> dict[str, Any]:
    try:
        return wait_until(
            lambda: (r := store.get(export_id)) is not None and r["status"] == status and r,
            120,
            f"export {export_id} {status}",
        )
    except AssertionError:
        print(dagster.log("daemon")[-4000:])
        raise


def test_a_failed_export_is_rerun_once_through_the_api_and_ends_finished_at_the_same_key(
    db: Database, settings: Settings, dagster: DagsterProcesses, monkeypatch: pytest.MonkeyPatch
) -> None:
    _campaign(db, "api1", entries=0)  # no markets: the first run fails
    store = ExportStore(db)
    record = request_export(db, "api1", "entries")
    dagster.start_daemon()
    monkeypatch.setenv("DAGSTER_GRAPHQL_URL", graphql := dagster.start_webserver())
    failed = _wait_status(store, record["_id"], FAILED, dagster)
    first_run = failed["runId"]
    # The failure hook ends the record before Dagster ends the run; until then the API says 409.
    wait_until(
        lambda: (run := DagsterInstance.get().get_run_by_id(first_run)) and run.status == DagsterRunStatus.FAILURE,
        60,
        "the first run FAILURE",
    )
    _add_market_and_entries(db, "api1", 25)

    with LiveServer(create_app(Settings.from_env())) as api:
        headers = {"Authorization": f"Bearer {_token(api, 'api1')}"}
        url = f"{api.url}/campaigns/api1/exports/{record['_id']}/rerun"
        with ThreadPoolExecutor(max_workers=4) as pool:  # identical calls at the same moment
            answers = list(pool.map(lambda _: httpx.post(url, headers=headers, timeout=60), range(4)))
        assert sorted(a.status_code for a in answers) == [202, 409, 409, 409], [a.text for a in answers]
        accepted = next(a.json() for a in answers if a.status_code == 202)
        assert accepted["status"] == "TRIGGERED" and accepted["runId"] != first_run
        assert "error" not in accepted and "rerun" not in accepted

        done = _wait_status(store, record["_id"], FINISHED, dagster)
        assert done["runId"] == accepted["runId"] and done["count"] == 25 and "error" not in done
        assert done["key"] == export_key("entries", "api1", record["_id"], "Campaign api1 - Entries.csv")
        runs = _partition_runs(graphql, record["_id"])
        assert len(runs) == 2, "the first run and one re-execution"
        rerun = next(r for r in runs if r["runId"] == done["runId"])
        tags = {t["key"]: t["value"] for t in rerun["tags"]}
        assert tags["dagster/parent_run_id"] == first_run, "re-executed from the failed run"
        assert tags["export-service/queue"] == "exports", "through the one-at-a-time queue"

        again = httpx.post(url, headers=headers)
        assert again.status_code == 409
        assert (
            again.json()["error"]["message"] == "Only a FAILED or EXPIRED export can be re-run; this one is FINISHED."
        )


def test_the_cli_reruns_an_export_that_never_had_a_run_with_a_fresh_one(
    db: Database, settings: Settings, dagster: DagsterProcesses, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FAILED before any run started (e.g. the engine was down): nothing to re-execute, so a
    fresh run of its job for its partition; `rerun --wait` follows it to FINISHED."""
    _campaign(db, "api2", entries=12)
    store = ExportStore(db)
    record = request_export(db, "api2", "entries")
    store.mark_failed(record["_id"], message="The export could not be started.")  # PENDING → FAILED, no run
    dagster.start_daemon()
    monkeypatch.setenv("DAGSTER_GRAPHQL_URL", graphql := dagster.start_webserver())

    with LiveServer(create_app(Settings.from_env())) as api:
        env = {**os.environ, "EXPORT_SERVICE_URL": api.url, "EXPORT_SERVICE_TOKEN": _token(api, "api2")}
        result = subprocess.run(
            [sys.executable, "-m", "export_cli.cli", "rerun", "api2", record["_id"], "--wait", "--interval", "0.5"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert result.returncode == 0, (result.stdout, result.stderr, dagster.log("daemon")[-3000:])
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"rerun {record['_id']}  TRIGGERED  entries")
    assert lines[-1].startswith(f"{record['_id']}  FINISHED  entries  12 rows")
    done = store.get(record["_id"])
    assert done is not None and done["status"] == FINISHED and done["count"] == 12
    [run] = _partition_runs(graphql, record["_id"])
    assert run["runId"] == done["runId"] and run["status"] == "SUCCESS"
    assert "dagster/parent_run_id" not in {t["key"] for t in run["tags"]}, "a fresh run, not a re-execution"
