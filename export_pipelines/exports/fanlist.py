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
)
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
    sources.extract_source(ctx, FAN_ENTRIES, {}, name=DATASET, users=True)


def transform(ctx: ExportContext) -> Iterator[pl.DataFrame]:
    """Group the entries by user id (a columnar group-by, not a dict per fan), then emit in batches."""
    markets = sources.read_markets(ctx).select("marketId", "marketName")
    schema = {**FAN_ENTRIES.schema, **sources.USERS.schema}
    entries = sources.read_all(ctx, DATASET, schema).filter(pl.col("userId").is_not_null())
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
    fans = sources.with_names(people).join(fan_markets, on="userId", how="inner", maintain_order="left")
    for offset in range(0, fans.height, OUTPUT_BATCH_ROWS):
        yield fans.slice(offset, OUTPUT_BATCH_ROWS)


LOGIC = TypeLogic(extract=extract, transform=transform)
