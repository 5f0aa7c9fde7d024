"""Re-running failed exports through the Dagster webserver's GraphQL API, with the daemon."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from dagster import DagsterInstance, DagsterRunStatus
from pymongo.database import Database
from starlette.testclient import TestClient

from export_api.app import create_app
from export_core.keys import export_key
from export_core.records import FAILED, FINISHED, ExportStore
from export_core.settings import Settings
from export_pipelines import rerun
from tests.e2e.conftest import BOTH_STORAGES, DagsterProcesses, wait_until
from tests.pipelines.helpers import request_export

pytestmark = pytest.mark.daemon

REEXECUTE = """
mutation Reexecute($parentRunId: String!) {
  launchRunReexecution(reexecutionParams: {parentRunId: $parentRunId, strategy: FROM_FAILURE}) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}
"""


def _campaign_without_markets(db: Database, campaign_id: str) -> None:
    db["campaigns"].insert_one({"_id": campaign_id, "name": f"Campaign {campaign_id}", "type": "standard"})


def _add_market_and_entries(db: Database, campaign_id: str, n: int) -> None:
    """What the data team fixes before re-running: the campaign gets its market and entries."""
    db["markets"].insert_one({"_id": f"{campaign_id}-m", "campaignId": campaign_id, "name": "Fixed"})
    created = datetime(2024, 5, 1, tzinfo=UTC)
    db["entries"].insert_many(
        [
            {"_id": f"{campaign_id}-e{i}", "campaignId": campaign_id, "userId": f"u{i}", "marketId": f"{campaign_id}-m",
             "date": {"created": created}, "user": {"firstName": f"F{i}", "email": f"u{i}@x"}}
            for i in range(n)
        ]
    )  # fmt: skip


def _wait_status(store: ExportStore, export_id: str, status: str, dagster: DagsterProcesses) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        record = store.get(export_id)
        return record if record and record["status"] == status else None

    try:
        return wait_until(reached, 120, f"export {export_id} {status}")
    except AssertionError:
        print(dagster.log("daemon")[-4000:])
        raise


@BOTH_STORAGES
def test_reexecute_from_failure_takes_the_record_back_to_finished(
    db: Database, settings: Settings, dagster: DagsterProcesses, monkeypatch: pytest.MonkeyPatch
):
    _campaign_without_markets(db, "r1")
    store = ExportStore(db)
    record = request_export(db, "r1", "entries")
    dagster.start_daemon()
    graphql = dagster.start_webserver()
    monkeypatch.setenv("DAGSTER_GRAPHQL_URL", graphql)
    failed = _wait_status(store, record["_id"], FAILED, dagster)
    assert "NoMarketsFound" in failed["error"]["message"]
    first_run = failed["runId"]
    # The record turns FAILED in the failure hook, before Dagster ends the run: re-execution needs it ended.
    wait_until(
        lambda: (run := DagsterInstance.get().get_run_by_id(first_run)) and run.status == DagsterRunStatus.FAILURE,
        60,
        "the first run FAILURE",
    )

    _add_market_and_entries(db, "r1", 25)
    # Renamed after the first run planned the export: the re-execution reads the staged plan (its key).
    db["campaigns"].update_one({"_id": "r1"}, {"$set": {"name": "Renamed r1"}})
    answer = httpx.post(graphql, json={"query": REEXECUTE, "variables": {"parentRunId": first_run}}, timeout=30).json()
    relaunched = answer["data"]["launchRunReexecution"]
    assert relaunched["__typename"] == "LaunchRunSuccess", relaunched
    new_run = relaunched["run"]["runId"]

    done = _wait_status(store, record["_id"], FINISHED, dagster)
    assert done["runId"] == new_run != first_run
    assert done["count"] == 25 and "error" not in done
    assert done["key"] == export_key("entries", "r1", record["_id"], "Campaign r1 - Entries.csv")
    run = DagsterInstance.get().get_run_by_id(new_run)
    assert run is not None and run.tags["dagster/partition"] == record["_id"]
    assert run.tags["export-service/queue"] == "exports", "re-executions still go through the one-at-a-time queue"

    # What a user polling the API sees: the record and the new run.
    with TestClient(create_app(Settings.from_env())) as client:
        token = client.post("/dev/token", json={"userId": "u", "campaignId": "r1", "permissions": ["REPORT"]}).json()[
            "token"
        ]
        body = client.get(f"/campaigns/r1/exports/{record['_id']}", headers={"Authorization": f"Bearer {token}"}).json()
    assert body["status"] == FINISHED and body["run"]["id"] == new_run and body["run"]["status"] == "SUCCESS"
    assert body["path"]


@BOTH_STORAGES
def test_backfill_reruns_every_failed_export(
    db: Database, settings: Settings, dagster: DagsterProcesses, monkeypatch: pytest.MonkeyPatch
):
    for campaign_id in ("b1", "b2"):
        _campaign_without_markets(db, campaign_id)
    store = ExportStore(db)
    records = [request_export(db, c, "entries") for c in ("b1", "b2")]
    dagster.start_daemon()
    graphql = dagster.start_webserver()
    monkeypatch.setenv("DAGSTER_GRAPHQL_URL", graphql)
    for record in records:
        _wait_status(store, record["_id"], FAILED, dagster)

    for number, campaign_id in enumerate(("b1", "b2")):
        _add_market_and_entries(db, campaign_id, 10 + number)
    assert rerun.failed_exports(settings, "entries", None) == {"entries": [r["_id"] for r in records]}
    assert rerun.main(["--export-type", "entries"]) == 0

    for number, record in enumerate(records):
        done = _wait_status(store, record["_id"], FINISHED, dagster)
        assert done["count"] == 10 + number
        run = DagsterInstance.get().get_run_by_id(done["runId"])
        assert run is not None and "dagster/backfill" in run.tags
    assert rerun.failed_exports(settings, None, None) == {}
