"""The sensors, evaluated directly (build_sensor_context) against a real instance and the test's database."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from typing import Any

import pytest
from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    Definitions,
    RunRequest,
    SensorResult,
    SkipReason,
    build_run_status_sensor_context,
    build_sensor_context,
)
from dagster._core.test_utils import create_run_for_test
from pymongo.database import Database

from export_pipelines.definitions import build_definitions
from export_pipelines.domain.failures import RUN_FAILED
from export_pipelines.domain.records import EXPIRED, FAILED, FINISHED, PENDING, TRIGGERED, ExportStore
from export_pipelines.domain.settings import Settings
from export_pipelines.jobs import CAMPAIGN_TAG, EXPORT_ID_TAG, REQUEST_ID_TAG, partitions_name
from export_pipelines.run_outcomes import MAX_RUNTIME_TAG
from export_pipelines.sensors import GRACE, PARTITION_RETENTION, build_sensors
from tests.pipelines.helpers import export_jobs, export_resources, request_export


@pytest.fixture
def sensors() -> dict[str, Any]:
    return {s.name: s for s in build_sensors(export_jobs(), poll_seconds=1)}


@pytest.fixture
def instance() -> DagsterInstance:
    return DagsterInstance.ephemeral()


def _evaluate(sensor: Any, instance: DagsterInstance, settings: Settings, cursor: str | None = None) -> Any:
    """One tick of `sensor`, with the resources a run of the test's servers would get."""
    resources = export_resources(settings)
    with build_sensor_context(
        instance=instance, cursor=cursor, resources={"mongo": resources["mongo"], "files": resources["files"]}
    ) as context:
        return sensor(context)


def test_the_definitions_load_with_every_job_sensor_and_resource(settings: Settings):
    defs = build_definitions(settings)
    assert isinstance(defs, Definitions)
    jobs = {job.name for job in defs.resolve_all_job_defs()}
    assert {f"{t}_export_job" for t in export_jobs()} | {"export_retention_job"} <= jobs
    assert [s.name for s in defs.schedules or []] == ["export_retention_schedule"]
    assert {s.name for s in defs.sensors or []} == {
        "pending_exports_sensor",
        "export_run_failure_sensor",
        "export_run_canceled_sensor",
        "stale_exports_sensor",
    }
    job = defs.resolve_job_def("entries_export_job")
    assert job.tags[MAX_RUNTIME_TAG] == str(settings.timeout_millis // 1000)
    assert set(defs.resources or {}) == {"mongo", "s3", "files", "export"}


def test_loading_the_code_location_imports_no_data_library():
    """A run worker loads the code location before its export can be TRIGGERED: polars, pyarrow,
    pymongoarrow and boto3 are imported by the steps that use them (docs/performance.md, the queue)."""
    heavy = "{'polars', 'pyarrow', 'pymongoarrow', 'boto3', 'numpy'}"
    probe = (
        "import sys, dagster; import export_pipelines.definitions; "
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {heavy}))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    assert loaded.stdout.strip() == "[]"


def test_pending_exports_become_tagged_run_requests_and_the_cursor_remembers_them(
    db: Database, settings: Settings, instance: DagsterInstance, sensors: dict[str, Any]
):
    sensor = sensors["pending_exports_sensor"]
    assert isinstance(_evaluate(sensor, instance, settings), SkipReason), "nothing PENDING"
    db["campaigns"].insert_one({"_id": "c1", "name": "C1"})
    first = request_export(db, "c1", "entries")
    db["exports"].update_one({"_id": first["_id"]}, {"$set": {"requestId": "req-1"}})  # what the API stores
    second = request_export(db, "c1", "codes")

    result = _evaluate(sensor, instance, settings)
    assert isinstance(result, SensorResult)
    requests: list[RunRequest] = list(result.run_requests or [])
    assert [r.run_key for r in requests] == [first["_id"], second["_id"]], "oldest first"
    assert requests[0].partition_key == first["_id"] and requests[0].job_name == "entries_export_job"
    assert requests[0].tags[CAMPAIGN_TAG] == "c1" and requests[0].tags[REQUEST_ID_TAG] == "req-1"
    assert REQUEST_ID_TAG not in requests[1].tags
    added = {r.partitions_def_name: r.partition_keys for r in result.dynamic_partitions_requests or []}
    assert added == {partitions_name("entries"): [first["_id"]], partitions_name("codes"): [second["_id"]]}
    assert json.loads(result.cursor or "[]") == sorted([first["_id"], second["_id"]])

    again = _evaluate(sensor, instance, settings, cursor=result.cursor)
    assert isinstance(again, SkipReason) and "already launched" in str(again.skip_message)


