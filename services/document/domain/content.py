"""What a file is, from its bytes (never from the client's word): PDF, DOCX, XLSX, CSV, PNG, JPEG or
plain text. Pure: no I/O.

Uploads stream, so the sniffer is fed the body piece by piece and holds little: the first bytes
(`HEAD_BYTES`, enough for every magic number and the text check) and, for a ZIP, the names of its
entries read from the local file headers as they pass (an Office file is a ZIP holding
`[Content_Types].xml` and `word/…` or `xl/…`). `check_head` refuses a file as soon as its head shows
it cannot be accepted, before anything is stored; `media_type` gives the verdict at the end.
"""

from __future__ import annotations

import csv
import struct

from services.runtime.errors import ValidationError

HEAD_BYTES = 64 * 1024

PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
CSV = "text/csv"
PNG = "image/png"
JPEG = "image/jpeg"
TXT = "text/plain"
ACCEPTED = "PDF, DOCX, XLSX, CSV, PNG, JPEG, TXT"

_ZIP_LOCAL = b"PK\x03\x04"
_ZIP_CENTRAL = b"PK\x01\x02"
_ZIP_END = b"PK\x05\x06"
_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")  # 30 bytes: signature … name length, extra length
_DATA_DESCRIPTOR = 0x08  # sizes follow the data: the next entry is found by its signature
_MAX_NAMES = 10_000

