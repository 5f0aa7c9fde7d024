"""Tests of the demo/test data generator against a local MongoDB-protocol server."""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pymongo
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymongo.database import Database
from secantus import SecantusDBServer

from devstack import seed as seed_module
from devstack.seed import (
    REFERENCE_DAY,
    CampaignExistsError,
    main,
    seed_campaign,
    wave_date_keys,
)

N = 2_003  # not a multiple of the block size (1,000) nor of the batch sizes used below
SEED = 7
DATA_COLLECTIONS = ("campaigns", "markets", "promoters", "users", "entries", "scoring", "codes")


@pytest.fixture(scope="module")
def server() -> Iterator[SecantusDBServer]:
    s = SecantusDBServer(storage_path=":memory:")
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server: SecantusDBServer) -> Iterator[pymongo.MongoClient[Any]]:
    # tz_aware so the tests see the UTC datetimes exactly as written
    c: pymongo.MongoClient[Any] = pymongo.MongoClient(server.uri, directConnection=True, tz_aware=True)
    with c:
        yield c


@pytest.fixture(scope="module")
def seeded(client: pymongo.MongoClient[Any]) -> tuple[Database[Any], dict[str, Any]]:
    """One campaign seeded once and only read by the tests that use it."""
    db = client["seed_main"]
    return db, seed_campaign(db, n_entries=N, seed=SEED)


