"""The document service's storage: tables, the repository and the unit of work binding them. The
only place that speaks SQL."""

from services.document.store.tables import SCHEMA, document_versions, documents, metadata, submission_shares
from services.document.store.uow import DocumentTransactions, DocumentUnitOfWork, transactions

__all__ = [
    "SCHEMA",
    "DocumentTransactions",
    "DocumentUnitOfWork",
    "document_versions",
    "documents",
    "metadata",
    "submission_shares",
    "transactions",
]
