"""Properties of the shared CSV reader (services/runtime/csv_format.py) on generated text: the record splitter
agrees with the stdlib `csv.reader` (default, non-strict) whatever the block size; offsets tile the file; rows,
row numbers and chunks agree with a sequential read; `sniff` fails only with CsvFormatError."""

from __future__ import annotations

import contextlib
import csv
import io

from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.runtime import csv_format as cf
from services.runtime.csv_format import CsvFormatError, Dialect, RejectedRow, Row, iter_rows, plan_chunks, read_chunk

FAST = settings(max_examples=200, deadline=None)

TOKENS = ["a", "b", " ", "é", "µ", "😀", ",", "\t", ";", '"', '""', "\r", "\n", "\r\n", "\x85", "\u2028"]
# Text made mostly of the characters that matter for record splitting, with some arbitrary ones.
pieces = st.one_of(st.sampled_from(TOKENS), st.characters(blacklist_categories=("Cs",)))
csv_text = st.lists(pieces, max_size=60).map("".join)
delimiters = st.sampled_from([",", "\t", ";"])
TERMINATORS = (b"", b"\r", b"\n", b"\r\n")


def in_blocks(data: bytes, size: int):  # type: ignore[no-untyped-def]
    return (data[i : i + size] for i in range(0, len(data), size))


def stdlib(text: str, delimiter: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))


def ours(data: bytes, delimiter: str, block: int) -> list[list[str]]:
    return [
        cf.split_record(record.decode(), delimiter) if record else []
        for _, _, record, _ in cf.split_records(in_blocks(data, block), 0, delimiter, 1 << 20)
        if record is not None
    ]


@FAST
@given(csv_text, delimiters, st.integers(min_value=1, max_value=8))
@example('a,"b\r\n""c""\r\n', ",", 1)
@example('"x"\r', ",", 3)
def test_splitter_agrees_with_the_stdlib_reader_for_any_block_size(text: str, delimiter: str, block: int) -> None:
    data = text.encode()
    assert ours(data, delimiter, block) == stdlib(text, delimiter)


@FAST
@given(csv_text, delimiters, st.lists(st.integers(min_value=0, max_value=400), max_size=10))
def test_splitter_gives_the_same_records_for_any_cutting_of_the_stream(
    text: str, delimiter: str, cuts: list[int]
) -> None:
    data = text.encode()
    points = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    blocks = iter([data[a:b] for a, b in zip(points, points[1:], strict=False)])
    cut = list(cf.split_records(blocks, 0, delimiter, 1 << 20))
    assert cut == list(cf.split_records(iter([data]), 0, delimiter, 1 << 20))


@FAST
@given(csv_text, delimiters, st.integers(min_value=1, max_value=8), st.integers(min_value=0, max_value=1000))
def test_record_offsets_tile_the_file(text: str, delimiter: str, block: int, offset: int) -> None:
    data = text.encode()
    records = list(cf.split_records(in_blocks(data, block), offset, delimiter, 1 << 20))
    position = offset
    for start, end, record, _ in records:
        assert start == position and end > start
        written = data[start - offset : end - offset]
        assert record is not None and written.startswith(record)
        assert written[len(record) :] in TERMINATORS
        position = end
    assert position == offset + len(data)


@FAST
@given(csv_text, delimiters, st.integers(min_value=1, max_value=30))
def test_oversized_records_are_skipped_without_losing_the_place(text: str, delimiter: str, limit: int) -> None:
    data = text.encode()
    bounded = list(cf.split_records(iter([data]), 0, delimiter, limit))
    unbounded = list(cf.split_records(iter([data]), 0, delimiter, 1 << 20))
    assert [(s, e) for s, e, _, _ in bounded] == [(s, e) for s, e, _, _ in unbounded]
    for (_, _, small, problem), (_, _, full, _) in zip(bounded, unbounded, strict=True):
        assert full is not None
        if len(full) > limit:
            assert small is None and problem  # too large (or, first, an unclosed quote)
        else:
            assert small == full


