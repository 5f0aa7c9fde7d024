"""The sensors, evaluated directly (build_sensor_context) against a real instance and the test's database."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    DagsterEvent,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    Definitions,
    EventLogEntry,
    RunRequest,
    SensorResult,
    SkipReason,
    build_run_status_sensor_context,
    build_sensor_context,
)
from dagster._core.test_utils import create_run_for_test
from pymongo.database import Database

from devstack.supervisor import write_instance_config
from export_core.failures import RUN_FAILED, WORKER_LOST
from export_core.records import EXPIRED, FAILED, FINISHED, PENDING, TRIGGERED, ExportStore
from export_core.secrets import MISSING_KEY, SecretsKeyMissing
from export_core.settings import DEV_SECRETS_KEY_FILE, REPO_ROOT, Settings
from export_pipelines.definitions import build_definitions
from export_pipelines.end_states import MAX_RUNTIME_TAG, close_ended_runs
from export_pipelines.jobs import CAMPAIGN_TAG, EXPORT_ID_TAG, REQUEST_ID_TAG, partitions_name
from export_pipelines.sensors import GRACE, PARTITION_RETENTION, build_sensors
from export_pipelines.workers import WORKER_TAG, RunWorker
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
        "webhook_delivery_sensor",  # export_pipelines/webhook_delivery.py
        "schedule_ticks_sensor",  # export_pipelines/schedule_ticks.py
        "destination_delivery_sensor",  # export_pipelines/destination_delivery.py
    }
    job = defs.resolve_job_def("entries_export_job")
    assert job.tags[MAX_RUNTIME_TAG] == str(settings.timeout_millis // 1000)
    assert set(defs.resources or {}) == {"mongo", "s3", "files", "export"}


def test_outside_dev_mode_the_code_location_does_not_load_without_secrets_key(settings: Settings, env: dict[str, str]):
    with pytest.raises(SecretsKeyMissing) as missing:
        build_definitions(settings.model_copy(update={"dev_mode": False, "secrets_key": None}))
    assert str(missing.value) == MISSING_KEY
    # As Dagster loads it (`-m export_pipelines.definitions -a defs`): importing reads nothing, `defs` refuses.
    child_env = {k: v for k, v in os.environ.items() if k != "SECRETS_KEY"}
    child_env["DEV_MODE"] = "0"
    load = [sys.executable, "-c", "import export_pipelines.definitions as m; m.defs"]
    refused = subprocess.run(load, env=child_env, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and f"SecretsKeyMissing: {MISSING_KEY}" in refused.stderr
    child_env["DEV_MODE"] = "1"  # in dev mode the dev key is generated into DATA_DIR
    loaded = subprocess.run(load, env=child_env, capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0, loaded.stderr
    assert (Path(env["DATA_DIR"]) / "keys" / DEV_SECRETS_KEY_FILE).exists()


def test_loading_the_code_location_imports_no_data_library(secrets_key: str):
    """A run worker loads the code location before its export can be TRIGGERED: polars, pyarrow,
    pymongoarrow and boto3 are imported by the steps that use them (docs/performance.md, the queue)."""
    heavy = "{'polars', 'pyarrow', 'pymongoarrow', 'boto3', 'numpy'}"
    probe = (
        "import sys, dagster; from export_pipelines.definitions import defs; "
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {heavy}))"
    )
    env = {**os.environ, "SECRETS_KEY": secrets_key}  # as production runs it
    loaded = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True, timeout=120
    )
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
    from export_core.records import utcnow

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


# -- run workers that died without a word (the whole stack killed, then started again) --------

# A stand-in run worker: tags run argv[1] with itself exactly as ExportRunResource does when an
# export starts, then works on until killed.
WORKER_SCRIPT = """
import sys, time
from dagster import DagsterInstance
from export_pipelines.workers import record_worker
with DagsterInstance.get() as instance:
    record_worker(instance, sys.argv[1])
print("tagged", flush=True)
time.sleep(600)
"""


@pytest.fixture
def home_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DagsterInstance]:
    """An instance in a DAGSTER_HOME that processes the test starts share: `make run`'s config,
    hence Dagster's DefaultRunLauncher."""
    home = tmp_path / "dagster_home"
    write_instance_config(home, postgres=False)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with DagsterInstance.get() as instance:
        yield instance


