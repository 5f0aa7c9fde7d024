"""Destination delivery (SPEC §13) by its sensor and its runs, against the suite's MongoDB-protocol and S3 servers, a
real sshd and gpg: FINISHED exports' files reach the partner, failures end with a plain reason, retries follow the
clock, a claim lost with its run is taken over and never recorded.

Time is driven by an injectable clock (the retry schedule, the leases), never by sleeping. `tick_and_run` is a
sensor tick, then what each run it requests does (`run_attempt`); one test runs the job itself.
"""

from __future__ import annotations

import hashlib
import io
import logging
import tempfile
import zipfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance, SensorResult, build_sensor_context
from pymongo.database import Database

from devstack.seed import seed_campaign
from export_core.destination_store import (
    DELIVERIES,
    RETRY_DELAYS,
    DestinationStore,
    parse_destination,
)
from export_core.destinations.sftp import generate_key_pair
from export_core.records import ExportStore, RequestOptions
from export_core.secrets import SecretBox
from export_core.settings import Settings
from export_core.webhooks import WebhookStore, ensure_indexes
from export_pipelines.deliveries import TickReport, attempt_claimed, deliver
from export_pipelines.destination_delivery import (
    DELIVERY_ID_TAG,
    DELIVERY_TAG,
    DESTINATION_REMOVED,
    EXPORT_DELETED,
    JOB_NAME,
    LAUNCH_LEASE,
    LEASE_MARGIN,
    MIN_ATTEMPT_SECONDS,
    attempt_seconds,
    build_destination_job,
    build_destination_sensor,
    destination_channel,
    launch_due,
    run_attempt,
)
from export_pipelines.jobs import QUEUE_TAG
from export_pipelines.resources import MongoResource
from export_pipelines.webhook_delivery import store_deliveries as store_webhook_deliveries
from tests.partner_bucket import PARTNER_REGION, partner_bucket_fixture  # noqa: F401 (the fixture)
from tests.pgp_keys import PgpKey, pgp_key_pair_fixture  # noqa: F401 (the fixture)
from tests.pipelines.clock import Clock, clock_fixture  # noqa: F401 (the fixture)
from tests.pipelines.helpers import request_export, run_export
from tests.sftp_server import SftpServer, sftp_account_fixture, sftp_server_fixture  # noqa: F401 (the fixtures)

CAMPAIGN = "c-dest"


@pytest.fixture
def private(settings: Settings) -> Settings:
    """WEBHOOK_ALLOW_PRIVATE=1: the sshd is on 127.0.0.1."""
    return settings.model_copy(update={"webhook_allow_private": True})


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where deliveries make their scratch folders (the system's temporary folder, here the test's)."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@dataclass
class Ran:
    stored: int = 0
    attempted: int = 0
    delivered: int = 0


def _quiet(_: str) -> None:
    pass


