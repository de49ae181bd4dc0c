"""CSV files, for every service: dialect sniffing, header, preview, streaming rows, chunks, error report.

What a column means is the caller's business (the molecule import's mapping lives in
services/molecule/domain/csv_mapping.py); `preview` takes the caller's `suggest` for that.

Pure Python, no I/O beyond reading the file or stream it is given. Files may be 100 MB and 500,000
rows, so nothing here holds a whole file: reads go in 64 KiB blocks and one row is held at a time,
never more than `CsvLimits.max_row_bytes` of it.

Decisions (the "why" a reader of the code would ask for):
- The record splitter is our own, on bytes, with exactly the semantics of the stdlib `csv` reader
  in its default, non-strict mode (double quotes, "" inside quotes, quotes inside an unquoted field
  are literal, CR, LF and CRLF all end a record). Owning it gives byte offsets at record boundaries
  (for chunks), a size bound that skips an oversized row without holding it (the stdlib raises
  mid-record and loses its place), and no change to the process-wide `csv.field_size_limit`.
  The unit tests check it against `csv.reader` on random input.
- Encodings: UTF-8 (a BOM is skipped), else Windows-1252 (what Excel writes; a superset of the
  printable Latin-1), else Latin-1, which decodes anything. UTF-16 is refused with a hint. A row
  further down that does not decode in the detected encoding is a row error, not a guess.
- Row numbers: row N is the N-th record after the header, blank records included though never
  returned, so it is row N + 1 in a spreadsheet (a quoted cell with newlines is one row there too).
  The row limit counts non-blank rows. Blank = only spaces, tabs and delimiters.
- The size bound is per row (all its cells, 1 MiB by default), which also bounds every cell.
- Header: trimmed; empty cells are named `column_<position>` (pandas writes its index column with an
  empty name) and suggested as `ignore`; trailing empty header cells (a trailing delimiter) are
  dropped, and so are extra trailing empty cells in data rows. Duplicate names (case-insensitive)
  are rejected. Cells of data rows are returned as written (not trimmed): the error report shows
  the original.
- Error report: OWASP's CSV-injection rule (a cell starting with = + - @ tab or CR gets a leading
  single quote) except for plain decimal numbers such as -5 or +3.2e-4: a spreadsheet reads those
  as numbers, they cannot call anything, and a quoted "'-5" in an IC50 column would be misread.
"""

from __future__ import annotations

import codecs
import csv
import os
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain
from typing import IO, BinaryIO, TypeAlias

from services.runtime.errors import ValidationError
from services.runtime.spreadsheet import neutralise_cell

Source: TypeAlias = "str | os.PathLike[str] | BinaryIO"

SNIFF_BYTES = 64 * 1024
DELIMITERS = (",", "\t", ";")  # in order of preference on ties

_BLOCK = 64 * 1024
_SNIFF_RECORDS = 50


class CsvFormatError(ValidationError):
    """The file as a whole cannot be read as a CSV (400 VALIDATION_ERROR, `detail` says why)."""


@dataclass(frozen=True, slots=True)
class CsvLimits:
    max_rows: int = 500_000
    max_row_bytes: int = 1 << 20


@dataclass(frozen=True, slots=True)
class Dialect:
    """How to read a file; plain fields, so `dataclasses.asdict` / `Dialect(**d)` carry it on the bus."""

    encoding: str  # a Python codec name: "utf-8", "cp1252" or "latin-1"
    delimiter: str  # ",", "\t" or ";"
    line_terminator: str  # the first one seen ("\r\n", "\n" or "\r"); all three are read anyway
    has_bom: bool = False  # a UTF-8 BOM precedes the header and is skipped


@dataclass(frozen=True, slots=True)
class Row:
    row_number: int
    cells: list[str]


@dataclass(frozen=True, slots=True)
class RejectedRow:
    row_number: int
    cells: list[str]
    reason: str


@dataclass(frozen=True, slots=True)
class Preview:
    headers: list[str]
    rows: list[list[str]]
    dialect: Dialect
    suggested_mapping: dict[str, str]  # header → target, from the caller's `suggest` (empty without one)


SuggestMapping: TypeAlias = "Callable[[Sequence[str]], dict[str, str]]"


@dataclass(frozen=True, slots=True)
class Chunk:
    """Rows [first_row_number, …] of the file, at bytes [byte_start, byte_end): a unit of work on the bus."""

    index: int
    byte_start: int
    byte_end: int
    first_row_number: int
    row_count: int  # non-blank rows in the range


# --- dialect ------------------------------------------------------------------------------------

