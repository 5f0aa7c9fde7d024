"""Webhook delivery (SPEC §11) against the suite's MongoDB-protocol server and a real receiver on 127.0.0.1.

Time is driven by an injectable clock (the retry schedule), never by sleeping; signatures carry the
real time, so the receiver's `standardwebhooks` verifier (5 minutes' tolerance) checks them for real.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from cryptography.fernet import Fernet
from dagster import DagsterInstance, SensorResult, build_sensor_context
from pymongo.database import Database

from export_core import outbox, webhooks
from export_core.records import ExportStore, utcnow
from export_core.schedule_store import ScheduleStore, schedule_view
from export_core.schedules import parse_schedule
from export_core.secrets import SecretBox
from export_core.settings import Settings
from export_core.views import iso_utc
from export_core.vocabulary import WEBHOOK_EVENTS
from export_pipelines.deliveries import LEASE, Channel, attempt_due, deliver
from export_pipelines.resources import MongoResource
from export_pipelines.schedule_ticks import evaluate_schedules
from export_pipelines.webhook_delivery import build_webhook_sensor, store_deliveries, webhook_channel
from tests.conftest import free_port
from tests.pipelines.clock import Clock, clock_fixture  # noqa: F401 (the fixture)
from tests.webhook_receiver import Receiver, receiver_fixture  # noqa: F401 (the fixture)

CAMPAIGN = "c-hooks"


@pytest.fixture
def store(db: Database) -> ExportStore:
    store = ExportStore(db)
    store.ensure_indexes()
    webhooks.ensure_indexes(db)
    db["campaigns"].insert_one({"_id": CAMPAIGN, "name": "Hook Tour"})
    return store


def secret_box() -> SecretBox:
    """SECRETS_KEY's box, as the code location builds it from the environment."""
    return SecretBox.from_settings(Settings.from_env())


def channel(db: Database, *, allow_private: bool = True) -> Channel:
    """The webhook channel as the sensor builds it (WEBHOOK_ALLOW_PRIVATE=1 unless told: the receiver is local)."""
    return webhook_channel(db, allow_private=allow_private, secret_box=secret_box())


def subscribe(db: Database, receiver: Receiver, path: str, events: list[str], campaign: str = CAMPAIGN) -> dict:
    created = webhooks.WebhookStore(db).create(
        campaign_id=campaign, url=receiver.url(path), events=events, created_by="tester", secret_box=secret_box()
    )
    receiver.secrets[path] = created["secret"]
    return created


def finished_export(store: ExportStore, export_type: str = "entries", campaign: str = CAMPAIGN) -> dict[str, Any]:
    record = store.create(
        campaign_id=campaign, campaign_name="Hook Tour", export_type=export_type, requester_user_id="u"
    )
    export_id = record.record["id"]
    store.mark_triggered(export_id, run_id="run-1", preliminary_count=3)
    return store.mark_finished(export_id, key=f"entries/{campaign}/{export_id}.csv", count=3, meta={"bytes": 10})


def failed_export(store: ExportStore, export_type: str = "codes") -> dict[str, Any]:
    record = store.create(
        campaign_id=CAMPAIGN, campaign_name="Hook Tour", export_type=export_type, requester_user_id="u"
    )
    store.mark_triggered(record.record["id"], run_id="run-2", preliminary_count=None)
    return store.mark_failed(record.record["id"], message="The database was unavailable; the export can be re-run.")


def delivery(db: Database, message_id: str) -> dict[str, Any]:
    found = db[webhooks.DELIVERIES].find_one({"_id": message_id})
    assert found is not None
    return found


