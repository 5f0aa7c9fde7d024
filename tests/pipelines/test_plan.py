"""One export, decided once: its plan (export_core/plan.py) is resolved when its run starts, staged with
its files, read by every step and by a re-execution from failure; end states have one writer."""

from __future__ import annotations

import ast
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pymongo.database import Database

from devstack.seed import seed_campaign
from export_core import plan
from export_core.export_types import EXPORT_TYPES
from export_core.records import FAILED, FINISHED, ExportStore
from export_core.settings import Settings
from export_pipelines.stages import staging_dir
from tests.pipelines.helpers import export_resources, request_export, run_export

ROOT = Path(__file__).resolve().parents[2]
BUCKETS = {"exportsS3": "exp", "scoringS3": "sco", "vfScoringS3": "vf", "sfmcS3": "sf"}
END_STATE_WRITERS = {"mark_finished", "mark_failed", "mark_expired"}


def _record(**fields: Any) -> dict[str, Any]:
    created = datetime(2025, 3, 1, 12, 30, tzinfo=UTC)
    return {"_id": "e1", "campaignId": "c/1", "exportType": "entries", "date": {"created": created}, **fields}


def test_partial_exports_say_so_in_their_file_names_and_types_without_them_are_refused(tmp_path: Path) -> None:
    campaign = {"_id": "c/1", "name": "Tour"}
    tick = {"id": "s1", "scheduledFor": datetime(2027, 3, 14, 10, 0, tzinfo=UTC)}

    def resolve(export_type: str, **fields: Any) -> plan.ExportPlan:
        record = _record(exportType=export_type, **fields)
        return plan.resolve(record, campaign, EXPORT_TYPES[export_type], buckets=BUCKETS, data_dir=tmp_path, run_id="r")

    incremental = resolve("entries", incremental=True, schedule=tick, format="csv.gz")
    assert incremental.download_name == "Tour - Entries - incremental 2027-03-14 1000Z.csv.gz"
    since = resolve("codes", since=datetime(2027, 3, 1, tzinfo=UTC))
    assert since.download_name == "Tour - Codes - since 2027-03-01 0000Z.csv"
    assert resolve("entries").download_name == "Tour - Entries.csv"
    with pytest.raises(plan.PlanError, match="since"):
        resolve("scoring", since=datetime(2027, 3, 1, tzinfo=UTC))
    with pytest.raises(plan.PlanError, match="incremental"):
        resolve("fanlist", incremental=True, schedule=tick)


def test_resolve_decides_bucket_keys_names_and_packaging_and_round_trips_as_json(tmp_path: Path) -> None:
    campaign = {"_id": "c/1", "name": "Beyoncé / Tour", "date": {"opens": datetime(2025, 1, 1, tzinfo=UTC)}}
    resolved = plan.resolve(
        _record(format="xlsx"), campaign, EXPORT_TYPES["entries"], buckets=BUCKETS, data_dir=tmp_path, run_id="r"
    )
    assert resolved.bucket == "exp" and resolved.packaging == "csv" and resolved.format == "xlsx"
    assert resolved.key == "entries/c_1/e1/Beyonc_ _ Tour - Entries.xlsx", "key-safe campaign name"
    assert resolved.download_name == "Beyoncé / Tour - Entries.xlsx", "the campaign's own name"
    assert resolved.content_type.startswith("application/vnd.openxmlformats")
    assert Path(resolved.work_dir) == staging_dir(tmp_path, "e1")
    assert plan.ExportPlan.from_json(resolved.to_json()) == resolved, "dates and ids come back as they were"
    resolved.save()
    assert plan.load(Path(resolved.work_dir)) == resolved

    per_run = plan.resolve(
        _record(), campaign, EXPORT_TYPES["autoReminderEmail"], buckets=BUCKETS, data_dir=tmp_path, run_id="r"
    )
    assert (per_run.bucket, per_run.key, per_run.scratch) == ("sf", None, "run"), "multi_csv: keys per file"
    assert Path(per_run.work_dir) == plan.run_scratch_dir(tmp_path, "r")
    assert per_run.file_key("NA/x.csv") == "autoReminderEmail/c_1/e1/NA/x.csv"


