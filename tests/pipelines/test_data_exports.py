"""The eleven data exports end to end through their Dagster jobs, against the real servers.

One seeded campaign (with its SMS wave files in S3) is shared by the module's tests that
only read it; tests with hand-made documents use their own database. Every file is
compared cell by cell with expected_data.py, computed independently from the documents.
"""

from __future__ import annotations

import io
import logging
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from bson.decimal128 import Decimal128
from dagster import DagsterInstance
from pymongo import MongoClient
from pymongo.database import Database

from devstack.seed import seed_campaign, wave_date_keys
from export_core.clients import ensure_buckets, s3_client
from export_core.export_types import EXPORT_TYPES, InvalidExportRequest, parse_export_request
from export_core.records import FAILED, FINISHED, ExportStore
from export_core.settings import Settings
from export_pipelines.stages import staging_dir
from tests.conftest import server_env
from tests.pipelines import expected_data as ex
from tests.pipelines.expected_data import DATA_TYPES
from tests.pipelines.helpers import read_csv, read_header, request_export, run_export

# SPEC §3: the columns partners rely on, by exact name.
REQUIRED_COLUMNS = {
    "codes": ("code", "marketId", "status", "assignedTo", "assignedAt"),
    "scoring": ("memberId", "marketId", "score", "fanscore", "nudata", "verified", "selected", "rank"),
    "codeAssignments": ("code", "userId", "email", "marketId", "eventName", "assignedAt"),
    "artistOptIn": ("userId", "email", "firstName", "lastName", "marketId", "localeId", "postalCode"),
    "livenationOptIn": ("userId", "email", "firstName", "lastName", "marketId", "localeId", "postalCode"),
    "artistSmsOptIn": ("userId", "firstName", "lastName", "phoneNumber", "marketId"),
    "verifiedEntries": ("memberId", "marketId", "score", "selected"),
    "codeWaves": ("code", "marketId", "assignedTo", "waveDateKey"),
    "fanlist": ("userId", "email", "firstName", "lastName", "markets"),
    "waitlist": ("memberId", "email", "marketId", "locale", "score"),
    "promoterEmailOptIn": ("userId", "email", "firstName", "lastName", "marketId", "promoterName"),
}

N_ENTRIES = 1500
WAVE_1, WAVE_2 = wave_date_keys()
OWNER_ONLY = ["FULL_CONTROL"]


@dataclass
class World:
    db: Database
    s3: Any
    settings: Settings
    campaign_id: str