def test_an_ended_export_reaches_its_subscriber_signed_and_verifiable(
    db: Database, store: ExportStore, receiver: Receiver, clock: Clock
):
    sub = subscribe(db, receiver, "/finished", ["export.finished"])
    subscribe(db, receiver, "/failed-only", ["export.failed"])
    record = finished_export(store)
    assert record["notify"][0]["event"] == "export.finished", "the end state wrote its outbox entry in the same update"

    report, _ = deliver(channel(db), clock=clock)

    assert (report.stored, report.attempted, report.delivered) == (1, 1, 1)
    [post] = receiver.posts()
    assert post.path == "/finished" and post.method == "POST"
    assert post.error is None, post.error  # standardwebhooks.Webhook(secret).verify accepted it
    body = post.verified
    assert body["type"] == "export.finished"
    assert body["timestamp"] == record["date"]["finished"].strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    data = body["data"]
    assert data["id"] == record["id"] and data["status"] == "FINISHED" and data["count"] == 3
    assert data["href"] == f"/campaigns/{CAMPAIGN}/exports/{record['id']}"
    assert not {"path", "paths", "notify", "active", "_id", "run"} & set(data), "no signed link, no storage detail"
    assert post.headers["content-type"] == "application/json"
    expected_id = webhooks.delivery_id(sub["id"], record["id"], "export.finished", record["date"]["finished"])
    assert post.message_id == expected_id
    # Connected to the checked address, with the URL's own host in Host.
    assert post.headers["host"] == f"127.0.0.1:{receiver.port}"

    stored = delivery(db, expected_id)
    assert stored["status"] == outbox.DELIVERED and stored["nextAttemptAt"] is None
    [attempt] = stored["attempts"]
    assert attempt["httpStatus"] == 204 and attempt["error"] is None and attempt["at"] == clock.now
    assert db["exports"].find_one({"_id": record["id"]})["notify"] == [], "the outbox entry was drained"

    again, _ = deliver(channel(db), clock=clock)
    assert (again.stored, again.attempted) == (0, 0) and len(receiver.posts()) == 1


def test_the_host_name_of_the_url_is_sent_while_the_checked_address_is_connected_to(
    db: Database, store: ExportStore, receiver: Receiver, clock: Clock
):
    created = webhooks.WebhookStore(db).create(
        campaign_id=CAMPAIGN,
        url=receiver.url("/named", host="localhost"),
        events=["export.finished"],
        created_by="t",
        secret_box=secret_box(),
    )
    receiver.secrets["/named"] = created["secret"]
    finished_export(store)
    deliver(channel(db), clock=clock)
    [post] = receiver.posts()
    assert post.error is None and post.headers["host"] == f"localhost:{receiver.port}"


def test_a_failure_is_retried_later_with_the_same_webhook_id(
    db: Database, store: ExportStore, receiver: Receiver, clock: Clock
):
    subscribe(db, receiver, "/h", ["export.failed"])
    failed_export(store)
    receiver.mode = "fail"
    deliver(channel(db), clock=clock)
    [first] = receiver.posts()
    stored = delivery(db, first.message_id)
    assert stored["status"] == outbox.PENDING
    assert stored["attempts"][0]["httpStatus"] == 500
    assert stored["nextAttemptAt"] == clock.now + timedelta(seconds=5)

    clock.advance(timedelta(seconds=4))
    deliver(channel(db), clock=clock)
    assert len(receiver.posts()) == 1, "not due before its delay"

    receiver.mode = "ok"
    clock.advance(timedelta(seconds=1))
    deliver(channel(db), clock=clock)
    first_again, second = receiver.posts()
    assert second.message_id == first.message_id and second.error is None
    assert second.body == first.body, "the same body on every attempt"
    assert second.verified["type"] == "export.failed"
    assert second.verified["data"]["error"]["message"].startswith("The database was unavailable")
    stored = delivery(db, first.message_id)
    assert stored["status"] == outbox.DELIVERED
    assert [a["httpStatus"] for a in stored["attempts"]] == [500, 204]


def test_a_redirect_is_an_answer_not_followed(db: Database, store: ExportStore, receiver: Receiver, clock: Clock):
    subscribe(db, receiver, "/moved", ["export.finished"])
    finished_export(store)
    receiver.mode = "redirect"
    deliver(channel(db), clock=clock)
    assert [p.path for p in receiver.posts()] == ["/moved"], "nothing was sent to the redirect's target"
    [stored] = db[webhooks.DELIVERIES].find()
    assert stored["status"] == outbox.PENDING
    assert stored["attempts"][0]["httpStatus"] == 302 and stored["attempts"][0]["error"] == webhooks.REDIRECT


def test_a_receiver_that_does_not_answer_in_time_is_a_timeout(
    db: Database, store: ExportStore, receiver: Receiver, clock: Clock
):
    subscribe(db, receiver, "/slow", ["export.finished"])
    finished_export(store)
    receiver.mode, receiver.hang_seconds = "hang", 3.0
    assert attempt_due(channel(db), clock=clock).attempted == 0, "nothing stored yet"
    store_deliveries(db, clock=clock)
    report = attempt_due(channel(db), clock=clock, attempt_timeout=0.5)
    assert (report.attempted, report.delivered) == (1, 0)
    [stored] = db[webhooks.DELIVERIES].find()
    attempt = stored["attempts"][0]
    assert attempt["error"] == webhooks.TIMEOUT and attempt["httpStatus"] is None
    assert attempt["nextAttemptAt"] == clock.now + timedelta(seconds=5)
    assert len(receiver.posts()) == 1, "the request did reach the receiver"