def test_an_unknown_export_type_fails_its_record_instead_of_launching(
    db: Database, settings: Settings, instance: DagsterInstance, sensors: dict[str, Any]
):
    store = ExportStore(db)
    store.ensure_indexes()
    db["exports"].insert_one(
        {"_id": "odd", "campaignId": "c", "exportType": "nope", "status": PENDING, "date": {"created": _ago(0)}}
    )
    result = _evaluate(sensors["pending_exports_sensor"], instance, settings)
    assert isinstance(result, SensorResult) and not result.run_requests
    failed = store.get("odd")
    assert (
        failed is not None
        and failed["status"] == FAILED
        and failed["error"]["message"] == "Invalid export type: 'nope'."
    )


def _ago(seconds: float) -> Any:
    from export_pipelines.domain.records import utcnow

    return utcnow() - timedelta(seconds=seconds)


def _triggered(db: Database, export_id: str, run_id: str | None, seconds_ago: float, **extra: Any) -> None:
    db["exports"].insert_one(
        {
            "_id": export_id,
            "campaignId": "c",
            "exportType": "entries",
            "status": TRIGGERED,
            "runId": run_id,
            "date": {"created": _ago(seconds_ago + 1), "triggered": _ago(seconds_ago)},
            **extra,
        }
    )


def test_reconcile_ends_records_whose_runs_vanished_failed_or_succeeded_and_leaves_young_ones(
    db: Database, settings: Settings, instance: DagsterInstance, sensors: dict[str, Any]
):
    old = GRACE.total_seconds() + 5
    failed_run = create_run_for_test(instance, job_name="entries_export_job", status=DagsterRunStatus.FAILURE)
    done_run = create_run_for_test(instance, job_name="entries_export_job", status=DagsterRunStatus.SUCCESS)
    running = create_run_for_test(instance, job_name="entries_export_job", status=DagsterRunStatus.STARTED)
    _triggered(db, "vanished", "no-such-run", old)
    _triggered(db, "failed", failed_run.run_id, old)
    _triggered(db, "succeeded", done_run.run_id, old)
    _triggered(db, "young", "no-such-run-either", 1)
    _triggered(db, "running", running.run_id, old)

    result = _evaluate(sensors["stale_exports_sensor"], instance, settings)
    assert isinstance(result, SensorResult)
    store = ExportStore(db)
    for export_id in ("vanished", "failed", "succeeded"):
        record = store.get(export_id)
        assert record is not None and record["status"] == FAILED and record["error"]["message"] == RUN_FAILED
    assert store.get("young")["status"] == TRIGGERED, "within the grace period: the run status sensors act first"  # type: ignore[index]
    assert store.get("running")["status"] == TRIGGERED, "a run within its timeout is left alone"  # type: ignore[index]

    assert isinstance(_evaluate(sensors["stale_exports_sensor"], instance, settings), SkipReason), "nothing left to do"