@pytest.fixture(scope="module")
def world(mongo_uri: str, s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One seeded campaign for the module; its id is unique so its S3 keys are too."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in server_env(mongo_uri, s3_endpoint, tmp_path_factory.mktemp("data")).items():
            mp.setenv(name, value)
        settings = Settings.from_env()
        ensure_buckets(settings)
        s3 = s3_client(settings)
        client: MongoClient = MongoClient(settings.mongodb_uri, tz_aware=True)
        db = client[settings.mongodb_db]
        campaign_id = f"dx-{uuid.uuid4().hex[:8]}"
        seed_campaign(
            db,
            campaign_id=campaign_id,
            n_entries=N_ENTRIES,
            seed=11,
            campaign_name='Tour: "Zoë" / 2025 ☃',
            s3_client=s3,
            vf_scoring_bucket=settings.vf_scoring_bucket,
        )
        yield World(db, s3, settings, campaign_id)
        client.drop_database(settings.mongodb_db)
        client.close()


def _finished(db: Database, record: dict[str, Any], instance: DagsterInstance | None = None) -> dict[str, Any]:
    result = run_export(record, instance)
    done = ExportStore(db).get(record["_id"])
    assert done is not None
    assert result.success, done.get("error")
    assert done["status"] == FINISHED
    return done


def _body(s3: Any, settings: Settings, done: dict[str, Any]) -> bytes:
    bucket = settings.bucket_for(EXPORT_TYPES[done["exportType"]].bucket)
    return bytes(s3.get_object(Bucket=bucket, Key=done["key"])["Body"].read())


def _zip_files(body: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _grants(s3: Any, settings: Settings, done: dict[str, Any]) -> list[str]:
    bucket = settings.bucket_for(EXPORT_TYPES[done["exportType"]].bucket)
    return [g["Permission"] for g in s3.get_object_acl(Bucket=bucket, Key=done["key"])["Grants"]]


def _members(db: Database, export_id: str) -> set[str]:
    return {u for doc in db["export_members"].find({"exportId": export_id}) for u in doc["userIds"]}


PROMOTER_FILES = {  # the seeded promoters' names (see seed._PROMOTERS) as key-safe file names
    "Live Nation": "Live Nation.csv",
    "AEG Presents / Goldenvoice": "AEG Presents _ Goldenvoice.csv",
    "Ocesa": "Ocesa.csv",
    "MCD Productions, Ltd.": "MCD Productions_ Ltd.csv",
}


def _expected(world: World, export_type: str) -> list[dict[str, str]] | dict[str, list[dict[str, str]]]:
    db, cid = world.db, world.campaign_id
    if export_type == "promoterEmailOptIn":
        names = {p["_id"]: p["name"] for p in db["promoters"].find({"campaignId": cid})}
        return ex.expected_promoter_files(db, cid, lambda pid: PROMOTER_FILES[names[pid]])
    compute: dict[str, Callable[[], list[dict[str, str]]]] = {
        "codes": lambda: ex.expected_codes(db, cid),
        "scoring": lambda: ex.expected_scoring(db, cid),
        "codeAssignments": lambda: ex.expected_code_assignments(db, cid),
        "artistOptIn": lambda: ex.expected_opt_in(db, cid, "allowMarketing"),
        "livenationOptIn": lambda: ex.expected_opt_in(db, cid, "allowLiveNation"),
        "artistSmsOptIn": lambda: ex.expected_sms_opt_in(db, cid),
        "verifiedEntries": lambda: ex.expected_verified_entries(db, cid),
        "codeWaves": lambda: ex.expected_code_waves(db, cid, WAVE_2),
        "fanlist": lambda: ex.expected_fanlist(db, cid),
        "waitlist": lambda: ex.expected_waitlist(
            db, cid, ex.wave_members(world.s3, world.settings.vf_scoring_bucket, cid)
        ),
    }
    return compute[export_type]()


@pytest.fixture
def acl_headers() -> Iterator[list[tuple[str, str | None]]]:
    """(bucket-ish URL, x-amz-acl) of every upload request as it goes on the wire to S3."""
    seen: list[tuple[str, str | None]] = []

    def record(request: Any, **_: Any) -> None:
        if request.method in ("PUT", "POST") and "x-amz-acl" in request.headers:
            seen.append((request.url, request.headers["x-amz-acl"].decode()))

    session = boto3._get_default_session()
    session.events.register("before-send.s3", record)
    yield seen
    session.events.unregister("before-send.s3", record)


@pytest.mark.parametrize("export_type", DATA_TYPES)
def test_each_type_writes_the_rows_of_an_independent_computation(
    world: World, export_type: str, acl_headers: list[tuple[str, str | None]]
) -> None:
    db, s3, settings, cid = world.db, world.s3, world.settings, world.campaign_id
    spec = EXPORT_TYPES[export_type]
    record = request_export(db, cid, export_type, **({"date_key": WAVE_2} if export_type == "codeWaves" else {}))
    done = _finished(db, record)
    body = _body(s3, settings, done)
    expected = _expected(world, export_type)

    if spec.packaging == "zip":
        assert isinstance(expected, dict)
        files = _zip_files(body)
        assert set(files) == set(expected) == set(PROMOTER_FILES.values())
        rows = [row for name in sorted(files) for row in read_csv(files[name])]
        for name, content in files.items():
            assert read_header(content) == list(spec.columns)
            assert read_csv(content) == expected[name], name
        assert done["meta"]["files"] == [{"name": n, "rows": len(expected[n])} for n in sorted(files)]
    else:
        assert isinstance(expected, list)
        assert read_header(body) == list(spec.columns)
        rows = read_csv(body)
        assert rows == expected  # every row, every cell, in order
    assert set(REQUIRED_COLUMNS[export_type]) <= set(spec.columns)
    assert rows and done["count"] == len(rows)

    # Where the file went and who may read it.
    assert done["meta"]["bucket"] == settings.bucket_for(spec.bucket)
    assert done["key"].startswith(f"{export_type}/{cid}/{record['_id']}/")
    assert done["key"].endswith(spec.file_name.format(campaign="x")[1:])
    assert '"' not in done["key"] and "☃" not in done["key"], "campaign name made key-safe"
    # moto (like S3 when writer and bucket owner are the same account) stores both canned
    # ACLs as the owner's FULL_CONTROL, so the ACL the request carried is checked on the wire too.
    assert _grants(s3, settings, done) == OWNER_ONLY
    assert {acl for url, acl in acl_headers if record["_id"] in url} == {spec.acl}
    assert spec.acl == ("bucket-owner-full-control" if export_type == "scoring" else "private")

    # CCPA bookkeeping: exactly the users in the file are recorded for this export.
    if spec.member_column is not None:
        assert _members(db, record["_id"]) == {r[spec.member_column] for r in rows if r[spec.member_column]}
    if spec.preliminary_count:
        assert done["preliminaryCount"] == N_ENTRIES
    else:
        assert "preliminaryCount" not in done
    assert not staging_dir(settings.data_dir, record["_id"]).exists()


def test_the_seeded_awkward_cases_reach_the_files(world: World) -> None:
    """The shared campaign really exercises escaping, CSV quoting, unicode and the name fallback."""
    db, cid = world.db, world.campaign_id
    rows = ex.expected_opt_in(db, cid, "allowMarketing")
    assert any(r["firstName"].startswith("'") for r in rows)
    assert any("\n" in v for r in rows for v in r.values())
    assert any(not c.isascii() for r in rows for c in r["lastName"])
    waitlist = ex.expected_waitlist(db, cid, ex.wave_members(world.s3, world.settings.vf_scoring_bucket, cid))
    without_user = {u for u in (r["memberId"] for r in waitlist) if db["users"].find_one({"_id": u}) is None}
    assert without_user and all(r["email"] for r in waitlist if r["memberId"] in without_user), "snapshot fallback"
    excluded = ex.wave_members(world.s3, world.settings.vf_scoring_bucket, cid)
    unselected = {s["memberId"] for s in db["scoring"].find({"campaignId": cid, "selected": False})}
    assert excluded & unselected, "some unselected fans are scheduled for SMS, so the waitlist drops them"


# -- scoring: values of the wrong type ------------------------------------------------------


def test_scoring_writes_numbers_as_numbers_and_non_booleans_as_empty(db: Database, s3: Any, settings: Settings):
    db["campaigns"].insert_one({"_id": "sc", "name": "Scores"})
    db["scoring"].insert_many(
        [
            {"_id": "s1", "campaignId": "sc", "memberId": "u1", "marketId": "m", "score": 3, "fanscore": "12.5",
             "nudata": Decimal128("0.25"), "rank": 2.0, "verified": "yes", "selected": False, "geo": "?"},
            {"_id": "s2", "campaignId": "sc", "score": -0.5, "nudata": "n/a", "verified": True, "selected": True},
        ]
    )  # fmt: skip
    columns = ("memberId", "score", "fanscore", "nudata", "verified", "selected", "rank", "lat")
    done = _finished(db, request_export(db, "sc", "scoring"))
    assert [tuple(r[c] for c in columns) for r in read_csv(_body(s3, settings, done))] == [
        ("u1", "3.0", "12.5", "0.25", "", "false", "2", ""),
        ("", "-0.5", "", "", "true", "true", "", ""),  # a negative number is not a formula
    ]
    done = _finished(db, request_export(db, "sc", "verifiedEntries"))
    assert [(r["score"], r["selected"]) for r in read_csv(_body(s3, settings, done))] == [("-0.5", "true")]


# -- codeWaves: request validation and one export per wave --------------------------------


def test_code_waves_request_validation_and_dedupe_by_date_key(db: Database) -> None:
    with pytest.raises(InvalidExportRequest) as missing:
        parse_export_request({"exportType": "codeWaves"})
    assert str(missing.value) == "dateKey is required for exportType 'codeWaves'."
    for bad in ("17000x", "", "1.5", "-1", 1700000000000, "١٢٣"):
        with pytest.raises(InvalidExportRequest, match="dateKey must be a numeric string"):
            parse_export_request({"exportType": "codeWaves", "dateKey": bad})
    ok = parse_export_request({"exportType": "codeWaves", "dateKey": WAVE_1})
    assert ok.export_type.name == "codeWaves" and ok.date_key == WAVE_1

    store = ExportStore(db)
    store.ensure_indexes()

    def create(date_key: str) -> Any:
        return store.create(
            campaign_id="c", campaign_name="C", export_type="codeWaves", requester_user_id="u", date_key=date_key
        )

    first, second, again = create(WAVE_1), create(WAVE_2), create(WAVE_1)
    assert first.created and second.created and not again.created
    assert first.record["_id"] != second.record["_id"] and again.record["_id"] == first.record["_id"]


def test_code_waves_matches_only_its_wave_also_when_stored_as_a_number(db: Database, s3: Any, settings: Settings):
    db["campaigns"].insert_one({"_id": "w", "name": "Waves"})
    db["codes"].insert_many(
        [
            {"_id": "k1", "campaignId": "w", "code": "A", "status": "assigned", "waveDateKey": "1700000000000"},
            {"_id": "k2", "campaignId": "w", "code": "B", "status": "assigned", "waveDateKey": 1700000000000},
            {"_id": "k3", "campaignId": "w", "code": "C", "status": "assigned", "waveDateKey": "1700000000001"},
            {"_id": "k4", "campaignId": "other", "code": "D", "waveDateKey": "1700000000000"},
        ]
    )
    done = _finished(db, request_export(db, "w", "codeWaves", date_key="1700000000000"))
    assert [(r["code"], r["waveDateKey"]) for r in read_csv(_body(s3, settings, done))] == [
        ("A", "1700000000000"),
        ("B", "1700000000000"),
    ]


# -- artistSmsOptIn -----------------------------------------------------------------------


def test_sms_opt_in_needs_a_phone_and_shows_it_only_when_confirmed(db: Database, s3: Any, settings: Settings):
    created = datetime(2024, 1, 15, 10, 30, tzinfo=UTC)
    db["campaigns"].insert_one({"_id": "s", "name": "Sms"})
    db["markets"].insert_one({"_id": "m", "campaignId": "s", "name": "M"})
    db["users"].insert_many([{"_id": f"u{i}", "firstName": f"F{i}", "phone": "+1999"} for i in range(7)])

    def entry(i: int, **fields: Any) -> dict[str, Any]:
        return {"_id": f"e{i}", "campaignId": "s", "userId": f"u{i}", "marketId": "m", "date": {"created": created},
                "optIns": {"allowSms": True}, **fields}  # fmt: skip

    db["entries"].insert_many(
        [
            entry(0, phoneNumber="+15550000", phoneConfirmed=True),  # in, with its number
            entry(1, phoneNumber="+15550001", phoneConfirmed=False),  # in, number withheld
            entry(2, phoneNumber="+15550002"),  # in, never confirmed: withheld
            entry(3, phoneConfirmed=True),  # no number (the user's phone does not count): out
            entry(4, phoneNumber="  ", phoneConfirmed=True),  # blank number: out
            entry(5, phoneNumber="+15550005", phoneConfirmed=True, optIns={"allowSms": False}),  # no SMS: out
            entry(6, phoneNumber=None, phoneConfirmed=True),  # null number: out
        ]
    )
    done = _finished(db, request_export(db, "s", "artistSmsOptIn"))
    rows = read_csv(_body(s3, settings, done))
    assert rows == ex.expected_sms_opt_in(db, "s")
    assert [(r["userId"], r["phoneNumber"], r["phoneConfirmed"]) for r in rows] == [
        ("u0", "'+15550000", "true"),
        ("u1", "", "false"),
        ("u2", "", "false"),
    ]


# -- fanlist ------------------------------------------------------------------------------


def test_fanlist_has_one_row_per_fan_with_their_markets(db: Database, s3: Any, settings: Settings):
    db["campaigns"].insert_one({"_id": "f", "name": "Fans"})
    db["markets"].insert_many(
        [
            {"_id": "m1", "campaignId": "f", "name": "One"},
            {"_id": "m2", "campaignId": "f", "name": "Two; too"},
            {"_id": "m3", "campaignId": "f"},
        ]
    )
    db["users"].insert_many([{"_id": "u1", "firstName": "Ann", "email": "ann@x"}, {"_id": "u3", "lastName": "=Z"}])
    db["entries"].insert_many(
        [
            {"_id": "e1", "campaignId": "f", "userId": "u1", "marketId": "m2", "additionalMarkets": ["m1", "gone"]},
            # a second entry of the same fan (legacy data): its markets are added, once each
            {"_id": "e2", "campaignId": "f", "userId": "u1", "marketId": "m1", "additionalMarkets": ["m3"]},
            {"_id": "e3", "campaignId": "f", "userId": "u2", "marketId": "m3",
             "user": {"firstName": "Snap", "lastName": "Shot", "email": "snap@x"}},  # no user document
            {"_id": "e4", "campaignId": "f", "userId": "u3", "marketId": "elsewhere"},  # no market of the campaign
            {"_id": "e5", "campaignId": "other", "userId": "u9", "marketId": "m1"},
        ]
    )  # fmt: skip
    done = _finished(db, request_export(db, "f", "fanlist"))
    rows = read_csv(_body(s3, settings, done))
    assert rows == ex.expected_fanlist(db, "f")
    assert [(r["userId"], r["email"], r["firstName"], r["markets"], r["marketNames"]) for r in rows] == [
        ("u1", "ann@x", "Ann", "m2;m1;m3", "Two; too;One;"),
        ("u2", "snap@x", "Snap", "m3", ""),
    ]
    assert done["count"] == 2


# -- waitlist -----------------------------------------------------------------------------


def _put_wave(s3: Any, settings: Settings, key: str, body: bytes) -> None:
    s3.put_object(Bucket=settings.vf_scoring_bucket, Key=key, Body=body)


def test_waitlist_excludes_two_million_wave_members_and_warns(db: Database, s3: Any, settings: Settings):
    cid = f"big-{uuid.uuid4().hex[:8]}"
    db["campaigns"].insert_one({"_id": cid, "name": "Big"})
    db["users"].insert_many([{"_id": f"u{i:07d}", "email": f"u{i}@x"} for i in range(1, 42)])  # u0000000: none
    db["entries"].insert_one({"_id": "e0", "campaignId": cid, "userId": "u0000000", "user": {"email": "snap@x"}})
    selected = [False, None, True, "no"]  # only `true` counts as selected
    db["scoring"].insert_many(
        [
            {"_id": f"s{i:03d}", "campaignId": cid, "memberId": f"u{i:07d}", "marketId": "m", "score": i / 10,
             **({"selected": selected[i % 4]} if i < 40 else {})}
            for i in range(42)
        ]
    )  # fmt: skip
    # Two waves of a million members each; three of the campaign's fans are among them, one
    # written with spaces around the id, one in both waves.
    first = "memberId,marketId\r\n" + "".join(f"u{i:07d},m\r\n" for i in range(1_000_000, 2_000_000))
    second = "marketId,memberId\n" + "".join(f"m,u{i:07d}\n" for i in range(2_000_000, 3_000_000))
    first += "u0000001,m\r\n"
    second += "m, u0000005 \nm,u0000041\nm,u0000001\n"
    _put_wave(s3, settings, f"waves/{cid}/1700000000000/part-0.csv", first.encode())
    _put_wave(s3, settings, f"waves/{cid}/1700000500000/part-0.CSV", second.encode())
    _put_wave(s3, settings, f"waves/{cid}/1700000900000/empty.csv", b"")  # schedules nobody
    for key in (f"waves/{cid}/1700000500000/notes.txt", f"waves/{cid}x/1/part-0.csv", f"waves/{cid}/1/deeper/a.csv"):
        _put_wave(s3, settings, key, b"memberId\nu0000003\n")  # not this campaign's wave files

    instance = DagsterInstance.ephemeral()
    done = _finished(db, request_export(db, cid, "waitlist"), instance)
    rows = read_csv(_body(s3, settings, done))
    excluded = ex.wave_members(s3, settings.vf_scoring_bucket, cid)
    assert len(excluded) == 2_000_003
    assert rows == ex.expected_waitlist(db, cid, excluded)
    kept = [f"u{i:07d}" for i in range(42) if (i >= 40 or i % 4 != 2) and i not in (1, 5, 41)]
    assert [r["memberId"] for r in rows] == kept and rows[0]["email"] == "snap@x"
    warnings = [
        e.user_message
        for e in instance.all_logs(done["runId"])
        if e.level == logging.WARNING and "scheduled for SMS" in e.user_message
    ]
    assert len(warnings) == 1 and "2000003 members" in warnings[0]


def test_waitlist_fails_permanently_on_a_wave_file_without_member_ids(db: Database, settings: Settings, s3: Any):
    cid = f"bad-{uuid.uuid4().hex[:8]}"
    db["campaigns"].insert_one({"_id": cid, "name": "Bad"})
    db["scoring"].insert_one({"_id": "s", "campaignId": cid, "memberId": "u", "selected": False})
    _put_wave(s3, settings, f"waves/{cid}/1/part-0.csv", b"member_id\nu\n")
    record = request_export(db, cid, "waitlist")
    result = run_export(record)
    failed = ExportStore(db).get(record["_id"])
    assert not result.success and failed is not None and failed["status"] == FAILED
    assert "has no memberId column" in failed["error"]["message"]
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]


# -- promoterEmailOptIn -------------------------------------------------------------------


def test_promoter_zip_has_a_file_per_promoter_and_fans_in_each_of_their_markets(
    db: Database, s3: Any, settings: Settings
):
    db["campaigns"].insert_one({"_id": "p", "name": "Promo"})
    db["promoters"].insert_many(
        [
            {"_id": "p1", "name": "Live/Nation"},
            {"_id": "p2", "name": "live_nation"},  # the same file name, ignoring case: both get their id
            {"_id": "p3", "name": "=Solo"},
        ]
    )
    db["markets"].insert_many(
        [
            {"_id": "m1", "campaignId": "p", "name": "Both", "promoterIds": ["p1", "p3", "p1"]},
            {"_id": "m2", "campaignId": "p", "name": "Second", "promoterIds": ["p2", "p4"]},  # p4: no document
            {"_id": "m3", "campaignId": "p", "name": "Nobody", "promoterIds": []},
        ]
    )
    db["users"].insert_many([{"_id": f"u{i}", "email": f"u{i}@x", "firstName": f"U{i}"} for i in range(5)])
    db["entries"].insert_many(
        [
            {"_id": "e0", "campaignId": "p", "userId": "u0", "marketId": "m1", "optIns": {"allowPromoter": True}},
            {"_id": "e1", "campaignId": "p", "userId": "u1", "marketId": "m2", "optIns": {"allowPromoter": True}},
            {"_id": "e2", "campaignId": "p", "userId": "u2", "marketId": "m3", "optIns": {"allowPromoter": True}},
            {"_id": "e3", "campaignId": "p", "userId": "u3", "marketId": "m1", "optIns": {"allowPromoter": False}},
            {"_id": "e4", "campaignId": "p", "userId": "u4", "marketId": "m1", "optIns": {"allowPromoter": True}},
        ]
    )
    done = _finished(db, request_export(db, "p", "promoterEmailOptIn"))
    files = _zip_files(_body(s3, settings, done))
    file_of = {"p1": "Live_Nation (p1).csv", "p2": "live_nation (p2).csv", "p3": "_Solo.csv", "p4": "p4.csv"}
    expected = ex.expected_promoter_files(db, "p", file_of.__getitem__)
    assert {n: read_csv(b) for n, b in files.items()} == expected
    assert {n: [r["userId"] for r in read_csv(b)] for n, b in files.items()} == {
        "Live_Nation (p1).csv": ["u0", "u4"],
        "_Solo.csv": ["u0", "u4"],
        "live_nation (p2).csv": ["u1"],
        "p4.csv": ["u1"],
    }
    assert read_csv(files["_Solo.csv"])[0]["promoterName"] == "'=Solo"
    assert read_csv(files["p4.csv"])[0]["promoterName"] == ""
    assert done["count"] == 6 and _members(db, done["_id"]) == {"u0", "u1", "u4"}


# -- every type: an empty result is a header-only file -----------------------------------


def test_every_type_with_no_rows_writes_a_header_only_file(db: Database, s3: Any, settings: Settings):
    cid = f"quiet-{uuid.uuid4().hex[:8]}"
    db["campaigns"].insert_one({"_id": cid, "name": "Quiet"})
    db["markets"].insert_one({"_id": "qm", "campaignId": cid, "name": "M", "promoterIds": ["qp"]})
    db["promoters"].insert_one({"_id": "qp", "name": "Promoter"})
    for export_type in DATA_TYPES:
        spec = EXPORT_TYPES[export_type]
        done = _finished(db, request_export(db, cid, export_type, date_key="1" if spec.requires_date_key else None))
        body = _body(s3, settings, done)
        contents = list(_zip_files(body).values()) if spec.packaging == "zip" else [body]
        assert len(contents) == 1, export_type
        assert read_header(contents[0]) == list(spec.columns) and read_csv(contents[0]) == [], export_type
        assert done["count"] == 0, export_type


def test_fanlist_and_promoters_need_markets(db: Database) -> None:
    db["campaigns"].insert_one({"_id": "nm", "name": "No markets"})
    for export_type in ("fanlist", "promoterEmailOptIn"):
        record = request_export(db, "nm", export_type)
        assert not run_export(record).success
        failed = ExportStore(db).get(record["_id"])
        assert failed is not None and failed["status"] == FAILED and "NoMarketsFound" in failed["error"]["message"]