class World:
    """Destinations, FINISHED exports whose objects are in our bucket, and the channel the sensor builds."""

    def __init__(self, db: Database, s3: Any, settings: Settings, secret_box: SecretBox) -> None:
        self.db, self.s3, self.settings, self.secret_box = db, s3, settings, secret_box
        self.exports, self.destinations = ExportStore(db), DestinationStore(db)
        self.exports.ensure_indexes()
        self.destinations.ensure_indexes()
        ensure_indexes(db)

    def destination(self, **body: Any) -> str:
        request = parse_destination(body)
        created = self.destinations.create(
            campaign_id=CAMPAIGN, request=request, created_by="u", secret_box=self.secret_box
        )
        return str(created["id"])

    def sftp(self, server: SftpServer, **change: Any) -> str:
        body = {
            "type": "sftp", "host": server.host, "port": server.port, "username": server.account.username,
            "path": "/upload", "hostKey": server.known_hosts_line(), "password": server.account.password,
        }  # fmt: skip
        return self.destination(**{**body, **change})

    def finished(self, destinations: list[str], body: bytes = b"code,marketId\r\nA1,m1\r\n") -> dict[str, Any]:
        record = self.exports.create(
            campaign_id=CAMPAIGN, campaign_name="Tour", export_type="codes", requester_user_id="u",
            options=RequestOptions(destinations=tuple(destinations)),
        ).record  # fmt: skip
        key = f"codes/{CAMPAIGN}/{record['id']}/Tour - Codes.csv"
        self.s3.put_object(Bucket=self.settings.exports_bucket, Key=key, Body=body)
        sha = hashlib.sha256(body).hexdigest()
        meta = {"bucket": self.settings.exports_bucket, "objects": [{"key": key, "bytes": len(body), "sha256": sha}]}
        self.exports.mark_triggered(record["id"], run_id="r1", preliminary_count=None)
        return self.exports.mark_finished(record["id"], key=key, count=1, meta=meta)

    def channel(self, settings: Settings | None = None) -> Any:
        return destination_channel(self.db, settings=settings or self.settings, secret_box=self.secret_box)

    def tick(self, settings: Settings, clock: Clock) -> TickReport:
        """One sensor tick: store, announce, claim and request runs (none of which runs here)."""
        channel = self.channel(settings)
        instance = DagsterInstance.ephemeral()
        return deliver(channel, clock=clock, launch=lambda: launch_due(channel, instance, clock, _quiet))[0]

    def run(self, request: Any, settings: Settings, clock: Clock) -> dict[str, Any] | None:
        """What the run `request` asks for does (`run_attempt`)."""
        config = request.run_config["ops"]["deliver_to_destination"]["config"]
        return run_attempt(
            self.db, config["delivery_id"], config["claim"],
            settings=settings, secret_box=self.secret_box, clock=clock, log=_quiet,
        )  # fmt: skip

    def tick_and_run(self, settings: Settings, clock: Clock) -> Ran:
        """Ticks, each followed by the runs it requested, until one requests none."""
        ran = Ran()
        while True:
            report = self.tick(settings, clock)
            ran.stored += report.stored
            if not report.run_requests:
                return ran
            for request in report.run_requests:
                recorded = self.run(request, settings, clock)
                ran.attempted += recorded is not None
                ran.delivered += bool(recorded and recorded.get("status") == "delivered")

    def delivery(self, record: dict[str, Any]) -> dict[str, Any]:
        [found] = list(self.db[DELIVERIES].find({"exportId": record["id"]}))
        return found

    def shown(self, record: dict[str, Any]) -> list[dict[str, Any]]:
        """GET …/exports/{id}/deliveries."""
        return self.destinations.deliveries(self.exports.get(record["id"]) or {})

    def events(self, record: dict[str, Any]) -> list[dict[str, Any]]:
        return [e for e in (self.exports.get(record["id"]) or {}).get("notify", []) if "delivery" in e]


@pytest.fixture
def world(db: Database, s3: Any, settings: Settings, secret_box: SecretBox) -> World:
    db["campaigns"].insert_one({"_id": CAMPAIGN, "name": "Tour"})
    return World(db, s3, settings, secret_box)


def test_a_finished_export_reaches_the_sftp_server_and_says_so(
    world: World, private: Settings, sftp_server: SftpServer, clock: Clock, scratch: Path
):
    destination = world.sftp(sftp_server)
    body = b"code,marketId\r\n" + b"ABCDEF123456,m1\r\n" * 20_000
    record = world.finished([destination], body)
    assert [e["destinationId"] for e in record["deliver"]] == [destination], "stored with the end, in one update"

    report = world.tick_and_run(private, clock)

    assert (report.stored, report.attempted, report.delivered) == (1, 1, 1)
    name = f"Tour - Codes_{record['id']}.csv"
    assert sftp_server.local(f"/upload/{name}").read_bytes() == body, "the bytes of the S3 file"
    assert [p.name for p in sftp_server.upload_dir.iterdir()] == [name], "no partial file left"
    assert list(scratch.iterdir()) == [], "no scratch file left"
    [shown] = world.shown(record)
    assert shown["status"] == "delivered" and shown["remotePath"] == f"/upload/{name}"
    assert (shown["bytes"], shown["sha256"]) == (len(body), hashlib.sha256(body).hexdigest())
    assert [a["error"] for a in shown["attempts"]] == [None]
    assert world.exports.get(record["id"])["deliver"] == []  # type: ignore[index]
    [event] = world.events(record)
    assert event["event"] == "export.delivered" and event["delivery"]["remotePath"] == f"/upload/{name}"
    [went] = (world.exports.get(record["id"]) or {})["deliveredTo"]  # what a CCPA deletion will list
    assert (went["destinationId"], went["type"], went["remotePaths"]) == (destination, "sftp", [f"/upload/{name}"])
    assert world.tick_and_run(private, clock).attempted == 0, "delivered once"


