"""The prediction service's storage: tables, repositories and the unit of work binding them. The
only place that speaks SQL."""

from services.prediction.store.tables import SCHEMA, batches, jobs, metadata, results
from services.prediction.store.uow import PredictionUnitOfWork, transactions

__all__ = ["SCHEMA", "PredictionUnitOfWork", "batches", "jobs", "metadata", "results", "transactions"]
