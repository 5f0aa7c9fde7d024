"""bench/api_load.py drives the real API correctly (a small run; the figures are the benchmark's job)."""

from __future__ import annotations

from typing import Any

from bench.api_load import KINDS, run_api_load
from export_core.records import ExportStore
from tests.api.conftest import CAMPAIGN, LiveServer


def test_api_load_mix_runs_without_errors(live_api: LiveServer, token: str, db: Any) -> None:
    store = ExportStore(db)
    record = store.create(campaign_id=CAMPAIGN, campaign_name="S", export_type="codes", requester_user_id="u").record
    store.mark_triggered(record["id"], run_id="run-load", preliminary_count=None)
    store.mark_finished(record["id"], key="codes/k.csv", count=0, meta={})

    result = run_api_load(live_api.url, token, [CAMPAIGN, "no-finished-export"], clients=4, requests=30)
    assert result["errors"] == 0 and result["requests"] == 30
    assert [result["by_kind"][kind]["count"] for kind in KINDS] == [10, 10, 10]
    assert result["by_kind"]["post_duplicate"]["statuses"] == {"201": 1, "200": 9}
    assert result["by_kind"]["get_finished"]["statuses"] == {"200": 10}
    assert db.exports.count_documents({"exportType": "entries"}) == 1
