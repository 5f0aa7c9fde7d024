"""POST /campaigns/{id}/exports/{exportId}/rerun without Dagster: who may, what may, and what a failed launch leaves.

The re-run itself, with the real daemon and webserver, is in tests/e2e/test_api_reruns.py.
Here the engine is unreachable (nothing listens at DAGSTER_GRAPHQL_URL) or a GraphQL
stand-in refuses, and the claim is exercised directly against the MongoDB-protocol server.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pymongo.database import Database
from starlette.testclient import TestClient

from export_api.app import create_app
from export_core.records import EXPIRED, FINISHED, PENDING, TRIGGERED, ExportStore
from export_core.settings import Settings
from tests.api.conftest import CAMPAIGN, EXPORTS, OTHER_CAMPAIGN, TokenFactory, assert_error

REFUSED = "Only a FAILED or EXPIRED export can be re-run; this one is {}."
UNREACHABLE = "The export engine is unreachable right now, so the export was not re-run; please try again in a moment."


def _rerun(client: TestClient, export_id: str, headers: dict[str, str], campaign: str = CAMPAIGN) -> Any:
    return client.post(f"/campaigns/{campaign}/exports/{export_id}/rerun", headers=headers)


def _failed(db: Database, campaign: str = CAMPAIGN, export_type: str = "entries", **kwargs: Any) -> dict[str, Any]:
    """A record that ran (run `run-old`) and FAILED with a message."""
    store = ExportStore(db)
    record = store.create(campaign_id=campaign, campaign_name="S", export_type=export_type, requester_user_id="u")
    export_id = record.record["id"]
    store.mark_triggered(export_id, run_id="run-old", preliminary_count=10)
    return store.mark_failed(export_id, message="The campaign has no markets.", payload="start_export", **kwargs)


def test_only_a_caller_with_report_on_the_campaign_may_rerun(
    client: TestClient, db: Database, make_token: TokenFactory
) -> None:
    record = _failed(db)
    assert_error(client.post(f"{EXPORTS}/{record['id']}/rerun"), 401)
    elsewhere = make_token(campaigns={OTHER_CAMPAIGN: ["REPORT"]})
    assert_error(_rerun(client, record["id"], {"Authorization": f"Bearer {elsewhere}"}), 401)
    assert ExportStore(db).get(record["id"]) == record, "untouched"


def test_an_unknown_export_or_another_campaigns_is_not_found(
    client: TestClient, db: Database, headers: dict[str, str]
) -> None:
    assert_error(_rerun(client, "no-such-export", headers), 404, "Export not found.")
    theirs = _failed(db, campaign=OTHER_CAMPAIGN)
    # The token may act on both campaigns; the export is just not this campaign's.
    assert_error(_rerun(client, theirs["id"], headers), 404, "Export not found.")
    assert ExportStore(db).get(theirs["id"]) == theirs, "another campaign's export is left alone"


def test_an_export_that_is_not_failed_or_expired_is_refused_with_409(
    client: TestClient, db: Database, headers: dict[str, str]
) -> None:
    store = ExportStore(db)
    pending = store.create(campaign_id=CAMPAIGN, campaign_name="S", export_type="codes", requester_user_id="u").record
    running = store.create(campaign_id=CAMPAIGN, campaign_name="S", export_type="entries", requester_user_id="u")
    store.mark_triggered(running.record["id"], run_id="run-now", preliminary_count=None)
    done = store.create(
        campaign_id=CAMPAIGN, campaign_name="S", export_type="codeWaves", date_key="1", requester_user_id="u"
    )
    store.mark_triggered(done.record["id"], run_id="run-done", preliminary_count=None)
    store.mark_finished(done.record["id"], key="k.csv", count=3, meta={})
    ids = {PENDING: pending["id"], TRIGGERED: running.record["id"], FINISHED: done.record["id"]}
    for status, export_id in ids.items():
        before = store.get(export_id)
        error = assert_error(_rerun(client, export_id, headers), 409, REFUSED.format(status))
        assert error["payload"] == status
        assert store.get(export_id) == before, "a refused re-run changes nothing"


def test_an_unreachable_engine_answers_503_and_leaves_the_record_as_it_was(
    client: TestClient, db: Database, headers: dict[str, str]
) -> None:
    """DAGSTER_GRAPHQL_URL names a port nothing listens on (tests/conftest.py)."""
    store = ExportStore(db)
    failed = _failed(db)
    expired = _failed(db, export_type="codes")
    store.collection.update_one(
        {"_id": expired["id"]}, {"$set": {"status": EXPIRED, "date.expired": expired["date"]["failed"]}}
    )
    expired = store.get(expired["id"])
    for record in (failed, expired):
        response = _rerun(client, record["id"], headers)
        assert_error(response, 503, UNREACHABLE)
        assert response.headers["Retry-After"] == "5"
        assert store.get(record["id"]) == record, "status, run, error and dates as they were; no dedupe slot"
    assert _rerun(client, failed["id"], headers).status_code == 503, "and it can be asked again"


class RefusingDagster:
    """A GraphQL endpoint over real HTTP that knows the old run (FAILURE) but refuses every launch."""

    def __init__(self) -> None:
        self.operations: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                query = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["query"]
                field = next(f for f in ("runOrError", "launchRunReexecution") if f in query)
                outer.operations.append(field)
                result = {"__typename": "PythonError", "message": "boom"}
                if field == "runOrError":
                    result = {"__typename": "Run", "runId": "run-old", "status": "FAILURE"}
                body = json.dumps({"data": {field: result}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/graphql"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def refusing_dagster() -> Iterator[RefusingDagster]:
    fake = RefusingDagster()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def test_a_launch_the_engine_refuses_answers_503_and_leaves_the_record_as_it_was(
    settings: Settings, campaigns: None, db: Database, headers: dict[str, str], refusing_dagster: RefusingDagster
) -> None:
    record = _failed(db)
    app = create_app(settings.model_copy(update={"dagster_graphql_url": refusing_dagster.url}))
    with TestClient(app) as client:
        assert_error(_rerun(client, record["id"], headers), 503, UNREACHABLE)
    # From failure first; refused, then every step; refused too: nothing was launched.
    assert refusing_dagster.operations == ["runOrError", "launchRunReexecution", "launchRunReexecution"]
    assert ExportStore(db).get(record["id"]) == record


def test_an_export_of_a_type_no_longer_offered_is_refused(
    client: TestClient, db: Database, headers: dict[str, str]
) -> None:
    store = ExportStore(db)
    record = store.create(campaign_id=CAMPAIGN, campaign_name="S", export_type="gone", requester_user_id="u").record
    failed = store.mark_failed(record["id"], message="Invalid export type: 'gone'.")
    message = "This export's type is not offered any more, so it cannot be re-run."
    assert_error(_rerun(client, record["id"], headers), 409, message)
    assert store.get(record["id"]) == failed


def test_of_identical_concurrent_claims_exactly_one_wins_and_takes_the_dedupe_slot(db: Database) -> None:
    store = ExportStore(db)
    store.ensure_indexes()
    record = _failed(db)
    with ThreadPoolExecutor(max_workers=8) as pool:
        claims = list(
            pool.map(lambda _: store.claim_rerun(record["id"], campaign_id=CAMPAIGN, requested_by="u"), range(16))
        )
    won = [c for c in claims if c is not None]
    assert len(won) == 1
    claim, before = won[0]
    assert before == record
    claimed = store.get(record["id"])
    assert claimed is not None and claimed["status"] == TRIGGERED and claimed["active"] is True
    assert "runId" not in claimed, "the old run no longer speaks for the record"
    assert claimed["error"] == record["error"], "kept until the launch succeeded"
    duplicate = store.create(campaign_id=CAMPAIGN, campaign_name="S", export_type="entries", requester_user_id="u")
    assert not duplicate.created and duplicate.record["_id"] == record["id"], "the re-run holds the dedupe slot"

    launched = store.rerun_launched(record["id"], claim=claim, run_id="run-new")
    assert launched is not None and launched["runId"] == "run-new" and "error" not in launched
    assert "failed" not in launched["date"] and "progress" not in launched


def test_a_rerun_claimed_while_a_fresh_identical_request_is_queued_runs_without_the_slot(db: Database) -> None:
    store = ExportStore(db)
    store.ensure_indexes()
    record = _failed(db)
    fresh = store.create(campaign_id=CAMPAIGN, campaign_name="S", export_type="entries", requester_user_id="u").record
    claimed = store.claim_rerun(record["id"], campaign_id=CAMPAIGN, requested_by="u")
    assert claimed is not None
    after = store.get(record["id"])
    assert after is not None and after["status"] == TRIGGERED and "active" not in after
    assert store.get(fresh["id"])["active"] is True  # type: ignore[index]
    store.release_rerun(record["id"], claim=claimed[0], before=claimed[1])
    assert store.get(record["id"]) == record
