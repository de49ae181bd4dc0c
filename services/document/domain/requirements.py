"""Which documents a submission needs for a CRO service type, and which of them are present and signed
(GetDocumentRequirements; the CRO workflow gates SUBMIT and START_EXPERIMENT on it). Pure: no I/O.

Who signed a document comes from the store as a set of organization ids per document
(`SubmissionDocument.signed_by`): the signature tables fill it; a SIGNED document without signature
records counts as signed by its own organization.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from services.document.domain.vocabulary import (
    SERVICE_TYPES,
    SIGNATURE_REQUIRED,
    DocumentStatus,
    DocumentType,
    required_documents,
)
from services.runtime.errors import ValidationError

NOT_PRESENT = frozenset({DocumentStatus.EXPIRED, DocumentStatus.ARCHIVED})


@dataclass(frozen=True)
class SubmissionDocument:
    """A document of the submission as the requirements see it."""

    id: str
    organization_id: str
    document_type: DocumentType
    status: DocumentStatus
    created_at: datetime
    signed_by: frozenset[str] = frozenset()  # organizations that signed it (the signature tables)

    @property
    def present(self) -> bool:
        return self.status not in NOT_PRESENT


@dataclass(frozen=True)
class Requirement:
    document_type: DocumentType
    signature_required: bool
    document_id: str  # "" when the submission has no document of the type
    present: bool
    signed_by_owner: bool
    signed_by_counterparty: bool
    satisfied: bool


@dataclass(frozen=True)
class Requirements:
    submission_id: str
    requirements: tuple[Requirement, ...]

    @property
    def complete(self) -> bool:
        return all(requirement.satisfied for requirement in self.requirements)


def check_service_type(service_type: str) -> str:
    value = service_type.strip().upper()
    if value not in SERVICE_TYPES:
        accepted = ", ".join(sorted(SERVICE_TYPES))
        problem = "required" if not value else f"unknown service type {service_type!r}; accepted: {accepted}"
        raise ValidationError(f"service_type: {problem}", field_violations=[("service_type", problem)])
    return value


def requirements(
    submission_id: str,
    service_type: str,
    documents: Sequence[SubmissionDocument],
    *,
    owner_organization_id: str,
    counterparty_organization_id: str = "",
    include_service_agreement: bool = False,
) -> Requirements:
    """One requirement per type the service type needs. The owner is the pharma organization of the
    submission, the counterparty its CRO ("" while the submission is not shared with one)."""
    found = []
    wanted = required_documents(check_service_type(service_type))
    if include_service_agreement:  # START_EXPERIMENT's gate: signed by both sides
        wanted += (DocumentType.SERVICE_AGREEMENT,)
    for document_type in wanted:
        document = _chosen([d for d in documents if d.document_type is document_type])
        signature_required = document_type in SIGNATURE_REQUIRED
        present = document is not None and document.present
        by_owner = present and document is not None and owner_organization_id in document.signed_by
        by_counterparty = (
            present
            and document is not None
            and bool(counterparty_organization_id)
            and counterparty_organization_id in document.signed_by
        )
        found.append(
            Requirement(
                document_type=document_type,
                signature_required=signature_required,
                document_id=document.id if document else "",
                present=present,
                signed_by_owner=by_owner,
                signed_by_counterparty=by_counterparty,
                satisfied=present and (by_owner or not signature_required),
            )
        )
    return Requirements(submission_id=submission_id, requirements=tuple(found))


def _chosen(candidates: Sequence[SubmissionDocument]) -> SubmissionDocument | None:
    """The most recent present document of the type, else the most recent one."""
    newest_first = sorted(candidates, key=lambda d: d.created_at, reverse=True)
    return next((d for d in newest_first if d.present), newest_first[0] if newest_first else None)
