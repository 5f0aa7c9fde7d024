"""The reminder e-mail exports (SPEC §3, §5) end to end through their Dagster jobs, against the real servers."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
import os
import zipfile
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from pymongo.database import Database

from devstack.seed import seed_campaign
from export_core.export_types import EXPORT_TYPES
from export_core.failures import STORAGE_UNAVAILABLE
from export_core.keys import safe_key_part
from export_core.records import FAILED, FINISHED, ExportStore
from export_core.settings import Settings
from export_pipelines import stages
from export_pipelines.exports import reminder_email, sources
from export_pipelines.exports.contract import PermanentExportError
from export_pipelines.exports.registry import TYPE_LOGIC
from tests.pipelines.expected_reminder import COLUMNS, REQUIRED, expected_reminder_rows, segmented
from tests.pipelines.helpers import export_jobs, read_csv, read_header, request_export, run_export, workspace

NA_PREFIX = "Ticketmaster/7222895/TMDemandMgmt/DM_ArtistPresale_V03"
UK_PREFIX = "Ticketmaster/1314420/TMDemandMgmt/DM_ArtistPresale_V03"
EVENT_DATE = datetime(2024, 6, 1, 19, 30, tzinfo=UTC)


def _finished(db: Database, record: dict[str, Any]) -> dict[str, Any]:
    done = ExportStore(db).get(record["_id"])
    assert done is not None and done["status"] == FINISHED, done
    return done


def _zip_files(s3: Any, settings: Settings, key: str) -> dict[str, bytes]:
    body = s3.get_object(Bucket=settings.exports_bucket, Key=key)["Body"].read()
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


@pytest.fixture
def watch_transform(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Record where the run kept its scratch and how big each frame handed to the writer was."""
    seen: dict[str, Any] = {"heights": [], "work_dir": None, "existed": False}

    def transform(ctx: Any) -> Any:
        seen["work_dir"], seen["existed"] = ctx.work_dir, ctx.work_dir.is_dir()
        for frame in reminder_email.transform(ctx):
            seen["heights"].append(frame.height)
            yield frame

    for name in ("reminderEmail", "reminderEmailSample", "autoReminderEmail"):
        monkeypatch.setitem(TYPE_LOGIC, name, dataclasses.replace(reminder_email.LOGIC, transform=transform))
    return seen


def _assert_scratch_gone(settings: Settings, seen: dict[str, Any], run_id: str, export_id: str) -> None:
    assert seen["existed"] and seen["work_dir"] == stages.run_scratch_dir(settings.data_dir, run_id), "per-run scratch"
    assert not seen["work_dir"].exists(), "per-run scratch removed"
    assert not any((settings.data_dir / "tmp").iterdir())
    assert not stages.staging_dir(settings.data_dir, export_id).exists(), "nothing in the re-execution staging area"


# -- Use Case 2, Scenario 1, scaled down 100× ---------------------------------------------------

# country → (fans, their scoring locales in turn)
SCENARIO = {
    "US": (2000, ["en-US", "EN_us", "en_US", "es-US", "en-mx"]),
    "CA": (1000, ["en-CA", "fr-CA", "fr_CA"]),
    "GB": (1000, ["en-GB", "en-uk"]),
    "IE": (500, ["en-IE", "en-uk"]),
    "DE": (500, ["de-DE", "en-nz"]),
}


