"""The raw BSON → columns decoder (exports/sources.py): the fast path never changes or drops a value.

Documents go through the real local server (its projection flattens them, as in an export),
then each batch is decoded by pymongoarrow and, independently, by the Python value rules; the
two must be equal cell for cell, whatever mix of types the documents hold.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.objectid import ObjectId
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal
from pymongo import MongoClient, monitoring
from pymongo.database import Database

from export_pipelines.exports import sources

WHEN = dt.datetime(2024, 1, 15, 10, 30, 0, 123000, tzinfo=dt.UTC)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**31), 2**31 - 1),
    st.integers(-(2**62), 2**62).map(Int64),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.sampled_from(["1.5", "-3", "=SUM(A1)", "x;y", "Zoë ☃"]),
    st.just(WHEN),
    st.just(Decimal128("2.50")),
    st.just(ObjectId("65a4f0e1c2b3a4d5e6f70812")),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["a", "b", "fields"]), inner, max_size=3)
    ),
    max_leaves=6,
)


def _doc(draw: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for name in ("userId", "localeId", "phoneNumber", "phoneConfirmed", "codes", "additionalMarkets", "fields"):
        if draw(st.booleans()):
            doc[name] = draw(values)
    for parent, keys in (
        ("optIns", ("allowMarketing", "allowSms")),
        ("user", ("firstName", "email")),
        ("date", ("created",)),
    ):
        if draw(st.booleans()):
            doc[parent] = draw(st.one_of(values, st.fixed_dictionaries({}, optional={k: values for k in keys})))
    return doc


documents = st.composite(_doc)()


def _both(db: Database, source: sources.Source, docs: list[dict[str, Any]]) -> tuple[pl.DataFrame, pl.DataFrame]:
    collection = db[f"decode_{uuid.uuid4().hex[:8]}"]
    collection.insert_many([{"_id": i, "campaignId": "c", **d} for i, d in enumerate(docs)])
    raw = b"".join(collection.find_raw_batches({"campaignId": "c"}, source.projection, sort=[("_id", 1)]))
    collection.drop()
    return source.decode(raw), source._decode_python(raw)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(documents, min_size=1, max_size=6))
def test_the_fast_decoder_equals_the_python_rules_for_any_mix_of_types(db: Database, docs: list[dict[str, Any]]):
    fast, python = _both(db, sources.ENTRIES, docs)
    assert_frame_equal(fast, python)


def test_a_batch_of_well_typed_documents_takes_the_fast_path_and_keeps_every_value(db: Database):
    docs = [
        {"userId": "u1", "codes": ["A", None, "B"], "optIns": {"allowSms": True}, "date": {"created": WHEN},
         "fields": {"song": "Echoes", "n": 2, "nested": {"when": WHEN, "list": [1, "x"]}}, "user": {"email": "a@x"}},
        {"userId": "u2", "fields": {}, "phoneConfirmed": False},
        {"userId": "u3", "fields": None},
        {"userId": "u4", "fields": {"fields": {"a": 1}}},  # the key's header twice: decoded the slow way
    ]  # fmt: skip
    fast, python = _both(db, sources.ENTRIES, docs)
    assert_frame_equal(fast, python)
    row = fast.row(0, named=True)
    assert row["codes"] == ["A", "B"] and row["allowSms"] is True and row["entryDate"] == WHEN
    assert row["fields"] == (
        '{"n": 2, "nested": {"list": [1, "x"], "when": "2024-01-15 10:30:00.123000+00:00"}, "song": "Echoes"}'
    )
    assert fast["fields"].to_list()[1:] == [None, None, '{"fields": {"a": 1}}']


def test_a_value_of_another_type_is_never_turned_into_null(db: Database):
    """What pymongoarrow's schema inference would do (null); the strict decode falls back to Python instead."""
    docs = [{"userId": "u1", "phoneNumber": "+1 555"}, {"userId": 42, "phoneNumber": 5550100, "phoneConfirmed": "yes"}]
    fast, _ = _both(db, sources.ENTRIES, docs)
    assert fast["userId"].to_list() == ["u1", "42"]
    assert fast["phoneNumber"].to_list() == ["+1 555", "5550100"]
    assert fast["phoneConfirmed"].to_list() == [None, None], "a non-boolean flag is missing, as before"


def test_scoring_numbers_accept_ints_decimals_and_numeric_strings(db: Database):
    docs = [{"score": 1, "fanscore": Decimal128("2.5"), "nudata": "0.25", "rank": 3.0, "geo": {"lat": 1.5}}]
    fast, python = _both(db, sources.SCORING, docs)
    assert_frame_equal(fast, python)
    assert fast.select("score", "fanscore", "nudata", "rank", "lat").row(0) == (1.0, 2.5, 0.25, 3, 1.5)


