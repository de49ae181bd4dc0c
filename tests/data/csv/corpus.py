"""Awkward and bad CSV input for the molecule import, shared by unit, integration and e2e tests.

Everything is generated (seeded, so reproducible) except the realistic samples next to this file:
- chembl_export.csv: a ChEMBL-style download (UTF-8, ";", every cell quoted, units in the header).
- excel_windows1252.csv: Excel on a European Windows (cp1252 with é and an en dash, ";", CRLF,
  decimal commas).
- pandas_index.csv: `DataFrame.to_csv()` with its unnamed index column.
- notes_multiline.csv: quoted commas, doubled quotes, line breaks inside cells, cells that a
  spreadsheet would run as formulas.
"""

from __future__ import annotations

import io
import random
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import BinaryIO

HERE = Path(__file__).parent
SAMPLES = {path.name: path for path in sorted(HERE.glob("*.csv"))}

SMILES = (
    "CC(=O)Oc1ccccc1C(=O)O",
    "CN1C=NC2=C1C(=O)N(C(=O)N2C)C",
    "CC(C)Cc1ccc(cc1)C(C)C(=O)O",
    "CC(=O)Nc1ccc(O)cc1",
    "C[NH+](C)CCC=C1c2ccccc2CCc2ccccc12.[Cl-]",
    "OC(=O)C[C@H](N)C(=O)O",
    "c1ccc2c(c1)[nH]c1ccccc12",
    "not a smiles",
)


@dataclass(frozen=True)
class FileCase:
    """A file rejected as a whole: preview raises CsvFormatError with this `detail`."""

    name: str
    data: bytes
    detail: str


@dataclass(frozen=True)
class RowCase:
    """A readable file with some rejected rows: row number → a fragment of the reason."""

    name: str
    data: bytes
    rows: int  # non-blank data rows, rejected ones included
    rejected: dict[int, str] = field(default_factory=dict)


def _xlsx() -> bytes:
    """What a user uploads when they forget to export: a (minimal) Excel workbook, i.e. a zip."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as book:
        book.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types/>' * 20)
        book.writestr("xl/worksheets/sheet1.xml", "<sheetData><row><c><v>CCO</v></c></row></sheetData>" * 50)
    return out.getvalue()


def unreadable_files() -> list[FileCase]:
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x06\x00\x00\x00" + bytes(
        200
    )
    noise = random.Random(3).randbytes(4096)
    return [
        FileCase("empty", b"", "EMPTY_FILE"),
        FileCase("whitespace_only", b"  \r\n\n\t\n", "EMPTY_FILE"),
        FileCase("delimiters_only", b",,,\n,,,\n", "EMPTY_FILE"),
        FileCase("header_only", b"smiles,name\r\n", "NO_DATA_ROWS"),
        FileCase("header_and_blank_lines", b"smiles,name\n\n,\n\n", "NO_DATA_ROWS"),
        FileCase("duplicate_headers", b"SMILES,name,smiles \nCCO,ethanol,CCO\n", "DUPLICATE_COLUMNS"),
        FileCase("png", png, "NOT_TEXT"),
        FileCase("random_bytes", noise, "NOT_TEXT"),
        FileCase("random_bytes_without_nul", noise.replace(b"\x00", b"\x01"), "NOT_TEXT"),
        FileCase("xlsx", _xlsx(), "NOT_TEXT"),
        FileCase("nul_in_text", b"smiles,name\nCCO,eth\x00anol\n", "NOT_TEXT"),
        FileCase("utf16", "smiles,name\nCCO,ethanol\n".encode("utf-16"), "UNSUPPORTED_ENCODING"),
        FileCase("header_larger_than_sample", b"smiles," + b"x" * 70_000 + b"\nCCO,1\n", "HEADER_TOO_LONG"),
    ]


def row_cases() -> list[RowCase]:
    late_latin1 = b"smiles,name\n" + b"CCO,ethanol\n" * 6000 + "CCN,éthylamine\n".encode("latin-1")
    return [
        RowCase(
            "ragged",
            b"smiles,name,mw\nCCO,ethanol,46\nCCN,x\nCCC,a,b,c\nC,methane,16,,\n",
            4,
            {2: "expected 3 cells, found 2", 3: "expected 3 cells, found 4"},
        ),
        RowCase(
            "wrong_delimiter_row",
            b"smiles;name\nCCO;ethanol\nCCN,ethylamine\n",
            2,
            {2: "expected 2 cells, found 1"},
        ),
        RowCase(
            "unclosed_quote",
            b'smiles,name\nCCO,ethanol\nCCN,"ethyl\namine\nCCC,propane\n',
            2,
            {2: "never closed"},
        ),
        RowCase(
            "nul_in_later_row",
            b"smiles,name\n" + b"CCO,ethanol\n" * 6000 + b"CCN,a\x00b\n",
            6001,
            {6001: "NUL"},
        ),
        RowCase("invalid_utf8_after_sample", late_latin1, 6001, {6001: "not valid utf-8"}),
        RowCase("blank_lines_keep_numbers", b"smiles\n\nCCO\n  \n\nCCN\n", 2),
    ]


def random_cell(rng: random.Random) -> str:
    """A cell exercising quoting: commas, semicolons, tabs, quotes, line breaks of all kinds, accents."""
    kind = rng.random()
    if kind < 0.55:
        return rng.choice(SMILES)
    if kind < 0.75:
        return f"{rng.uniform(-50, 500):.3f}"
    pieces = ["a", "b", "é", "µ", " ", ",", ";", "\t", '"', "\n", "\r\n", "\r", "=1+1", "-"]
    return "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))


def random_rows(count: int, columns: int, seed: int) -> Iterator[list[str]]:
    """Rows whose first cell is a SMILES (so no row is blank) and the others anything `random_cell` makes."""
    rng = random.Random(seed)
    for _ in range(count):
        yield [rng.choice(SMILES), *(random_cell(rng) for _ in range(columns - 1))]


def write_csv(
    out: BinaryIO,
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    delimiter: str = ",",
    encoding: str = "utf-8",
    newline: str = "\r\n",
    bom: bool = False,
) -> None:
    """Write a CSV as spreadsheets do: a cell is quoted when it holds the delimiter, a quote or a line break.

    (Not csv.writer: on Python 3.11 it leaves a cell with "\n" unquoted when the line terminator is "\r".)
    """
    if bom:
        out.write(b"\xef\xbb\xbf")
    for row in chain([headers], rows):
        line = delimiter.join(_quoted(cell, delimiter) for cell in row) + newline
        out.write(line.encode(encoding))


def _quoted(cell: str, delimiter: str) -> str:
    if any(c in cell for c in (delimiter, '"', "\r", "\n")):
        return '"' + cell.replace('"', '""') + '"'
    return cell


def write_big_field(out: BinaryIO, field_bytes: int, *, quoted_lines: bool = False) -> None:
    """A header, one good row, a row with one field of `field_bytes` bytes, and two more good rows.

    With `quoted_lines` the big field is quoted and made of 1 KiB lines, so only the quote state
    tells where the row ends.
    """
    out.write(b"smiles,name\r\nCCO,ethanol\r\n")
    out.write(b'CCC,"' if quoted_lines else b"CCC,")
    line = b"x" * 1023 + b"\n" if quoted_lines else b"x" * 1024
    for _ in range(field_bytes // len(line)):
        out.write(line)
    out.write(b'"\r\n' if quoted_lines else b"\r\n")
    out.write(b"CCN,ethylamine\r\nCCCl,chloroethane\r\n")
