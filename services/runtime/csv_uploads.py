"""A CSV file in a request body, streamed into object storage (for every service that takes CSV uploads).

The body is a raw CSV (text/csv and friends; a Content-Disposition header may name the file) or a
multipart/form-data form whose field `file` is the CSV. It is never held whole (at most the first
message or the 64 KiB needed to sniff it, and what the storage buffers for one S3 part), and it is
checked early: a file whose first 64 KiB are not text is refused before anything is stored. The
SHA-256 of the stored bytes is computed on the way.

What the upload is to a service (its table, who may send one, where its bytes go) is the caller's:
it chooses the object key and records the `StoredCsv` inside `async with stored_csv(...)`, so that an
error there (or anywhere before) leaves no object behind.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from services.runtime import csv_format
from services.runtime.errors import ValidationError
from services.runtime.multipart import (
    PartEnd,
    PartStart,
    RawFile,
    UploadedFile,
    boundary_of,
    clean_filename,
    header_params,
    parse_stream,
)
from services.runtime.storage import MIB, ObjectStorage

# What browsers and tools send for a CSV body; anything else but multipart is refused by name.
RAW_TYPES = frozenset(
    {
        "",
        "text/csv",
        "text/plain",
        "application/csv",
        "text/tab-separated-values",
        "application/vnd.ms-excel",
        "application/octet-stream",
    }
)
MULTIPART = "multipart/form-data"
FILE_FIELD = "file"
MAX_OTHER_FIELD_BYTES = 1 * MIB  # form fields besides `file` are read and dropped, up to this much


@dataclass(frozen=True, slots=True)
class StoredCsv:
    object_key: str
    filename: str  # the client's, cleaned; the default when it sent none
    size_bytes: int
    media_type: str  # the body's, lowercase without parameters ("text/csv", "multipart/form-data", …)
    sha256: str  # hex digest of the stored bytes


def media_type_of(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


@asynccontextmanager
async def stored_csv(
    storage: ObjectStorage,
    object_key: str,
    content_type: str,
    chunks: AsyncIterator[bytes],
    *,
    max_bytes: int,
    default_filename: str,
    disposition: str = "",
    staged: bool = False,
) -> AsyncIterator[StoredCsv]:
    """Store a raw CSV body, or the `file` field of a multipart/form-data body, at `object_key`.

    `content_type` is the body's (for multipart it carries the boundary); `disposition` is an optional
    Content-Disposition header naming a raw body's file. Raises ValidationError (UNSUPPORTED_MEDIA_TYPE,
    MISSING_FILE, FORM_TOO_LARGE, the CsvFormatError of a body that is not text, FileTooLargeError past
    `max_bytes`). The object is deleted when the body of the `async with` raises. `staged`: it expires
    unless kept (ObjectStorage.keep).
    """
    media_type = media_type_of(content_type)
    if media_type == MULTIPART:
        source: UploadedFile = _MultipartFile(boundary_of(content_type), chunks, default_filename)
    elif media_type in RAW_TYPES:
        filename = header_params("content-disposition", disposition).get_filename()
        source = RawFile(chunks, clean_filename(filename, default_filename))
    else:
        raise ValidationError(
            f"unsupported content type {media_type!r}: send text/csv or multipart/form-data",
            detail="UNSUPPORTED_MEDIA_TYPE",
        )
    digest = hashlib.sha256()
    sniffed = await _sniffed(source.content())

    async def hashed() -> AsyncIterator[bytes]:  # exactly the bytes put_stream stores
        async for chunk in sniffed:
            digest.update(chunk)
            yield chunk

    size = await storage.put_stream(object_key, hashed(), max_bytes=max_bytes, staged=staged)
    try:
        await source.finish()
        yield StoredCsv(object_key, source.filename, size, media_type, digest.hexdigest())
    except BaseException:
        await asyncio.shield(storage.delete(object_key))
        raise


async def _sniffed(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Refuse a body that is not text before any of it is stored; give back the whole body."""
    head = bytearray()
    async for chunk in chunks:
        head += chunk
        if len(head) >= csv_format.SNIFF_BYTES:
            break
    sample = bytes(head[: csv_format.SNIFF_BYTES])
    csv_format.sniff(sample, complete=len(sample) < csv_format.SNIFF_BYTES)

    async def body() -> AsyncIterator[bytes]:
        yield bytes(head)
        async for chunk in chunks:
            yield chunk

    return body()


class _MultipartFile(UploadedFile):
    """The first part named `file`; the other fields are read (bounded) and dropped."""

    def __init__(self, boundary: str, chunks: AsyncIterator[bytes], default_filename: str) -> None:
        self._events = parse_stream(boundary, chunks)
        self._found = False
        self._other_bytes = 0
        self._default_filename = default_filename
        self.filename = default_filename

    async def content(self) -> AsyncIterator[bytes]:
        in_file = False
        async for event in self._events:
            if isinstance(event, PartStart):
                in_file = event.name == FILE_FIELD and not self._found
                if in_file:
                    self._found = True
                    self.filename = clean_filename(event.filename, self._default_filename)
            elif isinstance(event, PartEnd):
                if in_file:
                    return
            elif in_file:
                yield event
            else:
                self._count_other(event)
        raise ValidationError(
            f'the form has no field named "{FILE_FIELD}"',
            detail="MISSING_FILE",
            field_violations=[(FILE_FIELD, "required")],
        )

    async def finish(self) -> None:
        async for event in self._events:
            if isinstance(event, bytes):
                self._count_other(event)

    def _count_other(self, data: bytes) -> None:
        self._other_bytes += len(data)
        if self._other_bytes > MAX_OTHER_FIELD_BYTES:
            raise ValidationError(
                f'form fields other than "{FILE_FIELD}" exceed {MAX_OTHER_FIELD_BYTES:,} bytes',
                detail="FORM_TOO_LARGE",
            )
