"""The audit trail table: appended in hash-chain order, read as pages or whole."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.identity.domain import GENESIS_HASH, AuditEntry
from services.identity.store.tables import audit_log
from services.runtime.pagination import PageRequest


class AuditLog:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def lock_for_append(self) -> None:
        """One writer at a time keeps the chain linear (held until the transaction ends)."""
        await self._session.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext("identity:audit"))))

    async def contains(self, entry_id: str) -> bool:
        return bool(await self._session.scalar(sa.select(audit_log.c.id).where(audit_log.c.id == entry_id)))

    async def last_link(self) -> tuple[int, bytes]:
        """The last entry's sequence and hash (0 and the genesis hash for an empty trail)."""
        last = (
            await self._session.execute(
                sa.select(audit_log.c.sequence, audit_log.c.hash).order_by(audit_log.c.sequence.desc()).limit(1)
            )
        ).first()
        return (last.sequence, last.hash) if last else (0, GENESIS_HASH)

    async def append(self, entry: AuditEntry) -> None:
        row = {name: getattr(entry, name) for name in entry.__dataclass_fields__}
        await self._session.execute(insert(audit_log).values(**row).on_conflict_do_nothing())

    async def page(
        self, page: PageRequest, *, organization_id: str | None, action_prefix: str, target_id: str
    ) -> tuple[list[AuditEntry], int]:
        """Newest first; `organization_id` None means every organization."""
        query = sa.select(audit_log)
        if organization_id is not None:
            query = query.where(audit_log.c.organization_id == organization_id)
        if action_prefix:
            query = query.where(audit_log.c.action.startswith(action_prefix, autoescape=True))
        if target_id:
            query = query.where(audit_log.c.target_id == target_id)
        total = await self._session.scalar(sa.select(sa.func.count()).select_from(query.subquery())) or 0
        rows = await self._session.execute(
            query.order_by(audit_log.c.sequence.desc()).limit(page.page_size).offset(page.offset)
        )
        return [_entry(r) for r in rows], total

    async def everything(self) -> list[AuditEntry]:
        return [_entry(r) for r in await self._session.execute(sa.select(audit_log).order_by(audit_log.c.sequence))]


def _entry(row: Any) -> AuditEntry:
    return AuditEntry(**{name: getattr(row, name) for name in AuditEntry.__dataclass_fields__})
