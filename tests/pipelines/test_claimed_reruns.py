"""A re-run claimed through the API (TRIGGERED before its run starts) as the engine sees it.

The API moves the record FAILED → TRIGGERED and stores its new run's id while that run waits
in the queue: the reconcile sensor must leave it waiting, and the run, when it starts, takes
the record over (its runtime counts from then) and ends it FINISHED.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from dagster import DagsterInstance, DagsterRunStatus, build_sensor_context
from dagster._core.remote_origin import GrpcServerCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.test_utils import create_run_for_test
from pymongo.database import Database

from devstack.seed import seed_campaign
from export_core.failures import RUN_FAILED
from export_core.records import FAILED, FINISHED, TRIGGERED, ExportStore, utcnow
from export_core.settings import Settings
from export_pipelines.end_states import record_run_outcome
from export_pipelines.jobs import partitions_name
from export_pipelines.sensors import GRACE, build_sensors
from tests.pipelines.helpers import export_jobs, export_resources, request_export


def _claimed(db: Database, campaign_id: str, *, ago: timedelta) -> tuple[dict[str, Any], str]:
    """A FAILED export claimed for a re-run `ago` (as POST .../rerun does); (its record as it was, claim)."""
    store = ExportStore(db)
    record = request_export(db, campaign_id, "entries")
    store.mark_triggered(record["_id"], run_id="run-old", preliminary_count=None)
    failed = store.mark_failed(record["_id"], message="The campaign has no markets.", run_id="run-old")
    claimed = store.claim_rerun(record["_id"], campaign_id=campaign_id, requested_by="u")
    assert claimed is not None
    store.collection.update_one({"_id": record["_id"]}, {"$set": {"date.triggered": utcnow() - ago}})
    return failed, claimed[0]


def test_reconcile_leaves_a_claimed_rerun_waiting_in_the_queue_alone(db: Database, settings: Settings) -> None:
    """Queued longer than TIMEOUT_MILLIS plus the grace: not expired, its run not cancelled."""
    instance = DagsterInstance.ephemeral()
    store = ExportStore(db)
    overdue = timedelta(milliseconds=settings.timeout_millis) + 2 * GRACE
    failed, claim = _claimed(db, "queued", ago=overdue)
    # A queued run names where its code lives (the daemon launches it from there).
    location = GrpcServerCodeLocationOrigin(host="localhost", port=4000, location_name="export_pipelines")
    origin = RemoteJobOrigin(RemoteRepositoryOrigin(location, "__repository__"), "entries_export_job")
    queued = create_run_for_test(
        instance, job_name="entries_export_job", status=DagsterRunStatus.QUEUED, remote_job_origin=origin
    )
    assert store.rerun_launched(failed["_id"], claim=claim, run_id=queued.run_id) is not None
    sensor = next(s for s in build_sensors(export_jobs(), poll_seconds=1) if s.name == "stale_exports_sensor")
    resources = export_resources(settings)
    with build_sensor_context(
        instance=instance, resources={"mongo": resources["mongo"], "files": resources["files"]}
    ) as context:
        sensor(context)
    record = store.get(failed["_id"])
    assert record is not None and record["status"] == TRIGGERED and record["runId"] == queued.run_id
    run = instance.get_run_by_id(queued.run_id)
    assert run is not None and run.status == DagsterRunStatus.QUEUED


def test_the_run_of_a_claimed_rerun_takes_the_record_over_and_finishes_it(db: Database) -> None:
    seed_campaign(db, campaign_id="claimed", n_entries=30, seed=5)
    store = ExportStore(db)
    failed, claim = _claimed(db, "claimed", ago=timedelta(minutes=30))
    run_id = str(uuid.uuid4())
    assert store.rerun_launched(failed["_id"], claim=claim, run_id=run_id) is not None
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(partitions_name("entries"), [failed["_id"]])
    started = utcnow()
    result = export_jobs()["entries"].execute_in_process(
        partition_key=failed["_id"],
        run_id=run_id,
        instance=instance,
        resources=export_resources(Settings.from_env()),
        raise_on_error=False,
    )
    assert result.success
    done = store.get(failed["_id"])
    assert done is not None and done["status"] == FINISHED and done["count"] == 30 and done["runId"] == run_id
    assert done["date"]["triggered"] >= started, "its runtime counts from its start, not from the claim"
    assert "rerun" not in done and "error" not in done and "failed" not in done["date"]


def test_a_rerun_run_that_starts_before_the_api_stored_its_id_still_owns_the_record(db: Database) -> None:
    """The launch answered late: the run started first, so the API's late word changes nothing."""
    seed_campaign(db, campaign_id="early", n_entries=5, seed=6)
    store = ExportStore(db)
    failed, claim = _claimed(db, "early", ago=timedelta(seconds=1))
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(partitions_name("entries"), [failed["_id"]])
    run_id = str(uuid.uuid4())
    result = export_jobs()["entries"].execute_in_process(
        partition_key=failed["_id"],
        run_id=run_id,
        instance=instance,
        resources=export_resources(Settings.from_env()),
        raise_on_error=False,
    )
    assert result.success
    assert store.rerun_launched(failed["_id"], claim=claim, run_id=run_id) is None
    done = store.get(failed["_id"])
    assert done is not None and done["status"] == FINISHED and done["runId"] == run_id and done["count"] == 5


def test_late_word_of_the_old_run_does_not_end_a_claimed_rerun(db: Database) -> None:
    """The failure sensor may tick about the old run after the API claimed the record: it is ignored;
    word of the new run applies once the record carries its id."""
    store = ExportStore(db)
    failed, claim = _claimed(db, "late", ago=timedelta(seconds=1))
    record_run_outcome(store, failed["_id"], "run-old", "Execution of run failed.", {})
    claimed = store.get(failed["_id"])
    assert claimed is not None and claimed["status"] == TRIGGERED
    store.rerun_launched(failed["_id"], claim=claim, run_id="run-new")
    record_run_outcome(store, failed["_id"], "run-old", "Execution of run failed.", {})
    assert store.get(failed["_id"])["status"] == TRIGGERED  # type: ignore[index]
    record_run_outcome(store, failed["_id"], "run-new", "Execution of run failed.", {})
    ended = store.get(failed["_id"])
    assert ended is not None and ended["status"] == FAILED and ended["error"]["message"] == RUN_FAILED
