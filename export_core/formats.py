"""The file formats an export can be delivered in (SPEC §3 "Formats"): csv, csv.gz, parquet, xlsx.

A `Format` says its name (the request's `format`), file extension, Content-Type and how it is made:
- `csv` — today's CSV (stages.transform formats the cells and writes it; nothing here runs);
- `csv.gz` — the same CSV, gzipped as it is packaged (`gzip_file`): gunzip gives the CSV's bytes;
- `parquet`, `xlsx` — a `TypedWriter` that takes the rows as they are, before the CSV cell rules
  (no `'` prefix, no `;` joining in parquet): `ParquetFileWriter`, `XlsxFileWriter`.

Only single-file types offer the typed formats and csv.gz; ZIP and multi-file types stay CSV
(export_types.parse_export_request refuses the rest). Dagster-free, and polars, pyarrow and
xlsxwriter are imported by the writers that use them, so the API can validate requests with this.
"""

from __future__ import annotations

import gzip
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import polars as pl

CSV_CONTENT_TYPE = "text/csv; charset=utf-8"
XLSX_CONTENT_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
PARQUET_CONTENT_TYPE = "application/vnd.apache.parquet"  # registered with IANA in 2024
GZIP_LEVEL = 6  # zlib's default: most of level 9's size at a third of its CPU


class TypedWriter(Protocol):
    """Writes a typed format from the rows as they are; `rows` counts what it wrote."""

    path: Path
    rows: int

    def write(self, frame: pl.DataFrame) -> None: ...

    def close(self) -> dict[str, Any]:
        """Finish the file; returns what the record's `meta` should say about it (may be empty)."""
        ...


@dataclass(frozen=True)
class Format:
    name: str  # the request's and the record's `format`
    extension: str  # of the staged file, the key and the download's file name
    content_type: str
    # parquet, xlsx: a writer of the typed rows, given (path, columns, sheet title); None: the CSV path.
    writer: Callable[[Path, tuple[str, ...], str], TypedWriter] | None = None
    # csv.gz: makes the object from the staged CSV at packaging (source CSV, target file).
    package: Callable[[Path, Path], None] | None = None


def gzip_file(source: Path, target: Path) -> None:
    """`target` = gzip of exactly `source`'s bytes; no file name or time in the header, so a re-run
    of the same data gives the same bytes (and the same sha256)."""
    with (
        source.open("rb") as raw,
        target.open("wb") as out,
        gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=GZIP_LEVEL, mtime=0) as packed,
    ):
        shutil.copyfileobj(raw, packed, 1 << 20)


def _parquet_writer(path: Path, columns: tuple[str, ...], title: str) -> TypedWriter:
    return ParquetFileWriter(path, columns)


def _xlsx_writer(path: Path, columns: tuple[str, ...], title: str) -> TypedWriter:
    return XlsxFileWriter(path, columns, title)


DEFAULT_FORMAT = "csv"
FORMATS: Mapping[str, Format] = {
    f.name: f
    for f in (
        Format("csv", ".csv", CSV_CONTENT_TYPE),
        Format("csv.gz", ".csv.gz", "application/gzip", package=gzip_file),
        Format("parquet", ".parquet", PARQUET_CONTENT_TYPE, writer=_parquet_writer),
        Format("xlsx", ".xlsx", XLSX_CONTENT_TYPE, writer=_xlsx_writer),
    )
}


def format_of(record: Mapping[str, Any]) -> Format:
    """The record's format; a record without one (made before formats existed) is csv.

    KeyError for a name that is not offered (a record written by hand).
    """
    return FORMATS[str(record.get("format") or DEFAULT_FORMAT)]


def with_extension(file_name: str, fmt: Format) -> str:
    """A type's `… .csv` file name (or template) with the format's extension instead."""
    return file_name.removesuffix(".csv") + fmt.extension if file_name.endswith(".csv") else file_name