def test_a_closed_port_is_a_connection_error(db: Database, store: ExportStore, clock: Clock):
    webhooks.WebhookStore(db).create(
        campaign_id=CAMPAIGN,
        url=f"http://127.0.0.1:{free_port()}/x",
        events=["export.finished"],
        created_by="t",
        secret_box=secret_box(),
    )
    finished_export(store)
    deliver(channel(db), clock=clock)
    [stored] = db[webhooks.DELIVERIES].find()
    assert stored["attempts"][0]["error"] == webhooks.CONNECTION_ERROR


def test_after_the_last_delay_it_is_given_up_with_the_reason_kept(
    db: Database, store: ExportStore, receiver: Receiver, clock: Clock
):
    subscribe(db, receiver, "/down", ["export.finished"])
    finished_export(store)
    receiver.mode = "fail"
    started = clock.now
    deliver(channel(db), clock=clock)
    for delay in webhooks.RETRY_DELAYS:
        clock.advance(delay)
        deliver(channel(db), clock=clock)
    posts = receiver.posts()
    assert len(posts) == webhooks.MAX_ATTEMPTS == 6
    assert len({p.message_id for p in posts}) == 1 and all(p.error is None for p in posts)
    [stored] = db[webhooks.DELIVERIES].find()
    assert stored["status"] == outbox.GAVE_UP and stored["nextAttemptAt"] is None
    assert stored["reason"] == "Gave up after 6 attempts; the last one failed with HTTP 500."
    times = [a["at"] - started for a in stored["attempts"]]
    assert times == [timedelta(0), *(sum(webhooks.RETRY_DELAYS[: i + 1], timedelta(0)) for i in range(5))]
    assert [a["nextAttemptAt"] is None for a in stored["attempts"]] == [False] * 5 + [True]

    clock.advance(timedelta(days=1))
    deliver(channel(db), clock=clock)
    assert len(receiver.posts()) == 6, "nothing after giving up"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_the_address_is_checked_again_at_each_delivery(
    db: Database, store: ExportStore, receiver: Receiver, clock: Clock, host: str
):
    """A subscription whose host resolves to a private address by the time of the delivery is not sent to."""
    url = f"https://{host}:{receiver.port}/private"  # https: only the address can be what refuses it
    webhooks.WebhookStore(db).create(
        campaign_id=CAMPAIGN, url=url, events=["export.finished"], created_by="t", secret_box=secret_box()
    )
    finished_export(store)
    deliver(channel(db, allow_private=False), clock=clock)
    assert receiver.posts() == [], "no connection was made"
    [stored] = db[webhooks.DELIVERIES].find()
    assert stored["attempts"][0]["error"] == webhooks.ADDRESS_REFUSED


@pytest.mark.parametrize(
    "url", ["http://169.254.169.254/latest/meta-data/", "http://[fe80::1]:8080/", "http://[::ffff:169.254.169.254]/"]
)
def test_link_local_is_never_connected_to_even_when_private_addresses_are_allowed(
    db: Database, store: ExportStore, clock: Clock, url: str
):
    # Written straight to the collection: the API refuses such a URL (tests/api/test_webhooks.py).
    db[webhooks.SUBSCRIPTIONS].insert_one(
        {"_id": "ll", "id": "ll", "campaignId": CAMPAIGN, "url": url, "events": ["export.finished"], "slot": 0,
         "secret": webhooks.new_secret(), "createdAt": clock.now}
    )  # fmt: skip
    finished_export(store)
    deliver(channel(db), clock=clock)
    [stored] = db[webhooks.DELIVERIES].find()
    assert stored["attempts"][0]["error"] == webhooks.ADDRESS_REFUSED


