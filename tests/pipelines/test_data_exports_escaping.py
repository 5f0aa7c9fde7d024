"""Property: whatever strings the documents hold, no cell of any data export starts a formula.

Hypothesis writes random text (formula characters, quotes, commas, newlines, unicode) into
every text field a data export reads, runs each type's real extract and transform stages
(MongoDB and S3 included, Dagster left out for speed) and parses the CSVs it wrote with the
standard library. Numbers and dates are fixed and non-negative: SPEC §3 escapes text only.
"""

from __future__ import annotations

import csv
import io
import logging
import uuid
from datetime import UTC, datetime
from itertools import cycle
from typing import Any

from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pymongo.database import Database

from export_pipelines import stages
from export_pipelines.domain.settings import Settings
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


def _cells(db: Database, s3: Any, settings: Settings, cid: str, export_type: str) -> list[str]:
    """Every cell of every CSV the type's real stages write for the campaign."""
    record = {"_id": uuid.uuid4().hex, "campaignId": cid, "exportType": export_type, "dateKey": DATE_KEY}
    ctx = stages.build_context(record, db, s3, workspace(settings), logging.getLogger("escaping-test"), run_id="prop")
    try:
        stages.extract(ctx)
        written = stages.transform(ctx)
        cells = []
        for relative in written:
            # newline="": a universal-newline read would turn a leading CR into LF and hide it
            with (ctx.work_dir / "out" / relative).open(encoding="utf-8", newline="") as handle:
                cells += [c for row in list(csv.reader(handle))[1:] for c in row]
        assert sum(written.values()) > 0, f"{export_type}: no rows, the property would hold vacuously"
        return cells
    finally:
        stages.clean_up(ctx)


@hypothesis_settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(words=st.lists(awkward, min_size=5, max_size=40))
@example(words=["=1+2", "+44", "-x", "@h", "\tt", "\rr"])
def test_no_cell_of_any_data_export_starts_a_formula(db: Database, s3: Any, settings: Settings, words: list[str]):
    cid = _campaign(db, s3, settings, words)
    for export_type in DATA_TYPES:
        cells = _cells(db, s3, settings, cid, export_type)
        for value in cells:
            assert not value.startswith(FORMULA_START), f"{export_type}: unescaped cell {value!r}"
        if all(w.startswith(FORMULA_START) for w in words):
            assert any(v[:1] == "'" and v[1:2] in FORMULA_START for v in cells), f"{export_type}: nothing escaped"