def _seed_scenario(db: Database) -> set[str]:
    """5,000 selected fans (3,000 US/CA, 1,500 GB/IE, 500 DE) plus 800 unselected; returns the selected ids."""
    cid = "tour"
    db["campaigns"].insert_one(
        {
            "_id": cid,
            "name": "Stadium Tour / 2025: Multi-Country",
            "type": "standard",
            "artist": {"name": "Taylor Swift"},
            "locales": ["en-US", "en-GB", "fr-CA", "de-DE"],
            "date": {"presale": EVENT_DATE - timedelta(days=30)},
        }
    )
    db["markets"].insert_many(
        [
            {
                "_id": f"m-{cc}",
                "campaignId": cid,
                "name": f"Market {cc}",
                "countryCode": cc,
                "event": {
                    "name": f"Eras Tour {cc}",
                    "date": EVENT_DATE,
                    "venue": f"Stadium {cc}",
                    "ticketLink": f"https://tickets.example.com/{cc}",
                },
            }
            for cc in SCENARIO
        ]
    )
    users, entries, scoring, codes, selected = [], [], [], [], set()
    n = 0
    for cc, (fans, locales) in SCENARIO.items():
        for k in range(fans + 160):  # the last 160 of each country are not selected
            uid = f"u{n:05d}"
            chosen = k < fans
            if n % 50 != 7:  # 2 %: no user document, the entry's snapshot is used
                users.append({"_id": uid, "firstName": f"Fan{n}", "email": f"fan{n}@example.com", "countryCode": cc})
            entries.append(
                {
                    "_id": f"e{n:05d}",
                    "campaignId": cid,
                    "userId": uid,
                    "marketId": f"m-{cc}",
                    "localeId": locales[k % len(locales)],
                    "user": {"firstName": f"Snap{n}", "email": f"snap{n}@example.com"},
                }
            )
            scoring.append(
                {
                    "_id": f"s{n:05d}",
                    "campaignId": cid,
                    "memberId": uid,
                    "marketId": f"m-{cc}",
                    "locale": locales[k % len(locales)],
                    "countryCode": cc,
                    "selected": chosen,
                    "verified": True,
                }
            )
            if chosen and n % 10:
                codes.append(
                    {
                        "_id": f"k{n:05d}",
                        "campaignId": cid,
                        "marketId": f"m-{cc}",
                        "code": f"CODE{n:05d}",
                        "status": "assigned",
                        "assignedTo": uid,
                        "date": {"assigned": EVENT_DATE},
                    }
                )
            if chosen:
                selected.add(uid)
            n += 1
    for name, docs in (("users", users), ("entries", entries), ("scoring", scoring), ("codes", codes)):
        db[name].insert_many(docs, ordered=False)
    return selected


def test_scenario_segments_5000_fans_by_region_and_locale(
    db: Database, s3: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch, watch_transform: dict[str, Any]
):
    selected = _seed_scenario(db)
    monkeypatch.setattr(reminder_email, "BUCKET_ROWS", 4000)  # ~16k input rows → 4 join buckets
    record = request_export(db, "tour", "reminderEmail")
    result = run_export(record, max_rows=1000)
    assert result.success
    done = _finished(db, record)

    name = "Combined - Stadium Tour _ 2025_ Multi-Country ASU - Reminder Email Data.zip"
    assert done["key"] == f"reminderEmail/tour/{record['_id']}/{name}", "campaign name made key-safe"
    files = _zip_files(s3, settings, done["key"])
    assert {name.split("/")[0] for name in files} == {"NA", "UK"}
    rows_by_file = {}
    for name, body in files.items():
        assert read_header(body) == COLUMNS, f"{name}: every file starts with the header"
        rows_by_file[name] = read_csv(body)
        assert 1 <= len(rows_by_file[name]) <= 1000
    all_rows = [r for rows in rows_by_file.values() for r in rows]

    region_rows = Counter(name.split("/")[0] for name, rows in rows_by_file.items() for _ in rows)
    assert region_rows == {"NA": 3500, "UK": 1500}
    assert {r["countryCode"] for r in all_rows if r["region"] == "NA"} == {"US", "CA", "DE"}
    assert {r["countryCode"] for r in all_rows if r["region"] == "UK"} == {"GB", "IE"}
    assert Counter(r["memberId"] for r in all_rows) == Counter(selected), "every selected fan exactly once"
    assert done["count"] == 5000

    # Locale normalisation, fan by fan, and the folder/file each row landed in.
    raw_locale = {s["memberId"]: s["locale"] for s in db["scoring"].find({"campaignId": "tour"})}
    normalised = {"en-uk": "en-gb", "en-mx": "en-us", "en-nz": "en-au", "EN_us": "en-us", "fr_CA": "fr-ca"}
    for name, rows in rows_by_file.items():
        for row in rows:
            raw = raw_locale[row["memberId"]]
            assert row["locale"] == normalised.get(raw, raw.lower().replace("_", "-"))
            assert name.startswith(f"{row['region']}/{row['locale']}_")
    assert {r["mid"] for r in all_rows if r["countryCode"] == "DE"} == {"1347780"}, "DE keeps its own MID"

    # Segments: {locale}_1.csv, _2.csv, ... all full but the last.
    logical = Counter(name.rsplit("_", 1)[0] for name in files)
    assert logical["NA/en-us"] == 2 and logical["UK/en-gb"] == 2
    for name, rows in rows_by_file.items():
        base, number = name.removesuffix(".csv").rsplit("_", 1)
        total = sum(len(r) for n, r in rows_by_file.items() if n.rsplit("_", 1)[0] == base)
        assert len(rows) == (1000 if int(number) < math.ceil(total / 1000) else total - 1000 * (int(number) - 1))

    # The same rows an independent computation gives (order within a file follows the join buckets).
    expected = segmented(expected_reminder_rows(db, "tour"), 10**9)
    got = {base: sorted(map(str, rows)) for base, rows in _merge_segments(rows_by_file).items()}
    assert got == {name.removesuffix("_1.csv"): sorted(map(str, rows)) for name, rows in expected.items()}

    assert done["meta"]["files"] == [{"name": n, "rows": len(r)} for n, r in sorted(rows_by_file.items())]
    assert set(REQUIRED) <= set(EXPORT_TYPES["reminderEmail"].columns)

    # Memory stays flat: the writer got one join bucket at a time, never a region or the whole campaign.
    assert len(watch_transform["heights"]) >= 4 and max(watch_transform["heights"]) < 2000
    _assert_scratch_gone(settings, watch_transform, result.run_id, record["_id"])


