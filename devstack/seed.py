"""Deterministic, vectorised demo and test data for export-service (SPEC §2).

Writes one campaign with its markets, promoters, users, entries, scoring records and
codes, and optionally its SMS wave files in S3. The data deliberately contains the
awkward cases exports must survive (unicode and emoji names, missing user documents and
fields, formula-like and CSV-hostile text), each at a fixed fraction of the rows chosen
by row index, so even a small seed contains every case.

Random columns are drawn with numpy in blocks of ``BLOCK_ROWS`` rows, each block from its
own generator seeded by ``(seed, stream, block)``: a document depends only on the seed,
the arguments and its row index, never on the batch size or on how much was written
before, so a seed interrupted half-way can simply be run again (duplicates of documents
already written are skipped). Documents are built and inserted block by block, so memory
stays flat for millions of entries.

Conventions (row ``i`` = 0..n_entries-1, ``C`` = campaign id; ids are prefixed with the
campaign so several campaigns fit in one database, and zero-padded so string order is
row order):

- campaign ``C``; markets ``C-m{j}``; promoters ``C-p{k}``; users ``C-u{i:07d}``;
  entries ``C-e{i:07d}``; scoring ``C-s{i:07d}``; codes ``C-k{i:07d}`` (the code of row
  ``i``, value ``XXXX{i:07d}``). One user, entry and scoring record per row.
- Dates are UTC ``datetime`` values with millisecond precision on a calendar anchored to
  one day ``D`` (``today``): entries open at 16:00 UTC on D-19 for two weeks, the SMS waves
  are at 16:00 UTC on D-3 and D-1 (``wave_date_keys(today)``), the presale at 16:00 UTC on D,
  the events from D+45 on. ``seed_campaign`` anchors to ``REFERENCE_DAY`` unless told
  otherwise, so tests and the bench get the same bytes every time; the CLI (``make run``)
  anchors to the current UTC day, so the demo campaign is current. For one ``today``
  everything is deterministic.
- Awkward cases by ``i % 100`` (the ``_SLOT*`` constants): 2 % of rows have no user
  document, ~4 % of users lack a field, 4 % unicode/emoji names, 2 % formula-like
  values, 2 % CSV-hostile values, 1 % entries without a ``user`` snapshot.
- Drawn at random: ~20 % additional markets, ~88 % with a phone, ~70 % verified, ~40 %
  selected (verified and score >= 0.43), an assigned code for ~90 % of the selected.

Dagster-free on purpose: the API tests, the local stack and the CLI use it too.

CLI::

    python -m devstack.seed --uri mongodb://127.0.0.1:27017 --db verifiedfan \\
        --campaign-id 123 --entries 50000 --seed 0 [--today 2024-03-20] [--if-empty]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple
from urllib.parse import quote

import numpy as np
import numpy.typing as npt
import pymongo
from pymongo.database import Database
from pymongo.errors import BulkWriteError

from export_pipelines.indexes import ensure_indexes

__all__ = [
    "BLOCK_ROWS",
    "DEFAULT_BATCH_SIZE",
    "REFERENCE_DAY",
    "CampaignExistsError",
    "main",
    "seed_campaign",
    "wave_date_keys",
]

BLOCK_ROWS = 1_000
"""Rows drawn from one random stream; fixed so documents never depend on batch size."""

DEFAULT_BATCH_SIZE = 5_000
"""Documents per ``insert_many`` call."""

DEFAULT_COUNTRIES: tuple[str, ...] = ("US", "CA", "MX", "GB", "IE", "DE", "AU")

# Separate random streams, so adding a column to one never shifts the others.
_STREAM_RANKING = 0  # market and score of every row: needed up front to compute ranks
_STREAM_ROWS = 1  # everything else about a row
_STREAM_CAMPAIGN = 2  # campaign-level choices (artist)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAY_MS = 86_400_000
_HOUR_MS = 3_600_000

REFERENCE_DAY = date(2024, 3, 20)
"""The day ``seed_campaign`` anchors its calendar to unless given ``today``: fixed, so the same
arguments always give the same documents (entries open 2024-03-01, presale 2024-03-20)."""


@dataclass(frozen=True)
class _Calendar:
    """A campaign's dates (epoch millis, UTC): entries open for two weeks, two SMS waves, then the
    presale at 16:00 UTC on the anchor day."""

    open_ms: int
    close_ms: int
    wave_ms: tuple[int, int]
    presale_ms: int


def _calendar(today: date | None) -> _Calendar:
    day = today if today is not None else REFERENCE_DAY
    presale = (day - _EPOCH.date()).days * _DAY_MS + 16 * _HOUR_MS
    close = presale - 5 * _DAY_MS
    return _Calendar(
        open_ms=close - 14 * _DAY_MS,
        close_ms=close,
        wave_ms=(presale - 3 * _DAY_MS, presale - _DAY_MS),
        presale_ms=presale,
    )


@dataclass(frozen=True)
class _City:
    city: str
    state: str
    timezone: str
    venue: str
    lat: float
    lon: float


_CITIES: dict[str, tuple[_City, ...]] = {
    "US": (
        _City("Los Angeles", "CA", "America/Los_Angeles", "Crypto.com Arena", 34.043, -118.267),
        _City("New York", "NY", "America/New_York", "Madison Square Garden", 40.750, -73.993),
        _City("Chicago", "IL", "America/Chicago", "United Center", 41.881, -87.674),
        _City("Austin", "TX", "America/Chicago", "Moody Center", 30.282, -97.732),
    ),
    "CA": (
        _City("Toronto", "ON", "America/Toronto", "Scotiabank Arena", 43.643, -79.379),
        _City("Montréal", "QC", "America/Toronto", "Centre Bell", 45.496, -73.569),
        _City("Vancouver", "BC", "America/Vancouver", "Rogers Arena", 49.278, -123.109),
    ),
    "MX": (
        _City("Ciudad de México", "CDMX", "America/Mexico_City", "Palacio de los Deportes", 19.405, -99.097),
        _City("Monterrey", "NL", "America/Monterrey", "Arena Monterrey", 25.680, -100.285),
    ),
    "GB": (
        _City("London", "England", "Europe/London", "The O2", 51.503, 0.003),
        _City("Manchester", "England", "Europe/London", "AO Arena", 53.488, -2.244),
    ),
    "IE": (_City("Dublin", "Leinster", "Europe/Dublin", "3Arena", 53.347, -6.228),),
    "DE": (
        _City("Berlin", "BE", "Europe/Berlin", "Uber Arena", 52.505, 13.443),
        _City("München", "BY", "Europe/Berlin", "Olympiahalle", 48.175, 11.550),
    ),
    "AU": (
        _City("Sydney", "NSW", "Australia/Sydney", "Qudos Bank Arena", -33.847, 151.063),
        _City("Melbourne", "VIC", "Australia/Melbourne", "Rod Laver Arena", -37.821, 144.978),
    ),
}

# Entry localeIds as fans' browsers send them, awkward spellings included (SPEC §5).
_LOCALES: dict[str, tuple[tuple[str, float], ...]] = {
    "US": (("en-US", 0.80), ("en_US", 0.06), ("EN-us", 0.04), ("es-US", 0.10)),
    "CA": (("en-CA", 0.55), ("fr-CA", 0.35), ("fr_CA", 0.05), ("en-US", 0.05)),
    "MX": (("es-MX", 0.60), ("en-mx", 0.30), ("en-US", 0.10)),
    "GB": (("en-GB", 0.85), ("en-uk", 0.15)),
    "IE": (("en-IE", 0.80), ("en-GB", 0.10), ("en-uk", 0.10)),
    "DE": (("de-DE", 0.85), ("en-GB", 0.15)),
    "AU": (("en-AU", 0.85), ("en-nz", 0.15)),
}
_FALLBACK_LOCALES: tuple[tuple[str, float], ...] = (("en-US", 0.9), ("en_US", 0.1))

_PHONE_PREFIX = {
    "US": "+1555",
    "CA": "+1555",
    "MX": "+52155",
    "GB": "+447700",
    "IE": "+35385",
    "DE": "+49155",
    "AU": "+61455",
}

_ARTISTS = ("The Midnight Echoes", "Luna Vega", "Paper Satellites", "Neon Harbor", "Juniper Lane")
_PROMOTERS = (
    "Live Nation",
    "AEG Presents / Goldenvoice",
    "Ocesa",
    "MCD Productions, Ltd.",
    "DEAG",
    "Frontier Touring",
    "evenko",
    "Another Planet",
)
_FIRST_NAMES = (
    "James",
    "Mary",
    "Robert",
    "Patricia",
    "John",
    "Jennifer",
    "Michael",
    "Linda",
    "David",
    "Elizabeth",
    "William",
    "Barbara",
    "Richard",
    "Susan",
    "Joseph",
    "Jessica",
    "Thomas",
    "Sarah",
    "Charles",
    "Karen",
    "Daniel",
    "Emma",
    "Matthew",
    "Olivia",
    "Anthony",
    "Ava",
    "Mark",
    "Sophia",
    "Liam",
    "Mia",
    "Noah",
    "Isabella",
    "Lucas",
    "Amelia",
    "Ethan",
    "Harper",
    "Aiden",
    "Chloe",
    "Jack",
    "Grace",
)
_LAST_NAMES = (
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Clark",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Murphy",
    "Kelly",
    "O'Brien",
    "Schmidt",
    "Nguyen",
    "Walsh",
)
_DOMAINS = ("example.com", "example.org", "mail.example.net", "fans.example.co.uk")
_SONGS = ("Midnight Drive", "Echoes", "Golden Hour", "Neon Rain", "Slow Burn", "Paper Hearts", "Wildfire", "Satellite")
_HEARD_FROM = ("Instagram", "Friend", "Radio", "TikTok", "Email newsletter")

# Awkward values. Each list is cycled, so every variant shows up once there are a few
# hundred rows.
_UNICODE_NAMES = (
    ("Zoë", "Ōtani"),
    ("李", "小龙"),
    ("🎸Rocker", "Ramírez"),
    ("José", "Muñoz"),
    ("Søren", "Kierkegård"),
    ("Анна", "Иванова"),
    ("محمد", "علي"),
    ("Chloé 🎤", "Dvořák"),
)
_FORMULA_FIRST = ('=HYPERLINK("http://evil.example","win")', "+Plus", "-Minus", "@Handle", "\tTabbed", "\rReturn")
_FORMULA_LAST = ("=1+2", "+44 Fan", "-Dash", "@Home", "=cmd|' /C calc'!A0", "-1")
_FORMULA_EMAIL_PREFIX = ("=", "+", "-", "@")
_FORMULA_FIELD = ("=SUM(A1:A9)", "+1 (555) 010", "-1", "@everyone", "\tcmd", "=cmd|' /C calc'!A0")
_CSV_HOSTILE_FIRST = ("Mary, Jr.", 'The "Boss"', "Line\nBreak", 'Anne "AJ", II\r\nSr.')
_CSV_HOSTILE_LAST = ("Smith, Esq.", 'O"Neil', "Two\nLines", 'Comma, "Quote"')
_CSV_HOSTILE_FIELD = ("Yes, definitely", 'I said "wow"', "first line\nsecond line", 'all, of "it"\r\nhere')

# Fixed slots of ``row % 100`` that carry one awkward case each (see the module doc).
_SLOT_NO_USER = (0, 50)  # 2 %: no user document at all; exports fall back to entry.user
_SLOT_NO_LAST_NAME = 1  # user document without lastName
_SLOT_NO_FIRST_NAME = 2  # user document without firstName
_SLOT_NO_EMAIL = 3  # user document without email
_SLOT_NO_PHONE_POSTAL = 4  # user document without phone and postalCode
_SLOT_NULL_LAST_NAME = 5  # user document with lastName: null
_SLOT_NO_SNAPSHOT = 99  # entry without a user snapshot (legacy entry)
_SLOTS_UNICODE = (10, 30, 60, 80)  # 4 %: unicode and emoji names
_SLOTS_FORMULA = (20, 70)  # 2 %: values starting with = + - @ tab CR
_SLOTS_CSV_HOSTILE = (40, 90)  # 2 %: commas, double quotes, newlines
_SLOT_WAVE_UNSELECTED = 3  # rows with row % 50 == 3 that are unselected are in an SMS wave

_P_ADDITIONAL_MARKETS = 0.20
_P_TWO_ADDITIONAL = 0.35  # of those with additional markets
_P_OPT_INS = (0.60, 0.40, 0.35, 0.30)  # allowMarketing, allowLiveNation, allowPromoter, allowSms
_P_PHONE = 0.88
_P_PHONE_NULL = 1 / 3  # of the rows without a phone: phoneNumber null instead of absent
_P_PHONE_CONFIRMED = 0.75  # of the rows with a phone
_P_VERIFIED = 0.70
_SELECTED_MIN_SCORE = 0.43  # verified fans above it are selected: ~40 % of all rows
_P_CODE_ASSIGNED = 0.90  # of the selected fans
_P_CODE_AVAILABLE = 0.05  # of the other fans: an unassigned code in their market
_P_FIRST_WAVE = 0.60  # of the assigned codes
_P_EXTRA_CODE = 0.03  # entries with an extra legacy presale code
_P_NO_FAVORITE_SONG = 0.10

_LETTERS = np.array(list("ABCDEFGHJKLMNPRSTVWXYZ"))

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


class CampaignExistsError(ValueError):
    """The campaign is already in the database; seeding it twice would mix two data sets."""


def wave_date_keys(today: date | None = None) -> tuple[str, str]:
    """The dateKeys (epoch millis) of the two SMS waves of a campaign seeded with this ``today``:
    16:00 UTC three days and one day before it (``REFERENCE_DAY`` when None)."""
    waves = _calendar(today).wave_ms
    return (str(waves[0]), str(waves[1]))


def seed_campaign(
    db: Database[Any],
    *,
    campaign_id: str = "123",
    n_entries: int = 50_000,
    seed: int = 0,
    campaign_name: str | None = None,
    campaign_type: str = "standard",
    countries: tuple[str, ...] = DEFAULT_COUNTRIES,
    n_markets: int | None = None,
    s3_client: Any = None,
    vf_scoring_bucket: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    today: date | None = None,
) -> dict[str, Any]:
    """Write one campaign and all its data; return the number of documents per collection.

    Its dates are relative to ``today`` (``REFERENCE_DAY`` when None; see the module doc).

    The campaign document is written last, so its presence means a complete seed. Raises
    ``CampaignExistsError`` when it is already there. After an interrupted run, calling
    again with the same arguments completes the data (documents already written are
    identical and skipped).

    With ``s3_client`` and ``vf_scoring_bucket`` also writes the two SMS wave files
    ``waves/{campaignId}/{dateKey}/part-0.csv``.
    """
    if n_entries < 0:
        raise ValueError("n_entries must be >= 0")
    if not countries:
        raise ValueError("countries must not be empty")
    if campaign_type not in ("standard", "fanclub"):
        raise ValueError("campaign_type must be 'standard' or 'fanclub'")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if (s3_client is None) != (vf_scoring_bucket is None):
        raise ValueError("pass both s3_client and vf_scoring_bucket, or neither")
    if db["campaigns"].find_one({"_id": campaign_id}, {"_id": 1}) is not None:
        raise CampaignExistsError(f"campaign {campaign_id!r} already exists in {db.name}")

    # The same indexes a deployment creates (python -m export_pipelines.indexes).
    ensure_indexes(db)
    plan = _plan(campaign_id, n_entries, seed, countries, n_markets or len(countries), _calendar(today))
    campaign_rng = np.random.default_rng([seed, _STREAM_CAMPAIGN])
    artist = _ARTISTS[int(campaign_rng.integers(len(_ARTISTS)))]

    writer = _Writer(db, batch_size)
    writer.add("promoters", _promoter_docs(plan))
    writer.add("markets", _market_docs(plan, artist))
    # Wave members are kept as row numbers (8 bytes each), not as documents or strings.
    waves: tuple[list[int], list[int]] = ([], [])
    for block in range(plan.n_blocks):
        rows = _block_docs(plan, block)
        for name in ("users", "entries", "scoring", "codes"):
            writer.add(name, getattr(rows, name))
        for wave, members in zip(waves, rows.wave_rows, strict=True):
            wave.extend(members)
    writer.flush()
    wave_files = _write_waves(s3_client, vf_scoring_bucket, plan, [np.array(w, dtype=np.int64) for w in waves])
    writer.add("campaigns", [_campaign_doc(plan, artist, campaign_name, campaign_type)])
    writer.flush()
    return {
        "campaignId": campaign_id,
        **{
            name: writer.counts.get(name, 0)
            for name in ("campaigns", "markets", "promoters", "users", "entries", "scoring", "codes")
        },
        "waveDateKeys": list(wave_date_keys(today)),
        "waveMembers": [len(w) for w in waves],
        "waveFiles": wave_files,
    }


# --- campaign-level plan -------------------------------------------------------------


@dataclass(frozen=True)
class _Market:
    id: str
    country: str
    city: _City
    promoter_ids: tuple[str, ...]


@dataclass(frozen=True)
class _Plan:
    """Everything about a campaign that rows need, including each row's market and rank."""

    campaign_id: str
    n_entries: int
    seed: int
    markets: tuple[_Market, ...]
    promoter_ids: tuple[str, ...]
    market_of_row: npt.NDArray[np.int16]
    score_of_row: FloatArray
    rank_of_row: npt.NDArray[np.int32]
    calendar: _Calendar
    n_blocks: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "n_blocks", -(-self.n_entries // BLOCK_ROWS))


def _plan(
    campaign_id: str, n_entries: int, seed: int, countries: tuple[str, ...], n_markets: int, calendar: _Calendar
) -> _Plan:
    """Lay out markets and promoters, and draw every row's market and score.

    Ranks are per market, so they need all scores at once: 14 bytes a row, not documents.
    """
    if n_markets < 1:
        raise ValueError("n_markets must be >= 1")
    n_promoters = max(2, (n_markets + 1) // 2)
    promoter_ids = tuple(f"{campaign_id}-p{k}" for k in range(n_promoters))
    markets = []
    for j in range(n_markets):
        country = countries[j % len(countries)].upper()
        cities = _CITIES.get(country) or (_City(f"City {country}", "", "UTC", f"Arena {country}", 0.0, 0.0),)
        # Promoters are shared round-robin; every third market (market 0 included) has two.
        promoters = [promoter_ids[j % n_promoters]]
        if j % 3 == 0:
            promoters.append(promoter_ids[(j + 1) % n_promoters])
        markets.append(
            _Market(f"{campaign_id}-m{j}", country, cities[(j // len(countries)) % len(cities)], tuple(promoters))
        )

    # Earlier markets (the first country's) get more fans, as big markets do.
    weights = 1.0 / np.arange(1, n_markets + 1) ** 0.6
    weights /= weights.sum()
    market_parts, score_parts = [], []
    for block in range(-(-n_entries // BLOCK_ROWS)):
        rng = np.random.default_rng([seed, _STREAM_RANKING, block])
        n = min(BLOCK_ROWS, n_entries - block * BLOCK_ROWS)
        market_parts.append(rng.choice(n_markets, size=n, p=weights).astype(np.int16))
        score_parts.append(rng.random(n))
    market = np.concatenate(market_parts) if market_parts else np.zeros(0, np.int16)
    score = np.concatenate(score_parts) if score_parts else np.zeros(0)
    return _Plan(
        campaign_id,
        n_entries,
        seed,
        tuple(markets),
        promoter_ids,
        market,
        score,
        _rank_within_market(market, score),
        calendar,
    )


def _rank_within_market(market: npt.NDArray[np.int16], score: FloatArray) -> npt.NDArray[np.int32]:
    """1 = best score of its market; ties go to the earlier row."""
    order = np.lexsort((np.arange(len(score)), -score, market))
    sorted_market = market[order]
    group_start = np.searchsorted(sorted_market, sorted_market, side="left")
    rank = np.empty(len(score), np.int32)
    rank[order] = np.arange(len(score)) - group_start + 1
    return rank


def _promoter_docs(plan: _Plan) -> list[dict[str, Any]]:
    return [
        {
            "_id": pid,
            "campaignId": plan.campaign_id,
            "name": _PROMOTERS[k % len(_PROMOTERS)] + (f" {k // len(_PROMOTERS) + 1}" if k >= len(_PROMOTERS) else ""),
        }
        for k, pid in enumerate(plan.promoter_ids)
    ]


def _market_docs(plan: _Plan, artist: str) -> list[dict[str, Any]]:
    docs = []
    for j, m in enumerate(plan.markets):
        c = m.city
        docs.append(
            {
                "_id": m.id,
                "campaignId": plan.campaign_id,
                "name": f"{c.city}, {c.state}" if c.state and m.country in ("US", "CA") else c.city,
                "city": c.city,
                "state": c.state,
                "countryCode": m.country,
                "timezone": c.timezone,
                "promoterIds": list(m.promoter_ids),
                "event": {
                    "name": f"{artist} Live in {c.city}",
                    "date": _ms_to_datetime(plan.calendar.presale_ms + (45 + 3 * j) * _DAY_MS + 3 * _HOUR_MS),
                    "venue": c.venue,
                    "ticketLink": f"https://tickets.example.com/event/{quote(m.id, safe='')}",
                },
            }
        )
    return docs


def _campaign_doc(plan: _Plan, artist: str, name: str | None, campaign_type: str) -> dict[str, Any]:
    locales: list[str] = []
    for m in plan.markets:
        for loc, weight in _LOCALES.get(m.country, _FALLBACK_LOCALES):
            # Only well-formed, common locales are configured on the campaign.
            if weight >= 0.3 and re.fullmatch(r"[a-z]{2}-[A-Z]{2}", loc) and loc not in locales:
                locales.append(loc)
    cal = plan.calendar
    tour_year = _ms_to_datetime(cal.presale_ms).year
    return {
        "_id": plan.campaign_id,
        "name": name if name is not None else f"{artist} World Tour {tour_year}",
        "type": campaign_type,
        "artist": {"name": artist},
        "locales": locales,
        "date": {
            "created": _ms_to_datetime(cal.open_ms - 7 * _DAY_MS),
            "open": _ms_to_datetime(cal.open_ms),
            "close": _ms_to_datetime(cal.close_ms),
            "presale": _ms_to_datetime(cal.presale_ms),
        },
    }


# --- rows ----------------------------------------------------------------------------


class _Row(NamedTuple):
    """One row's random draws; a row becomes a user, an entry, a scoring record, maybe a code."""

    i: int
    slot: int
    market: int
    first: str
    last: str
    email: str
    song: str
    locale: str
    created_ms: int
    opt_ins: list[bool]
    has_phone: bool
    phone_null: bool
    phone_confirmed: bool
    phone_digits: int
    additional: list[int]
    extra_code: bool
    no_song: bool
    heard: int
    tickets: int
    postal_digits: list[int]
    postal_letters: str
    jitter: list[float]
    score: float
    rank: int
    fanscore: float
    nudata: float
    verified: bool
    selected: bool
    assigned: bool
    available: bool
    code_letters: str
    wave: int
    assigned_offset_ms: int


@dataclass
class _BlockDocs:
    users: list[dict[str, Any]] = field(default_factory=list)
    entries: list[dict[str, Any]] = field(default_factory=list)
    scoring: list[dict[str, Any]] = field(default_factory=list)
    codes: list[dict[str, Any]] = field(default_factory=list)
    # row numbers of the members of each SMS wave
    wave_rows: tuple[list[int], list[int]] = field(default_factory=lambda: ([], []))


def _block_rows(plan: _Plan, block: int) -> list[_Row]:
    """Draw one block's columns with numpy and cut them into rows."""
    start = block * BLOCK_ROWS
    stop = min(start + BLOCK_ROWS, plan.n_entries)
    n = stop - start
    row = np.arange(start, stop)
    slot = row % 100
    market = plan.market_of_row[start:stop].astype(np.int64)
    score = plan.score_of_row[start:stop]
    rng = np.random.default_rng([plan.seed, _STREAM_ROWS, block])

    # Draw order is part of the determinism contract: append new draws at the end only.
    first, last, email, song = _people(row, slot, rng)
    locale = _locales([plan.markets[k].country for k in market.tolist()], rng.random(n))
    created_ms = rng.integers(plan.calendar.open_ms, plan.calendar.close_ms, size=n)
    opt_ins = rng.random((n, 4)) < np.array(_P_OPT_INS)
    phone_u = rng.random((n, 3))
    has_phone = phone_u[:, 0] < _P_PHONE
    phone_digits = rng.integers(0, 10_000_000, size=n)
    additional = _additional_markets(market, len(plan.markets), rng)
    extra_code = rng.random(n) < _P_EXTRA_CODE
    no_song = rng.random(n) < _P_NO_FAVORITE_SONG
    heard = rng.integers(len(_HEARD_FROM), size=n)
    tickets = rng.integers(1, 5, size=n)
    postal_digits = rng.integers(0, 10, size=(n, 6))
    postal_letters = _LETTERS[rng.integers(len(_LETTERS), size=(n, 4))]
    jitter = rng.normal(0.0, 0.15, size=(n, 2))
    fanscore = np.round(rng.gamma(2.0, 15.0, size=n), 2)
    nudata = np.round(rng.beta(1.0, 8.0, size=n), 4)
    verified = rng.random(n) < _P_VERIFIED
    selected = verified & (score >= _SELECTED_MIN_SCORE)
    code_u = rng.random(n)
    code_letters = _LETTERS[rng.integers(len(_LETTERS), size=(n, 4))]
    wave = np.where(rng.random(n) < _P_FIRST_WAVE, 0, 1)
    assigned_offset_ms = rng.integers(0, 2 * 3_600_000, size=n)

    columns: dict[str, list[Any]] = {
        "i": row.tolist(),
        "slot": slot.tolist(),
        "market": market.tolist(),
        "first": first,
        "last": last,
        "email": email,
        "song": song,
        "locale": locale,
        "created_ms": created_ms.tolist(),
        "opt_ins": opt_ins.tolist(),
        "has_phone": has_phone.tolist(),
        "phone_null": (~has_phone & (phone_u[:, 1] < _P_PHONE_NULL)).tolist(),
        "phone_confirmed": (has_phone & (phone_u[:, 2] < _P_PHONE_CONFIRMED)).tolist(),
        "phone_digits": phone_digits.tolist(),
        "additional": additional,
        "extra_code": extra_code.tolist(),
        "no_song": no_song.tolist(),
        "heard": heard.tolist(),
        "tickets": tickets.tolist(),
        "postal_digits": postal_digits.tolist(),
        "postal_letters": ["".join(x) for x in postal_letters.tolist()],
        "jitter": jitter.tolist(),
        "score": score.tolist(),
        "rank": plan.rank_of_row[start:stop].tolist(),
        "fanscore": fanscore.tolist(),
        "nudata": nudata.tolist(),
        "verified": verified.tolist(),
        "selected": selected.tolist(),
        "assigned": (selected & (code_u < _P_CODE_ASSIGNED)).tolist(),
        "available": (~selected & (code_u < _P_CODE_AVAILABLE)).tolist(),
        "code_letters": ["".join(x) for x in code_letters.tolist()],
        "wave": wave.tolist(),
        "assigned_offset_ms": assigned_offset_ms.tolist(),
    }
    # .tolist() above: pymongo encodes Python scalars only, not numpy ones.
    return [_Row._make(values) for values in zip(*(columns[f] for f in _Row._fields), strict=True)]


def _block_docs(plan: _Plan, block: int) -> _BlockDocs:
    """One block's documents, ready to insert."""
    out = _BlockDocs()
    for r in _block_rows(plan, block):
        market = plan.markets[r.market]
        user_id = _user_id(plan.campaign_id, r.i)
        phone = f"{_PHONE_PREFIX.get(market.country, '+1555')}{r.phone_digits:07d}" if r.has_phone else None
        postal = _postal_code(market.country, r.postal_digits, r.postal_letters)
        code = _code_doc(plan.campaign_id, market, user_id, r, plan.calendar.wave_ms)
        if code is not None:
            out.codes.append(code)
            if r.assigned:
                out.wave_rows[r.wave].append(r.i)
        if not r.selected and r.i % 50 == _SLOT_WAVE_UNSELECTED:
            # A few unselected fans are scheduled for SMS anyway (the waitlist removes them).
            out.wave_rows[(r.i // 50) % 2].append(r.i)
        if r.slot not in _SLOT_NO_USER:
            out.users.append(_user_doc(market, user_id, phone, postal, r))
        out.entries.append(_entry_doc(plan, market, user_id, phone, code, r))
        out.scoring.append(_scoring_doc(plan.campaign_id, market, user_id, postal, r))
    return out


def _code_doc(
    campaign_id: str, market: _Market, user_id: str, r: _Row, wave_ms: tuple[int, int]
) -> dict[str, Any] | None:
    """Selected fans mostly hold an assigned code; a few others leave an available one."""
    if not (r.assigned or r.available):
        return None
    doc: dict[str, Any] = {
        "_id": f"{campaign_id}-k{r.i:07d}",
        "campaignId": campaign_id,
        "marketId": market.id,
        "code": f"{r.code_letters}{r.i:07d}",
        "status": "assigned" if r.assigned else "available",
    }
    if r.assigned:
        doc["assignedTo"] = user_id
        doc["date"] = {"assigned": _ms_to_datetime(wave_ms[r.wave] + r.assigned_offset_ms)}
        doc["waveDateKey"] = str(wave_ms[r.wave])
    return doc


def _user_doc(market: _Market, user_id: str, phone: str | None, postal: str, r: _Row) -> dict[str, Any]:
    """The fan's profile, with the fields some slots deliberately leave out."""
    doc: dict[str, Any] = {
        "_id": user_id,
        "firstName": r.first,
        "lastName": r.last,
        "email": r.email,
        "phone": phone,
        "postalCode": postal,
        "countryCode": market.country,
    }
    if phone is None or r.slot == _SLOT_NO_PHONE_POSTAL:
        del doc["phone"]
    if r.slot == _SLOT_NO_PHONE_POSTAL:
        del doc["postalCode"]
    elif r.slot == _SLOT_NO_LAST_NAME:
        del doc["lastName"]
    elif r.slot == _SLOT_NO_FIRST_NAME:
        del doc["firstName"]
    elif r.slot == _SLOT_NO_EMAIL:
        del doc["email"]
    elif r.slot == _SLOT_NULL_LAST_NAME:
        doc["lastName"] = None
    return doc


def _entry_doc(
    plan: _Plan, market: _Market, user_id: str, phone: str | None, code: dict[str, Any] | None, r: _Row
) -> dict[str, Any]:
    codes = [code["code"]] if code is not None and r.assigned else []
    if r.extra_code:
        codes.append(f"PRE{r.i:07d}")  # a legacy presale code that is not in `codes`
    fields: dict[str, Any] = {"howDidYouHear": _HEARD_FROM[r.heard], "ticketsWanted": r.tickets}
    if not r.no_song or r.slot in _SLOTS_FORMULA or r.slot in _SLOTS_CSV_HOSTILE:
        fields["favoriteSong"] = r.song
    doc: dict[str, Any] = {
        "_id": f"{plan.campaign_id}-e{r.i:07d}",
        "campaignId": plan.campaign_id,
        "userId": user_id,
        "marketId": market.id,
        "additionalMarkets": [plan.markets[k].id for k in r.additional],
        "localeId": r.locale,
        "date": {"created": _ms_to_datetime(r.created_ms)},
        "optIns": dict(zip(("allowMarketing", "allowLiveNation", "allowPromoter", "allowSms"), r.opt_ins, strict=True)),
        "phoneNumber": phone,
        "phoneConfirmed": r.phone_confirmed,
        "codes": codes,
        "fields": fields,
        "user": {"firstName": r.first, "lastName": r.last, "email": r.email},
    }
    if phone is None and not r.phone_null:
        del doc["phoneNumber"]  # missing phones are mostly absent, sometimes null
    if r.slot == _SLOT_NO_SNAPSHOT:
        del doc["user"]
    return doc


def _scoring_doc(campaign_id: str, market: _Market, user_id: str, postal: str, r: _Row) -> dict[str, Any]:
    return {
        "_id": f"{campaign_id}-s{r.i:07d}",
        "campaignId": campaign_id,
        "memberId": user_id,
        "marketId": market.id,
        "locale": r.locale,
        "countryCode": market.country,
        "score": round(r.score, 6),
        "fanscore": r.fanscore,
        "nudata": r.nudata,
        "geo": {
            "lat": round(market.city.lat + r.jitter[0], 5),
            "lon": round(market.city.lon + r.jitter[1], 5),
            "postalCode": postal,
        },
        "verified": r.verified,
        "selected": r.selected,
        "rank": r.rank,
    }


def _people(
    row: IntArray, slot: IntArray, rng: np.random.Generator
) -> tuple[list[str], list[str], list[str], list[str]]:
    """First names, last names, e-mails and favourite songs, awkward slots overridden."""
    n = len(row)
    first = np.array(_FIRST_NAMES)[rng.integers(len(_FIRST_NAMES), size=n)].tolist()
    last = np.array(_LAST_NAMES)[rng.integers(len(_LAST_NAMES), size=n)].tolist()
    domain = np.array(_DOMAINS)[rng.integers(len(_DOMAINS), size=n)].tolist()
    song = np.array(_SONGS)[rng.integers(len(_SONGS), size=n)].tolist()
    email = [
        f"{f.lower()}.{ln.lower().replace(chr(39), '')}{i}@{d}"
        for f, ln, i, d in zip(first, last, row.tolist(), domain, strict=True)
    ]
    for k, (i, s) in enumerate(zip(row.tolist(), slot.tolist(), strict=True)):
        # Which variant of a pool a row gets moves on every 100 rows.
        v = i // 100
        if s in _SLOTS_UNICODE:
            v = v * len(_SLOTS_UNICODE) + _SLOTS_UNICODE.index(s)
            first[k], last[k] = _UNICODE_NAMES[v % len(_UNICODE_NAMES)]
            email[k] = f"{first[k].lower().replace(' ', '')}.{i}@{domain[k]}"
        elif s in _SLOTS_FORMULA:
            v = v * len(_SLOTS_FORMULA) + _SLOTS_FORMULA.index(s)
            first[k] = _FORMULA_FIRST[v % len(_FORMULA_FIRST)]
            last[k] = _FORMULA_LAST[v % len(_FORMULA_LAST)]
            email[k] = f"{_FORMULA_EMAIL_PREFIX[v % len(_FORMULA_EMAIL_PREFIX)]}fan{i}@{domain[k]}"
            song[k] = _FORMULA_FIELD[v % len(_FORMULA_FIELD)]
        elif s in _SLOTS_CSV_HOSTILE:
            v = v * len(_SLOTS_CSV_HOSTILE) + _SLOTS_CSV_HOSTILE.index(s)
            first[k] = _CSV_HOSTILE_FIRST[v % len(_CSV_HOSTILE_FIRST)]
            last[k] = _CSV_HOSTILE_LAST[v % len(_CSV_HOSTILE_LAST)]
            email[k] = f'"fan,{i}"@{domain[k]}'  # a quoted local part may hold a comma
            song[k] = _CSV_HOSTILE_FIELD[v % len(_CSV_HOSTILE_FIELD)]
    return first, last, email, song


def _locales(country_of_row: list[str], u: FloatArray) -> list[str]:
    """Pick each row's localeId from its country's weighted table."""
    out = np.empty(len(u), dtype=object)
    countries = np.array(country_of_row, dtype=object)
    for cc in set(country_of_row):
        table = _LOCALES.get(cc, _FALLBACK_LOCALES)
        cum = np.cumsum([w for _, w in table])
        mask = countries == cc
        pick = np.minimum(np.searchsorted(cum / cum[-1], u[mask], side="right"), len(table) - 1)
        out[mask] = np.array([loc for loc, _ in table], dtype=object)[pick]
    return [str(x) for x in out.tolist()]


def _additional_markets(market: IntArray, n_markets: int, rng: np.random.Generator) -> list[list[int]]:
    """~20 % of rows name one or two other markets, never their own and never twice."""
    n = len(market)
    has = rng.random(n) < _P_ADDITIONAL_MARKETS
    two = rng.random(n) < _P_TWO_ADDITIONAL
    off1 = rng.integers(1, max(n_markets, 2), size=n)
    off2 = rng.integers(1, max(n_markets - 1, 2), size=n)
    off2 = off2 + (off2 >= off1)  # skip the first pick's offset
    out: list[list[int]] = []
    for m, h, t, a, b in zip(market.tolist(), has.tolist(), two.tolist(), off1.tolist(), off2.tolist(), strict=True):
        if not h or n_markets < 2:
            out.append([])
        elif t and n_markets >= 3:
            out.append([(m + a) % n_markets, (m + b) % n_markets])
        else:
            out.append([(m + a) % n_markets])
    return out


def _postal_code(country: str, d: list[int], letters: str) -> str:
    """A postal code in the country's usual shape (always a string: leading zeros matter)."""
    if country == "CA":
        return f"{letters[0]}{d[0]}{letters[1]} {d[1]}{letters[2]}{d[2]}"
    if country == "GB":
        return f"{letters[0]}{letters[1]}{d[0]} {d[1]}{letters[2]}{letters[3]}"
    if country == "IE":
        return f"D{d[0]}{d[1]} {letters[0]}{d[2]}{d[3]}{d[4]}"
    if country == "AU":
        return "".join(map(str, d[:4]))
    return "".join(map(str, d[:5]))


def _user_id(campaign_id: str, row: int) -> str:
    """Zero-padded, so string order is row order (paging by ``_id`` ranges works)."""
    return f"{campaign_id}-u{row:07d}"


def _ms_to_datetime(ms: int) -> datetime:
    """Exact millisecond arithmetic (a float timestamp could round a millisecond off)."""
    return _EPOCH + timedelta(milliseconds=ms)


# --- writing -------------------------------------------------------------------------


class _Writer:
    """Buffers documents per collection and inserts them in unordered batches."""

    def __init__(self, db: Database[Any], batch_size: int) -> None:
        self.db = db
        self.batch_size = batch_size
        self.buffers: dict[str, list[dict[str, Any]]] = {}
        self.counts: dict[str, int] = {}

    def add(self, collection: str, docs: list[dict[str, Any]]) -> None:
        buffer = self.buffers.setdefault(collection, [])
        buffer.extend(docs)
        self.counts[collection] = self.counts.get(collection, 0) + len(docs)
        while len(buffer) >= self.batch_size:
            self._insert(collection, buffer[: self.batch_size])
            del buffer[: self.batch_size]

    def flush(self) -> None:
        for collection, buffer in self.buffers.items():
            if buffer:
                self._insert(collection, buffer)
                buffer.clear()

    def _insert(self, collection: str, docs: list[dict[str, Any]]) -> None:
        try:
            self.db[collection].insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            # Duplicates are documents of an interrupted earlier run: identical, so skip.
            if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])) or (
                exc.details.get("writeConcernErrors")
            ):
                raise


def _write_waves(s3_client: Any, bucket: str | None, plan: _Plan, waves: list[IntArray]) -> list[str]:
    """Upload one ``memberId,marketId`` CSV per wave; return the keys written."""
    if s3_client is None or bucket is None:
        return []
    cid = plan.campaign_id
    market_ids = [m.id for m in plan.markets]
    keys = []
    for date_key, rows in zip((str(ms) for ms in plan.calendar.wave_ms), waves, strict=True):
        key = f"waves/{cid}/{date_key}/part-0.csv"
        body = "memberId,marketId\n" + "".join(
            f"{_user_id(cid, i)},{market_ids[m]}\n"
            for i, m in zip(rows.tolist(), plan.market_of_row[rows].tolist(), strict=True)
        )
        s3_client.put_object(Bucket=bucket, Key=key, Body=body.encode("utf-8"), ContentType="text/csv")
        keys.append(key)
    return keys


# --- CLI -----------------------------------------------------------------------------


def _client(uri: str) -> pymongo.MongoClient[Any]:
    """A bare URI means the local single-node server, which needs a direct connection."""
    if "?" in uri or uri.startswith("mongodb+srv://"):
        return pymongo.MongoClient(uri)
    return pymongo.MongoClient(uri, directConnection=True)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m devstack.seed", description="Seed a demo campaign into MongoDB.")
    p.add_argument("--uri", default=os.environ.get("MONGODB_URI", "mongodb://127.0.0.1:27017"))
    p.add_argument("--db", default=os.environ.get("MONGODB_DB", "verifiedfan"))
    p.add_argument("--campaign-id", default="123")
    p.add_argument("--entries", type=int, default=50_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--campaign-name", default=None)
    p.add_argument("--campaign-type", choices=("standard", "fanclub"), default="standard")
    p.add_argument("--markets", type=int, default=None, help="default: one per country")
    p.add_argument("--countries", default=",".join(DEFAULT_COUNTRIES), help="comma-separated ISO-2 codes")
    p.add_argument(
        "--today",
        type=date.fromisoformat,
        default=None,
        help="YYYY-MM-DD the campaign's dates are relative to (default: the current UTC day)",
    )
    p.add_argument("--if-empty", action="store_true", help="do nothing when the campaign already exists")
    p.add_argument("--vf-scoring-bucket", default=None, help="also write the SMS wave files to this bucket")
    p.add_argument("--s3-endpoint-url", default=os.environ.get("S3_ENDPOINT_URL"))
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Seed one campaign and print a one-line summary."""
    args = _parse_args(argv)
    started = time.perf_counter()
    with _client(args.uri) as client:
        db = client[args.db]
        if args.if_empty and db["campaigns"].find_one({"_id": args.campaign_id}, {"_id": 1}):
            print(f"seed: campaign {args.campaign_id} already in {args.db}; nothing to do")
            return 0
        s3_client = None
        if args.vf_scoring_bucket:
            import boto3  # only when asked: boto3 costs a noticeable import

            s3_client = boto3.client("s3", endpoint_url=args.s3_endpoint_url)
        try:
            summary = seed_campaign(
                db,
                campaign_id=args.campaign_id,
                n_entries=args.entries,
                seed=args.seed,
                campaign_name=args.campaign_name,
                campaign_type=args.campaign_type,
                countries=tuple(c.strip() for c in args.countries.split(",") if c.strip()),
                n_markets=args.markets,
                s3_client=s3_client,
                vf_scoring_bucket=args.vf_scoring_bucket,
                today=args.today or datetime.now(UTC).date(),
            )
        except CampaignExistsError as exc:
            print(f"seed: {exc} (use --if-empty to skip)", file=sys.stderr)
            return 1
    counts = " ".join(
        f"{k}={summary[k]}" for k in ("campaigns", "markets", "promoters", "users", "entries", "scoring", "codes")
    )
    print(
        f"seed: campaign {args.campaign_id} into {args.db}: {counts} "
        f"waves={','.join(summary['waveDateKeys'])} files={len(summary['waveFiles'])} "
        f"in {time.perf_counter() - started:.1f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
