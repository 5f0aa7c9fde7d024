"""Formats (SPEC §3): csv.gz, parquet and xlsx of the same export, end to end, against the real servers.

The entries export of one seeded campaign (plus a fan whose every text is something a spreadsheet
would guess at) runs through its real Dagster job in each format; each file is compared with the
CSV of the same data: csv.gz byte for byte after gunzip, parquet read by DuckDB, xlsx opened by
LibreOffice Calc and read back by python-calamine, with the CSV cell rules (`'` before a formula
character, `;` between list items) applied to their values where the CSV has them. Every other
single-file type is checked the same way through its stages (Dagster left out for speed).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import math
import re
import shutil
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
from botocore.exceptions import ClientError
from pymongo import MongoClient
from pymongo.database import Database
from python_calamine import CalamineWorkbook

from devstack.seed import seed_campaign, wave_date_keys
from export_core.ccpa import CcpaDeletion
from export_core.clients import ensure_buckets, s3_client
from export_core.export_types import EXPORT_TYPES
from export_core.records import FINISHED, ExportStore
from export_core.settings import Settings
from export_pipelines import stages
from tests.conftest import server_env
from tests.libreoffice import sheet_xml, sheets_as_csv, sheets_as_ods
from tests.pipelines.helpers import read_csv, request_export, run_export, workspace

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
LONG = "ten bytes " * 1024  # a 10 KB answer in the entry's `fields`
LAST_NAME = "1e5\r\nsecond line 🎸"
WHEN = datetime(2024, 1, 15, 10, 30, 0, 123000, tzinfo=UTC)
SPECIAL_USER = "fmt-fan-0001"
CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "csv.gz": "application/gzip",
    "parquet": "application/vnd.apache.parquet",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
SINGLE_FILE_TYPES = [name for name, t in EXPORT_TYPES.items() if t.packaging == "csv"]
_, WAVE = wave_date_keys()


@dataclass
class World:
    db: Database
    s3: Any
    settings: Settings
    campaign_id: str
    entries: dict[str, dict[str, Any]]  # format → the FINISHED entries export
    bodies: dict[str, bytes]  # format → its object's bytes
    objects: dict[str, dict[str, Any]]  # format → its S3 GET response (headers)


def _add_awkward_fan(db: Database, campaign_id: str) -> None:
    """A fan whose texts a spreadsheet import would mangle, with a 10 KB answer and CR LF in it."""
    market = db["markets"].find_one({"campaignId": campaign_id})
    assert market is not None
    db["users"].insert_one(
        {"_id": SPECIAL_USER, "firstName": "3/4", "lastName": LAST_NAME, "email": "=1+1@example.com",
         "phone": "+15550001", "postalCode": "02134", "countryCode": "US"}
    )  # fmt: skip
    db["entries"].insert_one(
        {"_id": f"{campaign_id}-fmt", "campaignId": campaign_id, "userId": SPECIAL_USER, "marketId": market["_id"],
         "additionalMarkets": [], "localeId": "@en_US", "date": {"created": WHEN},
         "optIns": {"allowMarketing": True, "allowLiveNation": False, "allowPromoter": True, "allowSms": False},
         "phoneNumber": "-5550001", "phoneConfirmed": True, "codes": ["-A1", "B;=2", "🎸"],
         "fields": {"note": LONG}, "user": {"firstName": "x", "lastName": "y", "email": "z"}}
    )  # fmt: skip


@pytest.fixture(scope="module")
def world(mongo_uri: str, s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One seeded campaign; its entries export in each format, through the real Dagster job."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in server_env(mongo_uri, s3_endpoint, tmp_path_factory.mktemp("data")).items():
            mp.setenv(name, value)
        settings = Settings.from_env()
        ensure_buckets(settings)
        s3 = s3_client(settings)
        client: MongoClient = MongoClient(settings.mongodb_uri, tz_aware=True)
        db = client[settings.mongodb_db]
        campaign_id = f"fx-{uuid.uuid4().hex[:8]}"
        seed_campaign(
            db, campaign_id=campaign_id, n_entries=400, seed=24, campaign_name="Zoë's Tour ☃",
            s3_client=s3, vf_scoring_bucket=settings.vf_scoring_bucket,
        )  # fmt: skip
        _add_awkward_fan(db, campaign_id)
        entries, bodies, objects = {}, {}, {}
        for fmt in CONTENT_TYPES:
            record = request_export(db, campaign_id, "entries", format=fmt)
            result = run_export(record)
            done = ExportStore(db).get(record["_id"])
            assert result.success and done is not None and done["status"] == FINISHED, done
            obj = s3.get_object(Bucket=settings.exports_bucket, Key=done["key"])
            entries[fmt], bodies[fmt], objects[fmt] = done, obj["Body"].read(), obj
        yield World(db, s3, settings, campaign_id, entries, bodies, objects)
        client.drop_database(settings.mongodb_db)
        client.close()


# -- the CSV cell rules, applied to typed values (SPEC §3), to compare a typed file with the CSV --


def _guard(text: str) -> str:
    return "'" + text if text.startswith(FORMULA_START) else text


def _unguard(cell: str) -> str:
    """A CSV text cell less the `'` the CSV put before a formula character."""
    return cell[1:] if cell[:1] == "'" and cell[1:2] in FORMULA_START else cell


def _list_cell(joined: str) -> str:
    """A list cell as the CSV writes it: the formula rule after each `;`."""
    return ";".join(_guard(item) for item in joined.split(";"))


def _iso(value: datetime) -> str:
    """The CSV's date-time; an xlsx date-time (a float of days) is rounded to the millisecond it holds."""
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    ms = round(value.timestamp() * 1000)
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _same_cell(typed: Any, cell: str, *, is_list: bool) -> bool:
    """Whether a typed value (from parquet or xlsx) is what the CSV cell says."""
    if typed is None or typed == "" or typed == []:
        return cell == ""
    if isinstance(typed, bool):
        return cell == ("true" if typed else "false")
    if isinstance(typed, datetime):
        return cell == _iso(typed)
    if isinstance(typed, int | float):
        return math.isclose(float(cell), float(typed), rel_tol=1e-12) or (math.isnan(typed) and cell == "NaN")
    if isinstance(typed, list):
        return cell == _list_cell(";".join(str(item) for item in typed))
    return cell == (_list_cell(typed) if is_list else _guard(typed))


