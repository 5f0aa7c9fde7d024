"""`promoterEmailOptIn`: the entries with `optIns.allowPromoter` true, one CSV per promoter in a ZIP.

A fan goes into the file of every promoter of their entry's market (a market with two
promoters puts them in both); a market without promoters contributes to no file. Files
are named after the promoter, made key-safe and unique (see `keys.unique_file_names`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import polars as pl

from export_core.keys import unique_file_names
from export_pipelines.exports import filtered, sources
from export_pipelines.exports.contract import FILE_COLUMN, ExportContext, TypeLogic

PROMOTERS = "promoters"
PROMOTER_SCHEMA: dict[str, Any] = {"promoterId": pl.String, "promoterName": pl.String, FILE_COLUMN: pl.String}


def extract(ctx: ExportContext) -> None:
    """Markets and their promoters (a small table, loaded whole), then the opted-in entries."""
    markets = sources.extract_markets(ctx, required=True)
    raw_ids: dict[str, Any] = {}  # str(id) → the id as stored, to query with its own BSON type
    for market in markets:
        for promoter_id in market.get("promoterIds") or []:
            if promoter_id is not None:
                raw_ids.setdefault(str(promoter_id), promoter_id)
    without = [str(m["_id"]) for m in markets if not m.get("promoterIds")]
    if without:
        ctx.log.warning(f"{len(without)} market(s) without promoters, their fans are in no file: {without[:20]}")
    found = ctx.db["promoters"].find({"_id": {"$in": list(raw_ids.values())}})
    names = {str(p["_id"]): sources.text(p.get("name")) for p in found}
    missing = sorted(set(raw_ids) - set(names))
    if missing:
        ctx.log.warning(f"promoters not found, their files are named after their id: {missing[:20]}")
    files = unique_file_names([(ident, names.get(ident)) for ident in sorted(raw_ids)])
    promoters = pl.DataFrame(
        {
            "promoterId": list(files),
            "promoterName": [names.get(ident) for ident in files],
            FILE_COLUMN: list(files.values()),
        },
        schema=PROMOTER_SCHEMA,
    )
    sources.write_part(promoters, ctx.extract_path(PROMOTERS) / f"promoters{sources.PART_SUFFIX}")
    filtered.extract_rows(ctx, LOGIC)


def rows(parts: Iterable[pl.DataFrame], markets: pl.DataFrame, promoters: pl.DataFrame) -> Iterator[pl.DataFrame]:
    """One row per (row of the filtered `parts`, promoter of its market), tagged with the
    promoter's file (`promoters`: PROMOTER_SCHEMA, as extract staged it)."""
    market_promoters = (
        markets.select("marketId", promoterId="promoterIds")
        .explode("promoterId")
        .filter(pl.col("promoterId").is_not_null())
        .unique(subset=["marketId", "promoterId"], keep="first", maintain_order=True)
        .join(promoters, on="promoterId", how="inner", maintain_order="left")
    )
    for part in parts:
        yield part.join(market_promoters, on="marketId", how="inner", maintain_order="left")


def transform(ctx: ExportContext) -> Iterator[pl.DataFrame]:
    """Reads the staged markets and promoters and hands them to `rows` with the filtered rows."""
    markets = sources.read_markets(ctx)
    promoters = sources.read_all(ctx, PROMOTERS, PROMOTER_SCHEMA)
    yield from rows(filtered.transform(ctx), markets, promoters)


LOGIC = TypeLogic(extract=extract, transform=transform)
