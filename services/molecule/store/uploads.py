"""Uploaded files' records in PostgreSQL (the bytes are in object storage)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from services.molecule.domain.uploads import StoredUpload
from services.molecule.store.tables import uploads


class UploadRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, upload: StoredUpload) -> StoredUpload:
        row = await self._session.execute(
            sa.insert(uploads)
            .values(
                storage_key=upload.storage_key,
                organization_id=upload.organization_id,
                filename=upload.filename,
                size_bytes=upload.size_bytes,
                content_type=upload.content_type,
                created_by=upload.created_by,
            )
            .returning(*uploads.c)
        )
        return _upload(row.one())

    async def get(self, storage_key: str) -> StoredUpload | None:
        query = sa.select(uploads).where(uploads.c.storage_key == storage_key)
        row = (await self._session.execute(query)).one_or_none()
        return None if row is None else _upload(row)


def _upload(row: Any) -> StoredUpload:
    return StoredUpload(
        storage_key=row.storage_key,
        organization_id=str(row.organization_id),
        filename=row.filename,
        size_bytes=row.size_bytes,
        content_type=row.content_type,
        created_by=row.created_by,
        created_at=row.created_at,
    )
