"""Submission use cases (filled in below the skeleton)."""

from __future__ import annotations

from services.cro.service.ports import DocumentRequirementsPort, MoleculeLookup
from services.cro.store.uow import CroTransactions
from services.runtime.storage import ObjectStorage


class SubmissionService:
    def __init__(
        self,
        uow: CroTransactions,
        molecules: MoleculeLookup,
        documents: DocumentRequirementsPort,
        storage: ObjectStorage,
    ) -> None:
        self._uow = uow
        self._molecules = molecules
        self._documents = documents
        self._storage = storage