def test_the_delivered_event_reaches_a_webhook_subscriber_with_the_delivery(
    world: World, private: Settings, sftp_server: SftpServer, clock: Clock
):
    WebhookStore(world.db).create(
        campaign_id=CAMPAIGN, url="https://8.8.8.8/hooks", events=["export.delivered", "export.delivery_failed"],
        created_by="u", secret_box=world.secret_box,
    )  # fmt: skip
    good, removed = world.sftp(sftp_server), world.sftp(sftp_server)
    record = world.finished([good, removed])
    world.destinations.delete(CAMPAIGN, removed)
    world.tick_and_run(private, clock)
    assert store_webhook_deliveries(world.db, clock=clock) == 2, "one per ended delivery (none for export.finished)"
    bodies = {d["event"]: d["body"] for d in world.db["webhook_deliveries"].find({"exportId": record["id"]})}
    assert set(bodies) == {"export.delivered", "export.delivery_failed"}
    assert (
        f'"destinationId":"{good}"' in bodies["export.delivered"]
        and '"status":"delivered"' in bodies["export.delivered"]
    )
    assert DESTINATION_REMOVED in bodies["export.delivery_failed"]


def test_a_wrong_host_key_gets_nothing_and_the_delivery_fails_at_once_with_a_sentence(
    world: World, private: Settings, sftp_server: SftpServer, clock: Clock
):
    pinned = " ".join(generate_key_pair()[1].split()[:2])
    record = world.finished([world.sftp(sftp_server, hostKey=pinned)])
    report = world.tick_and_run(private, clock)
    assert (report.attempted, report.delivered) == (1, 0)
    assert list(sftp_server.upload_dir.iterdir()) == [], "nothing written"
    [shown] = world.shown(record)
    assert shown["status"] == "failed" and shown["nextAttemptAt"] is None and len(shown["attempts"]) == 1
    assert shown["reason"].startswith(f"The SFTP server at {sftp_server.address} showed host key SHA256:")
    assert shown["reason"].endswith("; nothing was sent.")
    assert world.exports.get(record["id"])["status"] == "FINISHED"  # type: ignore[index]
    assert [e["event"] for e in world.events(record)] == ["export.delivery_failed"]


def test_a_server_that_is_down_is_retried_and_delivered_once_it_is_back(
    world: World, private: Settings, sftp_server: SftpServer, clock: Clock
):
    record = world.finished([world.sftp(sftp_server)])
    sftp_server.stop()
    world.tick_and_run(private, clock)
    [shown] = world.shown(record)
    assert shown["status"] == "pending" and "the connection was refused" in shown["attempts"][0]["error"]
    assert world.events(record) == [], "not ended yet"
    sftp_server.start()
    clock.advance(RETRY_DELAYS[0] - timedelta(seconds=1))
    assert world.tick_and_run(private, clock).attempted == 0, "not due yet"
    clock.advance(timedelta(seconds=2))
    assert world.tick_and_run(private, clock).delivered == 1
    [shown] = world.shown(record)
    assert shown["status"] == "delivered" and [a["error"] is None for a in shown["attempts"]] == [True, False]
    assert sftp_server.local(str(shown["remotePath"])).exists()


