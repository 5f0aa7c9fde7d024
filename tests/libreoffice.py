"""Open a workbook with a real spreadsheet engine: LibreOffice Calc, headless (Debian's `libreoffice-calc`).

`make pytest` installs it (devstack/ensure_libreoffice.sh); a bare `pytest` runs that script when it is
missing. Each conversion uses a profile directory of its own, so concurrent runs never share one.
"""

from __future__ import annotations

import csv
import html
import io
import os
import re
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

from export_core.settings import REPO_ROOT

LIBREOFFICE = os.environ.get("LIBREOFFICE", "/usr/bin/libreoffice")
# CSV export filter options: comma, double quote, UTF-8 (76), from row 1, …, "save cell contents as
# shown" (dates with their number format), and sheet -1: every sheet to a file of its own.
CSV_FILTER = "csv:Text - txt - csv (StarCalc):44,34,76,1,,0,false,true,true,false,false,-1"
ODS_NS = {
    "table": "urn:oasis:names:tc:opendocument:xmlns:table:1.0",
    "office": "urn:oasis:names:tc:opendocument:xmlns:office:1.0",
    "text": "urn:oasis:names:tc:opendocument:xmlns:text:1.0",
}


def libreoffice() -> str:
    if not Path(LIBREOFFICE).exists():
        subprocess.run(["sh", str(REPO_ROOT / "devstack" / "ensure_libreoffice.sh")], check=True, timeout=900)
    return LIBREOFFICE


def convert(source: Path, target: str, out_dir: Path) -> None:
    """`libreoffice --headless --convert-to target` of `source` into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    profile = out_dir / ".profile"
    result = subprocess.run(
        [libreoffice(), f"-env:UserInstallation=file://{profile}", "--headless", "--norestore",
         "--convert-to", target, "--outdir", str(out_dir), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]


def sheets_as_csv(workbook: Path, out_dir: Path) -> dict[str, list[list[str]]]:
    """Every sheet of `workbook` as LibreOffice exports it to CSV (cells as shown), by sheet name."""
    convert(workbook, CSV_FILTER, out_dir)
    with zipfile.ZipFile(workbook) as archive:  # the sheets in the workbook's order
        names = [
            html.unescape(n) for n in re.findall(r'<sheet name="([^"]*)"', archive.read("xl/workbook.xml").decode())
        ]
    written = {path.stem.removeprefix(f"{workbook.stem}-"): path for path in out_dir.glob(f"{workbook.stem}-*.csv")}
    assert sorted(written) == sorted(names), (written, names)
    return {
        name: list(csv.reader(io.StringIO(written[name].read_text(encoding="utf-8"), newline=""))) for name in names
    }


@dataclass(frozen=True)
class OdsCell:
    value_type: str | None  # string, float, date, boolean, … as the engine typed it (None: empty)
    text: str  # what it shows (paragraphs joined with LF)
    formula: str | None


def sheets_as_ods(workbook: Path, out_dir: Path) -> dict[str, list[list[OdsCell]]]:
    """Every sheet of `workbook` as LibreOffice saves it as ODS: each cell's type, text and formula."""
    convert(workbook, "ods", out_dir)
    with zipfile.ZipFile(out_dir / f"{workbook.stem}.ods") as ods:
        root = ElementTree.fromstring(ods.read("content.xml"))  # noqa: S314 (LibreOffice's own output)
    table, office = f"{{{ODS_NS['table']}}}", f"{{{ODS_NS['office']}}}"
    sheets: dict[str, list[list[OdsCell]]] = {}
    for sheet in root.iter(f"{table}table"):
        rows = []
        for row in sheet.iter(f"{table}table-row"):
            cells = []
            for cell in row.iter(f"{table}table-cell"):
                repeat = int(cell.get(f"{table}number-columns-repeated", "1"))
                shown = "\n".join(_text(p) for p in cell.iter(f"{{{ODS_NS['text']}}}p"))
                typed = OdsCell(cell.get(f"{office}value-type"), shown, cell.get(f"{table}formula"))
                cells += [typed] * min(repeat, 64)  # the empty rest of a row comes as one cell, repeated
            while cells and cells[-1].value_type is None:
                cells.pop()
            if cells:  # identical rows next to each other come as one, repeated
                rows += [cells] * int(row.get(f"{table}number-rows-repeated", "1"))
        sheets[str(sheet.get(f"{table}name"))] = rows
    return sheets


def _text(element: ElementTree.Element) -> str:
    """A paragraph's text with ODS's markup for spaces, tabs and line breaks turned back into them."""
    ns = f"{{{ODS_NS['text']}}}"
    out = [element.text or ""]
    for child in element:
        if child.tag == f"{ns}s":
            out.append(" " * int(child.get(f"{ns}c", "1")))
        elif child.tag == f"{ns}tab":
            out.append("\t")
        elif child.tag == f"{ns}line-break":
            out.append("\n")
        else:
            out.append(_text(child))
        out.append(child.tail or "")
    return "".join(out)


def sheet_xml(workbook: Path) -> dict[str, str]:
    """The worksheet parts of an xlsx, by part name (xl/worksheets/sheet1.xml, …)."""
    with zipfile.ZipFile(workbook) as archive:
        return {
            name: archive.read(name).decode()
            for name in archive.namelist()
            if re.fullmatch(r"xl/worksheets/sheet\d+\.xml", name)
        }
