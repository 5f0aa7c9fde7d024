"""Transient faults are retried; uploads never leave a partial object; a failed export re-runs cleanly."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from dagster import DagsterInstance, DagsterRunStatus
from dagster._core.test_utils import create_run_for_test
from moto.server import ThreadedMotoServer
from pymongo.database import Database

from devstack.seed import seed_campaign
from export_core.records import EXPIRED, FAILED, FINISHED, TRIGGERED, ExportStore
from export_core.settings import Settings
from export_core.storage import upload_file
from export_pipelines.end_states import MAX_RUNTIME_TAG
from tests.conftest import FailPoints, free_port
from tests.e2e.conftest import wait_until
from tests.pipelines.helpers import read_csv, request_export, run_export


def test_transient_database_faults_are_retried_inside_the_run(db: Database, failpoints: FailPoints):
    seed_campaign(db, campaign_id="flaky", n_entries=100, seed=3)
    record = request_export(db, "flaky", "entries")
    # Three dropped connections: more than pymongo's own single retry, fewer than the op's retries.
    # The run's start (its `export` resource reads the record and looks for other TRIGGERED
    # records) is let through: it retries on its own.
    failpoints.set({"skip": 2, "times": 3}, failCommands=["find", "aggregate"], closeConnection=True)
    result = run_export(record, mongo_uri=failpoints.client_uri)
    assert result.success
    retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert retries, "the step was retried by its RetryPolicy"
    done = ExportStore(db).get(record["_id"])
    assert done is not None and done["status"] == FINISHED and done["count"] == 100


def test_a_fault_when_the_run_starts_is_retried_too(db: Database, failpoints: FailPoints):
    seed_campaign(db, campaign_id="start", n_entries=50, seed=3)
    record = request_export(db, "start", "entries")
    # The first find of the run is the `export` resource reading the record: pymongo retries once,
    # the resource's set-up once more.
    failpoints.set({"times": 2}, failCommands=["find"], closeConnection=True)
    instance = DagsterInstance.ephemeral()
    result = run_export(record, instance, mongo_uri=failpoints.client_uri)
    assert result.success
    done = ExportStore(db).get(record["_id"])
    assert done is not None and done["status"] == FINISHED and done["count"] == 50
    messages = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any("unavailable at the run's start, retrying" in m for m in messages)


def test_a_run_stopped_by_its_monitor_does_not_retry_its_step_to_the_end(db: Database, failpoints: FailPoints):
    """Run monitoring marks a run past its max runtime FAILURE while its worker still runs.

    The interrupted step's retry must then stop, not go on and finish the export behind the
    instance's back (seen in CI: a timed-out export ended FINISHED instead of EXPIRED).
    """
    seed_campaign(db, campaign_id="stopped", n_entries=50, seed=3)
    record = request_export(db, "stopped", "entries")
    # The preliminary count hangs 2 s, then fails: time for the "monitor" below to end the run.
    failpoints.set({"times": 1}, failCommands=["aggregate"], blockConnection=True, blockTimeMS=2_000, errorCode=2)
    instance = DagsterInstance.ephemeral()

    def monitor() -> None:
        run = wait_until(lambda: next(iter(instance.get_runs()), None), 30, "the run exists")
        instance.report_run_failed(run, "Exceeded maximum runtime of 4 seconds.")

    thread = threading.Thread(target=monitor)
    thread.start()
    result = run_export(record, instance, mongo_uri=failpoints.client_uri)
    thread.join()
    assert not result.success
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert [e.step_key for e in failures] == ["start_export"]
    assert "the run was stopped" in str(failures[0].event_specific_data.error)  # type: ignore[union-attr]
    left = ExportStore(db).get(record["_id"])
    # Not FINISHED, and not FAILED either: the run status sensors decide FAILED vs EXPIRED.
    assert left is not None and left["status"] == TRIGGERED and "key" not in left


def test_a_run_closes_the_record_of_a_run_that_ended_before_it(db: Database):
    """A timed-out run ends at once in Dagster's eyes; the next run may start before the failure
    sensor ticks. It records the previous export EXPIRED first, so only one is ever TRIGGERED."""
    seed_campaign(db, campaign_id="next", n_entries=20, seed=3)
    store = ExportStore(db)
    instance = DagsterInstance.ephemeral()
    timed_out = create_run_for_test(
        instance, job_name="entries_export_job", status=DagsterRunStatus.STARTED, tags={MAX_RUNTIME_TAG: "4"}
    )
    instance.report_run_failed(timed_out, "Exceeded maximum runtime of 4 seconds.")  # run monitoring
    instance.report_run_failed(timed_out, "Execution of run failed. Steps failed: ['start_export'].")  # its worker
    running = create_run_for_test(instance, job_name="entries_export_job", status=DagsterRunStatus.STARTED)
    previous, busy = request_export(db, "next", "entries"), request_export(db, "next", "codes")
    store.mark_triggered(previous["_id"], run_id=timed_out.run_id, preliminary_count=None)
    store.mark_triggered(busy["_id"], run_id=running.run_id, preliminary_count=None)

    record = request_export(db, "next", "entries", date_key="1")
    assert run_export(record, instance).success
    expired, done = store.get(previous["_id"]), store.get(record["_id"])
    assert expired is not None and expired["status"] == EXPIRED and "maximum runtime" in expired["error"]["message"]
    assert done is not None and done["date"]["triggered"] >= expired["date"]["expired"]
    assert store.get(busy["_id"])["status"] == TRIGGERED, "a run not ended is not touched"  # type: ignore[index]


def test_a_fault_while_reading_the_joined_entries_retries_the_extract(db: Database, failpoints: FailPoints):
    """A connection lost in the middle of the entries-with-users aggregation (a `getMore`, which
    pymongo does not retry) fails the extract step, whose retry finishes the export."""
    seed_campaign(db, campaign_id="ahead", n_entries=300, seed=5)
    record = request_export(db, "ahead", "entries")
    # Each market's aggregation is read with getMores: let the first market's through, then drop
    # the connection once. Only the joined reads of the extract use getMore in this run.
    failpoints.set({"skip": 1, "times": 1}, failCommands=["getMore"], closeConnection=True)
    result = run_export(record, mongo_uri=failpoints.client_uri)
    assert result.success
    retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert [e.step_key for e in retries] == ["extract_rows"]
    error, stack = retries[0].event_specific_data.error, []  # type: ignore[union-attr]
    while error is not None:
        stack += error.stack
        error = error.cause
    assert "sources.py" in "".join(stack) and "in read" in "".join(stack), "raised while reading a source"
    done = ExportStore(db).get(record["_id"])
    assert done is not None and done["status"] == FINISHED and done["count"] == 300


def test_upload_interrupted_midway_leaves_nothing_at_the_key(tmp_path: Path):
    """Stop the S3 server between parts of a multipart upload: no object, and a retry cleans up."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    client = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=5),
    )
    client.create_bucket(Bucket="midway")
    payload = tmp_path / "big.csv"
    payload.write_bytes(os.urandom(40 * 1024 * 1024))  # three 16 MB parts
    parts_done = []

    def stop_after_first_part(**_: Any) -> None:
        parts_done.append(1)
        if len(parts_done) == 1:
            server.stop()

    client.meta.events.register("after-call.s3.UploadPart", stop_after_first_part)
    with pytest.raises(Exception):  # noqa: B017 - any transport error will do
        upload_file(client, payload, bucket="midway", key="final.csv", acl="private", content_type="text/csv")
    client.meta.events.unregister("after-call.s3.UploadPart", stop_after_first_part)

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()  # same process, so moto still holds what reached it before the outage
    try:
        listed = client.list_objects_v2(Bucket="midway").get("Contents", [])
        assert listed == [], "nothing visible at the final key"
        uploaded = upload_file(
            client, payload, bucket="midway", key="final.csv", acl="private", content_type="text/csv"
        )
        assert client.list_multipart_uploads(Bucket="midway").get("Uploads", []) == [], "no dangling parts"
        body = client.get_object(Bucket="midway", Key="final.csv")["Body"].read()
        assert hashlib.sha256(body).hexdigest() == uploaded.sha256 and len(body) == 40 * 1024 * 1024
    finally:
        server.stop()


def test_export_with_s3_down_fails_then_reruns_to_the_same_key(db: Database, s3: Any, settings: Settings):
    seed_campaign(db, campaign_id="s3down", n_entries=50, seed=4)
    record = request_export(db, "s3down", "entries")
    result = run_export(record, s3_endpoint_url=f"http://127.0.0.1:{free_port()}")  # nothing listens there
    assert not result.success
    failed = ExportStore(db).get(record["_id"])
    assert failed is not None and failed["status"] == FAILED and failed["error"]["message"]
    assert s3.list_objects_v2(Bucket=settings.exports_bucket, Prefix="entries/s3down/").get("Contents", []) == []

    assert run_export(record).success  # S3 is back: the run's resources use the test's server
    done = ExportStore(db).get(record["_id"])
    assert done is not None and done["status"] == FINISHED and done["count"] == 50
    objects = s3.list_objects_v2(Bucket=settings.exports_bucket, Prefix="entries/s3down/")["Contents"]
    assert [o["Key"] for o in objects] == [done["key"]], "the re-run wrote its own key and nothing else"
    rows = read_csv(s3.get_object(Bucket=settings.exports_bucket, Key=done["key"])["Body"].read())
    assert len(rows) == 50
