"""`scoring`: one row per scoring record of the campaign, by record `_id`."""

from __future__ import annotations

from collections.abc import Iterator

import polars as pl

from export_pipelines.exports.base import ExportContext
from export_pipelines.exports.common import SCORING, extract_scoring, parts


def extract(ctx: ExportContext) -> None:
    """Every scoring record of the campaign."""
    extract_scoring(ctx, {})


def transform(ctx: ExportContext) -> Iterator[pl.DataFrame]:
    yield from parts(ctx, SCORING)