def sheet_title(file_name: str) -> str:
    """The worksheet name for a type: its file name's title (`{campaign} - Entries.csv` → `Entries`)."""
    stem = file_name.removesuffix(".csv")
    title = stem.rpartition(" - ")[2].replace("{campaign}", "").strip()
    return _INVALID_SHEET_CHARS.sub("_", title).strip("'") or "Export"


# -- parquet --------------------------------------------------------------------------------

# Rows per row group, the unit readers skip and split by: ~40 MB of entries as CSV text, a few MB in the file.
ROW_GROUP_ROWS = 131_072
PARQUET_COMPRESSION = "zstd"


def parquet_frame(frame: pl.DataFrame, columns: tuple[str, ...]) -> pl.DataFrame:
    """The rows in the file's types: `columns` in order (a missing one is null text); timestamps
    UTC in ms; lists as lists of strings; anything without a Parquet counterpart as text."""
    import polars as pl

    out = []
    for name in columns:
        if name not in frame.columns:
            out.append(pl.Series(name, [None] * frame.height, dtype=pl.String))
            continue
        series = frame.get_column(name)
        dtype = series.dtype
        if isinstance(dtype, pl.Datetime):
            if dtype.time_zone is None:
                series = series.dt.replace_time_zone("UTC")
            series = series.dt.convert_time_zone("UTC").dt.cast_time_unit("ms")
        elif isinstance(dtype, pl.List | pl.Array):
            series = series.cast(pl.List(dtype.inner)).list.eval(pl.element().cast(pl.String))
        elif isinstance(dtype, pl.Struct):
            series = series.struct.json_encode()
        elif dtype == pl.Null or not (dtype.is_numeric() or dtype in (pl.Boolean, pl.String, pl.Date)):
            series = series.cast(pl.String)
        out.append(series.alias(name))
    return pl.DataFrame(out)