def test_an_end_that_ends_again_before_the_sensor_looks_is_delivered_twice_in_order(
    db: Database, store: ExportStore, receiver: Receiver, clock: Clock
):
    """FAILED, re-run, FINISHED between two ticks: both events go out (the outbox is a list)."""
    subscribe(db, receiver, "/all", list(WEBHOOK_EVENTS))
    failed = failed_export(store, export_type="entries")
    store.mark_triggered(failed["id"], run_id="run-3", preliminary_count=None)
    store.mark_finished(failed["id"], key="k.csv", count=0, meta={})
    deliver(channel(db), clock=clock)
    assert sorted(p.verified["type"] for p in receiver.posts()) == ["export.failed", "export.finished"]
    assert all(p.verified["data"]["status"] == "FINISHED" for p in receiver.posts())


def test_storing_again_after_a_crash_before_the_outbox_was_drained_duplicates_nothing(
    db: Database, store: ExportStore, receiver: Receiver, clock: Clock
):
    sub = subscribe(db, receiver, "/once", ["export.finished"])
    record = finished_export(store)
    # What a tick that died right after storing (before pulling the outbox entry) left behind.
    hooks = webhooks.WebhookStore(db)
    hooks.store_delivery(sub, record, record["notify"][0], clock.now)
    assert db["exports"].find_one({"_id": record["id"]})["notify"], "the entry is still there"
    report, _ = deliver(channel(db), clock=clock)
    assert report.attempted == 1 and len(receiver.posts()) == 1
    assert db[webhooks.DELIVERIES].count_documents({}) == 1


def _evaluate(settings: Settings, clock: Clock, cursor: str | None = None) -> SensorResult:
    """One tick of a freshly built sensor, as a restarted daemon would evaluate it."""
    sensor = build_webhook_sensor(allow_private=True, secret_box=secret_box(), clock=clock)
    mongo = MongoResource(uri=settings.mongodb_uri, database=settings.mongodb_db)
    with build_sensor_context(instance=DagsterInstance.ephemeral(), cursor=cursor, resources={"mongo": mongo}) as ctx:
        result = sensor(ctx)
    assert isinstance(result, SensorResult)
    return result


def test_a_delivery_stored_before_a_crash_is_attempted_by_the_next_sensor_evaluation(
    db: Database, settings: Settings, store: ExportStore, receiver: Receiver, clock: Clock
):
    subscribe(db, receiver, "/restart", ["export.finished"])
    finished_export(store)
    assert store_deliveries(db, clock=clock) == 1  # stored; then the process died before attempting
    result = _evaluate(settings, clock)
    assert "1 delivered" in str(result.skip_reason) and len(receiver.posts()) == 1
    assert receiver.posts()[0].error is None


def test_a_delivery_claimed_by_a_process_that_died_mid_attempt_is_attempted_after_its_lease(
    db: Database, settings: Settings, store: ExportStore, receiver: Receiver, clock: Clock
):
    subscribe(db, receiver, "/lease", ["export.finished"])
    finished_export(store)
    store_deliveries(db, clock=clock)
    hooks = webhooks.WebhookStore(db)
    [due] = hooks.deliveries.due(clock.now, 10)
    assert hooks.deliveries.claim(due, clock.now, LEASE)  # claimed, then the process was killed

    _evaluate(settings, clock)
    assert receiver.posts() == [], "still leased"
    clock.advance(LEASE)
    result = _evaluate(settings, clock, cursor=None)
    assert "1 delivered" in str(result.skip_reason)
    [post] = receiver.posts()
    assert post.message_id == due["_id"] and post.error is None


def test_a_tick_attempts_a_few_at_a_time_and_leaves_what_its_budget_cannot_fit(
    db: Database, store: ExportStore, receiver: Receiver, clock: Clock
):
    """A hanging receiver holds at most `concurrency` attempts; the rest wait for the next tick."""
    subscribe(db, receiver, "/slow", ["export.finished"])
    for _ in range(5):
        finished_export(store)
    store_deliveries(db, clock=clock)
    receiver.mode, receiver.hang_seconds = "hang", 2.0
    report = attempt_due(channel(db), clock=clock, attempt_timeout=0.4, budget_seconds=0.6, concurrency=2)
    assert (report.attempted, report.deferred) == (2, 3)
    pending = list(db[webhooks.DELIVERIES].find({"attempts": []}))
    assert len(pending) == 3 and all(d["nextAttemptAt"] <= clock.now for d in pending), "due again at once"