# C0 controls other than tab and line breaks: text files have none, binary files plenty. (Not C1: Latin-1
# decodes any byte above 0x7F, and a stray one in a real file is not a sign of binary data.)
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_TERMINATOR = re.compile(rb"\r\n?|\n")
_BLANK_ANY = b" \t" + "".join(DELIMITERS).encode()


def sniff(sample: bytes, *, complete: bool = True) -> Dialect:
    """The dialect of a file from its first bytes (`complete` = the sample is the whole file)."""
    has_bom = sample.startswith(codecs.BOM_UTF8)
    body = sample[len(codecs.BOM_UTF8) :] if has_bom else sample
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise CsvFormatError(
            "UTF-16 text is not supported: save the file as CSV UTF-8", detail="UNSUPPORTED_ENCODING"
        )
    if not body.strip():
        raise CsvFormatError("the file is empty", detail="EMPTY_FILE")
    if b"\x00" in body:
        raise _not_text()
    encoding, text = _decode_sample(body, complete)
    if len(_CONTROL.findall(text)) * 100 > len(text):
        raise _not_text()
    found = _TERMINATOR.search(body)
    terminator = found.group().decode() if found else "\n"
    return Dialect(encoding, _sniff_delimiter(body, complete), terminator, has_bom)


def _not_text() -> CsvFormatError:
    return CsvFormatError("this is not a text CSV file", detail="NOT_TEXT")


def _decode_sample(body: bytes, complete: bool) -> tuple[str, str]:
    try:  # incremental: a partial sample may end inside a multi-byte character
        return "utf-8", codecs.getincrementaldecoder("utf-8")().decode(body, final=complete)
    except UnicodeDecodeError:
        pass
    try:
        return "cp1252", body.decode("cp1252")
    except UnicodeDecodeError:
        return "latin-1", body.decode("latin-1")


def _sniff_delimiter(body: bytes, complete: bool) -> str:
    """The delimiter giving the most rows with the header's cell count; multi-column files first."""
    best: tuple[bool, float, int] | None = None
    choice = DELIMITERS[0]
    for rank, delimiter in enumerate(DELIMITERS):
        counts = []
        for _, end, data, problem in split_records(iter([body]), 0, delimiter, len(body) + 1):
            if not complete and end >= len(body):
                break  # the sample may cut this record
            if problem or data is None or not data.translate(None, _BLANK_ANY):
                continue  # blank for every candidate, so that ",,," does not make a one-column tab file
            counts.append(len(_trim_trailing(split_record(data.decode("latin-1"), delimiter))))
            if len(counts) > _SNIFF_RECORDS:
                break
        if not counts:
            continue
        header, rows = counts[0], counts[1:]
        consistency = sum(1 for n in rows if n == header) / len(rows) if rows else 1.0
        key = (header >= 2, consistency, -rank)
        if best is None or key > best:
            best, choice = key, delimiter
    if best is None and complete:
        raise CsvFormatError("the file has no header row", detail="EMPTY_FILE")
    if best is None:
        raise CsvFormatError(
            f"no complete header row in the first {SNIFF_BYTES // 1024} KiB", detail="HEADER_TOO_LONG"
        )
    return choice


# --- records: the byte-level splitter -------------------------------------------------------------

# Quote states of csv's reader that matter for where a record ends.
_FIELD_START, _IN_FIELD, _IN_QUOTED, _QUOTE_IN_QUOTED = range(4)
_QUOTE = ord('"')
_NEWLINE = re.compile(rb"[\r\n]")
_Record: TypeAlias = "tuple[int, int, bytes | None, str]"  # start, end, data (None: too large), problem


def _advance(buf: bytes, start: int, end: int, state: int, delimiter: int) -> int:
    """The quote state after buf[start:end], a stretch without line breaks outside quotes."""
    if state < _IN_QUOTED and buf.find(b'"', start, end) < 0:  # the common line: no quotes at all
        if start == end:
            return state
        return _FIELD_START if buf[end - 1] == delimiter else _IN_FIELD
    i = start
    while i < end:
        if state == _IN_QUOTED:
            q = buf.find(b'"', i, end)
            if q < 0:
                return _IN_QUOTED
            state, i = _QUOTE_IN_QUOTED, q + 1
        elif state == _IN_FIELD:
            d = buf.find(delimiter, i, end)
            if d < 0:
                return _IN_FIELD
            state, i = _FIELD_START, d + 1
        elif buf[i] == _QUOTE:  # at a field's start a quote opens it; right after a closing one, it is ""
            state, i = _IN_QUOTED, i + 1
        else:  # anything else (after a closing quote too) is literal up to the next delimiter
            state = _IN_FIELD
    return state


