"""The `run` part of GET /exports/{id}: read from Dagster's GraphQL API, degrading when it is away."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from pymongo.database import Database
from starlette.testclient import TestClient

from export_api.app import create_app
from export_api.dagster_status import RUN_STATUS_QUERY
from export_core.records import ExportStore
from export_core.settings import Settings
from tests.api.conftest import CAMPAIGN, EXPORTS, FakeDagster


@pytest.fixture
def dagster_client(settings: Settings, campaigns: None, fake_dagster: FakeDagster) -> Iterator[TestClient]:
    with TestClient(create_app(settings.model_copy(update={"dagster_graphql_url": fake_dagster.url}))) as client:
        yield client


def export_with_run(db: Database, run_id: str) -> str:
    store = ExportStore(db)
    record = store.create(campaign_id=CAMPAIGN, campaign_name="S", export_type="entries", requester_user_id="u").record
    store.mark_triggered(record["id"], run_id=run_id, preliminary_count=None)
    return str(record["id"])


def test_run_status_from_dagster(
    dagster_client: TestClient, headers: dict[str, str], db: Database, fake_dagster: FakeDagster
) -> None:
    export_id = export_with_run(db, "run-ok-1")
    body = dagster_client.get(f"{EXPORTS}/{export_id}", headers=headers).json()
    assert body["status"] == "TRIGGERED"
    assert body["run"] == {
        "id": "run-ok-1",
        "status": "STARTED",
        "available": True,
        "stepsSucceeded": 2,
        "stepsFailed": 0,
        "steps": [
            {"key": "extract", "status": "SUCCESS"},
            {"key": "transform", "status": "SUCCESS"},
            {"key": "package", "status": "IN_PROGRESS"},
        ],
    }
    assert fake_dagster.requests == [{"query": RUN_STATUS_QUERY, "variables": {"runId": "run-ok-1"}}]


@pytest.mark.parametrize("run_id", ["run-unknown", "run-broken"])
def test_unknown_run_or_dagster_error_degrades(
    dagster_client: TestClient, headers: dict[str, str], db: Database, run_id: str
) -> None:
    export_id = export_with_run(db, run_id)
    response = dagster_client.get(f"{EXPORTS}/{export_id}", headers=headers)
    assert response.status_code == 200
    assert response.json()["run"] == {"id": run_id, "status": None, "available": False}


def test_slow_dagster_is_cut_off_after_about_a_second(
    dagster_client: TestClient, headers: dict[str, str], db: Database
) -> None:
    export_id = export_with_run(db, "run-slow")
    started = time.monotonic()
    response = dagster_client.get(f"{EXPORTS}/{export_id}", headers=headers)
    assert time.monotonic() - started < 2.0
    assert response.status_code == 200 and response.json()["run"]["available"] is False


def test_no_run_id_does_not_call_dagster(
    dagster_client: TestClient, headers: dict[str, str], fake_dagster: FakeDagster
) -> None:
    created = dagster_client.post(EXPORTS, json={"exportType": "entries"}, headers=headers).json()
    body = dagster_client.get(f"{EXPORTS}/{created['id']}", headers=headers).json()
    assert body["run"] == {"id": None, "status": None, "available": False}
    assert fake_dagster.requests == []


def test_query_is_valid_against_dagsters_schema() -> None:
    """Checked against the pinned dagster-graphql schema (in the test process only; the API never imports it)."""
    graphql = pytest.importorskip("graphql")
    schema = pytest.importorskip("dagster_graphql.schema").create_schema()
    assert graphql.validate(schema.graphql_schema, graphql.parse(RUN_STATUS_QUERY)) == []