def test_a_removed_subscription_gets_nothing_more(db: Database, store: ExportStore, receiver: Receiver, clock: Clock):
    sub = subscribe(db, receiver, "/gone", ["export.finished"])
    finished_export(store)
    store_deliveries(db, clock=clock)
    assert webhooks.WebhookStore(db).delete(CAMPAIGN, sub["id"])
    report = attempt_due(channel(db), clock=clock)
    assert report.attempted == 0 and receiver.posts() == []
    assert db[webhooks.DELIVERIES].count_documents({}) == 0


def test_exports_of_other_campaigns_and_unsubscribed_events_are_not_sent(
    db: Database, store: ExportStore, receiver: Receiver, clock: Clock
):
    db["campaigns"].insert_one({"_id": "other", "name": "Other"})
    subscribe(db, receiver, "/mine", ["export.finished"])
    finished_export(store, campaign="other")
    failed_export(store)
    report, _ = deliver(channel(db), clock=clock)
    assert report.stored == 0 and receiver.posts() == []
    assert db["exports"].count_documents({"notify.at": {"$exists": True}}) == 0, "both outbox entries drained"


# -- schedules (SPEC §12) -----------------------------------------------------------------------


def new_schedule(db: Database, **fields: Any) -> tuple[ScheduleStore, dict[str, Any]]:
    schedules = ScheduleStore(db)
    schedules.ensure_indexes()
    body = {"exportType": "codes", "cron": "0 6 * * 1", "timezone": "Europe/Berlin", **fields}
    request = parse_schedule(body, min_interval_minutes=5)
    return schedules, schedules.create(campaign_id=CAMPAIGN, request=request, created_by="u1", limit=20)


