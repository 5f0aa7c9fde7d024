"""Cell formatting shared by every export type (SPEC §3), as vectorised polars expressions.

Dates → ISO-8601 UTC with milliseconds; booleans → true/false; lists joined with `;`;
missing → empty cell; text starting with = + - @ tab or CR → prefixed with `'` so a
spreadsheet never evaluates it. Numbers and dates the service formats itself are never
prefixed (a negative score stays `-1.5`).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

FORMULA_START = r"^[=+\-@\t\r]"
DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%S%.3fZ"
LINE_TERMINATOR = "\r\n"  # RFC 4180


def escape_formula(expr: pl.Expr) -> pl.Expr:
    """Neutralise spreadsheet formulas in a text column."""
    return pl.when(expr.str.contains(FORMULA_START)).then(pl.lit("'") + expr).otherwise(expr)


def _format_column(name: str, dtype: pl.DataType) -> pl.Expr:
    col = pl.col(name)
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is None:
            col = col.dt.replace_time_zone("UTC")
        return col.dt.convert_time_zone("UTC").dt.strftime(DATETIME_FORMAT)
    if isinstance(dtype, pl.Date):
        return col.dt.strftime("%Y-%m-%d")
    if dtype == pl.Boolean:
        return pl.when(col).then(pl.lit("true")).when(col.not_()).then(pl.lit("false")).otherwise(pl.lit(None))
    if isinstance(dtype, pl.List):
        # A list cell is text made of the elements, escaped as a whole.
        return escape_formula(col.list.eval(pl.element().cast(pl.String)).list.join(";"))
    if dtype.is_numeric():
        return col.cast(pl.String)
    if dtype == pl.Null:
        return col.cast(pl.String)
    return escape_formula(col.cast(pl.String))


def format_cells(frame: pl.DataFrame, columns: tuple[str, ...]) -> pl.DataFrame:
    """The frame's `columns`, in order, as CSV-ready strings (missing columns become empty)."""
    exprs = []
    for name in columns:
        if name in frame.columns:
            exprs.append(_format_column(name, frame.schema[name]).alias(name))
        else:
            exprs.append(pl.lit(None, dtype=pl.String).alias(name))
    # polars writes "" for an empty string and nothing for null: make both an empty cell.
    return frame.select(exprs).with_columns(pl.all().replace("", None))


def write_csv(frame: pl.DataFrame, path: Path, *, header: bool) -> None:
    """Append formatted rows to `path` (created with the header row when `header`)."""
    with path.open("ab") as handle:
        frame.write_csv(handle, include_header=header, line_terminator=LINE_TERMINATOR, quote_style="necessary")


def header_line(columns: tuple[str, ...]) -> bytes:
    """The header row alone, quoted as polars would quote it."""
    return (
        pl.DataFrame(schema=dict.fromkeys(columns, pl.String))
        .write_csv(include_header=True, line_terminator=LINE_TERMINATOR)
        .encode()
    )
