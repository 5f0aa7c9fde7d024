"""The export types' pure transforms, on frames built by hand: no database, object store or Dagster.

Each type's `transform(ctx)` hook only reads what extract staged and calls these; the oracle
tests (test_data_exports.py, test_entries_export.py, test_reminder_email.py) check the whole
path against the real servers.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import polars as pl

from export_core.export_types import EXPORT_TYPES
from export_core.sfmc import load_sfmc_config
from export_pipelines.exports import (
    artist_sms_opt_in,
    entries,
    fanlist,
    filtered,
    promoter_email_opt_in,
    reminder_email,
    sources,
    waitlist,
)
from export_pipelines.exports.contract import FILE_COLUMN

NAMES = ("userFirstName", "userLastName", "userEmail", "snapFirstName", "snapLastName", "snapEmail")


def markets(*rows: dict[str, Any]) -> pl.DataFrame:
    """A staged markets frame (sources.MARKET_SCHEMA); unspecified columns are null."""
    return pl.DataFrame(
        [{name: row.get(name) for name in sources.MARKET_SCHEMA} for row in rows], schema=sources.MARKET_SCHEMA
    )


def frame(rows: list[dict[str, Any]], schema: dict[str, Any]) -> pl.DataFrame:
    return pl.DataFrame([{name: row.get(name) for name in schema} for row in rows], schema=schema)


def records(frames: Any) -> list[dict[str, Any]]:
    """The rows of every frame, in order."""
    return [row for part in frames for row in part.to_dicts()]


# -- filtered (every type without logic of its own) -----------------------------------------

ENTRY_PART = {
    "userId": pl.String,
    "marketId": pl.String,
    "phoneNumber": pl.String,
    "phoneConfirmed": pl.Boolean,
    **{name: pl.String for name in NAMES},
}


def test_filtered_rows_resolve_names_field_by_field_and_join_markets() -> None:
    part = frame(
        [
            {"userId": "u1", "marketId": "m1", "userEmail": "a@x", "snapEmail": "old@x", "snapFirstName": "Snap"},
            {"userId": "u2", "marketId": "gone", "userFirstName": "Bo", "snapEmail": "b@x"},
        ],
        ENTRY_PART,
    )
    out = list(
        filtered.rows(
            [part],
            EXPORT_TYPES["artistOptIn"],
            markets(
                {"marketId": "m1", "marketName": "Paris", "promoterIds": ["p1"]},
                {"marketId": "m2", "marketName": "Lyon"},
            ),
        )
    )
    assert len(out) == 1 and "promoterIds" not in out[0].columns
    rows = out[0].select("userId", "email", "firstName", "marketName").to_dicts()
    assert rows == [
        {"userId": "u1", "email": "a@x", "firstName": "Snap", "marketName": "Paris"},
        {"userId": "u2", "email": "b@x", "firstName": "Bo", "marketName": None},
    ]


def test_filtered_rows_with_snapshots_join_them_by_the_sources_user_column() -> None:
    """A scoring row gets its names from its member's snapshot, and a `userId` when the type has one."""
    export_type = EXPORT_TYPES["waitlist"]
    schema = {"memberId": pl.String, "score": pl.Float64, **{n: pl.String for n in NAMES[:3]}}
    part = frame(
        [
            {"memberId": "u1", "score": 1.0, "userEmail": "a@x"},
            {"memberId": "u2", "score": 2.0},
            {"memberId": "u3", "score": 3.0, "userLastName": "Own"},
        ],
        schema,
    )
    snapshots = frame(
        [{"userId": "u1", "snapEmail": "s1@x", "snapFirstName": "S1"}, {"userId": "u2", "snapEmail": "s2@x"}],
        {"userId": pl.String, "snapFirstName": pl.String, "snapLastName": pl.String, "snapEmail": pl.String},
    )
    (out,) = filtered.rows([part], export_type, snapshots=snapshots)
    assert out.select("memberId", "email", "firstName", "lastName").rows() == [
        ("u1", "a@x", "S1", None),
        ("u2", "s2@x", None, None),
        ("u3", None, None, "Own"),
    ]


def test_filtered_rows_copy_the_user_column_into_user_id_when_the_type_has_that_column() -> None:
    export_type = EXPORT_TYPES["codeAssignments"]
    assert sources.USER_COLUMN[export_type.source] == "assignedTo" and "userId" in export_type.columns
    part = frame(
        [{"assignedTo": "u1", "code": "C1"}, {"assignedTo": None, "code": "C2"}],
        {"assignedTo": pl.String, "code": pl.String, **{n: pl.String for n in NAMES}},
    )
    (out,) = filtered.rows([part], export_type)
    assert out.select("userId", "code").rows() == [("u1", "C1"), (None, "C2")]


# -- entries --------------------------------------------------------------------------------


