"""`fanlist`: one row per fan (user id) across the campaign's markets, with the markets they entered.

A fan's markets are each entry's market then its additional markets, in entry `_id` order,
each once, keeping only markets of the campaign; fans come in the order of their first
entry. Names resolve as everywhere (user document, else the first entry's snapshot).
"""

from __future__ import annotations

from collections.abc import Iterator

import polars as pl

from export_pipelines.exports import sources
from export_pipelines.exports.contract import ExportContext, TypeLogic

OUTPUT_BATCH_ROWS = 50_000
_NO_MARKETS = pl.lit([], dtype=pl.List(pl.String))
FAN_ENTRIES = sources.ENTRIES.only(
    "userId", "marketId", "additionalMarkets", "snapFirstName", "snapLastName", "snapEmail"
).with_users("userFirstName", "userLastName", "userEmail", "postalCode", "countryCode")
DATASET = "entries"
PERSON_COLUMNS = (
    "userFirstName",
    "userLastName",
    "userEmail",
    "postalCode",
    "countryCode",
    "snapFirstName",
    "snapLastName",
    "snapEmail",
)


def extract(ctx: ExportContext) -> None:
    """Markets (a campaign without any cannot have a fan list), then every entry with its user."""
    sources.extract_markets(ctx, required=True)
    sources.extract_source(ctx, FAN_ENTRIES, {}, name=DATASET)


def fans(entries: pl.DataFrame, markets: pl.DataFrame) -> pl.DataFrame:
    """One row per fan of `entries` (staged FAN_ENTRIES), with the campaign's `markets` they
    entered: a columnar group-by, not a dict per fan."""
    markets = markets.select("marketId", "marketName")
    entries = entries.filter(pl.col("userId").is_not_null())
    fan_markets = (
        entries.select(
            "userId",
            marketId=pl.concat_list(pl.col("marketId"), pl.col("additionalMarkets").fill_null(_NO_MARKETS)),
        )
        .explode("marketId")
        .join(markets, on="marketId", how="inner", maintain_order="left")
        .unique(subset=["userId", "marketId"], keep="first", maintain_order=True)
        .group_by("userId", maintain_order=True)
        .agg(markets=pl.col("marketId"), marketNames=pl.col("marketName").fill_null(""))
    )
    people = entries.group_by("userId", maintain_order=True).agg(pl.col(name).first() for name in PERSON_COLUMNS)
    return sources.with_names(people).join(fan_markets, on="userId", how="inner", maintain_order="left")


def transform(ctx: ExportContext) -> Iterator[pl.DataFrame]:
    """Reads what extract staged, hands it to `fans`, and yields the fans in batches."""
    rows = fans(sources.read_all(ctx, DATASET, FAN_ENTRIES.schema), sources.read_markets(ctx))
    for offset in range(0, rows.height, OUTPUT_BATCH_ROWS):
        yield rows.slice(offset, OUTPUT_BATCH_ROWS)


LOGIC = TypeLogic(extract=extract, transform=transform)
