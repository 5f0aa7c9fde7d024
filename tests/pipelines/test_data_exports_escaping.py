"""Property: whatever strings the documents hold, no cell of any data export starts a formula,
no item of a `;` list does, and every cell holding `,` or `;` is quoted (SPEC §3).

Hypothesis writes random text (formula characters, quotes, commas, semicolons, newlines,
unicode) into every text field a data export reads, runs each type's real extract and
transform stages (MongoDB and S3 included, Dagster left out for speed) and reads the CSVs it
wrote with a tokenizer of its own that also says whether each cell was quoted. Numbers and
dates are fixed and non-negative: SPEC §3 escapes text only.
"""

from __future__ import annotations

import csv
import io
import logging
import shutil
import uuid
from datetime import UTC, datetime
from itertools import cycle
from typing import Any

from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pymongo.database import Database

from export_core.settings import Settings
from export_pipelines import stages
from tests.pipelines.expected_data import DATA_TYPES
from tests.pipelines.helpers import workspace

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
DATE_KEY = "1700000000000"
WHEN = datetime(2024, 3, 1, 12, 0, 0, 123000, tzinfo=UTC)

awkward = st.builds(
    lambda head, tail: head + tail,
    st.sampled_from(["", *FORMULA_START, "'", '"', ",", "\n", "\r\n", " ", ";", "é", "🎸"]),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=8),
)


def _campaign(db: Database, s3: Any, settings: Settings, words: list[str]) -> str:
    """A campaign of two fans whose every text field comes from `words` (cycled)."""
    word = cycle(words).__next__
    cid = f"h-{uuid.uuid4().hex[:10]}"
    # Ids start with random text too; the suffix keeps them unique across examples.
    users = [f"{word()}#{cid}-u{k}" for k in range(2)]
    markets = [f"{word()}#{cid}-m{k}" for k in range(2)]
    promoters = [f"{word()}#{cid}-p{k}" for k in range(2)]
    same_name = word()
    db["campaigns"].insert_one({"_id": cid, "name": word()})
    db["promoters"].insert_many([{"_id": p, "name": same_name} for p in promoters])  # colliding file names
    db["markets"].insert_many(
        {"_id": m, "campaignId": cid, "name": word(), "promoterIds": promoters,
         "event": {"name": word(), "date": WHEN, "venue": word(), "ticketLink": word()}}
        for m in markets
    )  # fmt: skip
    # The first fan has a user document; the second only the entry's snapshot.
    db["users"].insert_one(
        {"_id": users[0], "firstName": word(), "lastName": word(), "email": word(), "postalCode": word(),
         "countryCode": word()}
    )  # fmt: skip
    for k, (user, market) in enumerate(zip(users, markets, strict=True)):
        db["entries"].insert_one(
            {"_id": f"{cid}-e{k}", "campaignId": cid, "userId": user, "marketId": market,
             "additionalMarkets": [markets[1 - k]], "localeId": word(), "date": {"created": WHEN},
             "optIns": {"allowMarketing": True, "allowLiveNation": True, "allowPromoter": True, "allowSms": True},
             "phoneNumber": word() + "5", "phoneConfirmed": True,
             "user": {"firstName": word(), "lastName": word(), "email": word()}}
        )  # fmt: skip
        db["scoring"].insert_one(
            {"_id": f"{cid}-s{k}", "campaignId": cid, "memberId": user, "marketId": market, "locale": word(),
             "countryCode": word(), "score": 0.5, "fanscore": 12.0, "nudata": 0.01, "rank": k + 1,
             "geo": {"lat": 1.5, "lon": 2.5, "postalCode": word()}, "verified": True, "selected": False}
        )  # fmt: skip
        db["codes"].insert_one(
            {"_id": f"{cid}-k{k}", "campaignId": cid, "marketId": market, "code": word(), "status": "assigned",
             "assignedTo": user, "date": {"assigned": WHEN}, "waveDateKey": DATE_KEY}
        )  # fmt: skip
    wave = io.StringIO()
    csv.writer(wave).writerows([["memberId"], [word()]])  # a random member: nobody or one of the fans
    s3.put_object(Bucket=settings.vf_scoring_bucket, Key=f"waves/{cid}/{DATE_KEY}/w.csv", Body=wave.getvalue())
    return cid