def _typed(draw: Any) -> dict[str, Any]:
    """A document whose every value has its column's type (or is null or missing): the fast path's case."""
    maybe = st.none() | st.text(max_size=6)
    doc: dict[str, Any] = {"userId": draw(maybe), "codes": draw(st.none() | st.lists(maybe, max_size=3))}
    if draw(st.booleans()):
        doc["optIns"] = {"allowSms": draw(st.none() | st.booleans())}
    if draw(st.booleans()):
        doc["user"] = {"firstName": draw(maybe)}
    if draw(st.booleans()):
        # Any key a BSON document can hold (a key cannot contain the NUL byte).
        keys = st.text(st.characters(exclude_characters="\x00"), max_size=4)
        doc["fields"] = draw(st.dictionaries(keys, values, max_size=4))
    return doc


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.composite(_typed)(), min_size=1, max_size=6))
def test_well_typed_batches_are_decoded_by_pymongoarrow_with_the_same_values(db: Database, docs: list[dict[str, Any]]):
    source = sources.ENTRIES
    collection = db[f"typed_{uuid.uuid4().hex[:8]}"]
    collection.insert_many([{"_id": i, "campaignId": "c", **d} for i, d in enumerate(docs)])
    raw = b"".join(collection.find_raw_batches({"campaignId": "c"}, source.projection, sort=[("_id", 1)]))
    collection.drop()
    fallbacks: list[bytes] = []
    python_rules = sources.Source._decode_python

    def counting(self: sources.Source, raw: bytes) -> pl.DataFrame:
        fallbacks.append(raw)
        return python_rules(self, raw)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sources.Source, "_decode_python", counting)
        fast = source.decode(raw)
    assert fallbacks == [], "a well-typed batch took the Python path"
    assert_frame_equal(fast, python_rules(source, raw))


USERS = [
    {"_id": "u1", "firstName": "Ann", "lastName": "Lee", "email": "ann@example.com", "phone": "+1 555",
     "postalCode": "10001", "countryCode": "US"},
    {"_id": "u2", "firstName": 7, "lastName": None, "email": {"a": 1}},  # other types: the Python rules decide
    {"_id": 42, "firstName": "Numeric", "email": "n@example.com"},  # a user id that is not a string
    {"_id": "42", "firstName": "Text"},
    {"_id": None, "firstName": "Nobody's"},  # a null _id joins no entry, not those without a user id
]  # fmt: skip
ENTRIES = [
    {"userId": "u1", "user": {"firstName": "Snap"}},
    {"userId": "gone", "user": {"email": "snap@example.com"}},  # no user document: left join
    {"userId": None},
    {},  # no userId at all
    {"userId": 42},
    {"userId": "42"},
    {"userId": "u2"},
    {"userId": ["u1", "u2"]},  # an array is not a user id: no user, one row
    {"userId": "u1"},  # the same user twice
]


