"""`progress` on the record while an export runs (SPEC §4): never past its total, and a total
only where the stage knows what it counts towards."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from pymongo.database import Database

from devstack.seed import seed_campaign
from export_core.records import ExportStore
from export_core.settings import Settings
from export_pipelines import stages
from export_pipelines.exports.contract import Progress
from tests.pipelines.helpers import export_resources, request_export, workspace


def _run_stages(db: Database, s3: Any, settings: Settings, record: dict[str, Any]) -> list[dict[str, Any]]:
    """Every stage of the export in process, each progress report stored and read back from the record."""
    store = ExportStore(db)
    export_id = record["_id"]
    count = db["entries"].count_documents({"campaignId": record["campaignId"]})
    store.mark_triggered(export_id, run_id="progress-test", preliminary_count=count)
    seen: list[dict[str, Any]] = []

    def report(stage: str, done: int, total: int | None) -> None:
        store.set_progress(export_id, stage=stage, done=done, total=total)
        seen.append((store.get(export_id) or {})["progress"])

    triggered = store.get(export_id)
    assert triggered is not None
    uploader = export_resources(settings)["s3"]
    ctx = stages.build_context(
        triggered, db, s3, workspace(settings), logging.getLogger("test"), run_id="progress-test",
        progress=Progress(report, interval=0),
    )  # fmt: skip
    stages.extract(ctx)
    stages.transform(ctx)
    uploaded = stages.upload(ctx, stages.package(ctx), uploader)
    fields = stages.finish_fields(ctx, uploaded)
    finished = store.mark_finished(export_id, **fields)
    seen.append(finished["progress"])
    return seen


@pytest.fixture
def seeded(db: Database) -> str:
    seed_campaign(db, campaign_id="p1", n_entries=900, seed=3)
    return "p1"


def _never_past_total(seen: list[dict[str, Any]]) -> None:
    assert seen, "progress was reported"
    for progress in seen:
        assert progress["total"] is None or 0 <= progress["rows"] <= progress["total"], progress


def test_entries_count_towards_the_preliminary_count_then_files_then_rows(
    db: Database, s3: Any, settings: Settings, seeded: str
):
    seen = _run_stages(db, s3, settings, request_export(db, seeded, "entries"))
    _never_past_total(seen)
    by_stage = {p["stage"]: p for p in seen}  # the last report of each stage
    assert by_stage["extract"]["total"] == by_stage["transform"]["total"] == 900
    assert by_stage["transform"]["rows"] == 900
    assert by_stage["upload"] == {"stage": "upload", "rows": 1, "total": 1}, "files uploaded of files"
    assert seen[-1] == {"stage": "finished", "rows": 900, "total": 900}


def test_with_all_markets_the_row_stages_have_no_total(db: Database, s3: Any, settings: Settings, seeded: str):
    """Additional-market rows are not counted in advance: the rows stages say how many, not of what."""
    seen = _run_stages(db, s3, settings, request_export(db, seeded, "entries", include_all_markets=True))
    _never_past_total(seen)
    rows_stages = [p for p in seen if p["stage"] in ("extract", "transform")]
    assert rows_stages and all(p["total"] is None for p in rows_stages)
    assert max(p["rows"] for p in rows_stages) > 900, "more rows than entries: the case that showed 63442/50000"
    assert seen[-1]["rows"] == seen[-1]["total"] > 900


def test_a_type_with_fewer_rows_than_entries_never_shows_the_entry_count(
    db: Database, s3: Any, settings: Settings, seeded: str
):
    seen = _run_stages(db, s3, settings, request_export(db, seeded, "codes"))
    _never_past_total(seen)
    assert all(p["total"] is None for p in seen if p["stage"] in ("extract", "transform"))
    assert seen[-1]["stage"] == "finished" and seen[-1]["rows"] == seen[-1]["total"]


def test_a_total_that_was_passed_is_dropped(db: Database, seeded: str):
    store = ExportStore(db)
    record = request_export(db, seeded, "entries")
    store.mark_triggered(record["_id"], run_id="r", preliminary_count=10)
    store.set_progress(record["_id"], stage="extract", done=11, total=10)
    assert (store.get(record["_id"]) or {})["progress"] == {"stage": "extract", "rows": 11, "total": None}