@pytest.fixture
def workers() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        proc.kill()
        proc.wait()


def _start_worker(workers: list[subprocess.Popen[str]], run_id: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER_SCRIPT, run_id],
        cwd=REPO_ROOT,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        text=True,
    )
    workers.append(proc)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "tagged"
    return proc


def _started_run(instance: DagsterInstance, export_id: str, *, seconds_ago: float = 1, **tags: str) -> Any:
    """A run of `export_id` that Dagster shows STARTED since `seconds_ago` (its RUN_START event)."""
    run = create_run_for_test(
        instance,
        job_name="entries_export_job",
        status=DagsterRunStatus.STARTING,
        tags={EXPORT_ID_TAG: export_id, **tags},
    )
    start = DagsterEvent(DagsterEventType.RUN_START.value, job_name=run.job_name)
    entry = EventLogEntry(
        error_info=None,
        level=logging.DEBUG,
        user_message="",
        run_id=run.run_id,
        timestamp=time.time() - seconds_ago,
        dagster_event=start,
    )
    instance.handle_new_event(entry)
    return instance.get_run_by_id(run.run_id)


def _dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def _tag(instance: DagsterInstance, run_id: str, worker: RunWorker) -> None:
    instance.add_run_tags(run_id, worker.tags())


def _status_of(instance: DagsterInstance, run_id: str) -> DagsterRunStatus:
    run = instance.get_run_by_id(run_id)
    assert run is not None
    return run.status


@pytest.mark.parametrize("survivor", ["the daemon lived on", "the daemon was restarted"])
def test_a_run_whose_worker_died_ends_failed_at_once_and_nothing_fights_over_the_record(
    db: Database,
    settings: Settings,
    home_instance: DagsterInstance,
    workers: list[Any],
    sensors: dict[str, Any],
    survivor: str,
):
    """The worker died alone, with the webserver (the daemon lived on), or with the daemon (a new one reconciles)."""
    store = ExportStore(db)
    run = _started_run(home_instance, "lost")
    _triggered(db, "lost", run.run_id, 1)  # a second ago: a gone worker needs no grace period
    worker = _start_worker(workers, run.run_id)

    assert isinstance(_evaluate(sensors["stale_exports_sensor"], home_instance, settings), SkipReason)
    assert store.get("lost")["status"] == TRIGGERED, "its worker is alive"  # type: ignore[index]
    worker.kill()
    worker.wait()

    instance = home_instance if survivor == "the daemon lived on" else DagsterInstance.get()
    assert isinstance(_evaluate(sensors["stale_exports_sensor"], instance, settings), SensorResult)
    record = store.get("lost")
    assert record is not None and record["status"] == FAILED and record["error"]["message"] == WORKER_LOST
    assert "active" not in record, "re-runnable, and a new identical request is accepted"
    assert _status_of(instance, run.run_id) == DagsterRunStatus.FAILURE, "the queue's slot is free"
    failure = instance.all_logs(run.run_id, of_type=DagsterEventType.RUN_FAILURE)[-1]
    assert f"pid {worker.pid}" in str(failure.message) and "no longer exists" in str(failure.message)

    # What reacts to the run's end afterwards leaves the record as it is.
    _evaluate_failure(
        sensors["export_run_failure_sensor"],
        instance,
        settings,
        instance.get_run_by_id(run.run_id),
        failure.dagster_event,
    )
    assert close_ended_runs(instance, store, starting="the-next-export") == []
    assert store.get("lost")["error"]["message"] == WORKER_LOST  # type: ignore[index]
    assert isinstance(_evaluate(sensors["stale_exports_sensor"], instance, settings), SkipReason), "done once"


