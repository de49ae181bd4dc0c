"""The document service as another service sees it: a gRPC client of GetDocumentRequirements, GetDocument
(which submission a referenced document belongs to) and the internal ShareSubmissionDocuments, called with
the caller's own credentials so the document service applies its organization scoping and sharing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc
from molbridge.document.v1 import document_service_pb2 as pb
from molbridge.document.v1 import document_service_pb2_grpc as pb_grpc

from services.runtime import telemetry
from services.runtime.db import canonical_uuid
from services.runtime.peer_errors import peer_error

CALL_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class DocumentRequirement:
    document_type: str  # Document.Type name, e.g. "NON_DISCLOSURE_AGREEMENT"
    signature_required: bool
    document_id: str
    present: bool
    signed_by_owner: bool
    signed_by_counterparty: bool
    satisfied: bool


@dataclass(frozen=True)
class DocumentRequirements:
    submission_id: str
    requirements: tuple[DocumentRequirement, ...]
    complete: bool

    def of(self, document_type: str) -> DocumentRequirement | None:
        return next((r for r in self.requirements if r.document_type == document_type), None)

    @property
    def missing(self) -> tuple[str, ...]:
        """Required types with no present document."""
        return tuple(r.document_type for r in self.requirements if not r.present)

    @property
    def unsigned(self) -> tuple[str, ...]:
        """Present documents that need the owner's signature and lack it."""
        return tuple(
            r.document_type for r in self.requirements if r.present and r.signature_required and not r.signed_by_owner
        )


@dataclass(frozen=True)
class DocumentFingerprint:
    """Which version of a document is current, and the SHA-256 of its bytes (a submission package records them)."""

    document_id: str
    document_type: str  # Document.Type name
    version: int
    sha256: str


class DocumentClient:
    def __init__(self, address: str) -> None:
        self._channel = telemetry.traced_channel(address)
        self._stub = pb_grpc.DocumentServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def requirements(
        self,
        credentials: Mapping[str, str],
        submission_id: str,
        service_type: str,
        *,
        include_service_agreement: bool = False,
    ) -> DocumentRequirements:
        """Which documents the submission needs for the service type, which are present and signed."""
        try:
            reply = await self._stub.GetDocumentRequirements(
                pb.GetDocumentRequirementsRequest(
                    submission_id=submission_id,
                    service_type=service_type,
                    include_service_agreement=include_service_agreement,
                ),
                metadata=tuple(credentials.items()),
                timeout=CALL_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError as error:
            raise peer_error(error, "document") from error
        data = reply.data
        return DocumentRequirements(
            submission_id=data.submission_id,
            requirements=tuple(
                DocumentRequirement(
                    document_type=pb.Document.Type.Name(r.document_type),
                    signature_required=r.signature_required,
                    document_id=r.document_id,
                    present=r.present,
                    signed_by_owner=r.signed_by_owner,
                    signed_by_counterparty=r.signed_by_counterparty,
                    satisfied=r.satisfied,
                )
                for r in data.requirements
            ),
            complete=data.complete,
        )

    async def share(
        self,
        credentials: Mapping[str, str],
        submission_id: str,
        owner_organization_id: str,
        cro_organization_id: str,
        *,
        shared: bool = True,
    ) -> int:
        """Lets the CRO organization read and sign the owner's documents of the submission (or takes it away)."""
        try:
            reply = await self._stub.ShareSubmissionDocuments(
                pb.ShareSubmissionDocumentsRequest(
                    submission_id=submission_id,
                    owner_organization_id=owner_organization_id,
                    cro_organization_id=cro_organization_id,
                    shared=shared,
                ),
                metadata=tuple(credentials.items()),
                timeout=CALL_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError as error:
            raise peer_error(error, "document") from error
        return reply.documents

    async def submission_of(self, document_id: str, credentials: Mapping[str, str]) -> str | None:
        """The submission id of a document the caller may read ("" for none); None when the caller cannot
        read it (or `document_id` is no document id) — the document service's visibility decides."""
        if canonical_uuid(document_id) is None:
            return None
        try:
            reply = await self._stub.GetDocument(
                pb.GetDocumentRequest(id=document_id), metadata=tuple(credentials.items()), timeout=CALL_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as error:
            if error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                return None
            raise peer_error(error, "document") from error
        return reply.data.submission_id

    async def fingerprints(
        self, credentials: Mapping[str, str], document_ids: Sequence[str]
    ) -> list[DocumentFingerprint]:
        """The current version and SHA-256 of each document (the caller must be able to read them)."""
        found = []
        for document_id in document_ids:
            try:
                reply = await self._stub.GetDocument(
                    pb.GetDocumentRequest(id=document_id), metadata=tuple(credentials.items()), timeout=CALL_TIMEOUT_S
                )
            except grpc.aio.AioRpcError as error:
                raise peer_error(error, "document") from error
            document = reply.data
            found.append(
                DocumentFingerprint(
                    document_id=document.id,
                    document_type=pb.Document.Type.Name(document.document_type),
                    version=document.current.version,
                    sha256=document.current.sha256,
                )
            )
        return found
