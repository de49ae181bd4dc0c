"""The CRO unit of work: catalogue, submissions, packages, messages and results on one transaction, events to its
outbox (source `cro`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from bus.idempotency import first_delivery
from services.cro.domain.vocabulary import EVENT_SOURCE
from services.cro.store.catalogue import CatalogueRepository
from services.cro.store.comparisons import ComparisonRepository
from services.cro.store.messages import MessageRepository
from services.cro.store.packages import PackageRepository
from services.cro.store.results import ResultRepository
from services.cro.store.submissions import SubmissionRepository
from services.cro.store.tables import SCHEMA
from services.runtime.idempotency import idempotent
from services.runtime.uow import EventSink, Transactions, UnitOfWork


class CroUnitOfWork(UnitOfWork):
    def __init__(self, session: AsyncSession, sink: EventSink) -> None:
        super().__init__(session, sink)
        self.catalogue = CatalogueRepository(session)
        self.submissions = SubmissionRepository(session)
        self.packages = PackageRepository(session)
        self.messages = MessageRepository(session)
        self.results = ResultRepository(session)
        self.comparisons = ComparisonRepository(session)

    async def once(self, scope: str, request_id: str, create: Callable[[], Awaitable[str]]) -> str:
        """Runs `create` (which answers a resource id) once per (scope, request_id) (AIP-155)."""
        return await idempotent(self.session, scope, request_id, create)

    async def first_delivery(self, consumer: str, event_id: str) -> bool:
        """True the first time `consumer` handles this event (the marker commits with the change)."""
        return await first_delivery(self.session, consumer, event_id, schema=SCHEMA)


CroTransactions = Transactions[CroUnitOfWork]


def transactions(engine: AsyncEngine) -> CroTransactions:
    """The factory the use cases hold."""
    return Transactions(engine, EventSink(EVENT_SOURCE, SCHEMA), CroUnitOfWork)