def _merge_segments(rows_by_file: dict[str, list[dict[str, str]]]) -> dict[str, list[dict[str, str]]]:
    merged: dict[str, list[dict[str, str]]] = {}
    for name in sorted(rows_by_file, key=lambda n: (n.rsplit("_", 1)[0], int(n.removesuffix(".csv").rsplit("_")[-1]))):
        merged.setdefault(name.rsplit("_", 1)[0], []).extend(rows_by_file[name])
    return merged


# -- generated data: every row, every cell ------------------------------------------------------


@pytest.fixture
def seeded_fanclub(db: Database) -> str:
    seed_campaign(
        db, campaign_id="fc", n_entries=1200, seed=11, campaign_name='Fan Club: ☃ "Zoë"', campaign_type="fanclub"
    )
    return "fc"


def test_rows_match_an_independent_computation(
    db: Database, s3: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch, seeded_fanclub: str
):
    record = request_export(db, seeded_fanclub, "reminderEmail")
    assert run_export(record, max_rows=150).success
    done = _finished(db, record)
    files = {name: read_csv(body) for name, body in _zip_files(s3, settings, done["key"]).items()}
    expected = segmented(expected_reminder_rows(db, seeded_fanclub), 150)
    assert files == expected  # every file, every row, every cell, in order
    rows = [r for f in files.values() for r in f]
    assert done["count"] == len(rows) > 300
    assert {r["presaleName"] for r in rows} == {"Fan Club Presale"}, "fanclub wording"
    assert any(r["firstName"].startswith("'") for r in rows), "formula-like names are escaped"
    assert any(r["code"] for r in rows) and any(not r["code"] for r in rows)
    assert {"NA/en-au_1.csv", "UK/en-gb_1.csv", "NA/fr-ca_1.csv"} <= set(files)
    assert not any(name.endswith((".csv.csv", "/_1.csv")) for name in files)


def test_sample_has_at_most_ten_rows_per_region_and_locale(
    db: Database, s3: Any, settings: Settings, seeded_fanclub: str
):
    record = request_export(db, seeded_fanclub, "reminderEmailSample")
    assert run_export(record).success
    done = _finished(db, record)
    assert done["key"].endswith("ASU - Reminder Email Data (Sample).zip")
    files = _zip_files(s3, settings, done["key"])
    full = segmented(expected_reminder_rows(db, seeded_fanclub), 10**9)
    assert {n.removesuffix("_1.csv") for n in files} == {n.removesuffix("_1.csv") for n in full}, "every file sampled"
    for name, body in files.items():
        assert read_header(body) == COLUMNS
        assert read_csv(body) == full[name][:10], "the first ten of that region and locale"
    assert done["count"] == sum(min(10, len(rows)) for rows in full.values())