# Magic numbers of what people commonly try to upload instead, to say what was found.
_KNOWN_OTHERS: tuple[tuple[bytes, str], ...] = (
    (b"MZ", "a Windows executable"),
    (b"\x7fELF", "an ELF executable"),
    (b"\xcf\xfa\xed\xfe", "a Mach-O executable"),
    (b"\xca\xfe\xba\xbe", "a Mach-O executable or Java class"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"BM", "a BMP image"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "a legacy Office (OLE) file such as .doc or .xls"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"Rar!", "a RAR archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"{\\rtf", "an RTF document"),
)


def unsupported(found: str) -> ValidationError:
    return ValidationError(
        f"unsupported file type: found {found}; accepted: {ACCEPTED}",
        detail="UNSUPPORTED_MEDIA_TYPE",
        metadata={"found": found, "accepted": ACCEPTED},
    )


class ContentSniffer:
    """Feed the body in pieces; `media_type()` at the end."""

    def __init__(self) -> None:
        self.head = bytearray()
        self.size = 0
        self.zip_names: list[str] = []
        self._zip = _ZipScanner()

    @property
    def is_zip(self) -> bool:
        return self.head.startswith(_ZIP_LOCAL)

    def feed(self, chunk: bytes) -> None:
        if len(self.head) < HEAD_BYTES:
            self.head += chunk[: HEAD_BYTES - len(self.head)]
        self.size += len(chunk)
        if self.is_zip:
            self._zip.feed(chunk)

    @property
    def whole_in_head(self) -> bool:
        return self.size <= HEAD_BYTES

    def check_head(self) -> None:
        """Refuse now when the first bytes already rule the file out (call once the head is full or the
        body has ended)."""
        head = bytes(self.head)
        if not head:
            raise ValidationError("the file is empty", detail="EMPTY_FILE", field_violations=[("file", "empty")])
        if _magic_type(head) is None and not self.is_zip:
            _text_type(head, complete=self.whole_in_head)  # raises when not text

    def media_type(self) -> str:
        """The verdict once every byte has been fed; ValidationError UNSUPPORTED_MEDIA_TYPE otherwise."""
        self.check_head()
        head = bytes(self.head)
        if self.is_zip:
            return office_type(self._zip.names)
        return _magic_type(head) or _text_type(head, complete=self.whole_in_head)


def sniff(data: bytes) -> str:
    """The media type of a whole file held in memory (generated documents, tests)."""
    sniffer = ContentSniffer()
    sniffer.feed(data)
    return sniffer.media_type()


def office_type(names: list[str]) -> str:
    """DOCX or XLSX from a ZIP's entry names."""
    if "[Content_Types].xml" in names:
        if any(name.startswith("word/") for name in names):
            return DOCX
        if any(name.startswith("xl/") for name in names):
            return XLSX
        if any(name.startswith("ppt/") for name in names):
            raise unsupported("a PowerPoint presentation (PPTX)")
        raise unsupported("an Office Open XML package that is neither a Word nor an Excel document")
    if "mimetype" in names:
        raise unsupported("an OpenDocument file (ODT/ODS)")
    raise unsupported("a ZIP archive that is not a Word or Excel document")


def _magic_type(head: bytes) -> str | None:
    if head.startswith(b"%PDF-"):
        return PDF
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    return None


def _text_type(head: bytes, *, complete: bool) -> str:
    """CSV or TXT when the head is UTF-8 text; refused naming what it looks like otherwise."""
    for magic, found in _KNOWN_OTHERS:
        if head.startswith(magic) and not (magic == b"BM" and _is_text(head, complete)):
            raise unsupported(found)
    if not _is_text(head, complete):
        raise unsupported("binary data")
    return CSV if _looks_like_csv(_decode(head, complete)) else TXT


def _decode(head: bytes, complete: bool) -> str:
    data = head.removeprefix(b"\xef\xbb\xbf")
    if not complete:  # the head may end inside a multi-byte character
        for cut in range(4):
            try:
                return (data[: len(data) - cut] if cut else data).decode("utf-8")
            except UnicodeDecodeError:
                continue
    return data.decode("utf-8")


def _is_text(head: bytes, complete: bool) -> bool:
    try:
        text = _decode(head, complete)
    except UnicodeDecodeError:
        return False
    return not any(ord(ch) < 32 and ch not in "\t\n\r\f" for ch in text)


def _looks_like_csv(text: str) -> bool:
    """At least two lines that split into the same number (≥ 2) of fields on one delimiter."""
    lines = [line for line in text.splitlines()[:20] if line.strip()]
    if len(lines) < 2:
        return False
    if not text.endswith(("\n", "\r")) and len(lines) > 2:
        lines = lines[:-1]  # the head may cut the last line
    for delimiter in ",;\t":
        try:
            rows = list(csv.reader(lines, delimiter=delimiter))
        except csv.Error:
            continue
        widths = {len(row) for row in rows}
        if len(widths) == 1 and widths.pop() >= 2:
            return True
    return False


class _ZipScanner:
    """Entry names of a ZIP from its local file headers, as the bytes pass; the buffer stays small
    (a header at a time; entry data is skipped by its size, or, when the size comes after the data,
    by searching the next header's signature)."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._buffer = bytearray()
        self._skip = 0  # data bytes of the current entry still to pass
        self._searching = False
        self._done = False

    def feed(self, chunk: bytes) -> None:
        if self._done:
            return
        if self._skip:
            passed = min(self._skip, len(chunk))
            self._skip -= passed
            chunk = chunk[passed:]
        self._buffer += chunk
        while not self._done and self._step():
            pass
        if self._searching and len(self._buffer) > 3:  # keep what could start a split signature
            del self._buffer[:-3]

    def _step(self) -> bool:
        buffer = self._buffer
        if self._searching:
            found = min((i for i in (buffer.find(_ZIP_LOCAL), buffer.find(_ZIP_CENTRAL)) if i >= 0), default=-1)
            if found < 0:
                return False
            del buffer[:found]
            self._searching = False
        if len(buffer) < 4:
            return False
        if buffer.startswith((_ZIP_CENTRAL, _ZIP_END)) or not buffer.startswith(_ZIP_LOCAL):
            self._done = True  # the central directory (or something we cannot follow): names are complete
            return False
        if len(buffer) < _LOCAL_HEADER.size:
            return False
        fields = _LOCAL_HEADER.unpack_from(buffer)
        flags, compressed, name_length, extra_length = fields[2], fields[7], fields[9], fields[10]
        end = _LOCAL_HEADER.size + name_length + extra_length
        if len(buffer) < end:
            return False
        name = bytes(buffer[_LOCAL_HEADER.size : _LOCAL_HEADER.size + name_length])
        self.names.append(name.decode("utf-8", "replace"))
        if len(self.names) >= _MAX_NAMES:
            self._done = True
            return False
        del buffer[:end]
        if flags & _DATA_DESCRIPTOR and compressed == 0:
            self._searching = True
            return True
        passed = min(compressed, len(buffer))
        del buffer[:passed]
        self._skip = compressed - passed
        return not self._skip
