"""The CRO service's storage: tables, repositories and the unit of work binding them. The only place
that speaks SQL."""

from services.cro.store.tables import SCHEMA, metadata
from services.cro.store.uow import CroTransactions, CroUnitOfWork, transactions

__all__ = ["SCHEMA", "CroTransactions", "CroUnitOfWork", "metadata", "transactions"]