def test_a_record_without_a_format_is_csv_and_one_a_type_does_not_offer_cannot_be_planned(tmp_path: Path) -> None:
    campaign = {"_id": "c/1"}
    csv = plan.resolve(_record(), campaign, EXPORT_TYPES["entries"], buckets=BUCKETS, data_dir=tmp_path, run_id="r")
    assert (csv.format, csv.campaign_name, csv.key) == ("csv", "c/1", "entries/c_1/e1/c_1 - Entries.csv")
    with pytest.raises(plan.PlanError, match="not offered"):
        plan.resolve(
            _record(format="parquet"),
            campaign,
            EXPORT_TYPES["autoReminderEmail"],
            buckets=BUCKETS,
            data_dir=tmp_path,
            run_id="r",
        )


def test_a_re_execution_reads_the_plan_the_failed_run_staged(
    db: Database, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_campaign(db, campaign_id="p", n_entries=20, seed=2, campaign_name="Old Name")
    record = request_export(db, "p", "entries")
    store = ExportStore(db)
    monkeypatch.setenv("EXPORTS_S3_BUCKET", "no-such-bucket")
    assert not run_export(record).success
    failed = store.get(record["_id"])
    assert failed is not None and failed["status"] == FAILED and failed["error"]["payload"] == "upload_files"
    staged = plan.load(staging_dir(settings.data_dir, record["_id"]))
    assert staged is not None and (staged.bucket, staged.campaign_name) == ("no-such-bucket", "Old Name")
    assert staged.record["preliminaryCount"] == 20, "the count the first step took is part of the plan"

    # The campaign and the configuration change; a re-execution from failure (its run's first step is
    # the failed one) still reads the plan its export started with.
    db["campaigns"].update_one({"_id": "p"}, {"$set": {"name": "New Name"}})
    monkeypatch.setenv("EXPORTS_S3_BUCKET", settings.exports_bucket)
    export = export_resources(Settings.from_env())["export"]
    export._export_id, export._run_id = record["_id"], "a-re-execution"
    ctx = export.context(logging.getLogger("test"))
    assert ctx.plan == staged and ctx.campaign["name"] == "Old Name"

    # A run from the start plans afresh; FINISHED removes the staging with the plan.
    assert run_export(record).success
    done = store.get(record["_id"])
    assert done is not None and done["status"] == FINISHED
    assert done["key"].endswith("/New Name - Entries.csv") and done["meta"]["bucket"] == settings.exports_bucket
    assert not staging_dir(settings.data_dir, record["_id"]).exists()


def test_only_the_end_state_module_writes_end_states() -> None:
    """FINISHED, FAILED and EXPIRED are written by export_pipelines/end_states.py alone."""
    owner = ROOT / "export_pipelines" / "end_states.py"
    offenders = []
    for package in ("export_pipelines", "export_api", "export_core", "devstack"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == owner:
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                name = node.attr if isinstance(node, ast.Attribute) else getattr(node, "value", None)
                if isinstance(node, ast.Attribute | ast.Constant) and name in END_STATE_WRITERS:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    assert not offenders, offenders
    used = {n.attr for n in ast.walk(ast.parse(owner.read_text())) if isinstance(n, ast.Attribute)}
    assert used >= END_STATE_WRITERS, "the owner writes all three"


def test_a_retried_finish_step_finds_its_export_finished_and_succeeds(db: Database, tmp_path: Path) -> None:
    """The finish step may be retried after it marked FINISHED (a later call of the step failed):
    the retry with the same files is not an illegal transition; other files still are."""
    from export_core.records import IllegalTransition
    from export_pipelines import end_states

    seed_campaign(db, campaign_id="fin", n_entries=3, seed=5)
    record = request_export(db, "fin", "entries")
    store = ExportStore(db)
    store.mark_triggered(record["_id"], run_id="r", preliminary_count=3)
    campaign = db["campaigns"].find_one({"_id": "fin"})
    resolved = plan.resolve(record, campaign, EXPORT_TYPES["entries"], buckets=BUCKETS, data_dir=tmp_path, run_id="r")
    fields = {"key": resolved.key, "count": 3, "meta": {"bucket": "exp"}}
    first = end_states.finished(store, resolved, fields)
    again = end_states.finished(store, resolved, fields)
    assert first["status"] == again["status"] == FINISHED and again["key"] == resolved.key
    with pytest.raises(IllegalTransition):
        end_states.finished(store, resolved, {**fields, "key": "another/key.csv"})
