"""`export-service schedules add|list|show|pause|resume|run|remove` and `request --since` against a real API
over HTTP (SPEC §9, §12)."""

from __future__ import annotations

import json

from pymongo.database import Database

from export_cli import cli
from export_cli.api import fields_of
from export_core.destination_store import DestinationStore, parse_destination
from export_core.schedules import REQUEST_FIELDS, SCHEDULE_FIELDS
from export_core.secrets import SecretBox
from tests.api.conftest import CAMPAIGN, LiveServer, TokenFactory
from tests.api.test_cli import one_line_error, run_cli


def test_add_list_show_pause_resume_run_and_remove(
    live_api: LiveServer, make_token: TokenFactory, db: Database, secret_box: SecretBox
):
    token = make_token()
    s3 = parse_destination({"type": "s3", "bucket": "partner-drop", "region": "eu-west-1"})
    store = DestinationStore(db)
    d1, d2 = (store.create(campaign_id=CAMPAIGN, request=s3, created_by="u", secret_box=secret_box)["id"] for _ in "12")
    added = run_cli(
        live_api, "schedules", "add", CAMPAIGN, "--type", "entries", "--cron", "30 2 * * *",
        "--timezone", "America/New_York", "--format", "parquet", "--include-all-markets", "--incremental",
        "--no-skip-empty", "--destination", d1, "--destination", d2, token=token,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    first, second = added.stdout.splitlines()
    schedule_id = first.split()[1]
    assert first == (f"schedule {schedule_id}  entries parquet, all markets, incremental  30 2 * * * America/New_York")
    assert second.startswith("next run ") and second.endswith(("T02:30:00-04:00", "T02:30:00-05:00"))
    stored = db.schedules.find_one({"_id": schedule_id}) or {}
    assert stored["skipEmpty"] is False and stored["destinations"] == [d1, d2] and stored["createdBy"] == "user-1"

    listed = run_cli(live_api, "schedules", "list", CAMPAIGN, token=token)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0] == "id\trequest\tcron\ttimezone\tstate\tnext run" and lines[-1] == "1 schedule(s)"
    assert lines[1].startswith(
        f"{schedule_id}\tentries parquet, all markets, incremental\t30 2 * * *\tAmerica/New_York\tactive\t"
    )

    # 2027-03-14, spring forward: 02:30 does not exist in New York and runs at 03:00 EDT.
    shown = run_cli(live_api, "schedules", "show", CAMPAIGN, schedule_id, "--from", "2027-03-13T12:00:00Z", token=token)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[:11] == [
        f"schedule {schedule_id}",
        "  request       entries parquet, all markets, incremental",
        "  cron          30 2 * * * (America/New_York)",
        "  state         active",
        f"  destinations  {d1}, {d2}",
        shown.stdout.splitlines()[5],
        "next runs after 2027-03-13T12:00:00Z",
        "  2027-03-14T03:00:00-04:00  2027-03-14T07:00:00Z",
        "  2027-03-15T02:30:00-04:00  2027-03-15T06:30:00Z",
        "  2027-03-16T02:30:00-04:00  2027-03-16T06:30:00Z",
        "  2027-03-17T02:30:00-04:00  2027-03-17T06:30:00Z",
    ]
    assert shown.stdout.splitlines()[5].endswith(" by user-1")
    assert shown.stdout.splitlines()[-1] == "0 run(s)"

    paused = run_cli(live_api, "schedules", "pause", CAMPAIGN, schedule_id, token=token)
    assert paused.returncode == 0 and paused.stdout.strip() == f"paused schedule {schedule_id}"
    shown = run_cli(live_api, "schedules", "show", CAMPAIGN, schedule_id, token=token).stdout.splitlines()
    assert "  state         paused: Paused by a user." in shown and "  none (paused)" in shown

    ran = run_cli(live_api, "schedules", "run", CAMPAIGN, schedule_id, token=token)
    assert ran.returncode == 0, ran.stderr
    export_id = ran.stdout.split()[1]
    assert ran.stdout.strip() == f"queued {export_id}  PENDING  entries"
    record = db.exports.find_one({"_id": export_id}) or {}
    assert record["schedule"]["id"] == schedule_id and record["schedule"]["manual"] is True

    resumed = run_cli(live_api, "schedules", "resume", CAMPAIGN, schedule_id, token=token)
    assert resumed.returncode == 0 and resumed.stdout.startswith(f"resumed schedule {schedule_id}; next run 20")
    shown = run_cli(live_api, "schedules", "show", CAMPAIGN, schedule_id, token=token).stdout.splitlines()
    assert "  state         active" in shown
    assert shown[-3:-1] == ["scheduled for\toutcome\texport\trows", shown[-2]]
    assert shown[-2].split("\t")[1:] == ["queued (manual)", export_id, ""] and shown[-1] == "1 run(s)"

    as_json = run_cli(live_api, "schedules", "show", CAMPAIGN, schedule_id, "--json", token=token)
    assert json.loads(as_json.stdout)["runs"][0]["exportId"] == export_id

    removed = run_cli(live_api, "schedules", "remove", CAMPAIGN, schedule_id, token=token)
    assert removed.returncode == 0 and removed.stdout.strip() == f"removed schedule {schedule_id} (its exports stay)"
    assert db.exports.count_documents({"_id": export_id}) == 1
    again = run_cli(live_api, "schedules", "remove", CAMPAIGN, schedule_id, token=token)
    assert one_line_error(again, 3).startswith("export-service: Schedule not found. (HTTP 404")


