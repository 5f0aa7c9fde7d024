"""`artistOptIn`: the entries with `optIns.allowMarketing` true, by entry `_id`."""

from __future__ import annotations

from collections.abc import Iterator

import polars as pl

from export_pipelines.exports.base import ExportContext
from export_pipelines.exports.common import extract_opt_in_entries, opt_in_rows


def extract(ctx: ExportContext) -> None:
    """Markets, and the entries that allow the artist's marketing."""
    extract_opt_in_entries(ctx, "allowMarketing")


def transform(ctx: ExportContext) -> Iterator[pl.DataFrame]:
    yield from opt_in_rows(ctx)
