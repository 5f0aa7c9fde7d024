"""The raw BSON → columns decoder (exports/sources.py): the fast path never changes or drops a value.

Documents go through the real local server (its projection flattens them, as in an export),
then each batch is decoded by pymongoarrow and, independently, by the Python value rules; the
two must be equal cell for cell, whatever mix of types the documents hold.
"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import bson
import polars as pl
import pytest
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.objectid import ObjectId
from bson.timestamp import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal
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


def test_users_are_looked_up_by_id_in_chunks_with_the_same_values_as_a_plain_find(
    db: Database, monkeypatch: pytest.MonkeyPatch
):
    users = [
        {"_id": f"u{i}", "firstName": f"F{i}", "email": f"u{i}@example.com", "phone": "+1 555", "countryCode": "US"}
        for i in range(25)
    ] + [{"_id": "odd", "firstName": 7, "lastName": None}]  # another type: the Python rules decide
    db["users"].insert_many(users)
    monkeypatch.setattr(sources, "USER_LOOKUP_CHUNK", 4)  # several commands, the last one short
    wanted = [u["_id"] for u in users][::-1] + ["nobody"]
    found = sources.lookup_users(db, wanted).sort("userKey")
    plain = list(db["users"].find({"_id": {"$in": wanted}}).sort("_id", 1))
    assert found["userKey"].to_list() == [u["_id"] for u in plain], "every user found once, nobody invented"
    odd = found.filter(pl.col("userKey") == "odd").row(0, named=True)
    assert odd["userFirstName"] == "7" and odd["userLastName"] is None
    first = found.filter(pl.col("userKey") == "u3").row(0, named=True)
    assert (first["userFirstName"], first["userEmail"], first["userPhone"]) == ("F3", "u3@example.com", "+1 555")
    assert sources.lookup_users(db, []).height == 0


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


def test_a_cursor_reply_is_read_in_place_with_its_batch_as_one_stream() -> None:
    """What BatchCursor hands pymongo: the reply's own fields, the batch as the documents' bytes."""
    docs = [{"a": 1}, {"b": "x", "c": {"d": [1, 2]}}]
    cluster_time = {"clusterTime": Timestamp(5, 1), "signature": {"hash": b"\0" * 20, "keyId": Int64(0)}}
    reply = bson.encode(
        {
            "cursor": {"nextBatch": docs, "id": Int64(42), "ns": "db.entries"},
            "ok": 1.0,
            "$clusterTime": cluster_time,
            "operationTime": Timestamp(5, 1),
        }
    )
    read = sources._cursor_reply(memoryview(reply)[:])
    assert read["cursor"] == {"id": 42, "ns": "db.entries", "nextBatch": [b"".join(bson.encode(d) for d in docs)]}
    assert read["ok"] == 1.0 and read["operationTime"] == Timestamp(5, 1)
    assert bson.decode(read["$clusterTime"].raw) == cluster_time  # raw, as pymongo passes it on
    # Anything else goes pymongo's own way, which reports the server's error as usual.
    for other in (
        {"ok": 0.0, "errmsg": "boom", "code": 2},
        {"cursor": {"nextBatch": [], "id": Int64(0), "x": 1}, "ok": 1},
    ):
        with pytest.raises((KeyError, ValueError)):
            sources._cursor_reply(bson.encode(other))
