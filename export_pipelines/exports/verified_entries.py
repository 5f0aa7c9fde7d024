"""`verifiedEntries`: the scoring records with `verified` true, by record `_id`."""

from __future__ import annotations

from collections.abc import Iterator

import polars as pl

from export_pipelines.exports.base import ExportContext
from export_pipelines.exports.common import SCORING, extract_scoring, parts


def extract(ctx: ExportContext) -> None:
    """Scoring records with `verified: true` (a missing or false flag is not verified)."""
    extract_scoring(ctx, {"verified": True})


def transform(ctx: ExportContext) -> Iterator[pl.DataFrame]:
    yield from parts(ctx, SCORING)
