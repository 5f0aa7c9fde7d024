"""`codes`: one row per code of the campaign (available or assigned), by code `_id`."""

from __future__ import annotations

from collections.abc import Iterator

import polars as pl

from export_pipelines.exports.base import ExportContext
from export_pipelines.exports.common import CODES, extract_codes, parts


def extract(ctx: ExportContext) -> None:
    """Every code of the campaign."""
    extract_codes(ctx, {})


def transform(ctx: ExportContext) -> Iterator[pl.DataFrame]:
    yield from parts(ctx, CODES)