def test_auto_reminder_writes_one_csv_per_region_under_its_sfmc_prefix(
    db: Database, s3: Any, settings: Settings, seeded_fanclub: str, watch_transform: dict[str, Any]
):
    record = request_export(db, seeded_fanclub, "autoReminderEmail")
    result = run_export(record)
    assert result.success
    done = _finished(db, record)
    campaign = safe_key_part('Fan Club: ☃ "Zoë"')
    assert done["key"] == [
        f"{NA_PREFIX}_{campaign}_NA_{record['_id']}.csv",
        f"{UK_PREFIX}_{campaign}_UK_{record['_id']}.csv",
    ]
    expected = expected_reminder_rows(db, seeded_fanclub)
    for key, region in zip(done["key"], ("NA", "UK"), strict=True):
        obj = s3.get_object(Bucket=settings.sfmc_bucket, Key=key)
        body = obj["Body"].read()
        assert read_header(body) == COLUMNS and obj["ContentType"].startswith("text/csv")
        assert read_csv(body) == [row for _, row in expected if row["region"] == region]
        grants = s3.get_object_acl(Bucket=settings.sfmc_bucket, Key=key)["Grants"]
        assert [g["Permission"] for g in grants] == ["FULL_CONTROL"], "private"
    assert done["count"] == len(expected)
    assert [f["name"] for f in done["meta"]["files"]] == ["NA.csv", "UK.csv"]
    _assert_scratch_gone(settings, watch_transform, result.run_id, record["_id"])


# -- hand-made documents: the joins' and the tables' edge cases ------------------------------------