def test_entries_rows_join_markets_and_prefer_the_users_phone_only_when_the_entry_has_none() -> None:
    schema = {**ENTRY_PART, "userPhone": pl.String, "isAdditionalMarket": pl.Boolean}
    part = frame(
        [
            {"userId": "u1", "marketId": "m1", "phoneNumber": "+331", "userPhone": "+339", "userEmail": "a@x"},
            {"userId": "u2", "marketId": "m2", "userPhone": "+449", "snapEmail": "b@x", "isAdditionalMarket": True},
        ],
        schema,
    )
    out = records(
        entries.rows(
            [part, part.clear()],
            markets(
                {"marketId": "m1", "marketName": "Paris", "marketCity": "Paris", "marketCountryCode": "FR"},
                {"marketId": "m2", "marketName": "London", "marketState": "LDN", "eventName": "not joined"},
            ),
        )
    )
    assert [
        {k: row[k] for k in ("userId", "phoneNumber", "email", "marketName", "marketCity", "marketState")}
        for row in out
    ] == [
        {"userId": "u1", "phoneNumber": "+331", "email": "a@x", "marketName": "Paris", "marketCity": "Paris",
         "marketState": None},
        {"userId": "u2", "phoneNumber": "+449", "email": "b@x", "marketName": "London", "marketCity": None,
         "marketState": "LDN"},
    ]  # fmt: skip
    assert "eventName" not in out[0]


# -- artistSmsOptIn -------------------------------------------------------------------------


def test_artist_sms_rows_drop_blank_numbers_and_blank_unconfirmed_ones() -> None:
    part = frame(
        [
            {"userId": "confirmed", "phoneNumber": "+331", "phoneConfirmed": True},
            {"userId": "unconfirmed", "phoneNumber": "+332", "phoneConfirmed": False},
            {"userId": "unknown", "phoneNumber": "+333", "phoneConfirmed": None},
            {"userId": "blank", "phoneNumber": "  ", "phoneConfirmed": True},
            {"userId": "none", "phoneNumber": None, "phoneConfirmed": True},
        ],
        ENTRY_PART,
    )
    out = artist_sms_opt_in.rows(part)
    assert out.select("userId", "phoneNumber", "phoneConfirmed").rows() == [
        ("confirmed", "+331", True),
        ("unconfirmed", None, False),
        ("unknown", None, False),
    ]


# -- fanlist --------------------------------------------------------------------------------


def test_fanlist_groups_entries_by_fan_with_their_campaign_markets_in_entry_order() -> None:
    rows: list[dict[str, Any]] = [
        {"userId": "u1", "marketId": "m2", "additionalMarkets": ["m1", "other"], "snapEmail": "u1@snap"},
        {"userId": "u2", "marketId": "m1", "userEmail": "u2@user", "snapEmail": "u2@snap", "postalCode": "75001"},
        {"userId": "u1", "marketId": "m1", "additionalMarkets": ["m3"], "snapEmail": "later@snap"},
        {"userId": None, "marketId": "m1"},
        {"userId": "u3", "marketId": "other"},  # no market of the campaign: not a fan of it
    ]
    out = fanlist.fans(
        frame(rows, fanlist.FAN_ENTRIES.schema),
        markets(
            {"marketId": "m1", "marketName": "Paris"}, {"marketId": "m2"}, {"marketId": "m3", "marketName": "Nice"}
        ),
    )
    assert out.select("userId", "email", "markets", "marketNames", "postalCode").to_dicts() == [
        {"userId": "u1", "email": "u1@snap", "markets": ["m2", "m1", "m3"], "marketNames": ["", "Paris", "Nice"],
         "postalCode": None},
        {"userId": "u2", "email": "u2@user", "markets": ["m1"], "marketNames": ["Paris"], "postalCode": "75001"},
    ]  # fmt: skip


# -- waitlist -------------------------------------------------------------------------------


def test_waitlist_rows_remove_every_wave_member_and_keep_order() -> None:
    schema = {"memberId": pl.String, "rank": pl.Int64}
    first = frame([{"memberId": "a", "rank": 1}, {"memberId": "b", "rank": 2}], schema)
    second = frame([{"memberId": "c", "rank": 3}, {"memberId": None, "rank": 4}, {"memberId": "d", "rank": 5}], schema)
    parts = [first, second]
    members = frame([{"memberId": "b"}, {"memberId": "d"}], waitlist.WAVE_MEMBER_SCHEMA)
    out = list(waitlist.rows(parts, members))
    assert [part.select("memberId", "rank").rows() for part in out] == [[("a", 1)], [("c", 3), (None, 4)]]


# -- promoterEmailOptIn ---------------------------------------------------------------------