def split_records(blocks: Iterator[bytes], offset: int, delimiter: str, max_bytes: int) -> Iterator[_Record]:
    """Cut a byte stream (starting at file offset `offset`, at a record boundary) into CSV records.

    `data` is the record without its final line terminator; it is None when the record exceeds
    `max_bytes`, which is then skipped without being held. `problem` is "" or a row error.
    """
    delim = ord(delimiter)
    buf, pos, base = b"", 0, offset  # buf[0] is at file offset `base`
    eof = False
    start, state, size = offset, _FIELD_START, 0
    parts: list[bytes] | None = []
    while True:
        found = _NEWLINE.search(buf, pos)
        # A CR ending the buffer may be the first half of a CRLF: read on before deciding.
        if found is None or (not eof and found.start() == len(buf) - 1 and buf[-1] == 0x0D):
            stop = len(buf) if found is None else found.start()
            if stop > pos:
                state = _advance(buf, pos, stop, state, delim)
                if parts is not None and size + stop - pos <= max_bytes:
                    parts.append(buf[pos:stop])
                else:
                    parts = None
                size += stop - pos
                pos = stop
            if eof:
                if size:
                    unclosed = state == _IN_QUOTED
                    yield start, base + pos, _joined(parts), _problem(parts, unclosed, max_bytes)
                return
            block = next(blocks, b"")
            eof = not block
            base, buf, pos = base + pos, buf[pos:] + block, 0
            continue
        nl = found.start()
        term = 2 if buf[nl] == 0x0D and buf[nl + 1 : nl + 2] == b"\n" else 1
        state = _advance(buf, pos, nl, state, delim)
        stop = nl + term if state == _IN_QUOTED else nl  # a line break inside quotes belongs to the cell
        if parts is not None and size + stop - pos <= max_bytes:
            parts.append(buf[pos:stop])
        else:
            parts = None
        size += stop - pos
        pos = nl + term
        if state != _IN_QUOTED:
            yield start, base + pos, _joined(parts), _problem(parts, False, max_bytes)
            start, state, size, parts = base + pos, _FIELD_START, 0, []


def _joined(parts: list[bytes] | None) -> bytes | None:
    return None if parts is None else b"".join(parts)


def _problem(parts: list[bytes] | None, unclosed: bool, max_bytes: int) -> str:
    if unclosed:
        return 'a quoted cell opened in this row is never closed (a stray " character?)'
    if parts is None:
        return f"the row is larger than the {_size(max_bytes)} limit"
    return ""


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 and n % (1 << 20) == 0 else f"{n:,} bytes"


def _is_blank(data: bytes, delimiter: str) -> bool:
    return not data.translate(None, b" \t" + delimiter.encode())


def split_record(text: str, delimiter: str) -> list[str]:
    """The cells of one record (without its terminator), as csv.reader would return them."""
    if '"' not in text:
        return text.split(delimiter)
    cells: list[str] = []
    i, n = 0, len(text)
    while True:
        if text.startswith('"', i):
            pieces, j = [], i + 1
            while True:
                q = text.find('"', j)
                if q < 0:  # never closed: the rest of the record is the cell
                    pieces.append(text[j:])
                    cells.append("".join(pieces))
                    return cells
                pieces.append(text[j:q])
                if text.startswith('"', q + 1):
                    pieces.append('"')
                    j = q + 2
                else:
                    j = q + 1
                    break
            end = text.find(delimiter, j)
            end = n if end < 0 else end
            pieces.append(text[j:end])  # after the closing quote: literal, as csv's non-strict mode does
            cells.append("".join(pieces))
        else:
            end = text.find(delimiter, i)
            end = n if end < 0 else end
            cells.append(text[i:end])
        if end >= n:
            return cells
        i = end + 1


def _trim_trailing(cells: list[str]) -> list[str]:
    end = len(cells)
    while end > 1 and not cells[end - 1].strip():
        end -= 1
    return cells if end == len(cells) else cells[:end]


# --- files: header, rows, chunks --------------------------------------------------------------------


@contextmanager
def _opened(source: Source) -> Iterator[BinaryIO]:
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as file:
            yield file
    else:
        yield source


def _blocks(stream: BinaryIO, limit: int | None = None) -> Iterator[bytes]:
    remaining = limit
    while remaining is None or remaining > 0:
        block = stream.read(_BLOCK if remaining is None else min(_BLOCK, remaining))
        if not block:
            return
        if remaining is not None:
            remaining -= len(block)
        yield block


