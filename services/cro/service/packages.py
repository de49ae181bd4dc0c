"""The package worker's use case: build the immutable package of a SUBMITTED submission, store it, and
take the system's step SUBMITTED → PENDING_REVIEW (SubmissionTransitioned + AuditRecorded).

The manifest is built only from facts fixed at SUBMIT (the molecules' snapshot and sample codes, the
specifications, the documents the SUBMIT recorded in the work item), so its bytes and SHA-256 are the
same however often it is built. The bytes go to object storage under a key named by the hash before
the transaction that records the package and moves the submission: a crash in between rewrites the
same bytes under the same key; a redelivery after the commit finds the submission past SUBMITTED and
changes nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

from molbridge.events.v1 import cro_pb2

from services.cro.domain import submissions as domain
from services.cro.domain.packages import MEDIA_TYPE, Package, PackagedDocument, PackagedMolecule, build_package
from services.cro.domain.vocabulary import SubmissionStatus
from services.cro.store.packages import StoredPackage
from services.cro.store.uow import CroTransactions, CroUnitOfWork
from services.runtime.auth import Principal
from services.runtime.document_client import DocumentFingerprint
from services.runtime.errors import NotFoundError
from services.runtime.storage import ObjectStorage

# Stores a step's domain events and records their bus and audit events (SubmissionService.record).
Recorder = Callable[[CroUnitOfWork, domain.Submission, Sequence[domain.Event], Principal | None], Awaitable[None]]


def package_request(submission_id: str, documents: Sequence[DocumentFingerprint]) -> cro_pb2.SubmissionPackageRequested:
    """The work item SUBMIT enqueues: the submission and its documents' versions and hashes at SUBMIT."""
    return cro_pb2.SubmissionPackageRequested(
        submission_id=submission_id,
        documents=[
            cro_pb2.PackagedDocument(
                document_id=d.document_id, document_type=d.document_type, version=d.version, sha256=d.sha256
            )
            for d in documents
        ],
    )


class PackageBuilder:
    def __init__(
        self,
        uow: CroTransactions,
        storage: ObjectStorage,
        record: Recorder,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._uow = uow
        self._storage = storage
        self._record = record
        self._clock = clock

    async def build(self, request: cro_pb2.SubmissionPackageRequested) -> bool:
        """Builds the package once; False when no such submission exists (the item can never succeed)."""
        try:
            package = await self.prepare(request)
        except NotFoundError:
            return False
        if package is None:
            return True  # built already (a redelivery), or cancelled or rejected before it was
        await self._storage.put_bytes(package.storage_key, package.data, MEDIA_TYPE)
        async with self._uow() as uow:
            submission = await uow.submissions.get(request.submission_id, lock=True)
            if submission is None or submission.status is not SubmissionStatus.SUBMITTED:
                return True  # moved on meanwhile (a cancel, another worker): nothing to record
            at = self._clock()
            await uow.packages.add(StoredPackage(submission.id, package.sha256, package.storage_key, at))
            events = submission.package_built(package_sha256=package.sha256, at=at)
            await uow.submissions.save(submission)
            await self._record(uow, submission, events, None)
        return True

    async def prepare(self, request: cro_pb2.SubmissionPackageRequested) -> Package | None:
        """The package the item describes, built and not stored: None once the submission is past SUBMITTED;
        NotFoundError when there is no such submission."""
        async with self._uow() as uow:
            submission = await uow.submissions.get(request.submission_id)
            if submission is None:
                raise NotFoundError(f"submission {request.submission_id} not found", detail="SUBMISSION_NOT_FOUND")
            if submission.status is not SubmissionStatus.SUBMITTED:
                return None
            rows = await uow.submissions.molecules(submission.id)
            service = await uow.catalogue.get(submission.service_id)
        return build_package(
            submission,
            service_name=service.name if service else "",
            molecules=[
                PackagedMolecule(
                    molecule_id=row.molecule_id,
                    sample_code=row.sample_code,
                    registration_number=row.snapshot.registration_number,
                    smiles=row.snapshot.canonical_smiles,
                    inchi_key=row.snapshot.inchi_key,
                    formula=row.snapshot.formula,
                    molecular_weight=row.snapshot.molecular_weight,
                    concentration=row.concentration,
                    notes=row.notes,
                )
                for row in rows
            ],
            documents=[
                PackagedDocument(d.document_id, d.document_type, d.version, d.sha256) for d in request.documents
            ],
        )