def _all(
    db: Database[Any],
    collection: str,
    query: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    return list(db[collection].find(query or {}).sort("_id", 1))


def _dump(db: Database[Any]) -> dict[str, list[dict[str, Any]]]:
    return {name: _all(db, name) for name in DATA_COLLECTIONS}


class _RecordingDb:
    """Passes everything to a real database and records each insert_many batch size."""

    def __init__(self, db: Database[Any]) -> None:
        self._db = db
        self.batches: dict[str, list[int]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)

    def __getitem__(self, name: str) -> Any:
        collection = self._db[name]
        recorder = self

        class _Collection:
            def __getattr__(self, attr: str) -> Any:
                return getattr(collection, attr)

            def insert_many(self, docs: list[dict[str, Any]], **kwargs: Any) -> Any:
                recorder.batches.setdefault(name, []).append(len(docs))
                return collection.insert_many(docs, **kwargs)

        return _Collection()


# --- counts, determinism, chunking ---------------------------------------------------


def test_summary_matches_the_database(seeded: tuple[Database[Any], dict[str, Any]]) -> None:
    db, summary = seeded
    for name in DATA_COLLECTIONS:
        assert db[name].count_documents({}) == summary[name], name
    assert summary["campaigns"] == 1
    assert summary["markets"] == 7  # one per default country
    assert summary["entries"] == summary["scoring"] == N
    missing_users = sum(1 for i in range(N) if i % 100 in (0, 50))
    assert summary["users"] == N - missing_users
    selected = db["scoring"].count_documents({"selected": True})
    assert 0.8 * selected <= summary["codes"] <= 1.2 * selected
    assert summary["waveDateKeys"] == list(wave_date_keys())
    assert summary["waveFiles"] == []


def test_same_seed_same_documents_whatever_the_batch_size(
    client: pymongo.MongoClient[Any],
    seeded: tuple[Database[Any], dict[str, Any]],
) -> None:
    db, _ = seeded
    recording = _RecordingDb(client["seed_batches"])
    seed_campaign(recording, n_entries=N, seed=SEED, batch_size=700)  # type: ignore[arg-type]
    assert _dump(db) == _dump(client["seed_batches"])
    # the last, partial batch is written too, and no batch is bigger than asked
    assert recording.batches["entries"] == [700, 700, 603]
    assert recording.batches["scoring"] == [700, 700, 603]
    assert all(size <= 700 for sizes in recording.batches.values() for size in sizes)


def test_another_seed_gives_other_data(client: pymongo.MongoClient[Any]) -> None:
    a, b = client["seed_other_a"], client["seed_other_b"]
    seed_campaign(a, n_entries=300, seed=1)
    seed_campaign(b, n_entries=300, seed=2)
    assert [e["_id"] for e in _all(a, "entries")] == [e["_id"] for e in _all(b, "entries")]
    assert _all(a, "entries") != _all(b, "entries")


def test_small_and_empty_campaigns(client: pymongo.MongoClient[Any]) -> None:
    db = client["seed_small"]
    summary = seed_campaign(db, campaign_id="empty", n_entries=0)
    assert (summary["entries"], summary["users"], summary["codes"]) == (0, 0, 0)
    assert db["campaigns"].count_documents({"_id": "empty"}) == 1
    summary = seed_campaign(db, campaign_id="one-market", n_entries=37, countries=("FR",))
    assert summary["markets"] == 1 and summary["entries"] == 37
    market = db["markets"].find_one({"campaignId": "one-market"})
    assert market is not None and market["countryCode"] == "FR"
    assert len(market["promoterIds"]) == 2
    assert all(e["additionalMarkets"] == [] for e in _all(db, "entries", {"campaignId": "one-market"}))


def test_rejects_bad_arguments(client: pymongo.MongoClient[Any]) -> None:
    db = client["seed_bad_args"]
    with pytest.raises(ValueError):
        seed_campaign(db, n_entries=-1)
    with pytest.raises(ValueError):
        seed_campaign(db, campaign_type="vip")
    with pytest.raises(ValueError):
        seed_campaign(db, s3_client=object())  # no bucket
    assert db["entries"].count_documents({}) == 0


# --- shape and integrity -------------------------------------------------------------


def test_ids_are_campaign_prefixed_strings(
    seeded: tuple[Database[Any], dict[str, Any]],
) -> None:
    db, _ = seeded
    assert db["campaigns"].find_one({"_id": "123"}) is not None
    prefixes = {
        "markets": "123-m",
        "promoters": "123-p",
        "users": "123-u",
        "entries": "123-e",
        "scoring": "123-s",
        "codes": "123-k",
    }
    for name, prefix in prefixes.items():
        ids = [d["_id"] for d in db[name].find({}, {"_id": 1})]
        assert ids and all(isinstance(i, str) and i.startswith(prefix) for i in ids), name
    assert db["entries"].find_one({"_id": "123-e0000042"})["userId"] == "123-u0000042"  # type: ignore[index]


def test_referential_integrity(seeded: tuple[Database[Any], dict[str, Any]]) -> None:
    db, _ = seeded
    markets = {m["_id"]: m for m in _all(db, "markets")}
    promoters = {p["_id"] for p in _all(db, "promoters")}
    entries = _all(db, "entries")
    users = {u["_id"]: u for u in _all(db, "users")}
    scoring = _all(db, "scoring")
    codes = _all(db, "codes")

    assert all(set(m["promoterIds"]) <= promoters for m in markets.values())
    assert {len(m["promoterIds"]) for m in markets.values()} == {1, 2}
    uses = Counter(p for m in markets.values() for p in m["promoterIds"])
    assert max(uses.values()) >= 2  # markets share promoters

    user_ids = [e["userId"] for e in entries]
    assert len(set(user_ids)) == len(entries)  # one entry per user
    assert set(users) <= set(user_ids)
    market_of_user = {e["userId"]: e["marketId"] for e in entries}
    for e in entries:
        assert e["marketId"] in markets
        extra = e["additionalMarkets"]
        assert len(extra) == len(set(extra)) <= 2
        assert e["marketId"] not in extra and set(extra) <= set(markets)
    with_extra = sum(1 for e in entries if e["additionalMarkets"]) / len(entries)
    assert 0.15 < with_extra < 0.25
    for u in users.values():
        assert u["countryCode"] == markets[market_of_user[u["_id"]]]["countryCode"]

    assert sorted(s["memberId"] for s in scoring) == sorted(user_ids)
    for s in scoring:
        assert s["marketId"] == market_of_user[s["memberId"]]
        assert s["countryCode"] == markets[s["marketId"]]["countryCode"]

    selected = {s["memberId"] for s in scoring if s["selected"]}
    codes_of_entry = {e["userId"]: e["codes"] for e in entries}
    for c in codes:
        if c["status"] == "assigned":
            assert c["assignedTo"] in selected
            assert c["marketId"] == market_of_user[c["assignedTo"]]
            assert c["code"] in codes_of_entry[c["assignedTo"]]
        else:
            assert c["status"] == "available" and "assignedTo" not in c
    assert len({c["code"] for c in codes}) == len(codes)


def test_scoring_shape(seeded: tuple[Database[Any], dict[str, Any]]) -> None:
    db, _ = seeded
    scoring = _all(db, "scoring")
    assert 0.65 < sum(s["verified"] for s in scoring) / N < 0.75
    assert 0.35 < sum(s["selected"] for s in scoring) / N < 0.45
    assert all(s["verified"] for s in scoring if s["selected"])
    for s in scoring:
        assert isinstance(s["score"], float) and isinstance(s["rank"], int)
        assert set(s["geo"]) == {"lat", "lon", "postalCode"}
    by_market: dict[str, list[dict[str, Any]]] = {}
    for s in scoring:
        by_market.setdefault(s["marketId"], []).append(s)
    for rows in by_market.values():
        rows.sort(key=lambda s: s["rank"])
        assert [s["rank"] for s in rows] == list(range(1, len(rows) + 1))
        assert all(a["score"] >= b["score"] for a, b in zip(rows, rows[1:], strict=False))


def test_codes_and_waves(seeded: tuple[Database[Any], dict[str, Any]]) -> None:
    db, _ = seeded
    codes = _all(db, "codes")
    assigned = [c for c in codes if c["status"] == "assigned"]
    assert assigned and len(assigned) < len(codes)
    assert {c["waveDateKey"] for c in assigned} == set(wave_date_keys())
    for c in assigned:
        wave_ms = int(c["waveDateKey"])
        assigned_ms = int(c["date"]["assigned"].timestamp() * 1000)
        assert 0 <= assigned_ms - wave_ms < 2 * 3_600_000


def test_dates_are_utc_with_milliseconds(seeded: tuple[Database[Any], dict[str, Any]]) -> None:
    db, _ = seeded
    campaign = db["campaigns"].find_one({"_id": "123"})
    assert campaign is not None
    dates = campaign["date"]
    assert dates["open"] < dates["close"] < dates["presale"]
    assert campaign["type"] == "standard" and campaign["artist"]["name"]
    assert {"en-US", "en-GB", "fr-CA"} <= set(campaign["locales"])
    created = [e["date"]["created"] for e in _all(db, "entries")]
    created += [c["date"]["assigned"] for c in _all(db, "codes", {"status": "assigned"})]
    created += [m["event"]["date"] for m in _all(db, "markets")]
    for d in created:
        assert d.tzinfo is not None and d.utcoffset() == timedelta(0)
        assert d.microsecond % 1000 == 0
    assert min(created[:N]) >= dates["open"] and max(created[:N]) < dates["close"]
    assert len({d.microsecond for d in created[:N]}) > 100  # milliseconds really vary
    assert created[0].tzinfo is not None and created[0].astimezone(UTC) == created[0]


# --- the awkward cases ---------------------------------------------------------------


def test_unicode_and_emoji_names(seeded: tuple[Database[Any], dict[str, Any]]) -> None:
    db, _ = seeded
    names = {u.get("firstName") for u in _all(db, "users")}
    names |= {u.get("lastName") for u in _all(db, "users")}
    assert {"Zoë", "Ōtani", "李", "🎸Rocker"} <= names
    assert any(e["user"]["email"].startswith("🎸") for e in _all(db, "entries") if "user" in e)


def test_missing_users_and_missing_fields(
    seeded: tuple[Database[Any], dict[str, Any]],
) -> None:
    db, _ = seeded
    entries = _all(db, "entries")
    users = {u["_id"]: u for u in _all(db, "users")}
    orphans = [e for e in entries if e["userId"] not in users]
    assert 0.015 < len(orphans) / N < 0.025
    # the snapshot is what an export falls back to
    assert all(e["user"]["firstName"] and e["user"]["email"] for e in orphans)
    snapshot = {e["userId"]: e.get("user") for e in entries}
    for field in ("firstName", "lastName", "email"):
        partial = [u for u in users.values() if field not in u]
        assert partial, field
        assert all(snapshot[u["_id"]][field] for u in partial)  # type: ignore[index]
    assert any(u.get("lastName", "") is None for u in users.values())
    assert any("postalCode" not in u for u in users.values())
    assert any("user" not in e for e in entries)  # legacy entry without a snapshot
    assert any("phoneNumber" not in e for e in entries)
    assert any("phoneNumber" in e and e["phoneNumber"] is None for e in entries)
    with_phone = [e for e in entries if e.get("phoneNumber")]
    assert 0.8 < len(with_phone) / N < 0.95
    assert all(e["phoneNumber"].startswith("+") for e in with_phone)


@pytest.mark.parametrize("prefix", ["=", "+", "-", "@"])
def test_formula_like_values(seeded: tuple[Database[Any], dict[str, Any]], prefix: str) -> None:
    db, _ = seeded
    users = _all(db, "users")
    entries = _all(db, "entries")
    assert any(u.get("firstName", "").startswith(prefix) for u in users)
    assert any((u.get("lastName") or "").startswith(prefix) for u in users)
    assert any(u.get("email", "").startswith(prefix) for u in users)
    assert any(str(e["fields"].get("favoriteSong", "")).startswith(prefix) for e in entries)


@pytest.mark.parametrize("char", [",", '"', "\n"])
def test_csv_hostile_values(seeded: tuple[Database[Any], dict[str, Any]], char: str) -> None:
    db, _ = seeded
    users = _all(db, "users")
    assert any(char in (u.get("firstName") or "") for u in users)
    assert any(char in (u.get("lastName") or "") for u in users)
    assert any(char in str(e["fields"].get("favoriteSong", "")) for e in _all(db, "entries"))


def test_awkward_locales(seeded: tuple[Database[Any], dict[str, Any]]) -> None:
    db, _ = seeded
    locales = Counter(e["localeId"] for e in _all(db, "entries"))
    assert {"en_US", "EN-us", "en-uk", "en-mx", "en-nz", "en-US", "fr-CA"} <= set(locales)
    assert locales["en-US"] > locales["en_US"]


def test_opt_ins_vary(seeded: tuple[Database[Any], dict[str, Any]]) -> None:
    db, _ = seeded
    entries = _all(db, "entries")
    for flag in ("allowMarketing", "allowLiveNation", "allowPromoter", "allowSms"):
        values = Counter(e["optIns"][flag] for e in entries)
        assert set(values) == {True, False}, flag
    assert Counter(len(e["codes"]) for e in entries).keys() >= {0, 1, 2}


# --- several campaigns, re-runs, indexes ---------------------------------------------


def test_several_campaigns_share_a_database(client: pymongo.MongoClient[Any]) -> None:
    db = client["seed_multi"]
    seed_campaign(db, campaign_id="123", n_entries=250)
    seed_campaign(
        db, campaign_id="456", n_entries=150, seed=3, campaign_name='=Weird, "Name"\n', campaign_type="fanclub"
    )
    assert db["entries"].count_documents({"campaignId": "123"}) == 250
    assert db["entries"].count_documents({"campaignId": "456"}) == 150
    assert db["scoring"].count_documents({}) == 400
    campaign = db["campaigns"].find_one({"_id": "456"})
    assert campaign is not None
    assert campaign["name"] == '=Weird, "Name"\n' and campaign["type"] == "fanclub"


def test_refuses_a_seeded_campaign_and_completes_an_interrupted_one(
    client: pymongo.MongoClient[Any],
) -> None:
    db, reference = client["seed_rerun"], client["seed_rerun_ref"]
    seed_campaign(reference, n_entries=1_200)
    seed_campaign(db, n_entries=1_200)
    with pytest.raises(CampaignExistsError):
        seed_campaign(db, n_entries=1_200)
    # an interrupted run: no campaign document yet, part of the rows missing
    db["campaigns"].delete_one({"_id": "123"})
    db["entries"].delete_many({"_id": {"$gte": "123-e0000600"}})
    db["codes"].delete_many({"_id": {"$lt": "123-k0000100"}})
    seed_campaign(db, n_entries=1_200)
    assert _dump(db) == _dump(reference)


# --- S3 wave files and the CLI -------------------------------------------------------


def test_wave_files(client: pymongo.MongoClient[Any], s3: Any, settings: Any) -> None:
    """Against the suite's real S3 server (moto over HTTP)."""
    db = client["seed_waves"]
    bucket = settings.vf_scoring_bucket
    summary = seed_campaign(db, campaign_id="777", n_entries=600, s3_client=s3, vf_scoring_bucket=bucket)
    keys = [f"waves/777/{k}/part-0.csv" for k in wave_date_keys()]
    assert summary["waveFiles"] == keys
    members = {}
    for key, date_key in zip(keys, wave_date_keys(), strict=True):
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
        rows = list(csv.DictReader(io.StringIO(body)))
        members[date_key] = {r["memberId"] for r in rows}
        assert len(rows) == len(members[date_key])
    selected = {s["memberId"]: s["selected"] for s in _all(db, "scoring")}
    for date_key, ids in members.items():
        assert ids <= set(selected)
        holders = {c["assignedTo"] for c in _all(db, "codes", {"waveDateKey": date_key})}
        assert holders <= ids
        assert any(not selected[m] for m in ids)  # a few unselected fans are scheduled too
    assert summary["waveMembers"] == [len(members[k]) for k in wave_date_keys()]


def test_cli_seeds_once_with_if_empty(server: SecantusDBServer, capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "--uri",
        server.uri,
        "--db",
        "seed_cli",
        "--campaign-id",
        "c1",
        "--entries",
        "120",
        "--seed",
        "4",
        "--if-empty",
    ]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert first.count("\n") == 1 and "entries=120" in first
    assert main(args) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert main(args[:-1]) == 1  # without --if-empty a second seed is refused
    c: pymongo.MongoClient[Any] = pymongo.MongoClient(server.uri, directConnection=True)
    with c:
        assert c["seed_cli"]["entries"].count_documents({"campaignId": "c1"}) == 120


# --- pure helpers --------------------------------------------------------------------


@given(st.lists(st.tuples(st.integers(0, 4), st.floats(0, 1)), max_size=200))
def test_rank_within_market(rows: list[tuple[int, float]]) -> None:
    market = np.array([m for m, _ in rows], dtype=np.int16)
    score = np.array([s for _, s in rows], dtype=np.float64)
    rank = seed_module._rank_within_market(market, score)
    for m in set(market.tolist()):
        idx = np.flatnonzero(market == m)
        assert sorted(rank[idx].tolist()) == list(range(1, len(idx) + 1))
        by_rank = idx[np.argsort(rank[idx])]
        assert np.all(np.diff(score[by_rank]) <= 0)


@given(st.integers(1, 9), st.integers(0, 2**32 - 1))
def test_additional_markets_never_repeat_or_include_own(n_markets: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    market = rng.integers(0, n_markets, size=300)
    extra = seed_module._additional_markets(market, n_markets, rng)
    for own, others in zip(market.tolist(), extra, strict=True):
        assert own not in others and len(set(others)) == len(others) <= min(2, n_markets - 1)
        assert all(0 <= k < n_markets for k in others)


# --- the calendar: relative to a day, deterministic for that day ---------------------


def test_dates_are_relative_to_today(client: pymongo.MongoClient[Any]) -> None:
    today = date(2026, 12, 4)
    db = client["seed_today"]
    summary = seed_campaign(db, campaign_id="t", n_entries=400, seed=2, today=today)
    day = datetime(2026, 12, 4, tzinfo=UTC)
    expected_waves = [str(int((day + timedelta(days=d, hours=16)).timestamp() * 1000)) for d in (-3, -1)]
    assert summary["waveDateKeys"] == list(wave_date_keys(today)) == expected_waves
    campaign = db["campaigns"].find_one({"_id": "t"})
    assert campaign is not None
    assert campaign["date"]["presale"] == day + timedelta(hours=16)
    assert campaign["date"]["open"] == day + timedelta(days=-19, hours=16)
    assert campaign["date"]["close"] == day + timedelta(days=-5, hours=16)
    assert campaign["name"].endswith("World Tour 2026")
    created = [e["date"]["created"] for e in _all(db, "entries")]
    assert campaign["date"]["open"] <= min(created) and max(created) < campaign["date"]["close"]
    assigned = _all(db, "codes", {"status": "assigned"})
    assert {c["waveDateKey"] for c in assigned} == set(expected_waves)
    assert all(m["event"]["date"] > campaign["date"]["presale"] for m in _all(db, "markets"))


def test_same_today_same_documents_and_only_dates_move(client: pymongo.MongoClient[Any]) -> None:
    today = date(2025, 7, 1)
    a, b, reference = client["seed_day_a"], client["seed_day_b"], client["seed_day_ref"]
    seed_campaign(a, n_entries=300, seed=6, today=today)
    seed_campaign(b, n_entries=300, seed=6, today=today)
    seed_campaign(reference, n_entries=300, seed=6)
    assert _dump(a) == _dump(b)
    # Without dates the data is the reference day's: the day shifts the calendar, nothing else.
    assert _all(a, "users") == _all(reference, "users")
    assert _all(a, "scoring") == _all(reference, "scoring")
    shift = datetime(2025, 7, 1, tzinfo=UTC) - datetime.combine(REFERENCE_DAY, datetime.min.time(), UTC)
    for moved, fixed in zip(_all(a, "entries"), _all(reference, "entries"), strict=True):
        assert moved["date"]["created"] - fixed["date"]["created"] == shift


def test_reference_day_is_the_default_calendar() -> None:
    assert wave_date_keys() == wave_date_keys(REFERENCE_DAY) == ("1710691200000", "1710864000000")


def test_cli_dates_the_campaign_today_unless_told(server: SecantusDBServer) -> None:
    before = datetime.now(UTC).date()
    assert main(["--uri", server.uri, "--db", "seed_cli_today", "--campaign-id", "now", "--entries", "30"]) == 0
    after = datetime.now(UTC).date()
    args = ["--uri", server.uri, "--db", "seed_cli_today", "--campaign-id", "fixed", "--entries", "30"]
    assert main([*args, "--today", "2025-01-02"]) == 0
    with pymongo.MongoClient(server.uri, directConnection=True, tz_aware=True) as c:
        db = c["seed_cli_today"]
        presale = {d["_id"]: d["date"]["presale"] for d in db["campaigns"].find({}, {"date.presale": 1})}
    assert presale["now"].date() in (before, after) and presale["now"].hour == 16
    assert presale["fixed"] == datetime(2025, 1, 2, 16, tzinfo=UTC)