def _skip(blocks: Iterator[bytes], count: int) -> Iterator[bytes]:
    for block in blocks:
        if count:
            dropped = min(count, len(block))
            block, count = block[dropped:], count - dropped
        if block:
            yield block


def _file_records(blocks: Iterator[bytes], dialect: Dialect, limits: CsvLimits) -> Iterator[_Record]:
    bom = len(codecs.BOM_UTF8) if dialect.has_bom else 0
    return split_records(_skip(blocks, bom), bom, dialect.delimiter, limits.max_row_bytes)


def _read_header(records: Iterator[_Record], dialect: Dialect) -> tuple[list[str], int]:
    """The header's names and the byte offset just past it (leading blank lines are skipped)."""
    for _, end, data, problem in records:
        if data is not None and _is_blank(data, dialect.delimiter):
            continue
        if data is None or problem:
            raise CsvFormatError(f"the header row cannot be read: {problem}", detail="BAD_HEADER")
        if b"\x00" in data:
            raise _not_text()
        cells = _trim_trailing(split_record(data.decode(dialect.encoding, "replace"), dialect.delimiter))
        headers = [cell.strip() or f"column_{i}" for i, cell in enumerate(cells, 1)]
        duplicates = duplicate_columns(headers)
        if duplicates:
            raise CsvFormatError(
                "duplicate column names: " + "; ".join(duplicates),
                detail="DUPLICATE_COLUMNS",
                field_violations=[("headers", f"duplicate column name {found}") for found in duplicates],
            )
        return headers, end
    raise CsvFormatError("the file has no header row", detail="EMPTY_FILE")


def duplicate_columns(headers: Sequence[str]) -> list[str]:
    """Each name that appears more than once (trimmed, case-insensitive), with its column positions."""
    positions: dict[str, list[int]] = {}
    for position, header in enumerate(headers, 1):
        positions.setdefault(header.strip().casefold(), []).append(position)
    return [
        f'"{headers[found[0] - 1].strip()}" (columns {", ".join(map(str, found))})'
        for found in positions.values()
        if len(found) > 1
    ]


def _rows(
    records: Iterator[_Record], dialect: Dialect, columns: int, first_row_number: int, max_rows: int | None
) -> Iterator[Row | RejectedRow]:
    number, count = first_row_number - 1, 0
    for _, _, data, problem in records:
        number += 1
        if data is not None and _is_blank(data, dialect.delimiter):
            continue
        count += 1
        if max_rows is not None and count > max_rows:
            raise _too_many_rows(max_rows)
        if data is None:
            yield RejectedRow(number, [], problem)
            continue
        try:
            text, reason = data.decode(dialect.encoding), problem
        except UnicodeDecodeError:
            text = data.decode(dialect.encoding, "replace")
            reason = (
                problem or f"the row is not valid {dialect.encoding} text (the encoding of the file's start)"
            )
        cells = split_record(text, dialect.delimiter)
        if len(cells) > columns:
            cells = _trim_trailing(cells)
            if len(cells) < columns:
                cells += [""] * (columns - len(cells))
        if not reason and "\x00" in text:
            reason = "the row contains a NUL character"
        if not reason and len(cells) != columns:
            reason = (
                f"expected {columns} cells, found {len(cells)} (wrong delimiter or an unquoted line break?)"
            )
        yield RejectedRow(number, cells, reason) if reason else Row(number, cells)


def _too_many_rows(max_rows: int) -> CsvFormatError:
    return CsvFormatError(
        f"the file has more than {max_rows:,} rows, the limit",
        detail="TOO_MANY_ROWS",
        metadata={"limit": str(max_rows)},
    )


def _no_rows() -> CsvFormatError:
    return CsvFormatError("the file has a header row but no data rows", detail="NO_DATA_ROWS")


def _read_sample(stream: BinaryIO) -> bytes:
    parts, size = [], 0
    while size < SNIFF_BYTES:
        block = stream.read(SNIFF_BYTES - size)
        if not block:
            break
        parts.append(block)
        size += len(block)
    return b"".join(parts)


def preview(
    source: Source, rows: int = 20, *, suggest: SuggestMapping | None = None, limits: CsvLimits = CsvLimits()
) -> Preview:
    """Dialect, header and the first `rows` data rows (rejected ones shown with their cells as read),
    with `suggest(headers)` as the suggested mapping.

    Reads only what it shows (the sample plus the rows), so a stream can be a remote object's body.
    """
    with _opened(source) as stream:
        sample = _read_sample(stream)
        dialect = sniff(sample, complete=len(sample) < SNIFF_BYTES)
        records = _file_records(chain([sample], _blocks(stream)), dialect, limits)
        headers, _ = _read_header(records, dialect)
        shown = []
        for row in _rows(records, dialect, len(headers), 1, None):
            shown.append(row.cells)
            if len(shown) >= rows:
                break
    if not shown:
        raise _no_rows()
    return Preview(headers, shown, dialect, suggest(headers) if suggest else {})


