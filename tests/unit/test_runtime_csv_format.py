"""The shared CSV reader (services/runtime/csv_format.py): dialects, the record splitter, header, rows,
chunks, bounded memory, the error report."""

import csv
import io
import random
import tracemalloc
from pathlib import Path

import pytest

from services.runtime import csv_format as cf
from services.runtime.csv_format import (
    Chunk,
    CsvFormatError,
    CsvLimits,
    Dialect,
    RejectedRow,
    Row,
    iter_rows,
    plan_chunks,
    preview,
    read_chunk,
    sniff,
    split_record,
    write_error_report,
)
from services.runtime.spreadsheet import neutralise_cell
from tests.data.csv import corpus

MIB = 1 << 20


class GuardedStream(io.RawIOBase):
    """A forward-only stream that counts what is read, refuses unbounded reads and may trickle bytes."""

    def __init__(self, data: bytes, trickle: int | None = None, seed: int = 0) -> None:
        self._data, self._pos, self._trickle, self._rng = data, 0, trickle, random.Random(seed)
        self.bytes_read = 0

    def read(self, size: int = -1) -> bytes:
        assert 0 < size <= 64 * 1024, f"unbounded or oversized read({size})"
        if self._trickle:
            size = min(size, self._rng.randint(1, self._trickle))
        block = self._data[self._pos : self._pos + size]
        self._pos += len(block)
        self.bytes_read += len(block)
        return block

    def readable(self) -> bool:
        return True


def rows_of(data: bytes, **kwargs: object) -> list[Row | RejectedRow]:
    dialect = sniff(data[: cf.SNIFF_BYTES], complete=len(data) <= cf.SNIFF_BYTES)
    return list(iter_rows(io.BytesIO(data), dialect, **kwargs))  # type: ignore[arg-type]


def cells_of(rows: list[Row | RejectedRow]) -> list[list[str]]:
    return [row.cells for row in rows]


# --- dialect --------------------------------------------------------------------------------------


def test_sniffs_delimiters_and_prefers_comma_on_ties() -> None:
    assert sniff(b"smiles,name\nCCO,ethanol\n").delimiter == ","
    assert sniff(b"smiles\tname\nCCO\tethanol, absolute\n").delimiter == "\t"
    assert sniff(b"smiles;mw;logp\nCCO;46,07;-0,31\nCCN;45,08;-0,13\n").delimiter == ";"
    assert sniff(b"smiles\nCCO\nCCN\n").delimiter == ","  # one column: every candidate ties
    assert sniff(b"a;b,c\n1;2,3\n").delimiter == ","  # both consistent: comma
    # Quoted commas do not count as delimiters; a single-column file of names with commas stays one column.
    assert sniff(b'smiles;name\nCCO;"a, b, c"\nCCN;"d, e"\n').delimiter == ";"
    assert sniff(b"name\nfoo, bar\nbaz, qux\n").delimiter != ","


def test_sniffs_encodings_bom_and_line_endings() -> None:
    bom = sniff(b"\xef\xbb\xbfsmiles,name\r\nCCO,\xc3\xa9thanol\r\n")
    assert (bom.encoding, bom.has_bom, bom.line_terminator) == ("utf-8", True, "\r\n")
    assert sniff("smiles,name\nCCO,éthanol\n".encode("latin-1")).encoding in ("cp1252", "latin-1")
    assert sniff("smiles;name\rCCO;lot – 1\r".encode("cp1252")) == Dialect("cp1252", ";", "\r", False)
    # 0x81 is undefined in Windows-1252: only Latin-1 decodes it.
    assert sniff(b"smiles,name\nCCO,x\x81\xe9\n").encoding == "latin-1"
    # A sample cut inside a multi-byte character is still UTF-8 when the file is longer.
    assert sniff("smiles,name\nCCO,é".encode()[:-1], complete=False).encoding == "utf-8"


@pytest.mark.parametrize("case", corpus.unreadable_files(), ids=lambda case: case.name)
def test_unreadable_files_are_rejected_as_a_whole(case: corpus.FileCase) -> None:
    with pytest.raises(CsvFormatError) as raised:
        preview(io.BytesIO(case.data))
    assert raised.value.detail == case.detail, raised.value.message
    assert raised.value.code == "VALIDATION_ERROR"


def test_not_text_and_duplicate_messages_name_the_problem() -> None:
    with pytest.raises(CsvFormatError, match="this is not a text CSV file"):
        sniff(b"\x89PNG\r\n\x1a\n\x00\x00")
    with pytest.raises(CsvFormatError) as raised:
        preview(io.BytesIO(b"SMILES,name,IC50,smiles,ic50\nC,a,1,C,2\n"))
    assert raised.value.message == 'duplicate column names: "SMILES" (columns 1, 4); "IC50" (columns 3, 5)'
    assert [field for field, _ in raised.value.field_violations] == ["headers", "headers"]