def _expected_users(db: Database, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What each entry joins, by plain finds on `_id` and the Python value rules."""
    expected = []
    for entry in entries:
        user_id = entry.get("userId", None)
        user = None if user_id is None or isinstance(user_id, list) else db["users"].find_one({"_id": user_id})
        user = user or {}
        expected.append(
            {
                "userId": sources.text(user_id),
                "userFirstName": sources.text(user.get("firstName")),
                "userLastName": sources.text(user.get("lastName")),
                "userEmail": sources.text(user.get("email")),
                "userPhone": sources.text(user.get("phone")),
                "postalCode": sources.text(user.get("postalCode")),
                "countryCode": sources.text(user.get("countryCode")),
            }
        )
    return expected


def test_users_are_joined_by_the_database_with_the_values_of_a_plain_find(db: Database):
    """Left join on users `_id` with the BSON value as stored: every entry once, in `_id` order."""
    db["users"].insert_many(USERS)
    db["entries"].insert_many([{"_id": i, "campaignId": "c", **e} for i, e in enumerate(ENTRIES)])
    source = sources.ENTRIES.only("userId", "snapFirstName", "snapLastName", "snapEmail").with_users()
    frames = list(source.read(db, {"campaignId": "c"}, batch_size=4))  # several batches: getMores
    assert len(frames) == 3
    joined = pl.concat(frames)
    assert joined.columns == [
        "userId",
        "snapFirstName",
        "snapLastName",
        "snapEmail",
        *(c.name for c in sources.USER_COLUMNS),
    ]
    assert joined.drop("snapFirstName", "snapLastName", "snapEmail").to_dicts() == _expected_users(db, ENTRIES)
    named = sources.with_names(joined)  # SPEC §2: the user's field, else the snapshot's
    assert named["firstName"].to_list()[:2] == ["Ann", None] and named["email"].to_list()[:2] == [
        "ann@example.com",
        "snap@example.com",
    ]
    # A batch with values of other types took the Python rules; the others pymongoarrow: same cells.
    raw = b"".join(db["entries"].aggregate_raw_batches(source.pipeline({"campaignId": "c"}), batchSize=100))
    assert_frame_equal(source.decode(raw), source._decode_python(raw))
    assert_frame_equal(source.decode(raw), joined)


def test_the_source_keeps_its_own_columns_and_reads_only_the_user_columns_asked_for(db: Database):
    db["users"].insert_one({"_id": "u1", "email": "a@x", "countryCode": "US", "postalCode": "10001"})
    db["scoring"].insert_one({"_id": 1, "campaignId": "c", "memberId": "u1", "countryCode": "CA"})
    source = sources.SCORING.only("memberId", "countryCode").with_users()
    row = pl.concat(source.read(db, {"campaignId": "c"})).row(0, named=True)
    assert row["countryCode"] == "CA", "scoring's own country, not the user's"
    assert (row["userEmail"], row["postalCode"]) == ("a@x", "10001")
    narrow = sources.SCORING.only("memberId").with_users("userEmail")
    assert pl.concat(narrow.read(db, {"campaignId": "c"})).to_dicts() == [{"memberId": "u1", "userEmail": "a@x"}]
    with pytest.raises(ValueError, match="no column"):
        sources.SCORING.with_users("favouriteColour")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.dictionaries(st.sampled_from(["firstName", "email", "countryCode", "phone"]), values), max_size=5))
def test_joined_user_fields_of_any_type_decode_as_the_python_rules_say(db: Database, users: list[dict[str, Any]]):
    suffix = uuid.uuid4().hex[:8]
    db["users"].insert_many([{"_id": f"{suffix}-{i}", **u} for i, u in enumerate(users)] or [{"_id": suffix}])
    collection = db[f"joined_{suffix}"]
    collection.insert_many([{"_id": i, "userId": f"{suffix}-{i}"} for i in range(len(users) + 1)])
    source = replace(sources.ENTRIES.only("userId").with_users(), collection=collection.name)
    raw = b"".join(collection.aggregate_raw_batches(source.pipeline({}), batchSize=100))
    collection.drop()
    fast = source.decode(raw)
    assert_frame_equal(fast, source._decode_python(raw))
    for row in fast.iter_rows(named=True):
        stored = (db["users"].find_one({"_id": row["userId"]}) or {}).get("email")  # as a plain find reads it
        assert row["userEmail"] == (None if isinstance(stored, list) else sources.text(stored))


class _Commands(monitoring.CommandListener):
    def __init__(self) -> None:
        self.events: list[monitoring.CommandStartedEvent] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.events.append(event)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def test_a_joined_source_is_one_aggregation_and_no_user_is_looked_up_from_the_client(db: Database, mongo_uri: str):
    db["users"].insert_many([{"_id": f"u{i}", "firstName": f"F{i}"} for i in range(50)])
    db["entries"].insert_many([{"_id": i, "campaignId": "c", "userId": f"u{i % 60}"} for i in range(120)])
    listener = _Commands()
    client: MongoClient = MongoClient(mongo_uri, event_listeners=[listener])
    try:
        source = sources.ENTRIES.only("userId").with_users("userFirstName")
        rows = pl.concat(source.read(client[db.name], {"campaignId": "c"}, batch_size=50))
        events = list(listener.events)  # before close() ends the client's sessions
    finally:
        client.close()
    assert rows.height == 120 and rows["userFirstName"].null_count() == 20, "u50-u59 have no user document"
    commands = [(e.command_name, e.command.get(e.command_name)) for e in events]
    assert commands[0] == ("aggregate", "entries")
    assert {name for name, _ in commands[1:]} == {"getMore"}, "then only the cursor's own getMores"
    (lookup,) = [stage["$lookup"] for stage in events[0].command["pipeline"] if "$lookup" in stage]
    assert (lookup["localField"], lookup["foreignField"]) == ("userId", "_id")
    assert "let" not in lookup and "pipeline" not in lookup, "the let/$expr form scans users per entry"


def test_what_pymongoarrow_would_convert_silently_is_decoded_by_the_python_rules(db: Database):
    """It turns any non-array into [], a boolean into 1.0 and NaN into null; the server's $type catches them."""
    fast, python = _both(db, sources.ENTRIES, [{"codes": "ABC"}, {"codes": {"a": "b"}}, {"codes": ["X"]}])
    assert_frame_equal(fast, python)
    assert fast["codes"].to_list() == [None, None, ["X"]]
    fast, python = _both(db, sources.SCORING, [{"score": True, "fanscore": float("nan"), "rank": 2.5}, {"score": 1}])
    assert_frame_equal(fast, python)
    row = fast.row(0, named=True)
    assert row["score"] is None and row["fanscore"] != row["fanscore"] and row["rank"] == 2, "as the Python rules say"


def test_staged_parts_are_read_in_order_whatever_format_staged_them(tmp_path: Path):
    """Arrow IPC parts, and Parquet parts an earlier version staged before a failed run
    (re-executed after an upgrade), come back with every value, in name order."""
    first = pl.DataFrame({"userId": ["u1", None], "n": [1, 2]})
    second = pl.DataFrame({"userId": ["u3"], "n": [3]})
    sources.write_part(second, tmp_path / f"part-000001{sources.PART_SUFFIX}")
    first.write_parquet(tmp_path / "part-000000.parquet")
    (tmp_path / "notes.txt").write_text("not a part")
    paths = sources.part_paths(tmp_path)
    assert [p.name for p in paths] == ["part-000000.parquet", f"part-000001{sources.PART_SUFFIX}"]
    assert_frame_equal(pl.concat([sources.read_part(p) for p in paths]), pl.concat([first, second]))
    assert sources.part_paths(tmp_path / "never-staged") == []  # a bucket nothing was hashed into
