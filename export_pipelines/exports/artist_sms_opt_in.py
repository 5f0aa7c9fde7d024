"""`artistSmsOptIn`: the entries with `optIns.allowSms` true and a phone number, by entry `_id`.

The phone number is the entry's own (the one the fan confirmed or not); it is written only
when `phoneConfirmed` is true, so an unconfirmed number never reaches an SMS partner.
"""

from __future__ import annotations

from collections.abc import Iterator

import polars as pl

from export_pipelines.exports.base import ExportContext
from export_pipelines.exports.common import extract_opt_in_entries, opt_in_rows


def extract(ctx: ExportContext) -> None:
    """Markets, and the entries that allow SMS."""
    extract_opt_in_entries(ctx, "allowSms")


def transform(ctx: ExportContext) -> Iterator[pl.DataFrame]:
    """Keep entries with a non-blank phone number; blank the number unless it was confirmed."""
    for part in opt_in_rows(ctx):
        yield part.filter(pl.col("phoneNumber").str.strip_chars() != "").with_columns(
            phoneNumber=pl.when(pl.col("phoneConfirmed")).then(pl.col("phoneNumber")),
            phoneConfirmed=pl.col("phoneConfirmed").fill_null(False),
        )