def test_reconcile_stops_an_overdue_run_and_expires_its_record(
    db: Database, settings: Settings, instance: DagsterInstance, sensors: dict[str, Any]
):
    running = create_run_for_test(instance, job_name="entries_export_job", status=DagsterRunStatus.STARTED)
    overdue = settings.timeout_millis / 1000 + 2 * GRACE.total_seconds()
    _triggered(db, "overdue", running.run_id, overdue)
    result = _evaluate(sensors["stale_exports_sensor"], instance, settings)
    assert isinstance(result, SensorResult)
    record = ExportStore(db).get("overdue")
    assert record is not None and record["status"] == EXPIRED
    assert record["error"]["message"].startswith("The export ran longer than its maximum runtime")
    run = instance.get_run_by_id(running.run_id)
    assert run is not None and run.status in (DagsterRunStatus.CANCELING, DagsterRunStatus.FAILURE)


def test_partitions_of_exports_that_ended_long_ago_are_dropped(
    db: Database, settings: Settings, instance: DagsterInstance, sensors: dict[str, Any]
):
    created = _ago(PARTITION_RETENTION.total_seconds() + 3600)
    for export_id, when in (("ancient", created), ("recent", _ago(60))):
        db["exports"].insert_one(
            {"_id": export_id, "campaignId": "c", "exportType": "codes", "status": FINISHED, "date": {"created": when}}
        )
    instance.add_dynamic_partitions(partitions_name("codes"), ["ancient", "recent"])
    result = _evaluate(sensors["stale_exports_sensor"], instance, settings)
    assert isinstance(result, SensorResult)
    dropped = {r.partitions_def_name: r.partition_keys for r in result.dynamic_partitions_requests or []}
    assert dropped == {partitions_name("codes"): ["ancient"]}


def _fail_run(instance: DagsterInstance, export_id: str) -> Any:
    """A finished FAILURE run of `export_id` and its RUN_FAILURE event, as the daemon would see them."""
    run = create_run_for_test(
        instance, job_name="entries_export_job", status=DagsterRunStatus.STARTED, tags={EXPORT_ID_TAG: export_id}
    )
    instance.report_run_failed(run, "step start_export failed")
    event = instance.all_logs(run.run_id, of_type=DagsterEventType.RUN_FAILURE)[-1].dagster_event
    return instance.get_run_by_id(run.run_id), event


def _evaluate_failure(sensor: Any, instance: DagsterInstance, settings: Settings, run: Any, event: Any) -> None:
    with build_run_status_sensor_context(
        sensor_name=sensor.name,
        dagster_event=event,
        dagster_instance=instance,
        dagster_run=run,
        resources={"mongo": export_resources(settings)["mongo"]},
    ) as context:
        sensor(context.for_run_failure())


def test_the_failure_sensor_ends_the_record_of_its_own_run_only(
    db: Database, settings: Settings, instance: DagsterInstance, sensors: dict[str, Any]
):
    """A tick that comes late, after a re-execution took the record over, must not fail the re-run (CI saw it)."""
    store = ExportStore(db)
    old_run, old_event = _fail_run(instance, "rerun")
    _triggered(db, "rerun", "the-re-execution", 1)
    _evaluate_failure(sensors["export_run_failure_sensor"], instance, settings, old_run, old_event)
    record = store.get("rerun")
    assert record is not None and record["status"] == TRIGGERED and record["runId"] == "the-re-execution"

    own_run, own_event = _fail_run(instance, "own")
    _triggered(db, "own", own_run.run_id, 1)
    _evaluate_failure(sensors["export_run_failure_sensor"], instance, settings, own_run, own_event)
    record = store.get("own")
    assert record is not None and record["status"] == FAILED and record["error"]["message"] == RUN_FAILED

    # A run that died before its set-up never attached itself: its PENDING record still fails.
    pending = request_export(db, "c", "entries")
    unstarted_run, unstarted_event = _fail_run(instance, pending["_id"])
    _evaluate_failure(sensors["export_run_failure_sensor"], instance, settings, unstarted_run, unstarted_event)
    assert store.get(pending["_id"])["status"] == FAILED  # type: ignore[index]
