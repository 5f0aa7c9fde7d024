"""`format` in POST /campaigns/{campaignId}/exports (SPEC §3 Formats, §4 duplicates, §6), and `--format` in
the command-line client, against the real MongoDB-protocol and S3 servers."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo.database import Database
from starlette.testclient import TestClient

from export_cli import cli
from export_core.export_types import EXPORT_TYPES
from export_core.records import utcnow
from tests.api.conftest import CAMPAIGN, EXPORTS, LiveServer, assert_error
from tests.api.test_cli import one_line_error, run_cli

FORMATS = ("csv", "csv.gz", "parquet", "xlsx")
CSV_ONLY = sorted(name for name, t in EXPORT_TYPES.items() if t.packaging != "csv")


def _body(export_type: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"exportType": export_type, **extra}
    if EXPORT_TYPES[export_type].requires_date_key:
        body["dateKey"] = "1700000000000"
    return body


def test_csv_only_types_are_the_zip_and_multi_file_ones() -> None:
    assert CSV_ONLY == ["autoReminderEmail", "promoterEmailOptIn", "reminderEmail", "reminderEmailSample"]


@pytest.mark.parametrize("export_type", sorted(EXPORT_TYPES))
def test_each_type_takes_the_formats_it_is_offered_in(
    client: TestClient, headers: dict[str, str], db: Database, export_type: str
) -> None:
    for fmt in FORMATS:
        response = client.post(EXPORTS, json=_body(export_type, format=fmt), headers=headers)
        if export_type in CSV_ONLY and fmt != "csv":
            message = f"exportType '{export_type}' is delivered as CSV only, not as {fmt}."
            assert_error(response, 400, message)
            continue
        assert response.status_code == 201, response.text
        assert response.json()["format"] == fmt
        assert db.exports.find_one({"_id": response.json()["id"]})["format"] == fmt  # type: ignore[index]


def test_the_duplicate_rule_counts_the_format(client: TestClient, headers: dict[str, str], db: Database) -> None:
    plain = client.post(EXPORTS, json={"exportType": "entries"}, headers=headers)
    assert plain.status_code == 201 and plain.json()["format"] == "csv"
    assert db.exports.find_one({"_id": plain.json()["id"]})["format"] == "csv", "stored, not implied"  # type: ignore[index]
    explicit = client.post(EXPORTS, json={"exportType": "entries", "format": "csv"}, headers=headers)
    assert explicit.status_code == 200 and explicit.json()["id"] == plain.json()["id"], "csv is the default"
    ids = {plain.json()["id"]}
    for fmt in ("csv.gz", "parquet", "xlsx"):
        first = client.post(EXPORTS, json={"exportType": "entries", "format": fmt}, headers=headers)
        again = client.post(EXPORTS, json={"exportType": "entries", "format": fmt}, headers=headers)
        assert (first.status_code, again.status_code) == (201, 200) and first.json()["id"] == again.json()["id"]
        ids.add(first.json()["id"])
    assert len(ids) == 4 and db.exports.count_documents({"active": True}) == 4


def test_a_record_from_before_formats_is_csv(client: TestClient, headers: dict[str, str], db: Database) -> None:
    db.exports.insert_one(
        {"_id": "old", "id": "old", "campaignId": CAMPAIGN, "exportType": "codes", "dateKey": None,
         "status": "PENDING", "active": True, "requesterUserId": "u", "date": {"created": utcnow()}}
    )  # fmt: skip
    got = client.get(f"{EXPORTS}/old", headers=headers)
    assert got.status_code == 200 and got.json()["format"] == "csv"
    duplicate = client.post(EXPORTS, json={"exportType": "codes"}, headers=headers)
    assert duplicate.status_code == 200 and duplicate.json()["id"] == "old"
    assert client.post(EXPORTS, json={"exportType": "codes", "format": "xlsx"}, headers=headers).status_code == 201


UNKNOWN = [("json", "json"), ("XLSX", "XLSX"), ("csv.zip", "csv.zip"), ("", ""), (None, "null"), (1, "1")]


@pytest.mark.parametrize(("fmt", "shown"), [*UNKNOWN, (["csv"], '["csv"]')])
def test_an_unknown_format_is_a_400(client: TestClient, headers: dict[str, str], fmt: Any, shown: str) -> None:
    response = client.post(EXPORTS, json={"exportType": "entries", "format": fmt}, headers=headers)
    assert_error(response, 400, f"Invalid format: '{shown}' (it must be csv, csv.gz, parquet or xlsx).")


def test_the_cli_asks_for_a_format(live_api: LiveServer, token: str, db: Database) -> None:
    made = run_cli(live_api, "request", CAMPAIGN, "fanlist", "--format", "parquet", token=token)
    assert made.returncode == 0, made.stderr
    export_id = made.stdout.split()[1]
    assert db.exports.find_one({"_id": export_id})["format"] == "parquet"  # type: ignore[index]
    refused = one_line_error(
        run_cli(live_api, "request", CAMPAIGN, "reminderEmail", "--format", "xlsx", token=token), 3
    )
    assert "exportType 'reminderEmail' is delivered as CSV only, not as xlsx. (HTTP 400" in refused
    assert cli.EXIT_REFUSED == 3