def test_a_run_that_never_started_or_died_mid_transfer_is_launched_again_and_ends_once(
    world: World, private: Settings, sftp_server: SftpServer, clock: Clock
):
    WebhookStore(world.db).create(
        campaign_id=CAMPAIGN, url="https://8.8.8.8/hooks", events=["export.delivered"], created_by="u",
        secret_box=world.secret_box,
    )  # fmt: skip
    record = world.finished([world.sftp(sftp_server)])
    [never_started] = world.tick(private, clock).run_requests  # its run was lost (the stack killed)
    assert never_started.job_name == JOB_NAME and never_started.tags[DELIVERY_ID_TAG] == world.delivery(record)["_id"]
    assert world.tick(private, clock).run_requests == [], "claimed: no second run while the first may start"
    clock.advance(LAUNCH_LEASE + timedelta(seconds=1))
    [taking_over] = world.tick(private, clock).run_requests
    assert taking_over.run_key != never_started.run_key, "a new claim, a new run_key"
    assert world.run(never_started, private, clock) is None, "the stale run starts late: it attempts nothing"

    # The next run takes its lease for the attempt, then dies mid-transfer: nothing is recorded.
    claim = taking_over.run_config["ops"]["deliver_to_destination"]["config"]["claim"]
    seconds = attempt_seconds(world.exports.get(record["id"]), private.delivery_attempt_max_seconds)
    held = world.channel(private).queue.extend(
        world.delivery(record)["_id"], claim, clock() + timedelta(seconds=seconds) + LEASE_MARGIN
    )
    assert held is not None
    clock.advance(timedelta(seconds=seconds))
    assert world.tick(private, clock).run_requests == [], "leased while its transfers may still run"
    clock.advance(LEASE_MARGIN + timedelta(seconds=1))
    [again] = world.tick(private, clock).run_requests
    assert world.run(taking_over, private, clock) is None, "the dead run's claim records nothing"
    assert (world.run(again, private, clock) or {}).get("status") == "delivered"
    assert world.tick(private, clock).run_requests == [] and world.delivery(record)["status"] == "delivered"
    assert len(world.delivery(record)["attempts"]) == 1, "one attempt recorded"
    assert [e["event"] for e in world.events(record)] == ["export.delivered"], "announced once"
    assert len((world.exports.get(record["id"]) or {})["deliveredTo"]) == 1


def test_an_end_a_crash_left_unannounced_is_announced_once_by_the_next_tick(
    world: World, private: Settings, sftp_server: SftpServer, clock: Clock
):
    record = world.finished([world.sftp(sftp_server)])
    world.tick_and_run(private, clock)
    queue = world.channel(private).queue
    queue.collection.update_one({"_id": world.delivery(record)["_id"]}, {"$set": {"announced": False}})
    world.tick(private, clock)  # the run was killed after announcing, before marking it announced
    assert world.delivery(record)["announced"] is True
    assert [e["event"] for e in world.events(record)] == ["export.delivered"], "not twice"
    assert len((world.exports.get(record["id"]) or {})["deliveredTo"]) == 1
    assert store_webhook_deliveries(world.db, clock=clock) == 0, "no subscriber: drained"
    world.exports.collection.update_one({"_id": record["id"]}, {"$set": {"deliveredTo": []}})
    queue.collection.update_one({"_id": world.delivery(record)["_id"]}, {"$set": {"announced": False}})
    world.tick(private, clock)  # killed before announcing: announced now
    assert len((world.exports.get(record["id"]) or {})["deliveredTo"]) == 1


def test_a_large_file_gets_an_attempt_and_a_lease_longer_than_a_sensor_tick(
    world: World, private: Settings, sftp_server: SftpServer, clock: Clock
):
    record = world.finished([world.sftp(sftp_server)])
    large = {"meta": {"objects": [{"key": "k", "bytes": 250 * 1024 * 1024}]}}
    assert attempt_seconds(large, 3600) == MIN_ATTEMPT_SECONDS + 1000, "250 MiB at 256 KiB/s, plus a minute"
    assert attempt_seconds(large, 600) == 600, "at most DELIVERY_ATTEMPT_MAX_SECONDS"
    assert attempt_seconds(record, 3600) == pytest.approx(MIN_ATTEMPT_SECONDS, abs=1)
    [request] = world.tick(private, clock).run_requests
    slow = private.model_copy(update={"delivery_attempt_max_seconds": 3600})
    world.exports.collection.update_one({"_id": record["id"]}, {"$set": {"meta.objects.0.bytes": 250 * 1024 * 1024}})
    queue, delivery_id = world.channel(private).queue, world.delivery(record)["_id"]
    config = request.run_config["ops"]["deliver_to_destination"]["config"]
    seconds = attempt_seconds(world.exports.get(record["id"]), 3600)
    held = queue.extend(delivery_id, config["claim"], clock() + timedelta(seconds=seconds) + LEASE_MARGIN)
    assert held is not None and held["nextAttemptAt"] - clock() > timedelta(minutes=17), "far past a 60 s tick"
    assert world.run(request, slow, clock) is not None, "the run holds it"


