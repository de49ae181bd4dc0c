"""Identity's unit of work: its repositories on one transaction, its events to its outbox."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from services.identity.store.api_keys import ApiKeyRepository
from services.identity.store.audit_log import AuditLog
from services.identity.store.organizations import OrganizationRepository
from services.identity.store.sessions import PasswordResetRepository, SessionRepository
from services.identity.store.tables import SCHEMA
from services.identity.store.users import UserRepository
from services.runtime.idempotency import idempotent
from services.runtime.uow import EventSink, Transactions, UnitOfWork

EVENT_SOURCE = "identity"


class IdentityUnitOfWork(UnitOfWork):
    def __init__(self, session: AsyncSession, sink: EventSink) -> None:
        super().__init__(session, sink)
        self.users = UserRepository(session)
        self.organizations = OrganizationRepository(session)
        self.sessions = SessionRepository(session)
        self.password_resets = PasswordResetRepository(session)
        self.api_keys = ApiKeyRepository(session)
        self.audit_log = AuditLog(session)

    async def serialize(self, name: str) -> None:
        """Holds a lock named `name` until the transaction ends (first-start and key bootstrap)."""
        await self.session.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(f"identity:{name}"))))

    async def once(self, scope: str, request_id: str, create: Callable[[], Awaitable[str]]) -> str:
        """Runs `create` once per (scope, request_id) (AIP-155); returns the created id."""
        return await idempotent(self.session, scope, request_id, create)


def identity_transactions(engine: AsyncEngine) -> Transactions[IdentityUnitOfWork]:
    return Transactions(engine, EventSink(EVENT_SOURCE, SCHEMA), IdentityUnitOfWork)
