"""CSV ingestion, first half: upload a file to object storage, preview it (service layer, no protos).

An upload streams from the gateway to storage through services/runtime/csv_uploads.py (never held
whole; a file whose first 64 KiB are not text is refused before anything is stored); this records it
in the molecule service's own `uploads` table.
The import job itself (StartImport, workers, progress, error report) lives in import_jobs.py and
builds on `UploadService.get_upload`, `ImportLimits` and `upload_object_key`.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Sequence

from services.molecule.domain.csv_mapping import suggest_mapping
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
from services.runtime import csv_format
from services.runtime.audit import audit_event
from services.runtime.auth import Principal
from services.runtime.csv_uploads import stored_csv
from services.runtime.errors import NotFoundError
from services.runtime.storage import ObjectStorage

DEFAULT_FILENAME = "upload.csv"
PREVIEW_ROWS, MAX_PREVIEW_ROWS = 20, 100
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
        storage_key = uuid.uuid4().hex
        async with stored_csv(
            self.storage,
            upload_object_key(principal.organization_id, storage_key),
            content_type,
            chunks,
            max_bytes=self.limits.max_upload_bytes,
            default_filename=DEFAULT_FILENAME,
            disposition=disposition,
            staged=True,  # expires unless an import uses it (ImportJobService.start_import keeps it)
        ) as stored:
            upload = StoredUpload(
                storage_key=storage_key, organization_id=principal.organization_id, filename=stored.filename,
                size_bytes=stored.size_bytes, content_type=stored.media_type, created_by=principal.subject,
            )
            async with self._uow() as uow:
                stored_upload = await uow.uploads.add(upload)
                details = {"filename": upload.filename, "size_bytes": str(upload.size_bytes),
                           "content_type": upload.content_type}
                uow.record(
                    audit_event("upload.stored", target_type="upload", target_id=storage_key, details=details),
                    actor=principal,
                )
                return stored_upload

    async def get_upload(self, principal: Principal, storage_key: str) -> StoredUpload:
        """An upload the caller's organization owns; any other key answers 404 (never 403). Not even the
        system admin reaches another organization's upload: an import from it would copy that
        organization's structures into the admin's (molecules never leave their organization)."""
        if _STORAGE_KEY.match(storage_key):
            async with self._uow() as uow:
                upload = await uow.uploads.get(storage_key)
            if upload is not None and upload.organization_id == principal.organization_id:
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
                return csv_format.preview(stream, count, suggest=_suggest, limits=self.limits.csv)

        return await asyncio.to_thread(read)


def _suggest(headers: Sequence[str]) -> dict[str, str]:
    return suggest_mapping(headers, KNOWN_PROPERTIES.keys())