def test_refusals_are_one_line(live_api: LiveServer, make_token: TokenFactory):
    token = make_token()
    frequent = run_cli(live_api, "schedules", "add", CAMPAIGN, "--type", "entries", "--cron", "* * * * *", token=token)
    assert "schedules may run at most every 5 minutes" in one_line_error(frequent, 3)
    zone = run_cli(
        live_api, "schedules", "add", CAMPAIGN, "--type", "entries", "--cron", "0 6 * * *", "--timezone", "Nowhere",
        token=token,
    )  # fmt: skip
    assert one_line_error(zone, 3).startswith("export-service: Unknown time zone 'Nowhere'. (HTTP 400")
    missing = run_cli(live_api, "schedules", "add", CAMPAIGN, "--type", "entries", token=token)
    assert missing.returncode == 2 and "the following arguments are required: --cron" in missing.stderr
    bad_from = run_cli(live_api, "schedules", "show", CAMPAIGN, "x", "--from", "tomorrow", token=token)
    assert "'from' must be an ISO 8601 date-time" in one_line_error(bad_from, 3)
    no_token = run_cli(live_api, "schedules", "list", CAMPAIGN)
    assert "no token" in one_line_error(no_token, 2)


def test_request_since(live_api: LiveServer, make_token: TokenFactory, db: Database):
    token = make_token()
    queued = run_cli(live_api, "request", CAMPAIGN, "codes", "--since", "2024-01-15T10:30:00+01:00", token=token)
    assert queued.returncode == 0, queued.stderr
    record = db.exports.find_one({"_id": queued.stdout.split()[1]}) or {}
    assert record["since"].isoformat() == "2024-01-15T09:30:00+00:00"
    ahead = run_cli(live_api, "request", CAMPAIGN, "codes", "--since", "9999-01-01T00:00:00Z", token=token)
    assert one_line_error(ahead, 3).startswith("export-service: 'since' must not be in the future. (HTTP 400")


def test_add_has_a_flag_for_every_field_the_service_takes() -> None:
    """Each flag stores under the field it fills; a field renamed in the service would be missing here."""
    args = cli.parser().parse_args(
        ["schedules", "add", CAMPAIGN, "--type", "entries", "--cron", "0 6 * * *", "--timezone", "UTC",
         "--format", "csv", "--date-key", "1", "--include-all-markets", "--incremental", "--no-skip-empty",
         "--destination", "d", "--paused"]
    )  # fmt: skip
    body = fields_of(vars(args), REQUEST_FIELDS + SCHEDULE_FIELDS)
    assert set(body) == {*REQUEST_FIELDS, *SCHEDULE_FIELDS} and body["skipEmpty"] is False
