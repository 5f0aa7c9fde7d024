"""Cell formatting shared by every export type (SPEC §3), as vectorised polars expressions.

Dates → ISO-8601 UTC with milliseconds; booleans → true/false; lists joined with `;`;
missing → empty cell; text starting with = + - @ tab or CR → prefixed with `'` so a
spreadsheet never evaluates it (in a list cell, after each `;` too). Numbers and dates the
service formats itself are never prefixed (a negative score stays `-1.5`). A cell holding
`,` `;` `"` CR or LF is quoted: `;` too, because a semicolon-locale spreadsheet splits on it,
so this module quotes the cells itself instead of leaving it to the CSV writer.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import polars as pl

FORMULA_START = r"^[=+\-@\t\r]"
LIST_ITEM_FORMULA = r"(^|;)([=+\-@\t\r])"
NEEDS_QUOTES = r'[,;"\r\n]'  # scanned apart from FORMULA_START: cheaper than one regex with both
DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%S%.3fZ"
LINE_TERMINATOR = "\r\n"  # RFC 4180
# Fix each distinct value once when, in the first REPEAT_SAMPLE cells, each repeats this often.
REPEATS_WORTH_MAPPING = 4
REPEAT_SAMPLE = 1_000


def _format_column(series: pl.Series) -> pl.Series:
    """One column as CSV-ready text; only the cells that need a `'` or quotes are rebuilt."""
    dtype = series.dtype
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is None:
            series = series.dt.replace_time_zone("UTC")
        return series.dt.convert_time_zone("UTC").dt.strftime(DATETIME_FORMAT)
    if isinstance(dtype, pl.Date):
        return series.dt.strftime("%Y-%m-%d")
    if dtype == pl.Boolean:  # when/then: cheaper per cell than a replace (docs/performance.md)
        return pl.select(pl.when(series).then(pl.lit("true")).when(~series).then(pl.lit("false"))).to_series()
    if dtype.is_numeric() or dtype == pl.Null:
        return series.cast(pl.String)
    if isinstance(dtype, pl.List):
        # A list cell is text made of the elements; the formula rule applies after each `;`.
        joined = series.list.eval(pl.element().cast(pl.String)).list.join(";")
        # An item after a `;` is in a cell holding `;`, which the quoting scan finds.
        return _patch(joined, lambda cells: _quote(cells.str.replace_all(LIST_ITEM_FORMULA, "${1}'${2}")))
    return _patch(series.cast(pl.String), lambda cells: _quote(_guard_formula(cells)))


def _guard_formula(cells: pl.Series) -> pl.Series:
    """A `'` before a cell that would start a formula."""
    starts = cells.str.contains(FORMULA_START)
    return pl.select(pl.when(starts).then("'" + cells).otherwise(cells)).to_series() if starts.any() else cells


def _quote(cells: pl.Series) -> pl.Series:
    """RFC 4180 quoting of the cells that need it, `;` included (written with quote_style="never")."""
    needed = cells.str.contains(NEEDS_QUOTES)
    if not needed.any():
        return cells
    return pl.select(
        pl.when(needed).then('"' + cells.str.replace_all('"', '""', literal=True) + '"').otherwise(cells)
    ).to_series()


def _patch(cells: pl.Series, fix: Callable[[pl.Series], pl.Series]) -> pl.Series:
    """`cells` with `fix` applied to those that may start a formula or need quotes (`fix` leaves
    any other cell as it is). Most cells need nothing and are neither copied nor rebuilt; where
    the cells to fix repeat (a free-form `fields` JSON, a market name), each distinct value is
    fixed once."""
    where = cells.str.contains(FORMULA_START) | cells.str.contains(NEEDS_QUOTES)
    needing = where.sum()
    if needing == 0:
        return cells
    if 2 * needing > len(cells):  # mostly: fix the whole column rather than gather and scatter
        return _fix_distinct(cells, fix)
    rows = where.arg_true()
    return cells.clone().scatter(rows, _fix_distinct(cells.gather(rows), fix).alias(cells.name))


def _fix_distinct(cells: pl.Series, fix: Callable[[pl.Series], pl.Series]) -> pl.Series:
    """`fix(cells)`, computed once per distinct value when a sample says values repeat."""
    sample = cells.head(REPEAT_SAMPLE)
    if sample.n_unique() * REPEATS_WORTH_MAPPING > len(sample):
        return fix(cells)
    distinct = cells.unique()
    return cells.replace_strict(distinct, fix(distinct), return_dtype=pl.String)


def format_cells(frame: pl.DataFrame, columns: tuple[str, ...]) -> pl.DataFrame:
    """The frame's `columns`, in order, as CSV-ready strings (missing columns become empty).

    Written with quote_style="never", an empty string and a missing value are both an empty cell.
    """
    cells = [
        _format_column(frame.get_column(name)).alias(name)
        if name in frame.columns
        else pl.Series(name, [None] * frame.height, dtype=pl.String)
        for name in columns
    ]
    return pl.DataFrame(cells)


def write_csv(frame: pl.DataFrame, path: Path, *, header: bool) -> None:
    """Append formatted rows to `path` (created with the header row when `header`)."""
    with path.open("ab") as handle:
        frame.write_csv(handle, include_header=header, line_terminator=LINE_TERMINATOR, quote_style="never")


def header_line(columns: tuple[str, ...]) -> bytes:
    """The header row alone (column names need no quotes)."""
    return (
        pl.DataFrame(schema=dict.fromkeys(columns, pl.String))
        .write_csv(include_header=True, line_terminator=LINE_TERMINATOR)
        .encode()
    )