def test_fallbacks_codes_unknown_countries_and_the_lne_switch(
    db: Database, s3: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch
):
    t0 = datetime(2024, 3, 1, tzinfo=UTC)
    db["campaigns"].insert_many(
        [
            {"_id": "c", "name": "=Small", "type": "standard", "artist": {"name": "-Band"}},
            {"_id": "lne", "name": "Promoted", "type": "standard", "artist": {"name": "Band"}},
        ]
    )
    event = {"name": "Show", "date": EVENT_DATE, "venue": "Hall", "ticketLink": "https://t.example/1"}
    db["markets"].insert_many(
        [
            {"_id": "m1", "campaignId": "c", "countryCode": "FR", "event": event},
            {"_id": "m2", "campaignId": "c", "countryCode": "GB"},
            {"_id": "m3", "campaignId": "lne", "countryCode": "GB", "event": event},
        ]
    )
    db["users"].insert_many(
        [
            {"_id": "a", "firstName": "@ann", "countryCode": "DE"},  # no email: the snapshot's
            {"_id": "b", "email": "b@x", "firstName": "Bo"},
        ]
    )
    db["entries"].insert_many(
        [
            {"_id": "e1", "campaignId": "c", "userId": "a", "localeId": "de_DE", "codes": ["LEGACY"],
             "user": {"email": "a@snap", "firstName": "Snap A"}},
            {"_id": "e2", "campaignId": "c", "userId": "b", "localeId": "EN_uk"},
            {"_id": "e3", "campaignId": "c", "userId": "nouser", "user": {"email": "n@snap", "firstName": "N"}},
            {"_id": "e4", "campaignId": "lne", "userId": "a", "localeId": "en-GB"},
        ]
    )  # fmt: skip
    db["scoring"].insert_many(
        [
            {"_id": "s1", "campaignId": "c", "memberId": "a", "marketId": "m1", "selected": True},
            {"_id": "s2", "campaignId": "c", "memberId": "b", "marketId": "m2", "countryCode": "IE", "selected": True},
            {"_id": "s3", "campaignId": "c", "memberId": "nouser", "marketId": "m1", "selected": True,
             "countryCode": "FR", "locale": "??"},
            {"_id": "s4", "campaignId": "c", "memberId": "b", "marketId": "m1", "selected": False},
            {"_id": "s5", "campaignId": "lne", "memberId": "a", "marketId": "m3", "selected": True},
        ]
    )  # fmt: skip
    db["codes"].insert_many(
        [
            {"_id": "k1", "campaignId": "c", "marketId": "m1", "code": "OLD", "status": "assigned",
             "assignedTo": "a", "date": {"assigned": t0}},
            {"_id": "k2", "campaignId": "c", "marketId": "m1", "code": "NEW", "status": "assigned",
             "assignedTo": "a", "date": {"assigned": t0 + timedelta(hours=1)}},
            {"_id": "k3", "campaignId": "c", "marketId": "m2", "code": "OTHERMARKET", "status": "assigned",
             "assignedTo": "a", "date": {"assigned": t0}},
            {"_id": "k4", "campaignId": "c", "marketId": "m2", "code": "FREE", "status": "available"},
            {"_id": "k5", "campaignId": "c", "marketId": "m2", "code": "=B", "status": "assigned", "assignedTo": "b"},
        ]
    )  # fmt: skip
    lne_config = json.dumps({"lneCampaignIds": ["lne"]})

    record = request_export(db, "c", "reminderEmail")
    assert run_export(record, sfmc_config=lne_config).success
    files = {n: read_csv(b) for n, b in _zip_files(s3, settings, _finished(db, record)["key"]).items()}
    assert sorted(files) == ["NA/de-de_1.csv", "NA/en-us_1.csv", "UK/en-gb_1.csv"]
    (a,), (n,), (b,) = files["NA/de-de_1.csv"], files["NA/en-us_1.csv"], files["UK/en-gb_1.csv"]
    # a: country from the user (DE), e-mail from the snapshot, newest code of the scoring market.
    assert (a["email"], a["firstName"], a["countryCode"], a["mid"], a["code"]) == ("a@snap", "'@ann", "DE", "1347780",
                                                                                    "NEW")  # fmt: skip
    assert (a["eventName"], a["eventDate"], a["venue"], a["eventLink"]) == (
        "Show", "2024-06-01T19:30:00.000Z", "Hall", "https://t.example/1"
    )  # fmt: skip
    assert (a["campaignName"], a["artistName"], a["presaleName"], a["presaleDate"]) == (
        "'=Small", "'-Band", "Verified Fan Presale", ""
    )  # fmt: skip
    # nouser: no user document at all; an unknown country goes to NA with NA's MID; a junk locale → default.
    assert (n["email"], n["firstName"], n["region"], n["mid"], n["code"], n["locale"]) == (
        "n@snap", "N", "NA", "7222895", "", "en-us"
    )  # fmt: skip
    # b: scoring's country wins over the market's; locale from the entry; market without an event.
    assert (b["countryCode"], b["mid"], b["locale"], b["code"], b["eventName"]) == ("IE", "1362441", "en-gb", "'=B", "")

    lne = request_export(db, "lne", "reminderEmail")
    assert run_export(lne, sfmc_config=lne_config).success
    files = {n: read_csv(b) for n, b in _zip_files(s3, settings, _finished(db, lne)["key"]).items()}
    assert list(files) == ["LNE/en-gb_1.csv"]
    assert (files["LNE/en-gb_1.csv"][0]["mid"], files["LNE/en-gb_1.csv"][0]["region"]) == ("518008883", "LNE")


def test_no_selected_fans(db: Database, s3: Any, settings: Settings):
    db["campaigns"].insert_one({"_id": "q", "name": "Quiet"})
    db["markets"].insert_one({"_id": "m", "campaignId": "q"})
    db["scoring"].insert_one({"_id": "s", "campaignId": "q", "memberId": "u", "marketId": "m", "selected": False})
    auto = request_export(db, "q", "autoReminderEmail")
    assert run_export(auto).success
    done = _finished(db, auto)
    assert (done["key"], done["count"]) == ([], 0), "no region, no object"
    record = request_export(db, "q", "reminderEmail")
    assert run_export(record).success
    done = _finished(db, record)
    files = _zip_files(s3, settings, done["key"])
    assert done["count"] == 0 and all(read_header(b) == COLUMNS and not read_csv(b) for b in files.values())


