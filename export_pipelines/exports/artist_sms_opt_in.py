"""`artistSmsOptIn`: the entries with `optIns.allowSms` true and a phone number, by entry `_id`.

The phone number is the entry's own (the one the fan confirmed or not); it is written only
when `phoneConfirmed` is true, so an unconfirmed number never reaches an SMS partner.
"""

from __future__ import annotations

from collections.abc import Iterator

import polars as pl

from export_pipelines.exports import filtered
from export_pipelines.exports.contract import ExportContext, TypeLogic


def rows(part: pl.DataFrame) -> pl.DataFrame:
    """Keep entries with a non-blank phone number; blank the number unless it was confirmed."""
    return part.filter(pl.col("phoneNumber").str.strip_chars() != "").with_columns(
        phoneNumber=pl.when(pl.col("phoneConfirmed")).then(pl.col("phoneNumber")),
        phoneConfirmed=pl.col("phoneConfirmed").fill_null(False),
    )


def transform(ctx: ExportContext) -> Iterator[pl.DataFrame]:
    """`rows` applied to each part of the filtered rows."""
    for part in filtered.transform(ctx):
        yield rows(part)


LOGIC = TypeLogic(transform=transform)