def test_live_workers_and_workers_of_other_machines_are_left_alone(
    db: Database, settings: Settings, home_instance: DagsterInstance, workers: list[Any], sensors: dict[str, Any]
):
    store = ExportStore(db)
    here = RunWorker.current("-")
    runs = {
        name: _started_run(home_instance, name, seconds_ago=3600) for name in ("child", "me", "elsewhere", "reused")
    }
    for name, run in runs.items():
        _triggered(db, name, run.run_id, 3600)
    _start_worker(workers, runs["child"].run_id)  # another process, alive
    _tag(home_instance, runs["me"].run_id, RunWorker.current(runs["me"].run_id))  # this process
    # A worker that is gone, on a machine this one cannot look into: Dagster's run monitoring's.
    elsewhere = RunWorker(runs["elsewhere"].run_id, "another-host", here.pid_namespace, _dead_pid(), 12.0)
    _tag(home_instance, runs["elsewhere"].run_id, elsewhere)
    # This process's pid, but a process that started earlier: the pid was reused, the worker is gone.
    reused = RunWorker(runs["reused"].run_id, here.host, here.pid_namespace, os.getpid(), here.started - 60)
    _tag(home_instance, runs["reused"].run_id, reused)

    _evaluate(sensors["stale_exports_sensor"], home_instance, settings)
    for name in ("child", "me", "elsewhere"):
        assert store.get(name)["status"] == TRIGGERED, name  # type: ignore[index]
        assert _status_of(home_instance, runs[name].run_id) == DagsterRunStatus.STARTED, name
    assert store.get("reused")["status"] == FAILED  # type: ignore[index]
    assert _status_of(home_instance, runs["reused"].run_id) == DagsterRunStatus.FAILURE


def test_a_run_whose_worker_never_said_who_it_is_ends_a_minute_after_its_start(
    db: Database, settings: Settings, home_instance: DagsterInstance, sensors: dict[str, Any]
):
    """The worker died between the run's start and its export's (before it could tag the run)."""
    store = ExportStore(db)
    old = GRACE.total_seconds() + 5
    never_began = request_export(db, "c", "entries")  # still PENDING
    gap = _started_run(home_instance, never_began["_id"], seconds_ago=old)
    # A run of an older version (no tag) that took its record: alive as far as anyone knows.
    older_version = _started_run(home_instance, "older-version", seconds_ago=old)
    _triggered(db, "older-version", older_version.run_id, old)
    # A re-execution that just started inherits its parent's tag, which names the dead parent.
    here = RunWorker.current("-")
    inherited = RunWorker("the-parent-run", here.host, here.pid_namespace, _dead_pid(), 1.0).tags()
    _triggered(db, "rerun", "the-parent-run", 3600)
    db["exports"].update_one({"_id": "rerun"}, {"$set": {"status": FAILED}})
    rerun = _started_run(home_instance, "rerun", seconds_ago=2, **inherited)
    assert rerun.tags[WORKER_TAG] and RunWorker.of(rerun) is None

    _evaluate(sensors["stale_exports_sensor"], home_instance, settings)
    record = store.get(never_began["_id"])
    assert record is not None and record["status"] == FAILED and record["error"]["message"] == WORKER_LOST
    assert _status_of(home_instance, gap.run_id) == DagsterRunStatus.FAILURE
    assert store.get("older-version")["status"] == TRIGGERED  # type: ignore[index]
    assert _status_of(home_instance, older_version.run_id) == DagsterRunStatus.STARTED
    assert _status_of(home_instance, rerun.run_id) == DagsterRunStatus.STARTED

    # Launchers other than Dagster's local one have worker health checks of their own (run monitoring).
    instance = DagsterInstance.ephemeral()
    untagged = _started_run(instance, "elsewhere", seconds_ago=old)
    _evaluate(sensors["stale_exports_sensor"], instance, settings)
    assert _status_of(instance, untagged.run_id) == DagsterRunStatus.STARTED


def test_a_run_being_stopped_for_its_runtime_whose_worker_died_ends_canceled_and_expired(
    db: Database, settings: Settings, home_instance: DagsterInstance, sensors: dict[str, Any]
):
    run = _started_run(home_instance, "stopping", seconds_ago=10, **{MAX_RUNTIME_TAG: "5"})
    _triggered(db, "stopping", run.run_id, 10)
    here = RunWorker.current("-")
    _tag(home_instance, run.run_id, RunWorker(run.run_id, here.host, here.pid_namespace, _dead_pid(), 1.0))
    home_instance.report_run_canceling(run, message="Canceling due to exceeding maximum runtime of 5 seconds.")

    _evaluate(sensors["stale_exports_sensor"], home_instance, settings)
    assert _status_of(home_instance, run.run_id) == DagsterRunStatus.CANCELED
    record = ExportStore(db).get("stopping")
    assert record is not None and record["status"] == EXPIRED
