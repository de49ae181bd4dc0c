"""The audit trail table: appended in hash-chain order, read as pages, histories or keyset batches."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.identity.domain import GENESIS_HASH, AuditEntry, AuditFilter
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

    async def page(self, page: PageRequest, where: AuditFilter) -> tuple[list[AuditEntry], int]:
        """Newest first."""
        query = _filtered(where)
        total = await self._session.scalar(sa.select(sa.func.count()).select_from(query.subquery())) or 0
        rows = await self._session.execute(
            query.order_by(audit_log.c.sequence.desc()).limit(page.page_size).offset(page.offset)
        )
        return [_entry(r) for r in rows], total

    async def history(
        self, page: PageRequest, *, target_type: str, target_id: str, organization_id: str | None
    ) -> tuple[list[AuditEntry], int]:
        """Oldest first: the entries about the object, and those naming it as `<target_type>_id` in their details."""
        about = sa.and_(audit_log.c.target_type == target_type, audit_log.c.target_id == target_id)
        naming = audit_log.c.details.contains({f"{target_type}_id": target_id})
        query = sa.select(audit_log).where(sa.or_(about, naming))
        if organization_id is not None:
            query = query.where(audit_log.c.organization_id == organization_id)
        total = await self._session.scalar(sa.select(sa.func.count()).select_from(query.subquery())) or 0
        rows = await self._session.execute(
            query.order_by(audit_log.c.sequence).limit(page.page_size).offset(page.offset)
        )
        return [_entry(r) for r in rows], total

    async def batch_after(self, sequence: int, limit: int, where: AuditFilter | None = None) -> list[AuditEntry]:
        """Up to `limit` entries after `sequence`, oldest first (keyset paging for walks and exports)."""
        query = _filtered(where) if where else sa.select(audit_log)
        rows = await self._session.execute(
            query.where(audit_log.c.sequence > sequence).order_by(audit_log.c.sequence).limit(limit)
        )
        return [_entry(r) for r in rows]

    async def everything(self) -> list[AuditEntry]:
        return [_entry(r) for r in await self._session.execute(sa.select(audit_log).order_by(audit_log.c.sequence))]


def _filtered(where: AuditFilter) -> sa.Select[Any]:
    query = sa.select(audit_log)
    if where.organization_id is not None:
        query = query.where(audit_log.c.organization_id == where.organization_id)
    if where.action_prefix:
        query = query.where(audit_log.c.action.startswith(where.action_prefix, autoescape=True))
    if where.target_type:
        query = query.where(audit_log.c.target_type == where.target_type)
    if where.target_id:
        query = query.where(audit_log.c.target_id == where.target_id)
    if where.actor_id:
        query = query.where(audit_log.c.actor_id == where.actor_id)
    if where.occurred_after:
        query = query.where(audit_log.c.occurred_at >= where.occurred_after)
    if where.occurred_before:
        query = query.where(audit_log.c.occurred_at < where.occurred_before)
    return query


def _entry(row: Any) -> AuditEntry:
    return AuditEntry(**{name: getattr(row, name) for name in AuditEntry.__dataclass_fields__})