def test_an_attempt_that_runs_out_of_time_stops_and_leaves_nothing(
    world: World, private: Settings, sftp_server: SftpServer, clock: Clock, scratch: Path
):
    record = world.finished([world.sftp(sftp_server)], b"x" * 2_000_000)
    channel = world.channel(private)
    channel.store_new(clock, 10)
    [due] = channel.queue.due(clock(), 10)
    assert channel.queue.claim(due, clock(), LAUNCH_LEASE)
    attempt_claimed(channel, due, channel.queue.claim_number(due), 0.0, clock=clock, log=_quiet)
    [shown] = world.shown(record)
    assert shown["status"] == "pending" and "within the time" in shown["attempts"][0]["error"]
    assert list(sftp_server.upload_dir.iterdir()) == [] and list(scratch.iterdir()) == []


def test_s3_with_pgp_and_a_deleted_export(
    world: World, private: Settings, clock: Clock, partner_bucket: str, pgp_key_pair: PgpKey, tmp_path: Path
):
    destination = world.destination(
        type="s3", bucket=partner_bucket, prefix="in", region=PARTNER_REGION, pgpPublicKey=pgp_key_pair.public_armored
    )
    body = b"code\r\nSECRET-CODE-1\r\n"
    record, deleted = world.finished([destination], body), world.finished([destination])
    world.exports.begin_deletion([deleted["id"]], by="compliance", audit_id="a1", source="api")
    world.tick_and_run(private, clock)

    [shown] = world.shown(record)
    key = f"in/Tour - Codes_{record['id']}.csv.pgp"
    assert shown["status"] == "delivered" and shown["remotePath"] == f"s3://{partner_bucket}/{key}"
    from export_core.destination_delivery import Reach, s3_client

    partner = s3_client(world.destinations.get(CAMPAIGN, destination) or {}, Reach.of(private))
    sent = tmp_path / "sent.pgp"
    sent.write_bytes(partner.get_object(Bucket=partner_bucket, Key=key)["Body"].read())
    assert pgp_key_pair.decrypt(sent) == body and shown["sha256"] == hashlib.sha256(sent.read_bytes()).hexdigest()
    [refused] = world.shown(deleted)
    assert refused["status"] == "failed" and refused["reason"] == EXPORT_DELETED


def test_an_export_skipped_empty_has_no_delivery(world: World, private: Settings, clock: Clock):
    destination = world.destination(type="s3", bucket="partner-drop", region=PARTNER_REGION)
    record = world.exports.create(
        campaign_id=CAMPAIGN, campaign_name="Tour", export_type="codes", requester_user_id="u",
        options=RequestOptions(destinations=(destination,), skip_empty=True),
    ).record  # fmt: skip
    world.exports.mark_triggered(record["id"], run_id="r1", preliminary_count=None)
    finished = world.exports.mark_finished(record["id"], key=None, count=0, meta={"skipped": "empty"})
    assert "deliver" not in finished
    assert world.tick_and_run(private, clock).stored == 0 and world.shown(record) == []