@FAST
@given(st.binary(max_size=300), st.booleans())
@example(b"\xef\xbb\xbf", True)
@example(b'"' + b"a" * 50, False)
def test_sniff_fails_only_with_a_format_error(sample: bytes, complete: bool) -> None:
    try:
        dialect = cf.sniff(sample, complete=complete)
    except CsvFormatError:
        return
    assert dialect.delimiter in cf.DELIMITERS and dialect.line_terminator in ("\r\n", "\n", "\r")
    assert dialect.encoding in ("utf-8", "cp1252", "latin-1")


@FAST
@given(st.lists(pieces, max_size=80).map("".join).map(str.encode))
def test_sniff_fails_only_with_a_format_error_on_text(sample: bytes) -> None:
    with contextlib.suppress(CsvFormatError):
        cf.sniff(sample)


class Trickle(io.RawIOBase):
    """A stream that returns at most `most` bytes per read: the reader's blocks split anywhere."""

    def __init__(self, data: bytes, most: int) -> None:
        self._data, self._pos, self._most = data, 0, most

    def read(self, size: int = -1) -> bytes:
        block = self._data[self._pos : self._pos + min(size, self._most)]
        self._pos += len(block)
        return block

    def readable(self) -> bool:
        return True


def expected_rows(text: str, lines: list[str], delimiter: str) -> tuple[int, list[tuple[int, list[str]]]]:
    """The model: csv.reader's records (one per generated line), the header the first non-blank one, the
    rows numbered from it; blank = a line of only spaces, tabs and delimiters."""
    records = stdlib(text, delimiter)
    assert len(records) == len(lines)
    blank = [not line.strip(" \t" + delimiter) for line in lines]
    first = blank.index(False)
    header = records[first]
    while len(header) > 1 and not header[-1].strip():
        header = header[:-1]
    rows = [(n, r) for n, r in enumerate(records[first + 1 :], 1) if not blank[first + n]]
    return len(header), rows


def shaped(cells: list[str], columns: int) -> list[str]:
    if len(cells) > columns:
        while len(cells) > 1 and not cells[-1].strip():
            cells = cells[:-1]
        cells = cells + [""] * (columns - len(cells))
    return cells


# Files with a real header and quoted cells, line breaks and blank lines among the rows.
cell = st.one_of(
    st.text(alphabet="ab é,;\t", max_size=5),
    st.text(alphabet='ab,;\t"\r\n', max_size=6).map(lambda s: '"' + s.replace('"', '""') + '"'),
)
line_end = st.sampled_from(["\n", "\r\n", "\r"])


@st.composite
def csv_files(draw: st.DrawFn) -> tuple[str, list[str], str]:
    delimiter = draw(delimiters)
    width = draw(st.integers(min_value=1, max_value=4))
    header = delimiter.join(f"h{i}" for i in range(width))
    lines = [""] * draw(st.integers(min_value=0, max_value=2)) + [header]
    for _ in range(draw(st.integers(min_value=0, max_value=12))):
        count = draw(st.sampled_from([width, width, width, 0, width + 1, max(width - 1, 1)]))
        lines.append(delimiter.join(draw(cell) for _ in range(count)))
    ends: list[str] = []
    for line in lines:  # a CR, an empty line and an LF would be one CRLF: keep one record per line
        ends.append("\r" if not line and ends and ends[-1] == "\r" else draw(line_end))
    text = "".join(a + b for a, b in zip(lines, ends, strict=True))
    return text, lines, delimiter


@FAST
@given(csv_files(), st.integers(min_value=1, max_value=16))
def test_rows_agree_with_the_stdlib_reader_and_are_numbered_like_a_spreadsheet(
    file: tuple[str, list[str], str], most: int
) -> None:
    text, lines, delimiter = file
    data = text.encode()
    dialect = Dialect("utf-8", delimiter, "\n")
    rows = list(iter_rows(Trickle(data, most), dialect))  # type: ignore[arg-type]
    columns, expected = expected_rows(text, lines, delimiter)
    assert [row.row_number for row in rows] == [n for n, _ in expected]
    for row, (_, cells) in zip(rows, expected, strict=True):
        assert row.cells == shaped(cells, columns)
        assert isinstance(row, Row) == (len(shaped(cells, columns)) == columns)


