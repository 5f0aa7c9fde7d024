"""`codeWaves`: the codes released in the wave `dateKey` (the request's epoch-millis string), by code `_id`."""

from __future__ import annotations

from collections.abc import Iterator

import polars as pl

from export_pipelines.exports.base import ExportContext, PermanentExportError
from export_pipelines.exports.common import CODES, extract_codes, parts


def extract(ctx: ExportContext) -> None:
    """Codes whose `waveDateKey` is the request's dateKey (stored as a string, or as a number by older writers)."""
    date_key = ctx.record.get("dateKey")
    if not isinstance(date_key, str) or not date_key.isascii() or not date_key.isdigit():
        # The API refuses such requests; a record written some other way can never export.
        raise PermanentExportError(f"codeWaves needs a numeric dateKey, got {date_key!r}")
    extract_codes(ctx, {"waveDateKey": {"$in": [date_key, int(date_key)]}})


def transform(ctx: ExportContext) -> Iterator[pl.DataFrame]:
    yield from parts(ctx, CODES)
