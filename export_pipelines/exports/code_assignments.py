"""`codeAssignments`: one row per assigned code, with the fan who holds it and the event of the code's market."""

from __future__ import annotations

from collections.abc import Iterator

import polars as pl

from export_pipelines.exports.base import ExportContext
from export_pipelines.exports.common import (
    CODES,
    extract_codes,
    extract_markets,
    extract_snapshots,
    join_snapshots,
    parts,
    read_markets,
    read_snapshots,
)


def extract(ctx: ExportContext) -> None:
    """Markets, the codes with status `assigned` and their holders, and the entries' name snapshots."""
    extract_markets(ctx, required=False)
    extract_codes(ctx, {"status": "assigned"}, with_user=True)
    extract_snapshots(ctx)


def transform(ctx: ExportContext) -> Iterator[pl.DataFrame]:
    """Resolve the holder's names (user, else entry snapshot) and add the market's event."""
    markets = read_markets(ctx).drop("promoterIds", "eventLink")
    snapshots = read_snapshots(ctx)
    for part in parts(ctx, CODES):
        holders = join_snapshots(part.with_columns(userId=pl.col("assignedTo")), snapshots, "userId")
        yield holders.join(markets, on="marketId", how="left", maintain_order="left")