def test_promoter_rows_put_a_fan_in_the_file_of_every_promoter_of_their_market() -> None:
    promoters = frame(
        [
            {"promoterId": "p1", "promoterName": "Live", FILE_COLUMN: "Live"},
            {"promoterId": "p2", "promoterName": None, FILE_COLUMN: "p2"},
        ],
        promoter_email_opt_in.PROMOTER_SCHEMA,
    )
    staged = markets(
        {"marketId": "m1", "promoterIds": ["p1", "p2", "p1", None]},
        {"marketId": "m2", "promoterIds": []},
        {"marketId": "m3", "promoterIds": ["missing"]},
    )
    part = frame(
        [{"userId": "u1", "marketId": "m1"}, {"userId": "u2", "marketId": "m2"}, {"userId": "u3", "marketId": "m3"}],
        ENTRY_PART,
    )
    (out,) = promoter_email_opt_in.rows([part], staged, promoters)
    assert out.select("userId", "promoterId", "promoterName", FILE_COLUMN).rows() == [
        ("u1", "p1", "Live", "Live"),
        ("u1", "p2", None, "p2"),
    ]


# -- reminder e-mails -----------------------------------------------------------------------

PRESALE = datetime(2027, 1, 2, 10, tzinfo=UTC)
CAMPAIGN = {"_id": "c1", "name": "Tour", "type": "fanclub", "artist": {"name": "Band"}, "date": {"presale": PRESALE}}


def reminder_bucket(scoring: list[dict[str, Any]], entry: list[dict[str, Any]], codes: list[dict[str, Any]]) -> Any:
    return (
        frame(scoring, reminder_email.SCORING_SCHEMA),
        frame(entry, reminder_email.ENTRY_SCHEMA),
        frame(codes, reminder_email.CODE_SCHEMA),
    )


def test_reminder_rows_join_entry_newest_code_and_market_and_file_rows_by_region_and_locale() -> None:
    config = load_sfmc_config()
    bucket = reminder_bucket(
        [
            {"memberId": "u1", "marketId": "m1", "scoringLocale": "fr_FR", "userFirstName": "Al"},
            {"memberId": "u2", "marketId": "m1", "scoringCountry": "gb", "userEmail": "b@user"},
        ],
        [
            {"userId": "u1", "entryLocale": "de-de", "snapEmail": "a@snap", "snapFirstName": "Snap"},
            {"userId": "u2", "entryLocale": "en-gb", "snapEmail": "b@snap"},
        ],
        [
            {"assignedTo": "u1", "codeMarketId": "m1", "code": "OLD", "assignedAt": datetime(2026, 1, 1, tzinfo=UTC)},
            {"assignedTo": "u1", "codeMarketId": "m1", "code": "NEW", "assignedAt": datetime(2026, 2, 1, tzinfo=UTC)},
            {"assignedTo": "u1", "codeMarketId": "m9", "code": "OTHER", "assignedAt": datetime(2026, 3, 1, tzinfo=UTC)},
        ],
    )
    staged = markets({"marketId": "m1", "eventName": "Show", "venue": "Hall", "marketCountryCode": "US"})
    out = records(reminder_email.rows([bucket], staged, CAMPAIGN, config))
    picked = [
        {k: row[k] for k in ("memberId", "email", "firstName", "locale", "countryCode", "region", "code", FILE_COLUMN)}
        for row in out
    ]
    assert picked == [
        {"memberId": "u1", "email": "a@snap", "firstName": "Al", "locale": config.normalise_locale("fr_FR"),
         "countryCode": "US", "region": "NA", "code": "NEW", FILE_COLUMN: f"NA/{config.normalise_locale('fr_FR')}"},
        {"memberId": "u2", "email": "b@user", "firstName": None, "locale": "en-gb", "countryCode": "GB",
         "region": "UK", "code": None, FILE_COLUMN: "UK/en-gb"},
    ]  # fmt: skip
    assert {(row["campaignName"], row["artistName"], row["eventName"], row["venue"]) for row in out} == {
        ("Tour", "Band", "Show", "Hall")
    }
    assert {row["presaleDate"] for row in out} == {PRESALE}
    assert {row["presaleName"] for row in out} == {config.presale_name("fanclub")}
    assert {row["mid"] for row in out} == {config.mid_for("US", "NA"), config.mid_for("GB", "UK")}


def test_reminder_sample_caps_rows_per_file_across_buckets_and_skips_empty_buckets() -> None:
    config = load_sfmc_config()
    per_bucket = reminder_email.SAMPLE_ROWS - 3

    def bucket(start: int) -> Any:
        return reminder_bucket(
            [
                {"memberId": f"u{i}", "marketId": "m1", "scoringLocale": "en-us"}
                for i in range(start, start + per_bucket)
            ],
            [],
            [],
        )

    buckets = [bucket(0), reminder_bucket([], [], []), bucket(100), bucket(200)]
    staged = markets({"marketId": "m1", "marketCountryCode": "US"})
    sample = list(reminder_email.rows(buckets, staged, CAMPAIGN, config, sample=True, per_locale=False))
    assert [part.height for part in sample] == [per_bucket, 3, 0]
    assert {name for part in sample for name in part[FILE_COLUMN]} == {"NA"}
    full = list(reminder_email.rows(buckets, staged, CAMPAIGN, config))
    assert [part.height for part in full] == [per_bucket] * 3
    assert set(full[0][FILE_COLUMN]) == {"NA/en-us"}
