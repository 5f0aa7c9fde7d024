"""What a type gets when its module leaves a hook out: the registry entry alone describes the export.

extract: the markets (if the entry joins them), then the source's documents matching the
entry's filter, in `_id` order, with their users (if it joins them), as staged parts.
transform: `rows`, a pure function of the staged frames: each part with names resolved (user
document, else the snapshot) and its market's columns; the generic writer keeps the registry's columns.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import polars as pl

from export_core.export_types import ExportType
from export_pipelines.exports import incremental, sources
from export_pipelines.exports.contract import ExportContext, TypeLogic

ROWS = "rows"


def match(ctx: ExportContext, logic: TypeLogic) -> dict[str, Any]:
    return logic.match(ctx) if logic.match else dict(ctx.export_type.match)


NAMES = ("userFirstName", "userLastName", "userEmail", "snapFirstName", "snapLastName", "snapEmail")


def needed_columns(ctx: ExportContext) -> set[str]:
    """What the rows are made of: the type's columns, the join keys, the names to resolve."""
    export_type = ctx.export_type
    needed = {*export_type.columns, sources.USER_COLUMN[export_type.source], "marketId", *incremental.needed(ctx)}
    if export_type.users:
        needed |= set(NAMES)
    return needed


def extract(ctx: ExportContext, logic: TypeLogic) -> None:
    if ctx.export_type.markets != "none":
        sources.extract_markets(ctx, required=ctx.export_type.markets == "required")
    extract_rows(ctx, logic)


def extract_rows(ctx: ExportContext, logic: TypeLogic) -> None:
    """The source's documents matching the type's filter, with users and snapshots as the entry says."""
    export_type = ctx.export_type
    needed = needed_columns(ctx)
    source = sources.SOURCES[export_type.source]
    source = source.only(*(c.name for c in source.columns if c.name in needed))
    if incremental.needed(ctx):
        source = source.with_row_key()
    if export_type.users:
        source = source.with_users(*(c.name for c in sources.USER_COLUMNS if c.name in needed))
    rows = sources.extract_source(ctx, source, {**match(ctx, logic), **ctx.row_filter}, name=ROWS)
    ctx.log.info(f"extracted {rows} {source.collection} rows")
    if export_type.snapshots:
        sources.extract_snapshots(ctx)


def rows(
    parts: Iterable[pl.DataFrame],
    export_type: ExportType,
    markets: pl.DataFrame | None = None,
    snapshots: pl.DataFrame | None = None,
) -> Iterator[pl.DataFrame]:
    """Each part of the source's rows with names resolved (from `snapshots`, the first per user
    id, when given; else the joined user) and its market's columns when `markets` is given."""
    user_column = sources.USER_COLUMN[export_type.source]
    if markets is not None:
        markets = markets.drop("promoterIds")
    for part in parts:
        if snapshots is not None:
            part = sources.join_snapshots(part, snapshots, user_column)
        elif export_type.users:
            part = sources.with_names(part)
        if user_column != "userId" and "userId" in export_type.columns and "userId" not in part.columns:
            part = part.with_columns(userId=pl.col(user_column))
        if markets is not None:
            part = part.join(markets, on="marketId", how="left", maintain_order="left")
        yield part


def transform(ctx: ExportContext) -> Iterator[pl.DataFrame]:
    """Reads what extract staged and hands it to `rows`."""
    export_type = ctx.export_type
    markets = sources.read_markets(ctx) if export_type.markets != "none" else None
    snapshots = sources.read_snapshots(ctx) if export_type.snapshots else None
    yield from rows(sources.parts(ctx, ROWS), export_type, markets, snapshots)
