"""The format writers (export_core/formats.py) on their own: no database, the files read back by other engines.

Parquet is read by DuckDB; workbooks are opened by LibreOffice Calc headless (a real spreadsheet
engine: how it types each cell) and by python-calamine (the exact text, OOXML escapes decoded).
"""

from __future__ import annotations

import gzip
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest
from python_calamine import CalamineWorkbook

from export_core.export_types import EXPORT_TYPES
from export_core.formats import (
    FORMATS,
    SHEET_NAME_MAX,
    XLSX_MAX_DATA_ROWS,
    ParquetFileWriter,
    XlsxFileWriter,
    format_of,
    gzip_file,
    sheet_names,
    sheet_title,
    with_extension,
)
from tests.libreoffice import sheet_xml, sheets_as_csv, sheets_as_ods

WHEN = datetime(2024, 1, 15, 10, 30, 0, 123000, tzinfo=UTC)
LONG = "long text " * 1000  # 10 KB
# Text a spreadsheet's import would guess at (SPEC §3 / issue 24): each must stay exactly this text.
AWKWARD = ["02134", "3/4", "1e5", "=1+1", "+44 20", "-2", "@SUM(A1)", "a\r\nb", "emoji 🎸 ☃", LONG, "\ttab", "'quoted"]


def test_the_registry() -> None:
    assert list(FORMATS) == ["csv", "csv.gz", "parquet", "xlsx"]
    assert {f.name: (f.extension, f.content_type) for f in FORMATS.values()} == {
        "csv": (".csv", "text/csv; charset=utf-8"),
        "csv.gz": (".csv.gz", "application/gzip"),
        "parquet": (".parquet", "application/vnd.apache.parquet"),
        "xlsx": (".xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    }
    assert format_of({}).name == format_of({"format": None}).name == "csv"  # records from before formats
    assert format_of({"format": "xlsx"}).name == "xlsx"
    with pytest.raises(KeyError):
        format_of({"format": "json"})
    assert with_extension("{campaign} - Entries.csv", FORMATS["csv.gz"]) == "{campaign} - Entries.csv.gz"
    assert with_extension("{campaign} - Entries.csv", FORMATS["xlsx"]) == "{campaign} - Entries.xlsx"
    assert with_extension("{campaign} - Entries.csv", FORMATS["csv"]) == "{campaign} - Entries.csv"


def test_sheet_names_come_from_the_type_and_fit_excel() -> None:
    titles = {name: sheet_title(t.file_name) for name, t in EXPORT_TYPES.items() if t.packaging == "csv"}
    assert titles["entries"] == "Entries" and titles["codeAssignments"] == "Code Assignments"
    assert titles["artistSmsOptIn"] == "Artist SMS Opt-In"
    name = sheet_names("A title that is far too long for a sheet [x]")
    assert [len(name(n)) <= SHEET_NAME_MAX for n in (1, 2, 100)] == [True] * 3
    assert name(1) == "A title that is far too long fo" and name(2) == "A title that is far too lon (2)"
    assert not re.search(r"[\[\]:*?/\\]", name(1) + name(2))
    assert sheet_names("Entries")(3) == "Entries (3)"


def test_csv_gz_is_the_gzip_of_exactly_the_csv_bytes(tmp_path: Path) -> None:
    source = tmp_path / "data.csv"
    source.write_bytes(os.urandom(3 << 20) + "é,\r\n".encode())  # several copy chunks, any byte
    gzip_file(source, tmp_path / "a.csv.gz")
    gzip_file(source, tmp_path / "b.csv.gz")
    assert gzip.decompress((tmp_path / "a.csv.gz").read_bytes()) == source.read_bytes()
    # No name or time in the header: a re-run gives the same object, byte for byte.
    assert (tmp_path / "a.csv.gz").read_bytes() == (tmp_path / "b.csv.gz").read_bytes()


def _batch(start: int, height: int) -> pl.DataFrame:
    """Rows `start`.. of a frame with every kind of column an export has, awkward values included."""
    ids = range(start, start + height)
    return pl.DataFrame(
        {
            "userId": [f"u{i}" for i in ids],
            "text": [AWKWARD[i % len(AWKWARD)] if i % 7 else None for i in ids],
            "codes": [[f"=c{i}", "x;y"] if i % 3 else ([] if i % 2 else None) for i in ids],
            "allow": [None if i % 5 == 0 else i % 2 == 0 for i in ids],
            "score": [None if i % 4 == 0 else i / 8 - 3 for i in ids],
            "rank": pl.Series([i if i % 6 else None for i in ids], dtype=pl.Int64),
            "entryDate": pl.Series([WHEN + timedelta(milliseconds=i) for i in ids], dtype=pl.Datetime("ms", "UTC")),
        }
    )


COLUMNS = ("userId", "text", "codes", "allow", "score", "rank", "entryDate", "notInTheFrame")


def test_parquet_holds_the_values_as_they_are_in_typed_columns_and_row_groups(tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    writer = ParquetFileWriter(path, COLUMNS, row_group_rows=1000)
    frames = [_batch(0, 700), _batch(700, 0), _batch(700, 1100), _batch(1800, 700)]
    # Other time units and zones come out as UTC milliseconds too.
    frames[1] = frames[1].with_columns(pl.col("entryDate").dt.cast_time_unit("us"))
    frames[3] = frames[3].with_columns(pl.col("entryDate").dt.convert_time_zone("America/New_York"))
    for frame in frames:
        writer.write(frame)
    assert writer.close() == {"rowGroups": 3} and writer.rows == 2500

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    described = con.execute("DESCRIBE SELECT * FROM read_parquet(?)", [str(path)]).fetchall()
    assert {name: kind for name, kind, *_ in described} == {
        "userId": "VARCHAR", "text": "VARCHAR", "codes": "VARCHAR[]", "allow": "BOOLEAN", "score": "DOUBLE",
        "rank": "BIGINT", "entryDate": "TIMESTAMP WITH TIME ZONE", "notInTheFrame": "VARCHAR",
    }  # fmt: skip
    groups = con.execute(
        "SELECT DISTINCT row_group_id, row_group_num_rows, compression FROM parquet_metadata(?) ORDER BY 1",
        [str(path)],
    ).fetchall()
    assert groups == [(0, 1000, "ZSTD"), (1, 1000, "ZSTD"), (2, 500, "ZSTD")]
    ((unit,),) = con.execute(
        "SELECT logical_type FROM parquet_schema(?) WHERE name = 'entryDate'", [str(path)]
    ).fetchall()
    assert "isAdjustedToUTC=1" in unit and "MILLIS" in unit

    rows = con.execute("SELECT * FROM read_parquet(?)", [str(path)]).fetchall()
    expected = pl.concat([_batch(0, 700), _batch(700, 1100), _batch(1800, 700)]).rows()
    assert len(rows) == len(expected) == 2500
    for got, want in zip(rows, expected, strict=True):
        *values, entry_date, missing = got
        assert values == list(want[:6]), "no `'` prefix, lists as lists (an item may hold `;`), nulls as nulls"
        assert entry_date == want[6] and entry_date.tzinfo is not None and missing is None


def test_an_empty_parquet_file_has_the_columns(tmp_path: Path) -> None:
    writer = ParquetFileWriter(tmp_path / "empty.parquet", ("a", "b"))
    assert writer.close() == {"rowGroups": 0}
    con = duckdb.connect()
    described = con.execute("DESCRIBE SELECT * FROM read_parquet(?)", [str(tmp_path / "empty.parquet")]).fetchall()
    assert [(name, kind) for name, kind, *_ in described] == [("a", "VARCHAR"), ("b", "VARCHAR")]
    assert con.execute("SELECT count(*) FROM read_parquet(?)", [str(tmp_path / "empty.parquet")]).fetchall() == [(0,)]


def _workbook(tmp_path: Path, frames: list[pl.DataFrame], max_rows: int = XLSX_MAX_DATA_ROWS) -> tuple[Path, Any]:
    path = tmp_path / "data.xlsx"
    writer = XlsxFileWriter(path, COLUMNS, "Entries", max_rows=max_rows)
    for frame in frames:
        writer.write(frame)
    meta = writer.close()
    assert not (tmp_path / ".data.xlsx.tmp").exists(), "its scratch files are gone"
    return path, meta


def test_xlsx_opened_by_libreoffice_keeps_text_as_text_and_types_the_rest(tmp_path: Path) -> None:
    """Text cells stay exactly the text (nothing a formula, no `'`); dates, booleans and numbers are typed;
    the header is frozen; past `max_rows` the rows go on in the next sheet under the header again."""
    frames = [_batch(0, 10), _batch(10, 0), _batch(10, 15)]
    path, meta = _workbook(tmp_path, frames, max_rows=10)
    assert meta == {"sheets": [{"name": "Entries", "rows": 10}, {"name": "Entries (2)", "rows": 10},
                               {"name": "Entries (3)", "rows": 5}]}  # fmt: skip
    expected = pl.concat(frames).rows()

    # How LibreOffice types every cell (ODS value types), and what it shows.
    ods = sheets_as_ods(path, tmp_path / "ods")
    assert list(ods) == ["Entries", "Entries (2)", "Entries (3)"]
    data = []
    for sheet in ods.values():
        assert [c.text for c in sheet[0]] == list(COLUMNS), "the header, on every sheet"
        data += sheet[1:]
    assert len(data) == 25
    for cells, want in zip(data, expected, strict=True):
        cells = cells + [type(cells[0])(None, "", None)] * (len(COLUMNS) - len(cells))
        user, text, codes, allow, score, rank, when, missing = cells
        assert (user.value_type, user.text) == ("string", want[0])
        if want[1] is None:
            assert text.value_type is None
        else:
            assert text.value_type == "string" and text.formula is None, want[1]
            assert text.text == want[1].replace("\r\n", "\n"), "LibreOffice holds a line break as a paragraph"
        assert (codes.value_type, codes.text) == (("string", ";".join(want[2])) if want[2] else (None, ""))
        if want[3] is not None:  # LibreOffice holds a boolean as TRUE()/FALSE() showing TRUE/FALSE
            assert codes.formula is None and allow.text == ("TRUE" if want[3] else "FALSE")
        assert (score.value_type, rank.value_type) == (
            None if want[4] is None else "float",
            None if want[5] is None else "float",
        )
        assert (when.value_type, when.text) == ("date", want[6].strftime("%Y-%m-%d %H:%M:%S.%f")[:-3])
        assert missing.value_type is None

    # What it writes to CSV: the text exactly (a spreadsheet's own CSV export is where mangling shows).
    shown = sheets_as_csv(path, tmp_path / "csv")
    assert list(shown) == ["Entries", "Entries (2)", "Entries (3)"]
    texts = [row[1] for sheet in shown.values() for row in sheet[1:]]
    assert texts == [(w[1] or "").replace("\r\n", "\n") for w in expected]
    assert {"02134", "3/4", "1e5", "=1+1", "+44 20", "-2", "@SUM(A1)", LONG} <= set(texts)

    # The file itself: no formula anywhere, text as (inline) strings, the header row frozen.
    for part, xml in sheet_xml(path).items():
        assert "<f>" not in xml and "<f " not in xml, part
        assert '<pane ySplit="1" topLeftCell="A2" activePane="bottomLeft" state="frozen"/>' in xml, part
        assert "'=" not in xml and "'02134" not in xml

    # The exact text back (OOXML escapes decoded: CR LF stays CR LF), typed values as such.
    book = CalamineWorkbook.from_path(str(path))
    read = [row for name in book.sheet_names for row in book.get_sheet_by_name(name).to_python()[1:]]
    for got, want in zip(read, expected, strict=True):
        assert got[0] == want[0] and got[1] == (want[1] or ""), "text exactly as it is"
        assert got[2] == (";".join(want[2]) if want[2] else "")
        assert got[3] == ("" if want[3] is None else want[3]) and got[4] == ("" if want[4] is None else want[4])
        assert got[5] == ("" if want[5] is None else float(want[5]))
        assert got[6] == want[6].replace(tzinfo=None), "the UTC date-time"


def test_xlsx_cuts_text_at_the_cell_limit_and_counts_it(tmp_path: Path) -> None:
    """A cell holds 32,767 UTF-16 units; a longer text is cut there (whole characters) and meta says so."""
    frame = pl.DataFrame({"userId": ["u1", "u2", "u3"], "text": ["x" * 40_000, "🎸" * 20_000, "x" * 32_767]})
    path, meta = _workbook(tmp_path, [frame])
    assert meta["truncatedCells"] == 2
    rows = CalamineWorkbook.from_path(str(path)).get_sheet_by_name("Entries").to_python()
    assert rows[1][1] == "x" * 32_767 and rows[2][1] == "🎸" * 16_383 and rows[3][1] == "x" * 32_767


def test_xlsx_odd_numbers_and_dates_are_text_rather_than_wrong(tmp_path: Path) -> None:
    """NaN and infinities (no number cell holds them), integers past 15 digits (Excel keeps 15) and dates
    Excel cannot show (before 1900-03-01) are written as the CSV's text; times are UTC whatever their zone."""
    naive = pl.DataFrame(
        {
            "userId": ["u1", "u2", "u3"],
            "score": [float("nan"), float("inf"), 1.25],
            "rank": pl.Series([12_345_678_901_234_567, 7, None], dtype=pl.Int64),
            "entryDate": pl.Series([datetime(1899, 1, 1), datetime(2024, 1, 15, 10, 30), None]),
        }
    )
    berlin = pl.DataFrame({"userId": ["u4"], "entryDate": pl.Series([WHEN]).dt.convert_time_zone("Europe/Berlin")})
    path, _ = _workbook(tmp_path, [naive, berlin])
    rows = CalamineWorkbook.from_path(str(path)).get_sheet_by_name("Entries").to_python()
    assert [r[4] for r in rows[1:4]] == ["NaN", "inf", 1.25]
    assert [r[5] for r in rows[1:4]] == ["12345678901234567", 7.0, ""]
    assert [r[6] for r in rows[1:]] == [
        "1899-01-01T00:00:00.000Z",  # as the CSV writes it
        datetime(2024, 1, 15, 10, 30),  # a time without a zone is UTC
        "",
        WHEN.replace(tzinfo=None),  # 11:30 in Berlin is 10:30 UTC
    ]


def test_an_empty_workbook_has_the_header(tmp_path: Path) -> None:
    path, meta = _workbook(tmp_path, [])
    assert meta == {"sheets": [{"name": "Entries", "rows": 0}]}
    assert CalamineWorkbook.from_path(str(path)).get_sheet_by_name("Entries").to_python() == [list(COLUMNS)]


def test_a_large_batch_goes_in_slices_and_in_order_across_sheets(tmp_path: Path) -> None:
    """One batch bigger than a slice and than a sheet: every row once, in order, each sheet under its header."""
    frame = pl.DataFrame({"userId": [f"u{i:05d}" for i in range(25_000)], "rank": list(range(25_000))})
    path, meta = _workbook(tmp_path, [frame], max_rows=12_000)
    assert meta["sheets"] == [
        {"name": "Entries", "rows": 12_000},
        {"name": "Entries (2)", "rows": 12_000},
        {"name": "Entries (3)", "rows": 1_000},
    ]
    book = CalamineWorkbook.from_path(str(path))
    rows = []
    for name in book.sheet_names:
        sheet = book.get_sheet_by_name(name).to_python()
        assert sheet[0] == list(COLUMNS)
        rows += [(row[0], row[5]) for row in sheet[1:]]
    assert rows == [(f"u{i:05d}", float(i)) for i in range(25_000)]
