"""`entries`: one row per entry, market by market; with includeAllMarkets, one more row per
additional market the fan entered. Names and e-mail come from the user document, falling
back to the entry's snapshot field by field."""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import partial
from typing import Any

import polars as pl

from export_pipelines.exports.base import (
    RAW_BATCH_SIZE,
    ExportContext,
    NoMarketsFound,
    decode_raw_batches,
    nested,
    scan_parts,
    write_parts,
)

MARKET_SCHEMA = {
    "marketId": pl.String,
    "marketName": pl.String,
    "marketCity": pl.String,
    "marketState": pl.String,
    "marketCountryCode": pl.String,
}

ENTRY_SCHEMA: dict[str, Any] = {
    "userId": pl.String,
    "marketId": pl.String,
    "isAdditionalMarket": pl.Boolean,
    "localeId": pl.String,
    "entryDate": pl.Datetime("ms", "UTC"),
    "allowMarketing": pl.Boolean,
    "allowLiveNation": pl.Boolean,
    "allowPromoter": pl.Boolean,
    "allowSms": pl.Boolean,
    "phoneNumber": pl.String,
    "phoneConfirmed": pl.Boolean,
    "codes": pl.List(pl.String),
    "fields": pl.String,
    "snapFirstName": pl.String,
    "snapLastName": pl.String,
    "snapEmail": pl.String,
    "userFirstName": pl.String,
    "userLastName": pl.String,
    "userEmail": pl.String,
    "userPhone": pl.String,
    "postalCode": pl.String,
    "countryCode": pl.String,
}

# Only what the rows need crosses the wire; the user document is joined by the server.
ENTRY_PROJECTION = {
    "userId": 1,
    "marketId": 1,
    "localeId": 1,
    "date.created": 1,
    "optIns": 1,
    "phoneNumber": 1,
    "phoneConfirmed": 1,
    "codes": 1,
    "fields": 1,
    "user": 1,
    "u.firstName": 1,
    "u.lastName": 1,
    "u.email": 1,
    "u.phone": 1,
    "u.postalCode": 1,
    "u.countryCode": 1,
}


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _flag(value: Any) -> bool | None:
    return None if value is None else bool(value)


def _doc(value: Any) -> dict[str, Any]:
    """A sub-document, or {} when it is missing or not a document."""
    return value if isinstance(value, dict) else {}


def entries_frame(docs: list[dict[str, Any]], market_id: str, additional: bool) -> pl.DataFrame:
    """Flatten one batch of entry documents (with their joined user as `u`) into columns."""
    columns: dict[str, list[Any]] = {name: [] for name in ENTRY_SCHEMA}
    for doc in docs:
        user = _doc((doc.get("u") or [{}])[0])
        snapshot = _doc(doc.get("user"))
        opt_ins = _doc(doc.get("optIns"))
        codes = doc.get("codes")
        custom = doc.get("fields")
        values = (
            _text(doc.get("userId")),
            market_id,
            additional,
            _text(doc.get("localeId")),
            nested(doc, "date.created"),
            _flag(opt_ins.get("allowMarketing")),
            _flag(opt_ins.get("allowLiveNation")),
            _flag(opt_ins.get("allowPromoter")),
            _flag(opt_ins.get("allowSms")),
            _text(doc.get("phoneNumber")),
            _flag(doc.get("phoneConfirmed")),
            [str(c) for c in codes] if isinstance(codes, list) else None,
            json.dumps(custom, ensure_ascii=False, sort_keys=True, default=str) if custom else None,
            _text(snapshot.get("firstName")),
            _text(snapshot.get("lastName")),
            _text(snapshot.get("email")),
            _text(user.get("firstName")),
            _text(user.get("lastName")),
            _text(user.get("email")),
            _text(user.get("phone")),
            _text(user.get("postalCode")),
            _text(user.get("countryCode")),
        )
        for name, value in zip(ENTRY_SCHEMA, values, strict=True):
            columns[name].append(value)
    return pl.DataFrame(columns, schema=ENTRY_SCHEMA)


def _entries_pipeline(match: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"$match": match},
        {"$sort": {"_id": 1}},
        {"$lookup": {"from": "users", "localField": "userId", "foreignField": "_id", "as": "u"}},
        {"$project": ENTRY_PROJECTION},
    ]


def load_markets(ctx: ExportContext) -> list[dict[str, Any]]:
    """The campaign's markets in a stable order; an export without markets cannot succeed."""
    markets = list(ctx.db["markets"].find({"campaignId": ctx.campaign_id}).sort("_id", 1))
    if not markets:
        raise NoMarketsFound(ctx.campaign_id)
    return markets


def extract(ctx: ExportContext) -> None:
    """Markets, then entries market by market in raw batches, each batch a Parquet part."""
    markets = load_markets(ctx)
    pl.DataFrame(
        {
            "marketId": [str(m["_id"]) for m in markets],
            "marketName": [_text(m.get("name")) for m in markets],
            "marketCity": [_text(m.get("city")) for m in markets],
            "marketState": [_text(m.get("state")) for m in markets],
            "marketCountryCode": [_text(m.get("countryCode")) for m in markets],
        },
        schema=MARKET_SCHEMA,
    ).write_parquet(ctx.extract_path("markets") / "markets.parquet")

    out = ctx.extract_path("entries")
    include_all = bool(ctx.record.get("includeAllMarkets"))
    total = 0
    for index, market in enumerate(markets):
        market_id = str(market["_id"])
        passes = [(False, {"campaignId": ctx.campaign_id, "marketId": market_id})]
        if include_all:
            passes.append((True, {"campaignId": ctx.campaign_id, "additionalMarkets": market_id}))
        for additional, match in passes:
            raw = ctx.db["entries"].aggregate_raw_batches(_entries_pipeline(match), batchSize=RAW_BATCH_SIZE)
            prefix = f"{index:05d}-{'b' if additional else 'a'}"
            total += write_parts(
                decode_raw_batches(raw), partial(entries_frame, market_id=market_id, additional=additional), out, prefix
            )
        ctx.log.info(f"extracted market {index + 1}/{len(markets)}: {total} rows so far")


def transform(ctx: ExportContext) -> Iterator[pl.DataFrame]:
    """Join each part to its market and apply the name fallback; cell formatting is generic."""
    markets = pl.read_parquet(ctx.extract_path("markets") / "markets.parquet")
    for part in scan_parts(ctx.extract_path("entries")):
        yield part.join(markets, on="marketId", how="left").with_columns(
            email=pl.coalesce("userEmail", "snapEmail"),
            firstName=pl.coalesce("userFirstName", "snapFirstName"),
            lastName=pl.coalesce("userLastName", "snapLastName"),
            phoneNumber=pl.coalesce("phoneNumber", "userPhone"),
        )