def iter_rows(
    source: Source, dialect: Dialect, *, limits: CsvLimits = CsvLimits()
) -> Iterator[Row | RejectedRow]:
    """Every data row of the file in order, one at a time; raises CsvFormatError past `limits.max_rows`."""
    with _opened(source) as stream:
        records = _file_records(_blocks(stream), dialect, limits)
        headers, _ = _read_header(records, dialect)
        yield from _rows(records, dialect, len(headers), 1, limits.max_rows)


def plan_chunks(
    source: Source, dialect: Dialect, rows_per_chunk: int = 5000, *, limits: CsvLimits = CsvLimits()
) -> list[Chunk]:
    """Cut the file into chunks of `rows_per_chunk` non-blank rows in one pass, without parsing cells.

    Raises CsvFormatError when the file has no data rows or more than `limits.max_rows`.
    """
    if rows_per_chunk < 1:
        raise ValueError("rows_per_chunk must be at least 1")
    chunks: list[Chunk] = []
    with _opened(source) as stream:
        records = _file_records(_blocks(stream), dialect, limits)
        _, byte_start = _read_header(records, dialect)
        number = total = count = 0
        first = 1
        byte_end = byte_start
        for _, end, data, _ in records:
            number += 1
            if data is not None and _is_blank(data, dialect.delimiter):
                continue
            total += 1
            if total > limits.max_rows:
                raise _too_many_rows(limits.max_rows)
            count, byte_end = count + 1, end
            if count == rows_per_chunk:
                chunks.append(Chunk(len(chunks), byte_start, byte_end, first, count))
                byte_start, first, count = byte_end, number + 1, 0
        if count:
            chunks.append(Chunk(len(chunks), byte_start, byte_end, first, count))
    if not chunks:
        raise _no_rows()
    return chunks


def read_chunk(
    source: Source, chunk: Chunk, dialect: Dialect, *, columns: int, limits: CsvLimits = CsvLimits()
) -> Iterator[Row | RejectedRow]:
    """The rows of one chunk. A path is opened and seeked; a stream must start at `chunk.byte_start`
    (a ranged read of a stored object). `columns` is the header's length.
    """
    with _opened(source) as stream:
        if isinstance(source, str | os.PathLike):
            stream.seek(chunk.byte_start)
        blocks = _blocks(stream, chunk.byte_end - chunk.byte_start)
        records = split_records(blocks, chunk.byte_start, dialect.delimiter, limits.max_row_bytes)
        count = 0
        for row in _rows(records, dialect, columns, chunk.first_row_number, None):
            count += 1
            yield row
    if count != chunk.row_count:
        raise CsvFormatError(
            f"chunk {chunk.index} holds {count} rows, not the {chunk.row_count} planned: the file changed",
            detail="CHUNK_MISMATCH",
        )


_UNITS = re.compile(r"[\(\[]([^\)\]]*)[\)\]]")


def normalize_header(header: str) -> tuple[str, str | None]:
    """("ic50", "nM") for "IC50 (nM)": lowercase ASCII words joined by "_", and the bracketed units."""
    units = [u.strip() for u in _UNITS.findall(header) if u.strip()]
    ascii_text = unicodedata.normalize("NFKD", _UNITS.sub(" ", header)).encode("ascii", "ignore").decode()
    key = re.sub(r"[^a-z0-9]+", "_", ascii_text.lower()).strip("_")
    return key, (units[-1] if units else None)


# --- error report ------------------------------------------------------------------------------------------

def write_error_report(rows: Iterable[RejectedRow], out: IO[str], headers: Sequence[str]) -> int:
    """Write `row, <headers…>, reason` as CSV to a text stream opened with newline=""; returns the row count.

    Short rows are padded so that `reason` stays in its column; cells beyond the header (ragged rows)
    follow the reason rather than being dropped.
    """
    writer = csv.writer(out)
    writer.writerow(["row", *map(neutralise_cell, headers), "reason"])
    written = 0
    for row in rows:
        cells = [neutralise_cell(cell) for cell in row.cells]
        cells += [""] * (len(headers) - len(cells))
        writer.writerow(
            [row.row_number, *cells[: len(headers)], neutralise_cell(row.reason), *cells[len(headers) :]]
        )
        written += 1
    return written
