"""Building blocks shared by the data exports (codes, scoring, opt-ins, waves, fan list, waitlist, promoters).

Each source collection is read the same way: one query per dataset (filter, `_id` order,
projection), raw BSON batches decoded one at a time, each batch's users fetched by `_id`
(`with_users`), and written as Parquet parts (`write_parts` reads the next batch meanwhile).
Flattening a document into columns happens here, once per source, so the type modules only
choose filters and shape rows with polars.

Name fallback (SPEC §2): first/last name and e-mail come from the `users` document, field by
field falling back to the entry's `user` snapshot. Entry-based types carry the snapshot in
the same document; scoring- and code-based types join it from the campaign's entries by
user id in polars.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

import polars as pl
from bson.decimal128 import Decimal128

from export_pipelines.domain.keys import safe_key_part
from export_pipelines.exports.base import (
    RAW_BATCH_SIZE,
    ExportContext,
    NoMarketsFound,
    decode_raw_batches,
    nested,
    scan_parts,
    write_parts,
)

UTC_MS = pl.Datetime("ms", "UTC")

# -- values -------------------------------------------------------------------------------


def text(value: Any) -> str | None:
    return None if value is None else str(value)


def flag(value: Any) -> bool | None:
    """A boolean field; anything else in it ("no", 1) is a missing value, not a guess."""
    return value if isinstance(value, bool) else None


def number(value: Any) -> float | None:
    """A numeric field as a float (numeric strings parsed); anything else is a missing value."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, Decimal128):
        value = value.to_decimal()
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def integer(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    as_float = number(value)
    return int(as_float) if as_float is not None and math.isfinite(as_float) else None


def timestamp(value: Any) -> datetime | None:
    return value if isinstance(value, datetime) else None


def strings(value: Any) -> list[str] | None:
    return [str(v) for v in value if v is not None] if isinstance(value, list) else None


def document(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def looked_up_user(doc: dict[str, Any]) -> dict[str, Any]:
    """The user document `with_users` put under `u` (empty when there is none)."""
    users = doc.get("u")
    return document(users[0]) if isinstance(users, list) and users else {}


def frame_of(
    docs: list[dict[str, Any]], schema: dict[str, Any], row: Callable[[dict[str, Any]], tuple[Any, ...]]
) -> pl.DataFrame:
    """Columns of one decoded batch: `row(doc)` gives the values in `schema` order."""
    columns: dict[str, list[Any]] = {name: [] for name in schema}
    names = list(schema)
    for doc in docs:
        for name, value in zip(names, row(doc), strict=True):
            columns[name].append(value)
    return pl.DataFrame(columns, schema=schema)


# -- reading ------------------------------------------------------------------------------


# Ids per `$in`: each query is an index lookup on MongoDB; on the local server a query's cost
# grows with the square of its list. Measured here per 10k users: 20-30 ids 0.6-0.8 s, 50 ids
# 0.8-0.9 s, 100 ids 1.1-1.2 s, 200 ids 1.8 s, one `find_one` each 3 s, a `$lookup` 1.8 s;
# below ~20 the round trips dominate (10 ids 0.95 s) and our CPU per user doubles.
USER_LOOKUP_CHUNK = 30
USER_FIELDS = ("firstName", "lastName", "email", "phone", "postalCode", "countryCode")


def with_users(
    ctx: ExportContext, batches: Iterable[list[dict[str, Any]]], user_field: str
) -> Iterator[list[dict[str, Any]]]:
    """Each document with its user (the `users` doc whose `_id` is `doc[user_field]`) under `u`, as `$lookup` would."""
    users = ctx.db["users"]
    projection = dict.fromkeys(USER_FIELDS, 1)
    for docs in batches:
        ids = list(dict.fromkeys(d[user_field] for d in docs if d.get(user_field) is not None))
        found: dict[Any, dict[str, Any]] = {}
        for start in range(0, len(ids), USER_LOOKUP_CHUNK):
            query = {"_id": {"$in": ids[start : start + USER_LOOKUP_CHUNK]}}
            for user_docs in decode_raw_batches(users.find_raw_batches(query, projection)):
                found.update((u["_id"], u) for u in user_docs)
        for doc in docs:
            user = found.get(doc.get(user_field))
            doc["u"] = [user] if user is not None else []
        yield docs


def extract_dataset(
    ctx: ExportContext,
    *,
    collection: str,
    name: str,
    match: dict[str, Any],
    projection: dict[str, Any],
    to_frame: Callable[[list[dict[str, Any]]], pl.DataFrame],
    user_field: str | None = None,
) -> int:
    """Documents of the campaign matching `match`, in `_id` order, as Parquet parts under `name`.

    With `user_field`, each document's user (by `_id`) is attached as `u` (`with_users`).
    """
    raw = ctx.db[collection].find_raw_batches(
        {"campaignId": ctx.campaign_id, **match}, projection, sort=[("_id", 1)], batch_size=RAW_BATCH_SIZE
    )
    batches = decode_raw_batches(raw)
    if user_field is not None:
        batches = with_users(ctx, batches, user_field)
    rows = write_parts(batches, to_frame, ctx.extract_path(name), "part")
    ctx.log.info(f"extracted {rows} {collection} rows into {name}")
    return rows


def parts(ctx: ExportContext, name: str) -> Iterator[pl.DataFrame]:
    return scan_parts(ctx.extract_path(name))


def read_all(ctx: ExportContext, name: str, schema: dict[str, Any]) -> pl.DataFrame:
    """A whole extracted dataset as one frame (for joins), empty with `schema` when nothing was found."""
    paths = sorted(ctx.extract_path(name).glob("*.parquet"))
    if not paths:
        return pl.DataFrame(schema=schema)
    return pl.scan_parquet(paths).collect()


# -- people: users and the entries' snapshots -----------------------------------------

USER_SCHEMA: dict[str, Any] = {
    "userFirstName": pl.String,
    "userLastName": pl.String,
    "userEmail": pl.String,
    "postalCode": pl.String,
    "countryCode": pl.String,
}
SNAPSHOT_SCHEMA: dict[str, Any] = {
    "snapFirstName": pl.String,
    "snapLastName": pl.String,
    "snapEmail": pl.String,
}


def user_values(doc: dict[str, Any]) -> tuple[Any, ...]:
    """USER_SCHEMA values from the looked-up user."""
    user = looked_up_user(doc)
    return tuple(text(user.get(f)) for f in ("firstName", "lastName", "email", "postalCode", "countryCode"))


def snapshot_values(doc: dict[str, Any]) -> tuple[Any, ...]:
    """SNAPSHOT_SCHEMA values from an entry's `user` snapshot."""
    snapshot = document(doc.get("user"))
    return tuple(text(snapshot.get(f)) for f in ("firstName", "lastName", "email"))


def with_names(frame: pl.DataFrame) -> pl.DataFrame:
    """email, firstName, lastName from the user document, field by field falling back to the snapshot."""
    return frame.with_columns(
        email=pl.coalesce("userEmail", "snapEmail"),
        firstName=pl.coalesce("userFirstName", "snapFirstName"),
        lastName=pl.coalesce("userLastName", "snapLastName"),
    )


SNAPSHOTS = "snapshots"
_SNAPSHOT_ROW_SCHEMA: dict[str, Any] = {"userId": pl.String, **SNAPSHOT_SCHEMA}


def extract_snapshots(ctx: ExportContext) -> None:
    """Each entry's user id and name snapshot, for rows keyed by a user id instead of an entry."""
    extract_dataset(
        ctx,
        collection="entries",
        name=SNAPSHOTS,
        match={},
        projection={"userId": 1, "user": 1},
        to_frame=lambda docs: frame_of(
            docs, _SNAPSHOT_ROW_SCHEMA, lambda d: (text(d.get("userId")), *snapshot_values(d))
        ),
    )


def read_snapshots(ctx: ExportContext) -> pl.DataFrame:
    """One snapshot per user id: that of the user's first entry (by `_id`)."""
    return (
        read_all(ctx, SNAPSHOTS, _SNAPSHOT_ROW_SCHEMA)
        .filter(pl.col("userId").is_not_null())
        .unique(subset="userId", keep="first", maintain_order=True)
    )


def join_snapshots(frame: pl.DataFrame, snapshots: pl.DataFrame, user_column: str) -> pl.DataFrame:
    """`frame` with the names resolved, its `user_column` matched to the snapshots' userId."""
    joined = frame.join(snapshots.rename({"userId": user_column}), on=user_column, how="left", maintain_order="left")
    return with_names(joined)


# -- markets ------------------------------------------------------------------------------

MARKETS = "markets"
MARKET_SCHEMA: dict[str, Any] = {
    "marketId": pl.String,
    "marketName": pl.String,
    "marketCity": pl.String,
    "marketState": pl.String,
    "marketCountryCode": pl.String,
    "eventName": pl.String,
    "eventDate": UTC_MS,
    "venue": pl.String,
    "eventLink": pl.String,
    "promoterIds": pl.List(pl.String),
}


def load_markets(ctx: ExportContext) -> list[dict[str, Any]]:
    """The campaign's markets in a stable order; an export without markets cannot succeed."""
    markets = list(ctx.db["markets"].find({"campaignId": ctx.campaign_id}).sort("_id", 1))
    if not markets:
        raise NoMarketsFound(ctx.campaign_id)
    return markets


def extract_markets(ctx: ExportContext, *, required: bool) -> list[dict[str, Any]]:
    """The campaign's markets (by `_id`) with their event and promoters; `required` fails without any."""
    if required:
        markets = load_markets(ctx)
    else:
        markets = list(ctx.db["markets"].find({"campaignId": ctx.campaign_id}).sort("_id", 1))
    frame_of(
        markets,
        MARKET_SCHEMA,
        lambda m: (
            str(m["_id"]),
            text(m.get("name")),
            text(m.get("city")),
            text(m.get("state")),
            text(m.get("countryCode")),
            text(nested(m, "event.name")),
            timestamp(nested(m, "event.date")),
            text(nested(m, "event.venue")),
            text(nested(m, "event.ticketLink")),
            strings(m.get("promoterIds")),
        ),
    ).write_parquet(ctx.extract_path(MARKETS) / "markets.parquet")
    return markets


def read_markets(ctx: ExportContext) -> pl.DataFrame:
    return read_all(ctx, MARKETS, MARKET_SCHEMA)


# -- entries ------------------------------------------------------------------------------

ENTRIES = "entries"
ENTRY_SCHEMA: dict[str, Any] = {
    "userId": pl.String,
    "marketId": pl.String,
    "additionalMarkets": pl.List(pl.String),
    "localeId": pl.String,
    "entryDate": UTC_MS,
    "phoneNumber": pl.String,
    "phoneConfirmed": pl.Boolean,
    **SNAPSHOT_SCHEMA,
    **USER_SCHEMA,
}
ENTRY_PROJECTION = {
    "userId": 1,
    "marketId": 1,
    "additionalMarkets": 1,
    "localeId": 1,
    "date.created": 1,
    "phoneNumber": 1,
    "phoneConfirmed": 1,
    "user": 1,
}


def _entry_row(doc: dict[str, Any]) -> tuple[Any, ...]:
    return (
        text(doc.get("userId")),
        text(doc.get("marketId")),
        strings(doc.get("additionalMarkets")),
        text(doc.get("localeId")),
        timestamp(nested(doc, "date.created")),
        text(doc.get("phoneNumber")),
        flag(doc.get("phoneConfirmed")),
        *snapshot_values(doc),
        *user_values(doc),
    )


def extract_entries(ctx: ExportContext, match: dict[str, Any]) -> int:
    """The campaign's entries matching `match`, with their user, by entry `_id`."""
    return extract_dataset(
        ctx,
        collection="entries",
        name=ENTRIES,
        match=match,
        projection=ENTRY_PROJECTION,
        to_frame=lambda docs: frame_of(docs, ENTRY_SCHEMA, _entry_row),
        user_field="userId",
    )


def extract_opt_in_entries(ctx: ExportContext, opt_in: str) -> None:
    """Markets, and the entries whose `optIns.<opt_in>` is true."""
    extract_markets(ctx, required=False)
    extract_entries(ctx, {f"optIns.{opt_in}": True})


def opt_in_rows(ctx: ExportContext) -> Iterator[pl.DataFrame]:
    """Opted-in entries with their market's name and the fan's resolved names."""
    markets = read_markets(ctx).select("marketId", "marketName")
    for part in parts(ctx, ENTRIES):
        yield with_names(part).join(markets, on="marketId", how="left", maintain_order="left")


# -- scoring ------------------------------------------------------------------------------

SCORING = "scoring"
SCORING_SCHEMA: dict[str, Any] = {
    "memberId": pl.String,
    "marketId": pl.String,
    "locale": pl.String,
    "countryCode": pl.String,
    "score": pl.Float64,
    "fanscore": pl.Float64,
    "nudata": pl.Float64,
    "lat": pl.Float64,
    "lon": pl.Float64,
    "postalCode": pl.String,
    "verified": pl.Boolean,
    "selected": pl.Boolean,
    "rank": pl.Int64,
}
_GEO_COLUMNS = ("lat", "lon", "postalCode")  # from the `geo` sub-document
_SCORING_PROJECTION = {name: 1 for name in SCORING_SCHEMA if name not in _GEO_COLUMNS} | {"geo": 1}


def _scoring_row(doc: dict[str, Any]) -> tuple[Any, ...]:
    return (
        text(doc.get("memberId")),
        text(doc.get("marketId")),
        text(doc.get("locale")),
        text(doc.get("countryCode")),
        number(doc.get("score")),
        number(doc.get("fanscore")),
        number(doc.get("nudata")),
        number(nested(doc, "geo.lat")),
        number(nested(doc, "geo.lon")),
        text(nested(doc, "geo.postalCode")),
        flag(doc.get("verified")),
        flag(doc.get("selected")),
        integer(doc.get("rank")),
    )


_SCORED_PERSON_SCHEMA: dict[str, Any] = {
    **SCORING_SCHEMA,
    "userFirstName": pl.String,
    "userLastName": pl.String,
    "userEmail": pl.String,
}


def extract_scoring(ctx: ExportContext, match: dict[str, Any], *, with_user: bool = False) -> int:
    """The campaign's scoring records matching `match`, by `_id`; `with_user` adds the member's names."""
    schema, row = (
        (_SCORED_PERSON_SCHEMA, lambda d: (*_scoring_row(d), *user_values(d)[:3]))
        if with_user
        else (SCORING_SCHEMA, _scoring_row)
    )
    return extract_dataset(
        ctx,
        collection="scoring",
        name=SCORING,
        match=match,
        projection=_SCORING_PROJECTION,
        to_frame=lambda docs: frame_of(docs, schema, row),
        user_field="memberId" if with_user else None,
    )


# -- codes --------------------------------------------------------------------------------

CODES = "codes"
CODE_SCHEMA: dict[str, Any] = {
    "code": pl.String,
    "marketId": pl.String,
    "status": pl.String,
    "assignedTo": pl.String,
    "assignedAt": UTC_MS,
    "waveDateKey": pl.String,
}
_CODE_PERSON_SCHEMA: dict[str, Any] = {**CODE_SCHEMA, **USER_SCHEMA}


def _code_row(doc: dict[str, Any]) -> tuple[Any, ...]:
    return (
        text(doc.get("code")),
        text(doc.get("marketId")),
        text(doc.get("status")),
        text(doc.get("assignedTo")),
        timestamp(nested(doc, "date.assigned")),
        text(doc.get("waveDateKey")),
    )


def extract_codes(ctx: ExportContext, match: dict[str, Any], *, with_user: bool = False) -> int:
    """The campaign's codes matching `match`, by `_id`; `with_user` adds the holder's user document."""
    schema, row = (
        (_CODE_PERSON_SCHEMA, lambda d: (*_code_row(d), *user_values(d))) if with_user else (CODE_SCHEMA, _code_row)
    )
    return extract_dataset(
        ctx,
        collection="codes",
        name=CODES,
        match=match,
        projection={"code": 1, "marketId": 1, "status": 1, "assignedTo": 1, "date.assigned": 1, "waveDateKey": 1},
        to_frame=lambda docs: frame_of(docs, schema, row),
        user_field="assignedTo" if with_user else None,
    )


# -- files inside a ZIP ---------------------------------------------------------------


def unique_file_names(named: list[tuple[str, str | None]]) -> dict[str, str]:
    """Key-safe, distinct file names (ignoring case) for (id, name) pairs, named after `name`.

    A name two ids share gets the id as a suffix; an id without a name is named after the id.
    """
    base = {ident: safe_key_part(name if name else ident) for ident, name in named}
    taken: dict[str, int] = {}
    for name in base.values():
        taken[name.casefold()] = taken.get(name.casefold(), 0) + 1
    names = {
        ident: name if taken[name.casefold()] == 1 else safe_key_part(f"{name} ({ident})", max_length=150)
        for ident, name in base.items()
    }
    seen: set[str] = set()
    for ident in sorted(names):  # a suffixed name can still collide: number what is left
        candidate, n = names[ident], 1
        while candidate.casefold() in seen:
            n += 1
            candidate = f"{names[ident]} ({n})"
        names[ident] = candidate
        seen.add(candidate.casefold())
    return names
