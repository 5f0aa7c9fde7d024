"""`entries`: one row per entry, market by market; with includeAllMarkets, one more row per
additional market the fan entered. Names and e-mail come from the user document, falling
back to the entry's snapshot field by field (common.with_names)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import partial
from typing import Any

import polars as pl

from export_pipelines.exports.base import ExportContext, decode_raw_batches, nested, scan_parts, write_parts
from export_pipelines.exports.common import (
    RAW_BATCH_SIZE,
    SNAPSHOT_SCHEMA,
    USER_FIELDS,
    UTC_MS,
    document,
    extract_markets,
    flag,
    frame_of,
    read_markets,
    snapshot_values,
    strings,
    text,
    timestamp,
    with_names,
    with_users,
)

ENTRY_SCHEMA: dict[str, Any] = {
    "userId": pl.String,
    "marketId": pl.String,
    "isAdditionalMarket": pl.Boolean,
    "localeId": pl.String,
    "entryDate": UTC_MS,
    "allowMarketing": pl.Boolean,
    "allowLiveNation": pl.Boolean,
    "allowPromoter": pl.Boolean,
    "allowSms": pl.Boolean,
    "phoneNumber": pl.String,
    "phoneConfirmed": pl.Boolean,
    "codes": pl.List(pl.String),
    "fields": pl.String,
    **SNAPSHOT_SCHEMA,
    "userFirstName": pl.String,
    "userLastName": pl.String,
    "userEmail": pl.String,
    "userPhone": pl.String,
    "postalCode": pl.String,
    "countryCode": pl.String,
}

# Only what the rows need crosses the wire.
ENTRY_PROJECTION = {
    "userId": 1,
    "localeId": 1,
    "date.created": 1,
    "optIns": 1,
    "phoneNumber": 1,
    "phoneConfirmed": 1,
    "codes": 1,
    "fields": 1,
    "user": 1,
}


def _entry_row(doc: dict[str, Any], market_id: str, additional: bool) -> tuple[Any, ...]:
    opt_ins = document(doc.get("optIns"))
    users = doc.get("u")
    user = document(users[0]) if isinstance(users, list) and users else {}
    custom = doc.get("fields")
    return (
        text(doc.get("userId")),
        market_id,
        additional,
        text(doc.get("localeId")),
        timestamp(nested(doc, "date.created")),
        flag(opt_ins.get("allowMarketing")),
        flag(opt_ins.get("allowLiveNation")),
        flag(opt_ins.get("allowPromoter")),
        flag(opt_ins.get("allowSms")),
        text(doc.get("phoneNumber")),
        flag(doc.get("phoneConfirmed")),
        strings(doc.get("codes")),
        json.dumps(custom, ensure_ascii=False, sort_keys=True, default=str) if custom else None,
        *snapshot_values(doc),
        *(text(user.get(field)) for field in USER_FIELDS),
    )


def entries_frame(docs: list[dict[str, Any]], market_id: str, additional: bool) -> pl.DataFrame:
    """Flatten one batch of entry documents (with their user as `u`) into columns."""
    return frame_of(docs, ENTRY_SCHEMA, partial(_entry_row, market_id=market_id, additional=additional))


def extract(ctx: ExportContext) -> None:
    """Markets, then entries market by market in raw batches, each batch a Parquet part."""
    markets = extract_markets(ctx, required=True)
    out = ctx.extract_path("entries")
    include_all = bool(ctx.record.get("includeAllMarkets"))
    total = 0
    for index, market in enumerate(markets):
        market_id = str(market["_id"])
        passes = [(False, {"campaignId": ctx.campaign_id, "marketId": market_id})]
        if include_all:
            passes.append((True, {"campaignId": ctx.campaign_id, "additionalMarkets": market_id}))
        for additional, match in passes:
            raw = ctx.db["entries"].find_raw_batches(
                match, ENTRY_PROJECTION, sort=[("_id", 1)], batch_size=RAW_BATCH_SIZE
            )
            to_frame = partial(entries_frame, market_id=market_id, additional=additional)
            batches = with_users(ctx, decode_raw_batches(raw), "userId")
            total += write_parts(batches, to_frame, out, f"{index:05d}-{'b' if additional else 'a'}")
        ctx.log.info(f"extracted market {index + 1}/{len(markets)}: {total} rows so far")


def transform(ctx: ExportContext) -> Iterator[pl.DataFrame]:
    """Join each part to its market and resolve names; cell formatting is generic."""
    markets = read_markets(ctx).select("marketId", "marketName", "marketCity", "marketState", "marketCountryCode")
    for part in scan_parts(ctx.extract_path("entries")):
        yield with_names(part.join(markets, on="marketId", how="left", maintain_order="left")).with_columns(
            phoneNumber=pl.coalesce("phoneNumber", "userPhone")
        )