# --- record splitting -----------------------------------------------------------------------------


def test_splitter_agrees_with_the_stdlib_reader_on_random_input() -> None:
    rng = random.Random(7)
    alphabet = ["a", "b", "é", ",", ",", '"', '"', "\n", "\r", "\r\n", " ", ";"]
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        data = text.encode()
        blocks = (data[i : i + 3] for i in range(0, len(data), 3))  # CRLF and quotes split across blocks
        ours = [
            split_record(record.decode(), ",") if record else []
            for _, _, record, _ in cf.split_records(blocks, 0, ",", 1 << 20)
            if record is not None
        ]
        assert ours == list(csv.reader(io.StringIO(text, newline=""))), repr(text)


def test_record_offsets_are_record_boundaries() -> None:
    data = b'a,"x\r\ny"\r\nb,c\rd,"""q"""\n\ne'
    records = list(cf.split_records(iter([data]), 0, ",", 100))
    assert [(start, end) for start, end, _, _ in records] == [(0, 10), (10, 14), (14, 24), (24, 25), (25, 26)]
    assert [data[start:end] for start, end, _, _ in records][0] == b'a,"x\r\ny"\r\n'


def test_quoted_commas_quotes_and_line_breaks_stay_in_one_row() -> None:
    sample = corpus.SAMPLES["notes_multiline.csv"].read_bytes()
    rows = rows_of(sample)
    assert [row.row_number for row in rows] == [1, 2, 3, 4]
    assert all(isinstance(row, Row) for row in rows)
    assert rows[0].cells[3] == "acetylates COX-1, irreversibly"
    assert rows[1].cells[3] == 'line one\nline two, with a comma\nline "three"'


def test_stream_reads_are_bounded_and_short_reads_are_fine() -> None:
    data = io.BytesIO()
    corpus.write_csv(data, ["smiles", "notes"], corpus.random_rows(300, 2, seed=1), newline="\r\n", bom=True)
    raw = data.getvalue()
    dialect = sniff(raw[: cf.SNIFF_BYTES], complete=len(raw) <= cf.SNIFF_BYTES)
    expected = list(iter_rows(io.BytesIO(raw), dialect))
    assert len(expected) == 300
    assert list(iter_rows(GuardedStream(raw, trickle=5, seed=2), dialect)) == expected  # type: ignore[arg-type]


# --- preview and rows -----------------------------------------------------------------------------


def test_preview_of_realistic_samples() -> None:
    chembl = preview(corpus.SAMPLES["chembl_export.csv"])
    assert chembl.dialect == Dialect("utf-8", ";", "\n", False)
    assert chembl.headers[0] == "Molecule ChEMBL ID" and len(chembl.rows) == 4
    assert chembl.suggested_mapping == {}  # what a column means is the caller's `suggest`

    excel = preview(corpus.SAMPLES["excel_windows1252.csv"])
    assert (excel.dialect.encoding, excel.dialect.delimiter, excel.dialect.line_terminator) == (
        "cp1252",
        ";",
        "\r\n",
    )
    assert excel.headers[1] == "Nom du composé"
    assert excel.rows[0] == [
        "CC(=O)Oc1ccccc1C(=O)O",
        "Aspirine",
        "180,16",
        "1,31",
        "3,3",
        "lot 12 – référence",
    ]
    assert excel.rows[2][5] == "“sel sodique” testé"

    pandas = preview(corpus.SAMPLES["pandas_index.csv"])
    assert pandas.headers == ["column_1", "smiles", "name", "logp", "TPSA"]


def test_preview_reads_only_what_it_shows() -> None:
    data = io.BytesIO()
    corpus.write_csv(data, ["smiles", "name"], ([s, "x" * 100] for s in corpus.SMILES * 5000))
    stream = GuardedStream(data.getvalue())
    shown = preview(stream, rows=5)  # type: ignore[arg-type]
    assert len(shown.rows) == 5
    assert stream.bytes_read <= 2 * cf.SNIFF_BYTES < len(data.getvalue())


def test_header_cells_are_trimmed_and_trailing_empty_ones_dropped() -> None:
    shown = preview(io.BytesIO(b" smiles , Name ,\nCCO,ethanol,\nCCN,x\n"))
    assert shown.headers == ["smiles", "Name"]
    assert shown.rows == [["CCO", "ethanol"], ["CCN", "x"]]


