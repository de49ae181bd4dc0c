"""The notification unit of work: the directory, notifications, preferences, webhooks and the delivery
tables on one transaction, events to its outbox (source `notification`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from bus.idempotency import first_delivery
from services.notification.domain.vocabulary import EVENT_SOURCE
from services.notification.store.directory import DirectoryRepository, PartiesRepository
from services.notification.store.emails import EmailRepository
from services.notification.store.notifications import NotificationRepository
from services.notification.store.preferences import PreferenceRepository
from services.notification.store.queue import DeliveryQueue
from services.notification.store.tables import SCHEMA
from services.notification.store.webhooks import WebhookRepository
from services.runtime.idempotency import idempotent
from services.runtime.uow import EventSink, Transactions, UnitOfWork


class NotificationUnitOfWork(UnitOfWork):
    def __init__(self, session: AsyncSession, sink: EventSink) -> None:
        super().__init__(session, sink)
        self.directory = DirectoryRepository(session)
        self.parties = PartiesRepository(session)
        self.notifications = NotificationRepository(session)
        self.preferences = PreferenceRepository(session)
        self.deliveries = DeliveryQueue(session)
        self.webhooks = WebhookRepository(session)
        self.emails = EmailRepository(session)

    async def once(self, scope: str, request_id: str, create: Callable[[], Awaitable[str]]) -> str:
        """Runs `create` (which answers a resource id) once per (scope, request_id) (AIP-155)."""
        return await idempotent(self.session, scope, request_id, create)

    async def first_delivery(self, consumer: str, event_id: str) -> bool:
        """True the first time `consumer` handles this event (the marker commits with the change)."""
        return await first_delivery(self.session, consumer, event_id, schema=SCHEMA)


NotificationTransactions = Transactions[NotificationUnitOfWork]


def transactions(engine: AsyncEngine) -> NotificationTransactions:
    """The factory the use cases hold."""
    return Transactions(engine, EventSink(EVENT_SOURCE, SCHEMA), NotificationUnitOfWork)
