"""Incremental multipart/form-data parsing (RFC 7578 / RFC 2046), for uploads that arrive as a stream.

The gateway hands a browser's form upload to the service raw, in messages of up to 1 MiB, and the
file may be 100 MB: the parser is fed bytes as they come and gives back events, holding at most one
part's header block and a delimiter's length of body (a delimiter may be split between two feeds).
Pure, no I/O. The stdlib's `email` parser is used only for a part's header block (quoted parameters,
RFC 2231 `filename*`), never for a body.
"""

from __future__ import annotations

import email.parser
import email.utils
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.message import Message
from typing import TypeAlias

from services.runtime.errors import ValidationError

MAX_HEADER_BYTES = 16 * 1024
_BOUNDARY = re.compile(r"^[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]$")  # RFC 2046 bchars


class MultipartError(ValidationError):
    """A body that is not well-formed multipart/form-data (400 VALIDATION_ERROR)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, detail="MALFORMED_MULTIPART")


@dataclass(frozen=True, slots=True)
class PartStart:
    """A part begins; its body follows as `bytes` events, then `PartEnd`."""

    name: str  # the form field (Content-Disposition `name`)
    filename: str | None  # as sent by the client (not sanitised), None for a plain field
    content_type: str


@dataclass(frozen=True, slots=True)
class PartEnd:
    pass


Event: TypeAlias = "PartStart | bytes | PartEnd"


def header_params(header: str, value: str) -> Message:
    """A Message holding one header, for its parameters: `.get_param(name, header=…)`, `.get_filename()`."""
    message = Message()
    message[header] = value
    return message


def boundary_of(content_type: str) -> str:
    """The boundary parameter of a multipart content type; MultipartError when absent or invalid."""
    found = header_params("content-type", content_type).get_param("boundary", header="content-type")
    boundary = email.utils.collapse_rfc2231_value(found) if found else ""
    if not _BOUNDARY.match(boundary):
        raise MultipartError("multipart/form-data needs a valid boundary parameter in its content type")
    return boundary


class MultipartParser:
    """Feed the body in pieces of any size; each `feed` returns the events completed so far.

    A part's body is reported as it arrives, so a caller can stream it on. `close` at the end of the
    body checks the closing delimiter was seen: a truncated upload is an error, not a shorter file.
    """

    def __init__(self, boundary: str) -> None:
        self._delimiter = b"\r\n--" + boundary.encode("ascii")
        # The first delimiter may open the body without a preceding CRLF: pretend there was one.
        self._buffer = bytearray(b"\r\n")
        self._state = "preamble"

    @property
    def finished(self) -> bool:
        return self._state == "epilogue"

    def feed(self, data: bytes) -> list[Event]:
        if self._state == "epilogue":
            return []  # anything after the closing delimiter is ignored (RFC 2046)
        self._buffer += data
        events: list[Event] = []
        while self._step(events):
            pass
        return events

    def close(self) -> None:
        if self._state != "epilogue":
            raise MultipartError("the multipart body ends before its closing boundary (truncated upload?)")

    def _step(self, events: list[Event]) -> bool:
        """Advance one state if the buffer allows; False when more input is needed."""
        buffer, delimiter = self._buffer, self._delimiter
        if self._state in ("preamble", "body"):
            found = buffer.find(delimiter)
            end = found if found >= 0 else len(buffer) - (len(delimiter) - 1)  # keep a possible partial
            if self._state == "body" and end > 0:
                events.append(bytes(buffer[:end]))
            if found < 0:
                if end > 0:
                    del buffer[:end]
                return False
            if self._state == "body":
                events.append(PartEnd())
            del buffer[: found + len(delimiter)]
            self._state = "boundary"
            return True
        if self._state == "boundary":
            if len(buffer) < 2:
                return False
            if buffer.startswith(b"--"):
                self._state = "epilogue"
                buffer.clear()
                return False
            line_end = buffer.find(b"\r\n")
            if line_end < 0:
                if len(buffer) > 1024:
                    raise MultipartError("malformed multipart boundary line")
                return False
            if buffer[:line_end].strip(b" \t"):  # only transport padding may follow a delimiter
                raise MultipartError("malformed multipart boundary line")
            del buffer[: line_end + 2]
            self._state = "headers"
            return True
        # headers: a block of lines ended by an empty line (which is all there is for a part with none)
        if len(buffer) < 2:
            return False
        end = 0 if buffer.startswith(b"\r\n") else buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > MAX_HEADER_BYTES:
                raise MultipartError(f"a multipart part's headers exceed {MAX_HEADER_BYTES} bytes")
            return False
        block = bytes(buffer[:end])
        del buffer[: end + (2 if end == 0 else 4)]
        events.append(_part_start(block))
        self._state = "body"
        return True


def _part_start(block: bytes) -> PartStart:
    # Browsers send a non-ASCII file name as raw UTF-8 inside the quotes; older clients Latin-1.
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError:
        text = block.decode("latin-1")
    headers = email.parser.HeaderParser().parsestr(text + "\r\n\r\n")
    disposition = headers.get("content-disposition", "")
    if not disposition:
        raise MultipartError("a multipart part has no Content-Disposition header")
    params = header_params("content-disposition", disposition)
    name = params.get_param("name", header="content-disposition")
    return PartStart(
        name=email.utils.collapse_rfc2231_value(name) if name else "",
        filename=params.get_filename(),
        content_type=headers.get("content-type", ""),
    )


_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f]")


def clean_filename(name: str | None, default: str) -> str:
    """The last path segment of a client's file name, without control characters; `default` if none."""
    base = re.split(r"[/\\]", name or "")[-1]
    base = _UNSAFE_NAME.sub("", base).strip()[:255]
    return base if base.strip(".") else default


async def parse_stream(boundary: str, chunks: AsyncIterator[bytes]) -> AsyncIterator[Event]:
    """The events of a streamed body, as its bytes arrive; raises MultipartError when it ends early."""
    parser = MultipartParser(boundary)
    async for chunk in chunks:
        for event in parser.feed(chunk):
            yield event
    parser.close()


class UploadedFile:
    """The file inside an upload request's body: its bytes as a stream, then its name once they are read."""

    filename: str

    def content(self) -> AsyncIterator[bytes]:
        raise NotImplementedError

    async def finish(self) -> None:
        """Read what follows the file and check the body was complete."""


class RawFile(UploadedFile):
    """A body that is the file itself (its name from a header, or the default)."""

    def __init__(self, chunks: AsyncIterator[bytes], filename: str) -> None:
        self._chunks = chunks
        self.filename = filename

    async def content(self) -> AsyncIterator[bytes]:
        async for chunk in self._chunks:
            if chunk:
                yield chunk