@FAST
@given(csv_files(), st.integers(min_value=1, max_value=5))
def test_chunks_read_apart_give_exactly_the_sequential_rows(file: tuple[str, list[str], str], per_chunk: int) -> None:
    text, lines, delimiter = file
    data = text.encode()
    dialect = Dialect("utf-8", delimiter, "\n")
    sequential = list(iter_rows(io.BytesIO(data), dialect))
    try:
        chunks = plan_chunks(io.BytesIO(data), dialect, per_chunk)  # type: ignore[arg-type]
    except CsvFormatError as error:
        assert not sequential and error.detail == "NO_DATA_ROWS"
        return
    columns, _ = expected_rows(text, lines, delimiter)
    read: list[Row | RejectedRow] = []
    for chunk in chunks:
        part = io.BytesIO(data[chunk.byte_start : chunk.byte_end])
        read += read_chunk(part, chunk, dialect, columns=columns)  # type: ignore[arg-type]
    assert read == sequential
    assert [c.byte_start for c in chunks[1:]] == [c.byte_end for c in chunks[:-1]]
    assert sum(c.row_count for c in chunks) == len(sequential)
    firsts = [sequential[sum(c.row_count for c in chunks[:i])].row_number for i in range(len(chunks))]
    # A chunk's numbering starts at its first record, which may be blank: its first row comes at or after.
    assert all(c.first_row_number <= first for c, first in zip(chunks, firsts, strict=True))


odd_bytes = st.sampled_from([b"\xef\xbb\xbf", b"\xff\xfe", b"\x00", b"\x80\x81", b"\xe9"])


def spoiled(file: bytes, insertions: list[tuple[int, bytes]]) -> bytes:
    for at, junk in insertions:
        file = file[: at % (len(file) + 1)] + junk + file[at % (len(file) + 1) :]
    return file


hostile_files = st.one_of(
    st.binary(max_size=300),
    st.lists(st.one_of(odd_bytes, pieces.map(str.encode)), max_size=60).map(b"".join),
    st.builds(
        spoiled,
        csv_files().map(lambda f: f[0].encode()),
        st.lists(st.tuples(st.integers(min_value=0), st.one_of(odd_bytes, st.binary(max_size=3))), max_size=3),
    ),
)


@FAST
@given(hostile_files, st.integers(min_value=1, max_value=3))
@example(b"a,b\n\xff\n", 1)
@example(b'a\n"' + b"x" * 40, 1)
def test_a_whole_hostile_file_fails_only_with_a_format_error(data: bytes, per_chunk: int) -> None:
    """Preview, rows and chunks of anything: a CsvFormatError for the file, or rows (some rejected)."""
    limits = cf.CsvLimits(max_rows=5, max_row_bytes=30)
    try:
        shown = cf.preview(io.BytesIO(data), limits=limits)
        rows = list(iter_rows(io.BytesIO(data), shown.dialect, limits=limits))
        chunks = plan_chunks(io.BytesIO(data), shown.dialect, per_chunk, limits=limits)  # type: ignore[arg-type]
    except CsvFormatError as error:
        assert error.detail
        return
    assert [row.row_number for row in rows] == sorted({row.row_number for row in rows})
    assert all(row.reason for row in rows if isinstance(row, RejectedRow))
    read = [
        row
        for chunk in chunks
        for row in read_chunk(
            io.BytesIO(data[chunk.byte_start : chunk.byte_end]),  # type: ignore[arg-type]
            chunk,
            shown.dialect,
            columns=len(shown.headers),
            limits=limits,
        )
    ]
    assert read == rows