def test_no_secret_reaches_a_log_line_the_sensor_or_a_stored_document(
    world: World, private: Settings, sftp_server: SftpServer, clock: Clock, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)  # every logger: pymongo's commands, paramiko's transport, dagster's
    password = sftp_server.account.password
    key_destination = world.destination(
        type="sfmc", host=sftp_server.host, port=sftp_server.port, username=sftp_server.account.username,
        path="/upload", hostKey=sftp_server.fingerprint(), generateKey=True,
    )  # fmt: skip
    private_key = world.destinations.login_secrets(key_destination, world.secret_box)["privateKey"]
    sftp_server.authorize(str((world.destinations.get(CAMPAIGN, key_destination) or {})["publicKey"]))
    record = world.finished([world.sftp(sftp_server), world.sftp(sftp_server, password=password + "-wrong"),
                             key_destination])  # fmt: skip
    job = build_destination_job(settings=private, secret_box=world.secret_box, clock=clock)
    sensor = build_destination_sensor(settings=private, secret_box=world.secret_box, job=job, clock=clock)
    mongo = MongoResource(uri=private.mongodb_uri, database=private.mongodb_db)
    instance = DagsterInstance.ephemeral()
    requests = []
    while True:  # the sensor's ticks, and the Dagster runs they request (two at a time)
        with build_sensor_context(instance=instance, resources={"mongo": mongo}) as context:
            result = sensor(context)
        assert isinstance(result, SensorResult)
        if not result.run_requests:
            break
        for request in result.run_requests:
            tags = {**job.tags, **request.tags}
            assert tags[DELIVERY_TAG] == "destination" and QUEUE_TAG not in tags, "never in the export queue"
            run = job.execute_in_process(
                run_config=request.run_config, instance=instance, resources={"mongo": mongo}, tags=request.tags
            )
            assert run.success and run.dagster_run.tags[DELIVERY_ID_TAG] == request.tags[DELIVERY_ID_TAG]
            requests.append(request)
    assert len(requests) == 3, "one run per delivery"
    statuses = sorted(d["status"] for d in world.shown(record))
    assert statuses == ["delivered", "delivered", "failed"]
    stored = str(list(world.db[DELIVERIES].find())) + str(world.exports.get(record["id"]))
    stored += str(list(world.db["destinations"].find()))
    for secret in (password, password + "-wrong", private_key, private_key.splitlines()[1]):
        assert secret not in caplog.text and secret not in str([r.args for r in caplog.records])
        assert secret not in stored


def test_marketing_cloud_gets_a_real_runs_regional_files_and_another_run_never_collides(
    world: World, private: Settings, sftp_server: SftpServer, clock: Clock
):
    """Exports made by their real Dagster jobs: reminderEmail's ZIP members and autoReminderEmail's CSVs arrive
    under {path}/{region}/ with the bytes our bucket holds, names carrying each export."""
    world.db["campaigns"].delete_one({"_id": CAMPAIGN})  # the seed writes the campaign with its data
    seed_campaign(world.db, campaign_id=CAMPAIGN, n_entries=400, seed=5, countries=("US", "CA", "GB"))
    sfmc = world.destination(
        type="sfmc", host=sftp_server.host, port=sftp_server.port, username=sftp_server.account.username,
        path="/upload", hostKey=sftp_server.known_hosts_line(), password=sftp_server.account.password,
    )  # fmt: skip
    options = RequestOptions(destinations=(sfmc,))
    runs = []
    for export_type in ("reminderEmail", "reminderEmail", "autoReminderEmail"):  # one after the other: no dedupe
        runs.append(request_export(world.db, CAMPAIGN, export_type, options=options))
        assert run_export(runs[-1], max_rows=100).success
    assert world.tick_and_run(private, clock).delivered == 3

    first = world.exports.get(runs[0]["_id"]) or {}
    archive = zipfile.ZipFile(
        io.BytesIO(world.s3.get_object(Bucket=first["meta"]["bucket"], Key=first["key"])["Body"].read())
    )
    members = [f["name"] for f in first["meta"]["files"]]
    assert {m.split("/")[0] for m in members} == {"NA", "UK"} and len(members) > 2, "regions, locales, segments"
    for member in members:
        region, name = member.split("/")
        sent = sftp_server.local(f"/upload/{region}/{name.removesuffix('.csv')}_{first['_id']}.csv")
        assert sent.read_bytes() == archive.read(member)
    assert not list(sftp_server.upload_dir.glob("*.zip")), "not the ZIP"
    second = {p.name for p in sftp_server.upload_dir.glob("NA/*") if runs[1]["_id"] in p.name}
    assert second and all(first["_id"] not in name for name in second), "another run's own files beside"

    auto = world.exports.get(runs[2]["_id"]) or {}
    for key, region in zip(auto["key"], ("NA", "UK"), strict=True):
        sent = sftp_server.local(f"/upload/{region}/{key.rpartition('/')[2]}")
        assert sent.read_bytes() == world.s3.get_object(Bucket=auto["meta"]["bucket"], Key=key)["Body"].read()
    shown = world.shown(auto)[0]
    assert shown["remotePath"] == "/upload" and len(shown["files"]) == 2 and shown["sha256"] is None
