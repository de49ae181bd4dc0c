"""Submission package rows: the SHA-256 and storage key of the immutable manifest written after SUBMIT."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.cro.store.tables import submission_packages
from services.runtime.db import canonical_uuid

_p = submission_packages.c


@dataclass(frozen=True)
class StoredPackage:
    submission_id: str
    sha256: str
    storage_key: str
    built_at: datetime | None = None


class PackageRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, submission_id: str) -> StoredPackage | None:
        key = canonical_uuid(submission_id)
        if key is None:
            return None
        row = (await self._session.execute(sa.select(submission_packages).where(_p.submission_id == key))).one_or_none()
        return StoredPackage(str(row.submission_id), row.sha256, row.storage_key, row.built_at) if row else None

    async def add(self, package: StoredPackage) -> bool:
        """Stores the package once per submission; False when one is stored already (kept as it is)."""
        values: dict[str, object] = {
            "submission_id": package.submission_id,
            "sha256": package.sha256,
            "storage_key": package.storage_key,
        }
        if package.built_at is not None:
            values["built_at"] = package.built_at
        done = await self._session.execute(
            insert(submission_packages).values(**values).on_conflict_do_nothing().returning(_p.submission_id)
        )
        return done.first() is not None
