"""CSV ingestion, first half: upload a file to object storage, preview it (service layer, no protos).

An upload streams from the gateway to storage: the body is never held whole (at most the first
message or the 64 KiB needed to sniff it, and what the storage buffers for one S3 part). It is
checked early: a file whose first 64 KiB are not text is refused before anything is stored.
The import job itself (StartImport, workers, progress, error report) lives in import_jobs.py and
builds on `UploadService.get_upload`, `ImportLimits` and `upload_object_key`.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator

from services.molecule.domain import csv_format
from services.molecule.domain.properties import KNOWN_PROPERTIES
from services.molecule.domain.uploads import (
    DEFAULT_MAX_ROWS,
    DEFAULT_MAX_UPLOAD_BYTES,
    ImportLimits,
    StoredUpload,
    upload_object_key,
)
from services.molecule.domain.vocabulary import WRITER_ROLES
from services.molecule.store.uow import MoleculeTransactions
from services.runtime.auth import Principal
from services.runtime.errors import NotFoundError, ValidationError
from services.runtime.multipart import (
    Event,
    MultipartParser,
    PartEnd,
    PartStart,
    boundary_of,
    clean_filename,
    header_params,
)
from services.runtime.storage import MIB, ObjectStorage

DEFAULT_FILENAME = "upload.csv"
PREVIEW_ROWS, MAX_PREVIEW_ROWS = 20, 100
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
_STORAGE_KEY = re.compile(r"^[0-9a-f]{32}$")


__all__ = [
    "DEFAULT_MAX_ROWS",
    "DEFAULT_MAX_UPLOAD_BYTES",
    "ImportLimits",
    "StoredUpload",
    "UploadService",
    "upload_object_key",
]


class UploadService:
    def __init__(
        self, uow: MoleculeTransactions, storage: ObjectStorage, limits: ImportLimits | None = None
    ) -> None:
        self._uow = uow
        self.storage = storage
        self.limits = limits or ImportLimits()

    async def upload(
        self, principal: Principal, content_type: str, chunks: AsyncIterator[bytes], *, disposition: str = ""
    ) -> StoredUpload:
        """Store a raw CSV body, or the `file` field of a multipart/form-data body.

        `content_type` is the body's (for multipart it carries the boundary); `disposition` is an
        optional Content-Disposition header naming a raw body's file.
        """
        principal.require_any_role(*WRITER_ROLES)
        media_type = content_type.split(";", 1)[0].strip().lower()
        if media_type == MULTIPART:
            source: _Body = _MultipartFile(boundary_of(content_type), chunks)
        elif media_type in RAW_TYPES:
            source = _RawBody(chunks, header_params("content-disposition", disposition).get_filename())
        else:
            raise ValidationError(
                f"unsupported content type {media_type!r}: send text/csv or multipart/form-data",
                detail="UNSUPPORTED_MEDIA_TYPE",
            )
        body = await _sniffed(source.content())
        storage_key = uuid.uuid4().hex
        object_key = upload_object_key(principal.organization_id, storage_key)
        size = await self.storage.put_stream(object_key, body, max_bytes=self.limits.max_upload_bytes)
        try:
            await source.finish()
            upload = StoredUpload(
                storage_key=storage_key, organization_id=principal.organization_id, filename=source.filename,
                size_bytes=size, content_type=media_type, created_by=principal.subject,
            )
            async with self._uow() as uow:
                return await uow.uploads.add(upload)
        except BaseException:
            await asyncio.shield(self.storage.delete(object_key))
            raise

    async def get_upload(self, principal: Principal, storage_key: str) -> StoredUpload:
        """An upload the caller's organization owns; any other key answers 404 (never 403)."""
        if _STORAGE_KEY.match(storage_key):
            async with self._uow() as uow:
                upload = await uow.uploads.get(storage_key)
            if upload is not None and principal.can_see_organization(upload.organization_id):
                return upload
        raise NotFoundError("upload not found", detail="UPLOAD_NOT_FOUND")

    async def preview(
        self, principal: Principal, storage_key: str, rows: int = PREVIEW_ROWS
    ) -> csv_format.Preview:
        """Header, the first `rows` rows (default 20, at most 100), the dialect and a suggested mapping."""
        upload = await self.get_upload(principal, storage_key)
        count = min(rows, MAX_PREVIEW_ROWS) if rows > 0 else PREVIEW_ROWS

        def read() -> csv_format.Preview:
            with self.storage.open_reader(upload.object_key) as stream:
                return csv_format.preview(
                    stream, count, known_targets=KNOWN_PROPERTIES.keys(), limits=self.limits.csv
                )

        return await asyncio.to_thread(read)


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


class _Body:
    """The file inside a request body: its bytes as a stream, then its name once they are read."""

    filename = DEFAULT_FILENAME

    def content(self) -> AsyncIterator[bytes]:
        raise NotImplementedError

    async def finish(self) -> None:
        """Read what follows the file and check the body was complete."""


class _RawBody(_Body):
    def __init__(self, chunks: AsyncIterator[bytes], filename: str | None) -> None:
        self._chunks = chunks
        self.filename = clean_filename(filename, DEFAULT_FILENAME)

    async def content(self) -> AsyncIterator[bytes]:
        async for chunk in self._chunks:
            if chunk:
                yield chunk


class _MultipartFile(_Body):
    """The first part named `file`; the other fields are read (bounded) and dropped."""

    def __init__(self, boundary: str, chunks: AsyncIterator[bytes]) -> None:
        self._parser = MultipartParser(boundary)
        self._events = self._parse(chunks)
        self._found = False
        self._other_bytes = 0

    async def _parse(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[Event]:
        async for chunk in chunks:
            for event in self._parser.feed(chunk):
                yield event
        self._parser.close()

    async def content(self) -> AsyncIterator[bytes]:
        in_file = False
        async for event in self._events:
            if isinstance(event, PartStart):
                in_file = event.name == FILE_FIELD and not self._found
                if in_file:
                    self._found = True
                    self.filename = clean_filename(event.filename, DEFAULT_FILENAME)
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