def _assert_same_rows(typed_rows: list[dict[str, Any]], csv_rows: list[dict[str, str]], lists: set[str]) -> None:
    assert len(typed_rows) == len(csv_rows) > 0
    for number, (typed, row) in enumerate(zip(typed_rows, csv_rows, strict=True)):
        assert list(typed) == list(row), "the same columns, in the same order"
        for column, cell in row.items():
            assert _same_cell(typed[column], cell, is_list=column in lists), (number, column, typed[column], cell)


def _parquet_rows(path: Path) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The rows as DuckDB reads them, and the column types."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    described = con.execute("DESCRIBE SELECT * FROM read_parquet(?)", [str(path)]).fetchall()
    names = [name for name, *_ in described]
    rows = con.execute("SELECT * FROM read_parquet(?)", [str(path)]).fetchall()
    return [dict(zip(names, row, strict=True)) for row in rows], {name: kind for name, kind, *_ in described}


def _xlsx_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of every sheet as python-calamine reads them (the header of each sheet checked)."""
    book = CalamineWorkbook.from_path(str(path))
    rows: list[dict[str, Any]] = []
    header: list[str] | None = None
    for name in book.sheet_names:
        sheet = book.get_sheet_by_name(name).to_python()
        assert header is None or sheet[0] == header
        header = sheet[0]
        rows += [dict(zip(header, row, strict=True)) for row in sheet[1:]]
    return rows


# -- the entries export in each format, through its Dagster job --


def test_csv_is_unchanged_and_csv_gz_is_its_gzip(world: World) -> None:
    assert gzip.decompress(world.bodies["csv.gz"]) == world.bodies["csv"]
    rows = read_csv(world.bodies["csv"])
    special = next(r for r in rows if r["userId"] == SPECIAL_USER)
    assert (special["postalCode"], special["firstName"], special["lastName"]) == ("02134", "3/4", LAST_NAME)
    assert special["email"] == "'=1+1@example.com" and special["codes"] == "'-A1;B;'=2;🎸"  # the CSV's own rules


def test_key_name_content_type_meta_and_checksum_follow_the_format(world: World) -> None:
    counts = set()
    for fmt, done in world.entries.items():
        body, obj = world.bodies[fmt], world.objects[fmt]
        extension = ".csv" if fmt == "csv" else f".{fmt}"
        assert done["format"] == fmt and done["meta"]["format"] == fmt
        assert done["key"].startswith(f"entries/{world.campaign_id}/{done['_id']}/")
        assert done["key"].endswith(f" - Entries{extension}"), done["key"]
        assert obj["ContentType"] == CONTENT_TYPES[fmt]
        disposition = obj["ContentDisposition"]
        name = urllib.parse.unquote(disposition.split("filename*=UTF-8''")[1])
        assert name == f"Zoë's Tour ☃ - Entries{extension}", disposition
        assert done["meta"]["sha256"] == hashlib.sha256(body).hexdigest() == obj["Metadata"]["sha256"]
        assert done["meta"]["bytes"] == len(body)
        counts.add(done["count"])
    assert counts == {401}, "every format holds every row"
    assert world.entries["xlsx"]["meta"]["sheets"] == [{"name": "Entries", "rows": 401}]
    assert world.entries["parquet"]["meta"]["rowGroups"] == 1
    assert world.bodies["xlsx"][:2] == b"PK" and world.bodies["parquet"][:4] == b"PAR1"


def test_parquet_holds_the_csv_rows_as_they_are(world: World, tmp_path: Path) -> None:
    path = tmp_path / "entries.parquet"
    path.write_bytes(world.bodies["parquet"])
    rows, types = _parquet_rows(path)
    assert types["entryDate"] == "TIMESTAMP WITH TIME ZONE" and types["codes"] == "VARCHAR[]"
    assert types["allowMarketing"] == types["isAdditionalMarket"] == "BOOLEAN" and types["fields"] == "VARCHAR"
    _assert_same_rows(rows, read_csv(world.bodies["csv"]), lists=set())
    special = next(r for r in rows if r["userId"] == SPECIAL_USER)
    assert special["email"] == "=1+1@example.com" and special["codes"] == ["-A1", "B;=2", "🎸"], "no CSV rules"
    assert special["entryDate"] == WHEN and special["lastName"] == LAST_NAME
    assert json.loads(special["fields"]) == {"note": LONG}, "`fields` as JSON text"


def test_xlsx_opened_by_libreoffice_shows_the_csv_data_typed(world: World, tmp_path: Path) -> None:
    path = tmp_path / "entries.xlsx"
    path.write_bytes(world.bodies["xlsx"])
    csv_rows = read_csv(world.bodies["csv"])
    # The exact values, read back: text as text (CR LF kept), typed values as such.
    read = _xlsx_rows(path)
    _assert_same_rows(read, csv_rows, lists={"codes"})
    special_row = next(r for r in read if r["userId"] == SPECIAL_USER)
    assert special_row["lastName"] == LAST_NAME and json.loads(special_row["fields"]) == {"note": LONG}

    # LibreOffice: what it types each cell as, and what it shows (its CSV export).
    (sheet,) = sheets_as_ods(path, tmp_path / "ods").values()
    header = [c.text for c in sheet[0]]
    assert header == list(EXPORT_TYPES["entries"].columns)
    column = {name: i for i, name in enumerate(header)}
    special = next(cells for cells in sheet[1:] if cells[0].text == SPECIAL_USER)
    for name, text in (("postalCode", "02134"), ("firstName", "3/4"), ("lastName", LAST_NAME.replace("\r\n", "\n")),
                       ("email", "=1+1@example.com"), ("phoneNumber", "-5550001"), ("localeId", "@en_US"),
                       ("codes", "-A1;B;=2;🎸")):  # fmt: skip
        cell = special[column[name]]
        assert (cell.value_type, cell.text, cell.formula) == ("string", text, None), name
    assert special[column["entryDate"]].value_type == "date"
    assert special[column["allowMarketing"]].text == "TRUE" and special[column["allowLiveNation"]].text == "FALSE"
    assert not [c for row in sheet for c in row if c.value_type == "string" and c.formula], "no text is a formula"

    (shown,) = sheets_as_csv(path, tmp_path / "csv").values()
    assert shown[0] == header and len(shown) == len(csv_rows) + 1
    for cells, row in zip(shown[1:], csv_rows, strict=True):
        for name, value in zip(header, cells, strict=True):
            cell = row[name]
            if name == "entryDate":
                assert (value.replace(" ", "T") + "Z" if value else "") == cell
            elif name.startswith("allow") or name in ("phoneConfirmed", "isAdditionalMarket"):
                assert value.lower() == cell
            else:  # text: the CSV's, less its `'` guards; LibreOffice holds a CR or CR LF in a cell as LF
                plain = ";".join(_unguard(item) for item in cell.split(";")) if name == "codes" else _unguard(cell)
                assert value == re.sub(r"\r\n?", "\n", plain), (name, value, cell)
    for part, xml in sheet_xml(path).items():
        assert "<f>" not in xml and "<f " not in xml, part
        assert 'state="frozen"' in xml and 'ySplit="1"' in xml, part


# -- every single-file type, through its stages --


def _through_stages(world: World, export_type: str, fmt: str, tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """The packaged file of the type in `fmt` (the real extract, transform and package stages)."""
    record = {"_id": uuid.uuid4().hex, "campaignId": world.campaign_id, "exportType": export_type, "format": fmt}
    if EXPORT_TYPES[export_type].requires_date_key:
        record["dateKey"] = WAVE
    ctx = stages.build_context(
        record, world.db, world.s3, workspace(world.settings), logging.getLogger("formats-test"), run_id="formats"
    )
    try:
        stages.extract(ctx)
        stages.transform(ctx)
        packaged = stages.package(ctx)
        (artifact,) = packaged.artifacts
        assert artifact.key.endswith(".csv" if fmt == "csv" else f".{fmt}")
        target = tmp_path / f"{export_type}-{fmt}"
        target.write_bytes(artifact.path.read_bytes())
        uploaded = stages.Uploaded(objects=[], rows=packaged.rows, format_meta=packaged.format_meta)
        return target, stages.finish_fields(ctx, uploaded)
    finally:
        shutil.rmtree(ctx.work_dir, ignore_errors=True)  # what the test staged


@pytest.mark.parametrize("export_type", [t for t in SINGLE_FILE_TYPES if t != "entries"])
def test_every_single_file_type_has_the_csv_rows_in_parquet_and_xlsx(
    world: World, export_type: str, tmp_path: Path
) -> None:
    csv_path, _ = _through_stages(world, export_type, "csv", tmp_path)
    csv_rows = read_csv(csv_path.read_bytes())
    parquet_path, _ = _through_stages(world, export_type, "parquet", tmp_path)
    parquet_rows, types = _parquet_rows(parquet_path)
    _assert_same_rows(parquet_rows, csv_rows, lists=set())
    lists = {name for name, kind in types.items() if kind.endswith("[]")}
    xlsx_path, finished = _through_stages(world, export_type, "xlsx", tmp_path)
    _assert_same_rows(_xlsx_rows(xlsx_path), csv_rows, lists=lists)
    assert finished["meta"]["format"] == "xlsx" and finished["count"] == len(csv_rows)
    gz_path, _ = _through_stages(world, export_type, "csv.gz", tmp_path)
    assert gzip.decompress(gz_path.read_bytes()) == csv_path.read_bytes()


# -- CCPA deletion covers every format (retention deletes through the same code, by the record's keys) --


def test_ccpa_deletes_the_objects_of_parquet_xlsx_and_csv_gz_exports(db: Database, s3: Any, settings: Settings) -> None:
    seed_campaign(db, campaign_id="fx-ccpa", n_entries=40, seed=3)
    fan = db["entries"].find_one({"campaignId": "fx-ccpa"})
    assert fan is not None
    done = {}
    for fmt in ("parquet", "xlsx", "csv.gz"):
        record = request_export(db, "fx-ccpa", "entries", format=fmt)
        assert run_export(record).success
        done[fmt] = ExportStore(db).get(record["_id"])
        s3.head_object(Bucket=settings.exports_bucket, Key=done[fmt]["key"])  # it is there
    summary = CcpaDeletion(db, s3, settings.buckets).delete_user(fan["userId"], requested_by="compliance")
    assert summary["deleted"]["total"] == 3, summary
    for fmt, record in done.items():
        with pytest.raises(ClientError):
            s3.head_object(Bucket=settings.exports_bucket, Key=record["key"])
        after = ExportStore(db).get(record["_id"])
        assert after is not None and after["date"].get("deleted") and after["deletion"]["status"] == "complete", fmt
