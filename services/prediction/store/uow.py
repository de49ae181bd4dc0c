"""The prediction unit of work: jobs, batches and results on one transaction, events to its outbox."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from services.prediction.store.repositories import BatchRepository, JobRepository, ResultRepository
from services.prediction.store.tables import SCHEMA
from services.runtime.uow import EventSink, Transactions, UnitOfWork

EVENT_SOURCE = "prediction"  # the bus source of every event this service records


class PredictionUnitOfWork(UnitOfWork):
    def __init__(self, session: AsyncSession, sink: EventSink) -> None:
        super().__init__(session, sink)
        self.jobs = JobRepository(session)
        self.batches = BatchRepository(session)
        self.results = ResultRepository(session)


def transactions(engine: AsyncEngine) -> Transactions[PredictionUnitOfWork]:
    """The factory the use cases hold."""
    return Transactions(engine, EventSink(EVENT_SOURCE, SCHEMA), PredictionUnitOfWork)