class ParquetFileWriter:
    """One Parquet file, zstd, in row groups of `row_group_rows`; the column types are those of the
    first batch (a later batch is cast to them). Each batch becomes Arrow as it comes, and at most
    about one row group of them waits to be written."""

    def __init__(self, path: Path, columns: tuple[str, ...], row_group_rows: int = ROW_GROUP_ROWS) -> None:
        self.path, self.columns, self.row_group_rows = path, columns, row_group_rows
        self.rows = 0
        self.row_groups = 0
        self._schema: Any = None  # polars schema of the file, from the first batch
        self._arrow_schema: Any = None
        self._pending: list[Any] = []  # Arrow tables not written yet
        self._pending_rows = 0
        self._writer: Any = None

    def write(self, frame: pl.DataFrame) -> None:
        typed = parquet_frame(frame, self.columns)
        if self._schema is None:
            self._schema = typed.schema
        else:
            typed = typed.cast(dict(self._schema))
        table = typed.to_arrow()
        if self._arrow_schema is None:
            self._arrow_schema = _plain_arrow_schema(table.schema)
        self._pending.append(table.cast(self._arrow_schema))
        self._pending_rows += typed.height
        self.rows += typed.height
        if self._pending_rows >= self.row_group_rows:
            self._flush(final=False)

    def _flush(self, *, final: bool) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self._pending:
            return
        pending = pa.concat_tables(self._pending)  # no copy: the batches become chunks
        whole = pending.num_rows if final else pending.num_rows - pending.num_rows % self.row_group_rows
        if self._writer is None:
            self._writer = pq.ParquetWriter(str(self.path), self._arrow_schema, compression=PARQUET_COMPRESSION)
        self._writer.write_table(pending.slice(0, whole), row_group_size=self.row_group_rows)
        self.row_groups += -(-whole // self.row_group_rows)
        rest = pending.slice(whole)
        self._pending, self._pending_rows = ([rest], rest.num_rows) if rest.num_rows else ([], 0)

    def close(self) -> dict[str, Any]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._flush(final=True)
        if self._writer is None:  # no rows: the columns, as text
            schema = pa.schema([(name, pa.string()) for name in self.columns])
            self._writer = pq.ParquetWriter(str(self.path), schema, compression=PARQUET_COMPRESSION)
        self._writer.close()
        return {"rowGroups": self.row_groups}


def _plain_arrow_schema(schema: Any) -> Any:
    """`schema` with 32-bit string/list offsets (polars hands out large_string and large_list), which
    every Parquet reader maps to plain strings and lists."""
    import pyarrow as pa

    def plain(dtype: Any) -> Any:
        if pa.types.is_large_string(dtype) or pa.types.is_string_view(dtype):
            return pa.string()
        if pa.types.is_large_list(dtype) or pa.types.is_list(dtype) or pa.types.is_list_view(dtype):
            return pa.list_(plain(dtype.value_type))
        return dtype

    return pa.schema([pa.field(f.name, plain(f.type)) for f in schema])


# -- xlsx -----------------------------------------------------------------------------------

XLSX_MAX_DATA_ROWS = 1_048_575  # a worksheet's 1,048,576 rows, less the header
SHEET_NAME_MAX = 31
_INVALID_SHEET_CHARS = re.compile(r"[\[\]:*?/\\]")
DATE_TIME_FORMAT = "yyyy-mm-dd hh:mm:ss.000"
DATE_FORMAT = "yyyy-mm-dd"
# Excel's serial day numbers: 25569 is 1970-01-01. Before 1900-03-01 (serial 61) Excel's calendar is
# off by its 1900 leap-year bug, past 9999-12-31 it has none: such dates are written as ISO text.
EXCEL_EPOCH_DAYS = 25_569
EXCEL_FIRST_SERIAL, EXCEL_LAST_SERIAL = 61.0, 2_958_466.0
MAX_EXACT_NUMBER = 10**15  # Excel shows 15 significant digits: a larger integer is written as text
MS_PER_DAY = 86_400_000
XLSX_SLICE_ROWS = 10_000

STRING, NUMBER, BOOLEAN, MIXED = "string", "number", "boolean", "mixed"


@dataclass(frozen=True)
class XlsxColumn:
    """One column of a batch, ready to write: its cells (None: an empty cell) and how to write them."""

    kind: str  # STRING, NUMBER, BOOLEAN; MIXED: numbers with some text (ISO dates, NaN, huge integers)
    values: list[Any]
    date_format: str | None = None  # dates: a number cell shown with this format


def xlsx_columns(frame: pl.DataFrame, columns: tuple[str, ...]) -> list[XlsxColumn]:
    """The frame's `columns`, in order, as xlsx cells: text stays text (as it is: no `'`, lists joined
    with `;`), dates become serial numbers shown as UTC date-times, booleans and numbers stay such."""
    import polars as pl

    out = []
    for name in columns:
        if name not in frame.columns:
            out.append(XlsxColumn(STRING, [None] * frame.height))
            continue
        series = frame.get_column(name)
        dtype = series.dtype
        if isinstance(dtype, pl.Datetime):
            if dtype.time_zone is None:
                series = series.dt.replace_time_zone("UTC")
            out.append(_dates(series.dt.convert_time_zone("UTC"), DATE_TIME_FORMAT))
        elif isinstance(dtype, pl.Date):
            out.append(_dates(series.cast(pl.Datetime("ms", "UTC")), DATE_FORMAT))
        elif dtype == pl.Boolean:
            out.append(XlsxColumn(BOOLEAN, series.to_list()))
        elif dtype.is_float():
            out.append(_floats(series))
        elif dtype.is_integer():
            out.append(_integers(series))
        elif dtype.is_decimal():
            out.append(_floats(series.cast(pl.Float64)))
        elif isinstance(dtype, pl.List | pl.Array):
            joined = series.cast(pl.List(dtype.inner)).list.eval(pl.element().cast(pl.String)).list.join(";")
            out.append(XlsxColumn(STRING, _texts(joined)))
        elif isinstance(dtype, pl.Struct):
            out.append(XlsxColumn(STRING, _texts(series.struct.json_encode())))
        else:
            out.append(XlsxColumn(STRING, _texts(series.cast(pl.String))))
    return out


def _texts(series: pl.Series) -> list[Any]:
    """Text cells; an empty text is an empty cell, as in the CSV."""
    import polars as pl

    if (series == "").any():
        series = pl.select(pl.when(series == "").then(None).otherwise(series)).to_series()
    return series.to_list()


def _dates(series: pl.Series, number_format: str) -> XlsxColumn:
    """UTC date-times as Excel serial numbers; those Excel cannot show as dates as ISO text."""
    import polars as pl

    from export_core.csv_format import DATETIME_FORMAT

    serial = series.dt.epoch("ms").cast(pl.Float64) / MS_PER_DAY + EXCEL_EPOCH_DAYS
    outside = (serial < EXCEL_FIRST_SERIAL) | (serial >= EXCEL_LAST_SERIAL)
    if not outside.any():
        return XlsxColumn(NUMBER, serial.to_list(), number_format)
    iso = series.dt.strftime(DATETIME_FORMAT)
    values = [
        text if out else number
        for number, text, out in zip(serial.to_list(), iso.to_list(), outside.to_list(), strict=True)
    ]
    return XlsxColumn(MIXED, values, number_format)


def _floats(series: pl.Series) -> XlsxColumn:
    """Number cells; NaN and infinities (no number cell holds them) as the CSV's text for them."""
    import polars as pl

    odd = ~(series.is_finite() | series.is_null())
    if not odd.any():
        return XlsxColumn(NUMBER, series.to_list())
    texts = series.cast(pl.String).to_list()
    return XlsxColumn(MIXED, [t if o else v for v, t, o in zip(series.to_list(), texts, odd.to_list(), strict=True)])


def _integers(series: pl.Series) -> XlsxColumn:
    """Number cells; an integer of more than 15 digits as text, so no digit is lost."""
    big = series.abs() >= MAX_EXACT_NUMBER
    if not big.any():
        return XlsxColumn(NUMBER, series.to_list())
    return XlsxColumn(MIXED, [str(v) if b else v for v, b in zip(series.to_list(), big.to_list(), strict=True)])


def sheet_names(title: str) -> Callable[[int], str]:
    """Names of the sheets, `title`, `title (2)`, … each at most 31 characters."""
    base = _INVALID_SHEET_CHARS.sub("_", title).strip("'") or "Export"

    def name(number: int) -> str:
        suffix = "" if number == 1 else f" ({number})"
        return base[: SHEET_NAME_MAX - len(suffix)].rstrip() + suffix

    return name


CellWriter = tuple[Callable[..., int], Any]  # (write method, its cell format)


class XlsxFileWriter:
    """One workbook written row by row in constant memory (xlsxwriter's `constant_memory`).

    Every text is written with `write_string`, so it is a text cell whatever it looks like: leading
    zeros, `3/4`, `1e5` and a text starting with `=`, `+`, `-` or `@` stay text and nothing is ever a
    formula (no `'` prefix: in a typed cell it would be part of the value). A text longer than a
    cell holds (32,767 UTF-16 units) is cut there; `meta.truncatedCells` counts such cells. The
    header row is bold and frozen; after `max_rows` data rows the rows go on in a new sheet,
    `Title (2)`, … with the header repeated.
    """

    def __init__(self, path: Path, columns: tuple[str, ...], title: str, max_rows: int = XLSX_MAX_DATA_ROWS) -> None:
        import xlsxwriter

        self.path, self.columns, self.max_rows = path, columns, max_rows
        self.rows = 0
        self.truncated = 0
        self._tmp = path.parent / f".{path.name}.tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)
        self.workbook = xlsxwriter.Workbook(
            str(path),
            {
                "constant_memory": True,  # each row goes to disk as the next one starts
                "tmpdir": str(self._tmp),
                "use_zip64": True,  # a 1M-row sheet's XML can pass 4 GB
                # write_string is used for every text anyway; these keep any other write() from guessing.
                "strings_to_formulas": False,
                "strings_to_numbers": False,
                "strings_to_urls": False,
            },
        )
        self._bold = self.workbook.add_format({"bold": True})
        self._number_formats: dict[str, Any] = {}
        self._name = sheet_names(title)
        self._sheets: list[list[Any]] = []  # [worksheet, data rows]
        self._add_sheet()

    def _add_sheet(self) -> None:
        sheet = self.workbook.add_worksheet(self._name(len(self._sheets) + 1))
        for col, name in enumerate(self.columns):
            sheet.write_string(0, col, name, self._bold)
        sheet.freeze_panes(1, 0)
        self._sheets.append([sheet, 0])

    def _number_format(self, number_format: str | None) -> Any:
        if number_format is None:
            return None
        if number_format not in self._number_formats:
            self._number_formats[number_format] = self.workbook.add_format({"num_format": number_format})
        return self._number_formats[number_format]

    def _cell_writers(self, columns: list[XlsxColumn]) -> list[CellWriter]:
        """How each column's cells are written into the current sheet."""
        sheet = self._sheets[-1][0]
        writers: list[CellWriter] = []
        for col, column in enumerate(columns):
            number_format = self._number_format(column.date_format)
            if column.kind == STRING:
                writers.append((sheet.write_string, None))
            elif column.kind == BOOLEAN:
                writers.append((sheet.write_boolean, None))
            elif column.kind == NUMBER:
                writers.append((sheet.write_number, number_format))
            else:
                writers.append((_mixed(sheet), number_format))
            if column.date_format is not None:
                sheet.set_column(col, col, 23)  # room for the whole date-time
        return writers

    def write(self, frame: pl.DataFrame) -> None:
        """Append the frame's rows (in order: constant memory writes each row once), a slice at a
        time, so the Python values of at most XLSX_SLICE_ROWS rows exist at once whatever the batch."""
        for offset in range(0, frame.height, XLSX_SLICE_ROWS):
            self._write_slice(frame.slice(offset, XLSX_SLICE_ROWS))

    def _write_slice(self, frame: pl.DataFrame) -> None:
        columns = xlsx_columns(frame, self.columns)
        writers = self._cell_writers(columns)
        row = self._sheets[-1][1]
        truncated = 0
        for values in zip(*(c.values for c in columns), strict=True):
            if row >= self.max_rows:
                self._sheets[-1][1] = row
                self._add_sheet()
                writers, row = self._cell_writers(columns), 0
            row += 1
            for col, value in enumerate(values):
                if value is not None:
                    method, cell_format = writers[col]
                    if method(row, col, value, cell_format) == -2:  # cut at the cell's limit
                        truncated += 1
        self._sheets[-1][1] = row
        self.rows += frame.height
        self.truncated += truncated

    def close(self) -> dict[str, Any]:
        self.workbook.close()
        shutil.rmtree(self._tmp, ignore_errors=True)
        meta: dict[str, Any] = {"sheets": [{"name": sheet.get_name(), "rows": rows} for sheet, rows in self._sheets]}
        if self.truncated:
            meta["truncatedCells"] = self.truncated
        return meta


def _mixed(sheet: Any) -> Callable[..., int]:
    """Numbers as number cells (with the column's format), text as text cells."""

    def write(row: int, col: int, value: Any, cell_format: Any) -> int:
        if isinstance(value, str):
            return int(sheet.write_string(row, col, value))
        return int(sheet.write_number(row, col, value, cell_format))

    return write
