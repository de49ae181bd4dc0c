"""The document unit of work: documents, versions and shares on one transaction, events to its outbox."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from bus.idempotency import first_delivery
from services.document.store.documents import DocumentRepository
from services.document.store.signatures import SignatureRepository
from services.document.store.tables import SCHEMA
from services.runtime.uow import EventSink, Transactions, UnitOfWork

EVENT_SOURCE = "document"  # the bus source of every event this service records


class DocumentUnitOfWork(UnitOfWork):
    def __init__(self, session: AsyncSession, sink: EventSink) -> None:
        super().__init__(session, sink)
        self.documents = DocumentRepository(session)
        self.signatures = SignatureRepository(session)

    async def first_delivery(self, consumer: str, event_id: str) -> bool:
        """True the first time `consumer` handles this event (the marker commits with the change)."""
        return await first_delivery(self.session, consumer, event_id, schema=SCHEMA)


DocumentTransactions = Transactions[DocumentUnitOfWork]


def transactions(engine: AsyncEngine) -> DocumentTransactions:
    """The factory the use cases hold."""
    return Transactions(engine, EventSink(EVENT_SOURCE, SCHEMA), DocumentUnitOfWork)