@pytest.mark.parametrize("case", corpus.row_cases(), ids=lambda case: case.name)
def test_row_level_problems_become_rejected_rows(case: corpus.RowCase) -> None:
    rows = rows_of(case.data)
    assert len(rows) == case.rows
    rejected = {row.row_number: row.reason for row in rows if isinstance(row, RejectedRow)}
    assert rejected.keys() == case.rejected.keys()
    for number, fragment in case.rejected.items():
        assert fragment in rejected[number]


def test_row_numbers_count_blank_lines_like_a_spreadsheet() -> None:
    rows = rows_of(b'\n\nsmiles,name\n\nCCO,a\n , \nCCN,"b\nc"\nCCC,d\n')
    assert [(row.row_number, row.cells) for row in rows] == [
        (2, ["CCO", "a"]),
        (4, ["CCN", "b\nc"]),
        (5, ["CCC", "d"]),
    ]


def test_latin1_and_cp1252_cells_are_decoded() -> None:
    data = "smiles;name\r\nCCO;éthanol\r\nCCN;µ-lot – 2\r\n".encode("cp1252")
    assert cells_of(rows_of(data)) == [["CCO", "éthanol"], ["CCN", "µ-lot – 2"]]


def test_row_limit_counts_non_blank_rows_and_names_the_limit(tmp_path: Path) -> None:
    data = b"smiles\nC\n\nCC\nCCC\n"
    limits = CsvLimits(max_rows=3)
    assert len(rows_of(data, limits=limits)) == 3
    path = tmp_path / "four.csv"
    path.write_bytes(data + b"CCCC\n")
    with pytest.raises(CsvFormatError, match="more than 3 rows") as raised:
        list(iter_rows(path, sniff(path.read_bytes()), limits=limits))
    assert (raised.value.detail, raised.value.metadata) == ("TOO_MANY_ROWS", {"limit": "3"})
    with pytest.raises(CsvFormatError, match="more than 3 rows"):
        plan_chunks(path, sniff(path.read_bytes()), limits=limits)


@pytest.mark.parametrize("quoted_lines", [False, True], ids=["one_line", "quoted_lines"])
def test_a_10_mb_field_is_a_row_error_in_bounded_memory(tmp_path: Path, quoted_lines: bool) -> None:
    path = tmp_path / "big.csv"
    with path.open("wb") as out:
        corpus.write_big_field(out, 10 * MIB, quoted_lines=quoted_lines)
    dialect = preview(path).dialect
    tracemalloc.start()
    try:
        rows = list(iter_rows(path, dialect))
        chunks = plan_chunks(path, dialect, rows_per_chunk=2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * MIB
    assert [(row.row_number, row.cells) for row in rows if isinstance(row, Row)] == [
        (1, ["CCO", "ethanol"]),
        (3, ["CCN", "ethylamine"]),
        (4, ["CCCl", "chloroethane"]),
    ]
    assert rows[1] == RejectedRow(2, [], "the row is larger than the 1 MiB limit")
    assert [chunk.row_count for chunk in chunks] == [2, 2]
    assert list(read_chunk(path, chunks[1], dialect, columns=2)) == rows[2:]


def test_memory_stays_flat_while_planning_and_reading_a_large_file(tmp_path: Path) -> None:
    path = tmp_path / "large.csv"
    with path.open("wb") as out:
        corpus.write_csv(out, ["smiles", "name", "ic50"], corpus.random_rows(60_000, 3, seed=5))
    assert path.stat().st_size > 1 * MIB
    dialect = preview(path).dialect
    tracemalloc.start()
    try:
        chunks = plan_chunks(path, dialect, rows_per_chunk=5000)
        for chunk in chunks:
            for _ in read_chunk(path, chunk, dialect, columns=3):
                pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sum(chunk.row_count for chunk in chunks) == 60_000
    assert peak < 1 * MIB


# --- chunks ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "delimiter", "newline", "bom"),
    [("utf-8", ",", "\r\n", True), ("latin-1", ";", "\n", False), ("utf-8", "\t", "\r", False)],
)
def test_chunks_reproduce_a_sequential_read_exactly(
    tmp_path: Path, encoding: str, delimiter: str, newline: str, bom: bool
) -> None:
    rows = [
        [cell.replace("µ", "u") if encoding == "latin-1" else cell for cell in row]
        for row in corpus.random_rows(20_000, 4, seed=11)
    ]
    for i in range(0, len(rows), 97):  # blank lines here and there
        rows[i] = []
    path = tmp_path / "rows.csv"
    with path.open("wb") as out:
        corpus.write_csv(
            out,
            ["smiles", "name", "ic50", "notes"],
            rows,
            delimiter=delimiter,
            encoding=encoding,
            newline=newline,
            bom=bom,
        )
    raw = path.read_bytes()
    dialect = preview(path).dialect
    assert (dialect.encoding in (encoding, "cp1252"), dialect.delimiter, dialect.has_bom) == (
        True,
        delimiter,
        bom,
    )

    sequential = list(iter_rows(path, dialect))
    # What the stdlib reads, minus the header and blank rows: our rows hold exactly the written cells.
    written = [row for row in rows if row]
    assert [row.cells for row in sequential] == [cells + [""] * (4 - len(cells)) for cells in written]

    for rows_per_chunk in (997, 5000, 20_000):
        chunks = plan_chunks(path, dialect, rows_per_chunk)
        assert chunks[0].first_row_number == 1 and chunks[-1].byte_end <= len(raw)
        assert all(a.byte_end == b.byte_start for a, b in zip(chunks, chunks[1:], strict=False))
        from_paths = [row for chunk in chunks for row in read_chunk(path, chunk, dialect, columns=4)]
        assert from_paths == sequential
        # A worker with a ranged read of the stored object sees the same rows.
        ranged = [
            row
            for chunk in chunks
            for row in read_chunk(
                io.BytesIO(raw[chunk.byte_start : chunk.byte_end]), chunk, dialect, columns=4
            )
        ]
        assert ranged == sequential


