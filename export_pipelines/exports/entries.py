"""`entries`: one row per entry, market by market; with includeAllMarkets, one more row per
additional market the fan entered. Names and e-mail come from the user document, falling
back to the entry's snapshot field by field (sources.with_names)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import polars as pl

from export_pipelines.exports import incremental, sources
from export_pipelines.exports.contract import ExportContext, TypeLogic

ENTRY_ROWS = sources.ENTRIES.only(
    "userId",
    "localeId",
    "entryDate",
    "allowMarketing",
    "allowLiveNation",
    "allowPromoter",
    "allowSms",
    "phoneNumber",
    "phoneConfirmed",
    "codes",
    "fields",
    "snapFirstName",
    "snapLastName",
    "snapEmail",
).with_users()
DATASET = "entries"


def extract(ctx: ExportContext) -> None:
    """Markets, then entries market by market (its own, then as an additional market) with their
    users, each batch a part."""
    markets = sources.extract_markets(ctx, required=True)
    include_all = bool(ctx.record.get("includeAllMarkets"))
    source = ENTRY_ROWS.with_row_key() if incremental.needed(ctx) else ENTRY_ROWS
    total = 0
    for index, market in enumerate(markets):
        market_id = str(market["_id"])
        passes = [(False, {"marketId": market_id})]
        if include_all:
            passes.append((True, {"additionalMarkets": market_id}))
        for additional, match in passes:
            frames = (
                frame.with_columns(marketId=pl.lit(market_id), isAdditionalMarket=pl.lit(additional))
                for frame in source.read(ctx.db, {"campaignId": ctx.campaign_id, **match, **ctx.row_filter})
            )
            prefix = f"{index:05d}-{'b' if additional else 'a'}"
            total += sources.write_parts(ctx, frames, DATASET, prefix, counted=total)
        ctx.log.info(f"extracted market {index + 1}/{len(markets)}: {total} rows so far")


def rows(parts: Iterable[pl.DataFrame], markets: pl.DataFrame) -> Iterator[pl.DataFrame]:
    """Each part of staged entries joined to its market, names and phone number resolved (user
    document, else the entry's own); cell formatting is generic."""
    markets = markets.select("marketId", "marketName", "marketCity", "marketState", "marketCountryCode")
    for part in parts:
        yield sources.with_names(part.join(markets, on="marketId", how="left", maintain_order="left")).with_columns(
            phoneNumber=pl.coalesce("phoneNumber", "userPhone")
        )


def transform(ctx: ExportContext) -> Iterator[pl.DataFrame]:
    """Reads what extract staged and hands it to `rows`."""
    yield from rows(sources.parts(ctx, DATASET), sources.read_markets(ctx))


LOGIC = TypeLogic(extract=extract, transform=transform)
