"""The notification service's storage: tables, repositories and the unit of work binding them. The only
place that speaks SQL."""

from services.notification.store.tables import SCHEMA, metadata
from services.notification.store.uow import NotificationTransactions, NotificationUnitOfWork, transactions

__all__ = ["SCHEMA", "NotificationTransactions", "NotificationUnitOfWork", "metadata", "transactions"]