def rfc4180_cells(text: str) -> list[list[tuple[str, bool]]]:
    """The rows of a CSV as (value, quoted) cells; raises on anything RFC 4180 does not allow."""
    rows: list[list[tuple[str, bool]]] = []
    row: list[tuple[str, bool]] = []
    at = 0
    while at < len(text):
        if text[at] == '"':
            value, at = "", at + 1
            while True:
                close = text.index('"', at)
                value += text[at:close]
                if text[close + 1 : close + 2] == '"':
                    value, at = value + '"', close + 2
                else:
                    at = close + 1
                    break
            row.append((value, True))
        else:
            ends = [i for i in (text.find(",", at), text.find("\r\n", at)) if i >= 0]
            end = min(ends) if ends else len(text)
            assert '"' not in text[at:end] and "\n" not in text[at:end], f"bare quote or LF in {text[at:end]!r}"
            row.append((text[at:end], False))
            at = end
        if text.startswith("\r\n", at):
            rows.append(row)
            row, at = [], at + 2
        else:
            assert text[at : at + 1] == ",", f"garbage after a cell at {at}: {text[at : at + 5]!r}"
            at += 1
    assert not row, "the last line has no CRLF"
    return rows


def test_the_tokenizer_reads_what_the_standard_library_writes():
    cells = ["a,b", 'say "hi"', "x\r\ny", "", "plain", ";"]
    out = io.StringIO(newline="")
    csv.writer(out, lineterminator="\r\n").writerows([cells, cells])
    assert [[v for v, _ in row] for row in rfc4180_cells(out.getvalue())] == [cells, cells]


def _cells(db: Database, s3: Any, settings: Settings, cid: str, export_type: str) -> list[tuple[str, bool]]:
    """Every cell of every CSV the type's real stages write for the campaign, and whether it was quoted."""
    record = {"_id": uuid.uuid4().hex, "campaignId": cid, "exportType": export_type, "dateKey": DATE_KEY}
    ctx = stages.build_context(record, db, s3, workspace(settings), logging.getLogger("escaping-test"), run_id="prop")
    try:
        stages.extract(ctx)
        written = stages.transform(ctx)
        cells = []
        for relative in written:
            # newline="": a universal-newline read would turn a leading CR into LF and hide it
            with (ctx.work_dir / "out" / relative).open(encoding="utf-8", newline="") as handle:
                text = handle.read()
            rows = rfc4180_cells(text)
            assert [[v for v, _ in row] for row in rows] == list(csv.reader(io.StringIO(text, newline="")))
            cells += [c for row in rows[1:] for c in row]
        assert sum(written.values()) > 0, f"{export_type}: no rows, the property would hold vacuously"
        return cells
    finally:
        shutil.rmtree(ctx.work_dir, ignore_errors=True)  # what the test staged


@hypothesis_settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(words=st.lists(awkward, min_size=5, max_size=40))
@example(words=["=1+2", "+44", "-x", "@h", "\tt", "\rr"])
def test_no_cell_of_any_data_export_starts_a_formula(db: Database, s3: Any, settings: Settings, words: list[str]):
    cid = _campaign(db, s3, settings, words)
    for export_type in DATA_TYPES:
        cells = _cells(db, s3, settings, cid, export_type)
        for value, quoted in cells:
            assert not value.startswith(FORMULA_START), f"{export_type}: unescaped cell {value!r}"
            if "," in value or ";" in value:
                assert quoted, f"{export_type}: a cell with , or ; written unquoted: {value!r}"
        values = [v for v, _ in cells]
        if all(w.startswith(FORMULA_START) for w in words):
            assert any(v[:1] == "'" and v[1:2] in FORMULA_START for v in values), f"{export_type}: nothing escaped"


def _entries_csv(db: Database, s3: Any, settings: Settings, cid: str, run_id: str) -> bytes:
    """The entries CSV of `cid` as the extract and transform stages write it."""
    record = {"_id": uuid.uuid4().hex, "campaignId": cid, "exportType": "entries"}
    ctx = stages.build_context(record, db, s3, workspace(settings), logging.getLogger("escaping-test"), run_id=run_id)
    try:
        stages.extract(ctx)
        (relative,) = stages.transform(ctx)
        return (ctx.work_dir / "out" / relative).read_bytes()
    finally:
        shutil.rmtree(ctx.work_dir, ignore_errors=True)  # what the test staged


def test_each_item_of_a_list_cell_is_escaped(db: Database, s3: Any, settings: Settings):
    """SPEC §3: in a list cell the formula rule applies after each `;` (an item holding one too); quoted."""
    cid = _campaign(db, s3, settings, ["plain"])
    db["entries"].update_many({"campaignId": cid}, {"$set": {"codes": ["ok", "x;=HYPERLINK(1)", "@a", "+1"]}})
    assert b'''"ok;x;'=HYPERLINK(1);'@a;'+1"''' in _entries_csv(db, s3, settings, cid, "items")
    db["entries"].update_many({"campaignId": cid}, {"$set": {"codes": ["=1"]}})  # one item: no ; so no quotes
    assert b",'=1," in _entries_csv(db, s3, settings, cid, "one")