def test_a_changed_file_fails_its_chunk(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_bytes(b"smiles\nC\nCC\nCCC\nCCCC\n")
    dialect = sniff(path.read_bytes())
    chunk = plan_chunks(path, dialect, rows_per_chunk=2)[0]
    path.write_bytes(b"smiles\n\n\n\n\n\n\n")  # the planned rows are gone
    with pytest.raises(CsvFormatError) as raised:
        list(read_chunk(path, chunk, dialect, columns=1))
    assert raised.value.detail == "CHUNK_MISMATCH"
    with pytest.raises(ValueError):
        plan_chunks(path, dialect, rows_per_chunk=0)


def test_chunks_and_dialects_round_trip_as_plain_dicts() -> None:
    from dataclasses import asdict

    chunk = Chunk(3, 100, 200, 7, 5)
    dialect = Dialect("utf-8", ";", "\r\n", True)
    assert Chunk(**asdict(chunk)) == chunk and Dialect(**asdict(dialect)) == dialect


# --- error report ---------------------------------------------------------------------------------


def test_neutralise_follows_owasp_but_keeps_plain_numbers() -> None:
    assert neutralise_cell("=1+1") == "'=1+1"
    assert neutralise_cell("+SUM(A1:A2)") == "'+SUM(A1:A2)"
    assert neutralise_cell("@SUM(1)") == "'@SUM(1)"
    assert neutralise_cell("-2+3+cmd|' /C calc'!A0") == "'-2+3+cmd|' /C calc'!A0"
    assert neutralise_cell("\tx") == "'\tx"
    assert neutralise_cell("\r=x") == "'\r=x"
    assert neutralise_cell("-") == "'-"
    for number in ("-5", "+3.2", "-1e-3", "-.5", "12"):
        assert neutralise_cell(number) == number
    assert neutralise_cell("CC(=O)O") == "CC(=O)O"
    assert neutralise_cell("") == ""


def test_error_report_keeps_original_cells_and_neutralises_formulas() -> None:
    sample = corpus.SAMPLES["notes_multiline.csv"]
    shown = preview(sample)
    rejected = [
        RejectedRow(row.row_number, row.cells, "=rdkit says no") for row in iter_rows(sample, shown.dialect)
    ]
    rejected += [
        RejectedRow(9, ["C"], "expected 4 cells, found 1"),
        RejectedRow(10, list("abcdef"), "ragged"),
    ]
    out = io.StringIO(newline="")
    assert write_error_report(rejected, out, ["=SMILES", *shown.headers[1:]]) == 6
    table = list(csv.reader(io.StringIO(out.getvalue(), newline="")))
    assert table[0] == ["row", "'=SMILES", "Compound ID", "IC50 (nM)", "Notes", "reason"]
    assert table[1] == [
        "1",
        "CC(=O)Oc1ccccc1C(=O)O",
        "MB-0001",
        "-5",
        "acetylates COX-1, irreversibly",
        "'=rdkit says no",
    ]
    assert table[2][3:5] == ["+3.2", 'line one\nline two, with a comma\nline "three"']
    assert table[3][2] == '\'=HYPERLINK("http://example.invalid","click")' and table[3][4] == "'@SUM(1+1)"
    assert table[4][3:5] == ["'-2+3+cmd|' /C calc'!A0", "'\tleading tab"]
    assert table[5] == ["9", "C", "", "", "", "expected 4 cells, found 1"]
    assert table[6] == ["10", "a", "b", "c", "d", "ragged", "e", "f"]
