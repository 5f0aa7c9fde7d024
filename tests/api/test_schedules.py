"""Schedules through the API (SPEC §12) and `since` on an export POST, against the suite's real servers."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pymongo.database import Database
from starlette.testclient import TestClient

from export_api.app import create_app
from export_core.records import ExportStore, utcnow
from export_core.schedule_store import SCHEDULES, ScheduleStore
from export_core.settings import Settings
from tests.api.conftest import CAMPAIGN, EXPORTS, OTHER_CAMPAIGN, LiveServer, TokenFactory, assert_error

SCHEDULES_PATH = f"/campaigns/{CAMPAIGN}/schedules"
DAILY = {"exportType": "entries", "cron": "0 6 * * *"}
NOT_FOUND = "Schedule not found."


def create(client: TestClient, headers: dict[str, str], path: str = SCHEDULES_PATH, **body: Any) -> dict[str, Any]:
    response = client.post(path, json={**DAILY, **body}, headers=headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


def iso(value: str) -> datetime:
    return datetime.fromisoformat(value)


def add_destination(client: TestClient, headers: dict[str, str]) -> str:
    """A destination of the campaign (an S3 one: nothing is reached when it is added)."""
    body = {"type": "s3", "bucket": "partner-drop", "region": "eu-west-1"}
    response = client.post(f"/campaigns/{CAMPAIGN}/destinations", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


@pytest.fixture
def limited(settings: Settings, campaigns: None) -> Iterator[TestClient]:
    """The API with 3 schedules per campaign and 2 PENDING exports per campaign."""
    small = settings.model_copy(update={"max_schedules_per_campaign": 3, "max_pending_per_campaign": 2})
    with TestClient(create_app(small)) as test_client:
        yield test_client


# -- create, list, read -----------------------------------------------------------------------


def test_create_answers_the_schedule_with_its_next_runs_and_list_and_get_show_it(
    client: TestClient, headers: dict[str, str]
):
    before = utcnow()
    destination = add_destination(client, headers)
    created = create(client, headers, timezone="America/New_York", incremental=True, destinations=[destination])
    assert set(created) == {
        "id", "campaignId", "exportType", "format", "cron", "timezone", "incremental", "skipEmpty", "destinations",
        "paused", "pausedReason", "createdBy", "createdAt", "nextRuns",
    }  # fmt: skip
    assert created["campaignId"] == CAMPAIGN and created["createdBy"] == "user-1"
    assert (created["exportType"], created["format"], created["cron"]) == ("entries", "csv", "0 6 * * *")
    assert created["incremental"] is True and created["skipEmpty"] is True, "skipEmpty defaults to incremental"
    assert created["paused"] is False and created["pausedReason"] is None and created["destinations"] == [destination]
    runs = created["nextRuns"]
    assert len(runs) == 5
    for run in runs:
        at, local = iso(run["at"]), iso(run["local"])
        assert run["at"].endswith("Z") and at == local and at > before
        assert local.strftime("%H:%M") == "06:00", "06:00 on New York's wall clock, EDT or EST"
    assert [iso(r["at"]) for r in runs] == sorted(iso(r["at"]) for r in runs)

    listed = client.get(SCHEDULES_PATH, headers=headers)
    assert listed.status_code == 200 and listed.json() == {"schedules": [created]}
    shown = client.get(f"{SCHEDULES_PATH}/{created['id']}", headers=headers)
    assert shown.status_code == 200 and shown.json() == {**created, "runs": []}


def test_defaults_and_the_saved_request(client: TestClient, headers: dict[str, str]):
    created = create(client, headers, exportType="codeWaves", dateKey="1700000000000", cron="15 */2 * * 1-5")
    assert created["timezone"] == "UTC" and created["incremental"] is False and created["skipEmpty"] is False
    assert created["dateKey"] == "1700000000000" and created["destinations"] == []
    assert create(client, headers, format="xlsx", includeAllMarkets=True, skipEmpty=True)["format"] == "xlsx"
    paused = create(client, headers, paused=True)
    assert paused["paused"] is True and paused["nextRuns"] == [], "a paused schedule does not tick"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"exportType": "entries"}, "cron"),
        ({**DAILY, "cron": "61 * * * *"}, "cron"),
        ({**DAILY, "cron": "0 6 * *"}, "cron"),
        ({**DAILY, "cron": "0 0 30 2 *"}, "cron"),
        ({**DAILY, "cron": 6}, "cron"),
        ({**DAILY, "cron": "*/2 * * * *"}, "cron"),
        ({**DAILY, "cron": "0,3 6 * * *"}, "cron"),
        ({**DAILY, "cron": "0,58 0,23 * * *"}, "cron"),  # 23:58 → 00:00 is 2 minutes
        ({**DAILY, "timezone": "Mars/Olympus_Mons"}, "timezone"),
        ({**DAILY, "timezone": ""}, "timezone"),
        ({**DAILY, "exportType": "bogus"}, "exportType"),
        ({"cron": "0 6 * * *"}, "exportType"),
        ({**DAILY, "exportType": "reminderEmail", "format": "xlsx"}, "format"),
        ({**DAILY, "format": "pdf"}, "format"),
        ({**DAILY, "exportType": "fanlist", "incremental": True}, "incremental"),
        ({**DAILY, "exportType": "reminderEmail", "incremental": True}, "incremental"),
        ({**DAILY, "dateKey": "1700000000000"}, "dateKey"),
        ({**DAILY, "exportType": "codeWaves"}, "dateKey"),
        ({**DAILY, "includeAllMarkets": "yes"}, "includeAllMarkets"),
        ({**DAILY, "skipEmpty": "yes"}, "skipEmpty"),
        ({**DAILY, "paused": 1}, "paused"),
        ({**DAILY, "destinations": "d1"}, "destinations"),
        ({**DAILY, "destinations": ["d1", "d1"]}, "destinations"),
        ({**DAILY, "destinations": ["d1"]}, "destinations"),  # not a destination of the campaign
        ({**DAILY, "since": "2027-01-01T00:00:00Z"}, "since"),
        (["not", "an", "object"], "body"),
    ],
)
def test_create_refuses_with_a_400_naming_the_field(
    client: TestClient, headers: dict[str, str], db: Database, body: object, field: str
):
    error = assert_error(client.post(SCHEDULES_PATH, json=body, headers=headers), 400)
    assert error["payload"] == field, error
    assert db[SCHEDULES].count_documents({}) == 0


def test_the_minimum_interval_is_named_in_the_refusal(client: TestClient, headers: dict[str, str]):
    error = assert_error(client.post(SCHEDULES_PATH, json={**DAILY, "cron": "*/4 * * * *"}, headers=headers), 400)
    assert error["message"] == (
        "'cron' runs every 4 minute(s) at times; schedules may run at most every 5 minutes"
        " (SCHEDULE_MIN_INTERVAL_MINUTES)."
    )
    assert create(client, headers, cron="*/5 * * * *")["cron"] == "*/5 * * * *"


def test_malformed_json_and_unknown_campaigns_are_400(
    client: TestClient, headers: dict[str, str], make_token: TokenFactory
):
    assert_error(
        client.post(SCHEDULES_PATH, content=b"{nope", headers=headers), 400, "Request body must be valid JSON."
    )
    stranger = {"Authorization": f"Bearer {make_token(campaigns={'nope': ['REPORT']})}"}
    assert_error(client.post("/campaigns/nope/schedules", json=DAILY, headers=stranger), 400, "Campaign not found.")
    assert_error(client.get("/campaigns/nope/schedules", headers=stranger), 400, "Campaign not found.")


def test_past_the_limit_is_409_per_campaign(limited: TestClient, headers: dict[str, str]):
    ids = [create(limited, headers)["id"] for _ in range(3)]
    refused = limited.post(SCHEDULES_PATH, json=DAILY, headers=headers)
    assert_error(refused, 409, "This campaign already has 3 schedules; remove one before adding another.")
    create(limited, headers, path=f"/campaigns/{OTHER_CAMPAIGN}/schedules")  # the limit is per campaign
    assert limited.delete(f"{SCHEDULES_PATH}/{ids[1]}", headers=headers).status_code == 204
    create(limited, headers)
    assert len(limited.get(SCHEDULES_PATH, headers=headers).json()["schedules"]) == 3


def test_concurrent_creates_never_pass_the_limit(settings: Settings, campaigns: None, headers: dict[str, str]):
    small = settings.model_copy(update={"max_schedules_per_campaign": 3})
    with LiveServer(create_app(small)) as live:

        def post(_: int) -> int:
            return httpx.post(f"{live.url}{SCHEDULES_PATH}", json=DAILY, headers=headers, timeout=30).status_code

        with ThreadPoolExecutor(6) as pool:
            statuses = list(pool.map(post, range(9)))
        listed = httpx.get(f"{live.url}{SCHEDULES_PATH}", headers=headers, timeout=10).json()["schedules"]
    assert sorted(statuses) == [201] * 3 + [409] * 6 and len(listed) == 3


# -- nextRuns across DST ----------------------------------------------------------------------


def next_runs(client: TestClient, headers: dict[str, str], schedule: dict[str, Any], after: str) -> list[Any]:
    response = client.get(f"{SCHEDULES_PATH}/{schedule['id']}", params={"from": after}, headers=headers)
    assert response.status_code == 200, response.text
    return [(run["at"], run["local"]) for run in response.json()["nextRuns"]]


def test_next_runs_from_a_date_follow_new_yorks_wall_clock_across_the_2027_dst_days(
    client: TestClient, headers: dict[str, str]
):
    spring = create(client, headers, cron="30 2 * * *", timezone="America/New_York")
    # 2027-03-14: 02:00 EST jumps to 03:00 EDT; 02:30 does not exist and runs at the gap's end.
    assert next_runs(client, headers, spring, "2027-03-13T12:00:00Z")[:3] == [
        ("2027-03-14T07:00:00Z", "2027-03-14T03:00:00-04:00"),
        ("2027-03-15T06:30:00Z", "2027-03-15T02:30:00-04:00"),
        ("2027-03-16T06:30:00Z", "2027-03-16T02:30:00-04:00"),
    ]
    the_day_before = ("2027-03-13T07:30:00Z", "2027-03-13T02:30:00-05:00")
    assert next_runs(client, headers, spring, "2027-03-13T00:00:00Z")[0] == the_day_before
    # The same instant written with an offset, or without one (UTC).
    for same in ("2027-03-13T07:00:00-05:00", "2027-03-13T12:00:00", "2027-03-13T12:00:00.000+00:00"):
        assert next_runs(client, headers, spring, same)[0] == ("2027-03-14T07:00:00Z", "2027-03-14T03:00:00-04:00")

    fall = create(client, headers, cron="30 1 * * *", timezone="America/New_York")
    # 2027-11-07: 02:00 EDT falls back to 01:00 EST; 01:30 happens twice and runs in its first pass only.
    assert next_runs(client, headers, fall, "2027-11-06T12:00:00Z")[:3] == [
        ("2027-11-07T05:30:00Z", "2027-11-07T01:30:00-04:00"),
        ("2027-11-08T06:30:00Z", "2027-11-08T01:30:00-05:00"),
        ("2027-11-09T06:30:00Z", "2027-11-09T01:30:00-05:00"),
    ]
    # From inside the second pass (01:10 EST), the next run is the next day's.
    assert next_runs(client, headers, fall, "2027-11-07T06:10:00Z")[0] == (
        "2027-11-08T06:30:00Z",
        "2027-11-08T01:30:00-05:00",
    )


def test_next_runs_end_with_the_calendar_and_a_bad_from_is_400(client: TestClient, headers: dict[str, str]):
    daily = create(client, headers)
    assert next_runs(client, headers, daily, "9999-12-29T12:00:00Z") == [
        ("9999-12-30T06:00:00Z", "9999-12-30T06:00:00+00:00"),
        ("9999-12-31T06:00:00Z", "9999-12-31T06:00:00+00:00"),
    ]
    assert next_runs(client, headers, daily, "0257-10-11T08:12:25-02:35")[0] == (
        "0257-10-12T06:00:00Z", "0257-10-12T06:00:00+00:00",
    ), "a year before 1000 keeps its four digits"  # fmt: skip
    path = f"{SCHEDULES_PATH}/{daily['id']}"
    for bad in ("yesterday", "2027-03-14", "2027-13-01T00:00:00Z", "0001-01-01T00:00:00+01:00", "x" * 100):
        error = assert_error(client.get(path, params={"from": bad}, headers=headers), 400)
        assert error["payload"] == "from" and "'from' must be an ISO 8601 date-time" in error["message"]


# -- change, pause, resume, remove ------------------------------------------------------------


def test_patch_changes_cron_and_time_zone_and_refuses_naming_the_field(client: TestClient, headers: dict[str, str]):
    schedule = create(client, headers)
    path = f"{SCHEDULES_PATH}/{schedule['id']}"
    changed = client.patch(path, json={"cron": "0  7 * * *", "timezone": "Europe/London"}, headers=headers)
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["cron"], body["timezone"]) == ("0 7 * * *", "Europe/London")
    assert all(iso(run["local"]).strftime("%H:%M") == "07:00" for run in body["nextRuns"])
    assert body["exportType"] == "entries" and "updatedAt" in body
    destination = add_destination(client, headers)
    patched = client.patch(path, json={"skipEmpty": True, "destinations": [destination]}, headers=headers)
    assert patched.json()["skipEmpty"] is True
    for patch, field in [
        ({"destinations": ["d2"]}, "destinations"),  # not a destination of the campaign
        ({"cron": "* * * * *"}, "cron"),
        ({"cron": "nope"}, "cron"),
        ({"timezone": "Nowhere/Land"}, "timezone"),
        ({"paused": "no"}, "paused"),
        ({"destinations": [1]}, "destinations"),
        ({"exportType": "codes"}, "exportType"),
        ({"incremental": True}, "incremental"),
        ([], "body"),
    ]:
        error = assert_error(client.patch(path, json=patch, headers=headers), 400)
        assert error["payload"] == field, (patch, error)
    shown = client.get(path, headers=headers).json()
    assert (shown["cron"], shown["timezone"], shown["destinations"]) == ("0 7 * * *", "Europe/London", [destination])


def test_pause_then_resume_clears_the_paused_reason(client: TestClient, headers: dict[str, str], db: Database):
    schedule = create(client, headers)
    path = f"{SCHEDULES_PATH}/{schedule['id']}"
    paused = client.patch(path, json={"paused": True}, headers=headers).json()
    assert paused["paused"] is True and paused["pausedReason"] == "Paused by a user." and paused["nextRuns"] == []
    resumed = client.patch(path, json={"paused": False}, headers=headers).json()
    assert resumed["paused"] is False and resumed["pausedReason"] is None and len(resumed["nextRuns"]) == 5

    # Paused by itself after failures (what the schedule sensor does), then resumed by a user.
    store = ScheduleStore(db)
    failed = ExportStore(db).create(
        campaign_id=CAMPAIGN, campaign_name="Summer Tour 2024", export_type="entries", requester_user_id="u"
    )
    store.pause_after_failures(store.get(CAMPAIGN, schedule["id"]) or {}, [failed.record])
    shown = client.get(path, headers=headers).json()
    assert shown["paused"] is True and shown["pausedReason"].startswith("Paused after 1 failed or expired runs")
    assert "notify" not in shown, "the webhook outbox is not shown"
    resumed = client.patch(path, json={"paused": False}, headers=headers).json()
    assert resumed["pausedReason"] is None and resumed["paused"] is False


def test_delete_stops_the_schedule_and_keeps_its_exports(client: TestClient, headers: dict[str, str]):
    schedule = create(client, headers)
    path = f"{SCHEDULES_PATH}/{schedule['id']}"
    record = client.post(f"{path}/run", headers=headers).json()
    removed = client.delete(path, headers=headers)
    assert removed.status_code == 204 and removed.content == b""
    assert client.get(SCHEDULES_PATH, headers=headers).json() == {"schedules": []}
    for method, target in [("GET", path), ("PATCH", path), ("DELETE", path), ("POST", f"{path}/run")]:
        body = {"paused": True} if method == "PATCH" else None
        assert_error(client.request(method, target, json=body, headers=headers), 404, NOT_FOUND)
    kept = client.get(f"{EXPORTS}/{record['id']}", headers=headers)
    assert kept.status_code == 200 and kept.json()["schedule"]["id"] == schedule["id"]


def test_another_campaigns_or_a_missing_schedule_is_404(client: TestClient, headers: dict[str, str], db: Database):
    theirs = create(client, headers, path=f"/campaigns/{OTHER_CAMPAIGN}/schedules")
    for schedule_id in (theirs["id"], "no-such-schedule"):
        path = f"{SCHEDULES_PATH}/{schedule_id}"
        for method, target, body in [
            ("GET", path, None),
            ("PATCH", path, {"paused": True}),
            ("DELETE", path, None),
            ("POST", f"{path}/run", None),
        ]:
            error = assert_error(client.request(method, target, json=body, headers=headers), 404, NOT_FOUND)
            assert error["payload"] == schedule_id
    untouched = db[SCHEDULES].find_one({"_id": theirs["id"]}) or {}
    assert untouched["paused"] is False and db.exports.count_documents({}) == 0


def test_every_operation_needs_report_on_the_campaign(
    client: TestClient, headers: dict[str, str], make_token: TokenFactory
):
    schedule = create(client, headers)
    path = f"{SCHEDULES_PATH}/{schedule['id']}"
    elsewhere = {"Authorization": f"Bearer {make_token(campaigns={OTHER_CAMPAIGN: ['REPORT']})}"}
    read_only = {"Authorization": f"Bearer {make_token(campaigns={CAMPAIGN: ['READ']})}"}
    calls = [
        ("POST", SCHEDULES_PATH, DAILY),
        ("GET", SCHEDULES_PATH, None),
        ("GET", path, None),
        ("PATCH", path, {"paused": True}),
        ("DELETE", path, None),
        ("POST", f"{path}/run", None),
    ]
    for method, target, body in calls:
        for auth in ({}, elsewhere, read_only):
            response = client.request(method, target, json=body, headers=auth)
            assert_error(response, 401)  # SPEC §6: a token without REPORT on the campaign is a 401
            assert response.headers["www-authenticate"] == "Bearer"
    supreme = {"Authorization": f"Bearer {make_token(campaigns={}, supreme=True)}"}
    assert client.get(path, headers=supreme).status_code == 200
    shown = client.get(path, headers=headers).json()
    assert shown["paused"] is False and shown["runs"] == [], "nothing changed"
    assert len(client.get(SCHEDULES_PATH, headers=headers).json()["schedules"]) == 1


# -- runs -------------------------------------------------------------------------------------


def test_run_now_queues_a_record_marked_manual_through_the_ordinary_queue(
    client: TestClient, headers: dict[str, str], make_token: TokenFactory
):
    schedule = create(client, headers, format="parquet", incremental=True, paused=True)
    path = f"{SCHEDULES_PATH}/{schedule['id']}"
    someone = {"Authorization": f"Bearer {make_token(sub='user-2')}", "X-Request-ID": "run-now-1"}
    before = utcnow()
    response = client.post(f"{path}/run", headers=someone)
    assert response.status_code == 202, response.text
    record = response.json()
    assert record["status"] == "PENDING" and record["campaignName"] == "Summer Tour 2024"
    assert (record["exportType"], record["format"], record["incremental"], record["skipEmpty"]) == (
        "entries", "parquet", True, True,
    )  # fmt: skip
    assert record["schedule"]["id"] == schedule["id"] and record["schedule"]["manual"] is True
    assert before - timedelta(seconds=1) <= iso(record["schedule"]["scheduledFor"]) <= utcnow()
    assert record["requesterUserId"] == "user-2" and record["requestId"] == "run-now-1"
    assert "active" not in record and "pendingSlot" not in record

    second = client.post(f"{path}/run", headers=headers).json()
    assert second["id"] != record["id"], "each run now is its own record"
    runs = client.get(path, headers=headers).json()["runs"]
    assert [r["exportId"] for r in runs] == [second["id"], record["id"]], "newest first"
    assert runs[1] == {
        "scheduledFor": record["schedule"]["scheduledFor"],
        "exportId": record["id"],
        "status": "PENDING",
        "count": None,
        "outcome": "queued",
        "manual": True,
    }
    listed = client.get(EXPORTS, headers=headers).json()["exports"]
    assert {r["id"] for r in listed} == {record["id"], second["id"]}
    assert all(r["schedule"]["manual"] and r["incremental"] and r["skipEmpty"] for r in listed)


def test_run_now_counts_against_the_pending_limit(limited: TestClient, headers: dict[str, str]):
    schedule = create(limited, headers)
    assert limited.post(EXPORTS, json={"exportType": "codes"}, headers=headers).status_code == 201
    assert limited.post(f"{SCHEDULES_PATH}/{schedule['id']}/run", headers=headers).status_code == 202
    refused = limited.post(f"{SCHEDULES_PATH}/{schedule['id']}/run", headers=headers)
    assert_error(refused, 429, "This campaign already has 2 queued exports; please wait for some to start.")
    assert refused.headers["retry-after"] == "60"


def test_runs_show_each_outcome_and_records_show_their_schedule_fields(
    client: TestClient, headers: dict[str, str], db: Database
):
    schedule = create(client, headers, incremental=True)
    path = f"{SCHEDULES_PATH}/{schedule['id']}"
    store, exports = ScheduleStore(db), ExportStore(db)
    doc = store.get(CAMPAIGN, schedule["id"]) or {}
    ticks = [datetime(2027, 1, day, 6, tzinfo=UTC) for day in (1, 2, 3, 4)]
    window = {"from": "2026-12-31T06:00:00.000Z", "until": "2027-01-01T06:00:00.000Z"}
    skipped = store.queue_run(doc, ticks[0], campaign_name="Summer Tour 2024").record["id"]
    exports.mark_triggered(skipped, run_id="r1", preliminary_count=None)
    exports.mark_finished(skipped, key=None, count=0, meta={"skipped": "empty"}, window=window)
    failed = store.queue_run(doc, ticks[1], campaign_name="Summer Tour 2024").record["id"]
    exports.mark_failed(failed, message="The database was unavailable; the export can be re-run.")
    store.record_missed(doc, [ticks[2]])
    delivered = store.queue_run(doc, ticks[3], campaign_name="Summer Tour 2024").record["id"]
    exports.mark_triggered(delivered, run_id="r2", preliminary_count=None)
    exports.mark_finished(delivered, key="entries/k.csv", count=7, meta={})

    runs = client.get(path, headers=headers).json()["runs"]
    assert [(r["scheduledFor"], r["outcome"], r["count"]) for r in runs] == [
        ("2027-01-04T06:00:00.000Z", "delivered", 7),
        ("2027-01-03T06:00:00.000Z", "missed", None),
        ("2027-01-02T06:00:00.000Z", "failed", None),
        ("2027-01-01T06:00:00.000Z", "skipped_empty", 0),
    ]
    assert runs[1]["exportId"] is None and runs[3]["window"] == window

    shown = client.get(f"{EXPORTS}/{skipped}", headers=headers).json()
    assert shown["schedule"] == {"id": schedule["id"], "scheduledFor": "2027-01-01T06:00:00.000Z"}
    assert shown["window"] == window and shown["incremental"] is True and shown["skipEmpty"] is True
    assert shown["meta"] == {"skipped": "empty"} and "path" not in shown


# -- `since` on a one-off export --------------------------------------------------------------


@pytest.mark.parametrize(
    ("since", "stored"),
    [
        ("2027-01-15T10:30:00Z", datetime(2027, 1, 15, 10, 30, tzinfo=UTC)),
        ("2027-01-15T05:30:00.250-05:00", datetime(2027, 1, 15, 10, 30, 0, 250_000, tzinfo=UTC)),
        ("2027-01-15T10:30:00", datetime(2027, 1, 15, 10, 30, tzinfo=UTC)),
    ],
)
def test_since_on_an_export_post_is_stored_in_utc(
    client: TestClient, headers: dict[str, str], db: Database, since: str, stored: datetime, monkeypatch: Any
):
    monkeypatch.setattr("export_api.models.exports.utcnow", lambda: datetime(2027, 2, 1, tzinfo=UTC))
    response = client.post(EXPORTS, json={"exportType": "entries", "since": since}, headers=headers)
    assert response.status_code == 201, response.text
    assert response.json()["since"] == stored.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stored.microsecond // 1000:03d}Z"
    assert (db.exports.find_one({"_id": response.json()["id"]}) or {})["since"] == stored


@pytest.mark.parametrize(
    ("since", "message"),
    [
        ("last week", "'since' must be an ISO 8601 date-time, e.g. '2027-03-14T07:00:00Z'."),
        ("2027-01-15", "'since' must be an ISO 8601 date-time, e.g. '2027-03-14T07:00:00Z'."),
        (1700000000000, "'since' must be an ISO 8601 date-time, e.g. '2027-03-14T07:00:00Z'."),
        (None, "'since' must be an ISO 8601 date-time, e.g. '2027-03-14T07:00:00Z'."),
        ("9999-01-01T00:00:00Z", "'since' must not be in the future."),
    ],
)
def test_since_that_does_not_parse_or_lies_ahead_is_400(
    client: TestClient, headers: dict[str, str], db: Database, since: object, message: str
):
    response = client.post(EXPORTS, json={"exportType": "entries", "since": since}, headers=headers)
    assert assert_error(response, 400, message)["payload"] == "since"
    assert db.exports.count_documents({}) == 0
    tomorrow = (utcnow() + timedelta(days=1)).isoformat()
    ahead = client.post(EXPORTS, json={"exportType": "entries", "since": tomorrow}, headers=headers)
    assert assert_error(ahead, 400, "'since' must not be in the future.")["payload"] == "since"


def test_since_only_for_types_whose_rows_say_when_they_were_created(client: TestClient, headers: dict[str, str]):
    for export_type in ("scoring", "fanlist", "reminderEmail"):
        refused = client.post(
            EXPORTS, json={"exportType": export_type, "since": "2024-01-01T00:00:00Z"}, headers=headers
        )
        error = assert_error(refused, 400)
        assert error["payload"] == "since" and error["message"] == (
            f"exportType '{export_type}' does not take 'since'; these do: entries, codes, codeAssignments,"
            " artistOptIn, artistSmsOptIn, livenationOptIn."
        )
    assert (
        client.post(EXPORTS, json={"exportType": "codes", "since": "2024-01-01T00:00:00Z"}, headers=headers).status_code
        == 201
    )


def test_other_export_post_refusals_name_their_field(client: TestClient, headers: dict[str, str]):
    refused = client.post(EXPORTS, json={"exportType": "entries", "format": "pdf"}, headers=headers)
    assert assert_error(refused, 400)["payload"] == "format"
    unknown = client.post(EXPORTS, json={"exportType": "entries", "sinse": "x"}, headers=headers)
    assert assert_error(unknown, 400, "Unknown field in the request body: 'sinse'.")["payload"] == "sinse"