def paused_schedule(db: Database, failures: int = 2) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A schedule that paused itself after `failures` failed runs, as the schedule sensor pauses it."""
    schedules, schedule = new_schedule(db)
    failed = []
    for week in range(failures):
        at = schedule["createdAt"] + timedelta(weeks=week + 1)
        run = schedules.queue_run(schedule, at, campaign_name="Hook Tour").record
        failed.append(schedules.exports.mark_failed(run["_id"], message="The database was unavailable."))
    report, _ = evaluate_schedules(db, pause_after=failures)
    assert len(report.paused) == 1
    paused = schedules.schedules.find_one({"_id": schedule["_id"]})
    assert paused is not None and paused["paused"] is True
    return paused, failed


def test_a_schedule_that_paused_itself_reaches_its_subscribers_once_without_storage_fields(
    db: Database, store: ExportStore, receiver: Receiver, clock: Clock
):
    sub = subscribe(db, receiver, "/paused", ["schedule.paused"])
    subscribe(db, receiver, "/failed", ["export.failed"])
    schedule, failed = paused_schedule(db)
    [entry] = schedule["notify"]

    report, _ = deliver(channel(db), clock=clock)

    assert (report.stored, report.delivered) == (3, 3), "one schedule.paused, two export.failed"
    assert len(receiver.posts("/failed")) == 2
    [post] = receiver.posts("/paused")
    assert post.error is None, post.error
    body = post.verified
    assert body["type"] == "schedule.paused" and body["timestamp"] == iso_utc(schedule["pausedAt"])
    data = body["data"]
    assert data == {**schedule_view(schedule), "href": f"/campaigns/{CAMPAIGN}/schedules/{schedule['id']}"}
    assert (data["id"], data["campaignId"], data["exportType"]) == (schedule["id"], CAMPAIGN, "codes")
    assert (data["cron"], data["timezone"], data["paused"]) == ("0 6 * * 1", "Europe/Berlin", True)
    assert data["pausedReason"].startswith("Paused after 2 failed or expired runs in a row")
    assert data["nextRuns"] == [], "a paused schedule does not run"
    assert not {"_id", "slot", "evaluatedUntil", "notify"} & set(data) and "whsec_" not in post.body.decode()
    assert post.message_id == webhooks.delivery_id(sub["id"], schedule["id"], "schedule.paused", entry["at"])

    stored = delivery(db, post.message_id)
    assert stored["status"] == outbox.DELIVERED
    shown = webhooks.delivery_view(stored)
    assert shown["scheduleId"] == schedule["id"] and shown["exportId"] == failed[-1]["id"], "the run that paused it"
    assert db["schedules"].find_one({"_id": schedule["_id"]})["notify"] == [], "the outbox entry was drained"
    again, _ = deliver(channel(db), clock=clock)
    assert (again.stored, again.attempted) == (0, 0) and len(receiver.posts("/paused")) == 1


def test_a_pause_stored_before_a_crash_that_left_the_entry_is_delivered_once(
    db: Database, settings: Settings, store: ExportStore, receiver: Receiver, clock: Clock
):
    sub = subscribe(db, receiver, "/paused", ["schedule.paused"])
    schedule, _ = paused_schedule(db)
    # What a tick that died right after storing (before pulling the outbox entry) left behind.
    webhooks.WebhookStore(db).store_delivery(sub, schedule, schedule["notify"][0], clock.now)
    result = _evaluate(settings, clock)  # the restarted daemon's sensor
    assert "1 delivered" in str(result.skip_reason)
    [post] = receiver.posts("/paused")
    assert post.error is None and post.verified["type"] == "schedule.paused"
    assert db[webhooks.DELIVERIES].count_documents({"event": "schedule.paused"}) == 1
    _evaluate(settings, clock)
    assert len(receiver.posts("/paused")) == 1


def test_schedules_of_other_campaigns_and_export_subscribers_get_no_schedule_paused(
    db: Database, store: ExportStore, receiver: Receiver, clock: Clock
):
    subscribe(db, receiver, "/exports", list(webhooks.EXPORT_EVENTS))
    db["campaigns"].insert_one({"_id": "other", "name": "Other"})
    subscribe(db, receiver, "/other", ["schedule.paused"], campaign="other")
    schedule, _ = paused_schedule(db)
    deliver(channel(db), clock=clock)
    assert receiver.posts("/other") == []
    assert {p.verified["type"] for p in receiver.posts("/exports")} == {"export.failed"}
    assert db["schedules"].find_one({"_id": schedule["_id"]})["notify"] == [], "drained all the same"


def test_the_end_of_a_scheduled_run_carries_its_schedule(
    db: Database, store: ExportStore, receiver: Receiver, clock: Clock
):
    subscribe(db, receiver, "/ends", list(webhooks.EXPORT_EVENTS))
    schedules, schedule = new_schedule(db)
    at = datetime(2026, 3, 2, 5, 0, tzinfo=clock.now.tzinfo)
    tick = schedules.queue_run(schedule, at, campaign_name="Hook Tour").record
    store.mark_triggered(tick["id"], run_id="run-t", preliminary_count=None)
    store.mark_finished(tick["id"], key="codes/k.csv", count=4, meta={})
    manual = schedules.queue_run(schedule, clock.now, campaign_name="Hook Tour", manual=True).record
    store.mark_triggered(manual["id"], run_id="run-m", preliminary_count=None)
    store.mark_expired(manual["id"], message="It ran longer than allowed.")
    by_hand = failed_export(store)

    deliver(channel(db), clock=clock)

    events = {p.verified["data"]["id"]: p.verified for p in receiver.posts("/ends")}
    assert all(p.error is None for p in receiver.posts("/ends"))
    assert events[tick["id"]]["type"] == "export.finished"
    assert events[tick["id"]]["data"]["schedule"] == {"id": schedule["id"], "scheduledFor": "2026-03-02T05:00:00.000Z"}
    assert events[manual["id"]]["type"] == "export.expired"
    assert events[manual["id"]]["data"]["schedule"] == {
        "id": schedule["id"],
        "scheduledFor": iso_utc(clock.now),
        "manual": True,
    }
    assert "schedule" not in events[by_hand["id"]]["data"], "a hand-made request has none"


# -- secrets at rest (SPEC §8) ------------------------------------------------------------------


def legacy_subscription(db: Database, receiver: Receiver, path: str) -> str:
    """A subscription as the version before encrypted secrets stored it: its secret in plain text."""
    secret = webhooks.new_secret()
    db[webhooks.SUBSCRIPTIONS].insert_one(
        {"_id": "legacy", "id": "legacy", "campaignId": CAMPAIGN, "url": receiver.url(path),
         "events": ["export.finished"], "slot": 0, "secret": secret, "createdAt": utcnow()}
    )  # fmt: skip
    receiver.secrets[path] = secret
    return secret


def test_a_plain_secret_from_before_signs_until_migrated_and_the_same_secret_signs_after(
    db: Database, store: ExportStore, receiver: Receiver, clock: Clock
):
    plain = legacy_subscription(db, receiver, "/legacy")
    finished_export(store)
    deliver(channel(db), clock=clock)
    [before] = receiver.posts("/legacy")
    assert before.error is None, "signed with the plain secret it found"

    migrated = webhooks.WebhookStore(db).encrypt_stored_secrets(secret_box(), clock.now)
    assert (migrated.encrypted, migrated.rotated, migrated.unreadable) == (1, 0, [])
    doc = db[webhooks.SUBSCRIPTIONS].find_one({"_id": "legacy"})
    assert doc is not None and "secret" not in doc and doc["secretMigratedAt"] == clock.now
    assert secret_box().decrypt(doc["encryptedSecret"]) == plain
    finished_export(store)
    deliver(channel(db), clock=clock)
    assert [p.error for p in receiver.posts("/legacy")] == [None, None], "the receiver's secret is unchanged"

    again = webhooks.WebhookStore(db).encrypt_stored_secrets(secret_box(), clock.now + timedelta(hours=1))
    assert (again.encrypted, again.rotated, again.unreadable) == (0, 0, [])
    assert db[webhooks.SUBSCRIPTIONS].find_one({"_id": "legacy"}) == doc, "a second run changes nothing"


def test_a_secret_no_key_decrypts_waits_unattempted_and_the_log_says_so_without_it(
    db: Database, store: ExportStore, receiver: Receiver, clock: Clock
):
    lost = Fernet.generate_key().decode()  # a key SECRETS_KEY no longer holds
    created = webhooks.WebhookStore(db).create(
        campaign_id=CAMPAIGN, url=receiver.url("/lost"), events=["export.finished"], created_by="t",
        secret_box=SecretBox([lost]),
    )  # fmt: skip
    receiver.secrets["/lost"] = created["secret"]
    finished_export(store)
    lines: list[str] = []
    report, _ = deliver(channel(db), clock=clock, log=lines.append)
    assert (report.stored, report.attempted) == (1, 0) and receiver.posts() == []
    [waiting] = db[webhooks.DELIVERIES].find()
    assert waiting["status"] == outbox.PENDING and waiting["attempts"] == [], "no attempt burnt"
    assert waiting["nextAttemptAt"] == clock.now + LEASE, "looked at again after its lease"
    assert lines == [
        f"webhook delivery {waiting['_id']} (export.finished, export {waiting['exportId']}, webhook {created['id']})"
        " not attempted: The stored secret cannot be decrypted with any key of SECRETS_KEY."
    ]
    stored = db[webhooks.SUBSCRIPTIONS].find_one({"_id": created["id"]})
    assert stored is not None and stored["encryptedSecret"] not in lines[0] and created["secret"] not in lines[0]

    clock.advance(LEASE)  # the operator put the key back (second: still decrypts)
    mended = webhook_channel(db, allow_private=True, secret_box=SecretBox([Fernet.generate_key().decode(), lost]))
    report, _ = deliver(mended, clock=clock)
    assert report.delivered == 1 and receiver.posts("/lost")[0].error is None


def test_after_a_key_rotation_old_secrets_still_sign_and_new_ones_are_made_with_the_new_key(
    db: Database, store: ExportStore, receiver: Receiver, clock: Clock
):
    old_key = Settings.from_env().secrets_key
    assert old_key is not None
    subscribe(db, receiver, "/old", ["export.finished"])  # SECRETS_KEY=A
    new_key = Fernet.generate_key().decode()
    rotating = SecretBox([new_key, old_key])  # SECRETS_KEY="B,A"
    created = webhooks.WebhookStore(db).create(
        campaign_id=CAMPAIGN, url=receiver.url("/new"), events=["export.finished"], created_by="t",
        secret_box=rotating,
    )  # fmt: skip
    receiver.secrets["/new"] = created["secret"]
    token = db[webhooks.SUBSCRIPTIONS].find_one({"_id": created["id"]})["encryptedSecret"]
    assert SecretBox([new_key]).decrypt(token) == created["secret"], "encrypted with B, the first key"
    finished_export(store)
    deliver(webhook_channel(db, allow_private=True, secret_box=rotating), clock=clock)
    assert [p.error for p in receiver.posts()] == [None, None], "A's secret and B's both sign"

    done = webhooks.WebhookStore(db).encrypt_stored_secrets(rotating, clock.now)
    assert (done.encrypted, done.rotated, done.unreadable) == (0, 1, []), "A's made anew with B"
    finished_export(store)
    deliver(webhook_channel(db, allow_private=True, secret_box=SecretBox([new_key])), clock=clock)
    assert [p.error for p in receiver.posts()] == [None] * 4, "A removed from SECRETS_KEY: everything still signs"