# -- scratch: removed after a failed run too, and a later run starts from nothing ------------------


def test_failed_upload_removes_the_scratch_and_a_rerun_finishes(
    db: Database, s3: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch, watch_transform: dict[str, Any]
):
    seed_campaign(db, campaign_id="f", n_entries=300, seed=3)
    record = request_export(db, "f", "autoReminderEmail")
    result = run_export(record, sfmc_bucket="no-such-bucket")
    assert not result.success
    failed = ExportStore(db).get(record["_id"])
    assert failed is not None and failed["status"] == FAILED
    assert failed["error"] == {"message": STORAGE_UNAVAILABLE, "payload": "make_and_upload_files"}
    retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert len(retries) == 3, "each retry makes its files again in the run's scratch"
    _assert_scratch_gone(settings, watch_transform, result.run_id, record["_id"])

    rerun = run_export(record)
    assert rerun.success
    done = _finished(db, record)
    assert [k.rsplit("_", 1)[1] for k in done["key"]] == [f"{record['_id']}.csv"] * 2, "same keys as the first try"
    _assert_scratch_gone(settings, watch_transform, rerun.run_id, record["_id"])


def test_per_run_scratch_jobs_make_and_upload_their_files_in_one_step():
    """A re-execution from failure starts where the files are made: no step needs another run's scratch."""
    for name in ("reminderEmail", "reminderEmailSample", "autoReminderEmail"):
        steps = [node.name for node in export_jobs()[name].graph.node_dict.values()]
        assert sorted(steps) == ["finish_export", "make_and_upload_files", "start_export"]
    assert "package_files" in export_jobs()["entries"].graph.node_dict


def test_a_stage_whose_inputs_are_gone_fails_instead_of_redoing_earlier_stages(db: Database, settings: Settings):
    seed_campaign(db, campaign_id="r", n_entries=200, seed=5)
    record = request_export(db, "r", "reminderEmail")
    ctx = stages.build_context(record, db, None, workspace(settings), logging.getLogger("test"), run_id="run-2")
    with pytest.raises(PermanentExportError, match="re-run the export from the start"):
        stages.package(ctx)
    with pytest.raises(PermanentExportError, match="re-run the export from the start"):
        stages.transform(ctx)
    assert not (ctx.work_dir / "extract").exists(), "nothing was extracted behind the log's back"


def test_other_types_keep_their_staging_directory(settings: Settings, db: Database):
    db["campaigns"].insert_one({"_id": "x", "name": "X"})
    record = request_export(db, "x", "entries")
    ctx = stages.build_context(record, db, None, workspace(settings), logging.getLogger("test"), run_id="some-run")
    assert ctx.work_dir == stages.staging_dir(settings.data_dir, record["_id"]), (
        "re-execution from failure still resumes"
    )


def test_stale_run_scratch_of_killed_runs_is_swept_when_a_run_ends(db: Database, settings: Settings):
    seed_campaign(db, campaign_id="x", n_entries=5, seed=1)
    stale = stages.run_scratch_dir(settings.data_dir, "killed-run")
    (stale / "extract").mkdir(parents=True)
    old = datetime.now(UTC).timestamp() - 3 * settings.timeout_millis / 1000
    os.utime(stale, (old, old))
    recent = stages.run_scratch_dir(settings.data_dir, "running")
    recent.mkdir()
    record = request_export(db, "x", "entries")
    assert run_export(record).success
    assert not stale.exists() and recent.exists()


def test_bucketing_keeps_every_row_exactly_once(tmp_path: Path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    out.mkdir()
    for part in range(3):
        sources.write_part(
            pl.DataFrame({"memberId": [f"u{part}-{i}" for i in range(500)] + [None]}),
            raw / f"p{part}{sources.PART_SUFFIX}",
        )
    reminder_email._bucketize(raw, out, "memberId", 7)
    buckets = [sources.read_directory(d, {"memberId": pl.String}) for d in sorted(out.iterdir())]
    assert len(buckets) == 7 and sum(b.height for b in buckets) == 1503
    ids = [i for b in buckets for i in b["memberId"].to_list()]
    assert Counter(ids)[None] == 3 and len(set(ids)) == 1501
