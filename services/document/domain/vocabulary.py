"""The words of the document domain (DOMAIN.md "Documents"): types, statuses, and which types need a
signature or are required for a submission. Pure: no I/O, no grpc."""

from __future__ import annotations

from enum import StrEnum


class DocumentType(StrEnum):
    MATERIAL_TRANSFER_AGREEMENT = "MATERIAL_TRANSFER_AGREEMENT"
    NON_DISCLOSURE_AGREEMENT = "NON_DISCLOSURE_AGREEMENT"
    EXPERIMENT_SPECIFICATION = "EXPERIMENT_SPECIFICATION"
    SERVICE_AGREEMENT = "SERVICE_AGREEMENT"
    RESULTS_REPORT = "RESULTS_REPORT"
    QUALITY_CONTROL = "QUALITY_CONTROL"
    ADDITIONAL_INSTRUCTIONS = "ADDITIONAL_INSTRUCTIONS"
    SAFETY_DATA_SHEET = "SAFETY_DATA_SHEET"


class DocumentStatus(StrEnum):
    DRAFT = "DRAFT"
    PENDING_SIGNATURE = "PENDING_SIGNATURE"
    SIGNED = "SIGNED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"
    ARCHIVED = "ARCHIVED"


class EnvelopeStatus(StrEnum):
    """A signature request's status (DocuSign's envelope words; the built-in signer uses the same)."""

    CREATED = "CREATED"
    SENT = "SENT"
    DELIVERED = "DELIVERED"
    SIGNED = "SIGNED"
    COMPLETED = "COMPLETED"
    DECLINED = "DECLINED"
    VOIDED = "VOIDED"
    EXPIRED = "EXPIRED"


FINISHED_ENVELOPES = frozenset(
    {EnvelopeStatus.COMPLETED, EnvelopeStatus.DECLINED, EnvelopeStatus.VOIDED, EnvelopeStatus.EXPIRED}
)


class SignerStatus(StrEnum):
    WAITING = "WAITING"  # an earlier routing order has not finished
    SENT = "SENT"  # their turn
    DELIVERED = "DELIVERED"  # opened (DocuSign)
    SIGNED = "SIGNED"
    DECLINED = "DECLINED"


class SignatureMeaning(StrEnum):
    """What a signature means (21 CFR 11.50(a)(3))."""

    APPROVED = "approved"
    REVIEWED = "reviewed"
    AUTHOR = "author"


class Provider(StrEnum):
    BUILTIN = "builtin"
    DOCUSIGN = "docusign"


class VersionOrigin(StrEnum):
    UPLOAD = "upload"
    GENERATED = "generated"
    SIGNED = "signed"  # built in: signature page + PAdES seal added
    DOCUSIGN = "docusign"  # the completed envelope's document


SIGNATURE_REQUIRED = frozenset(
    {
        DocumentType.MATERIAL_TRANSFER_AGREEMENT,
        DocumentType.NON_DISCLOSURE_AGREEMENT,
        DocumentType.SERVICE_AGREEMENT,
    }
)

# Required for every submission; the safety data sheet too for these CRO service types.
REQUIRED_FOR_EVERY_SUBMISSION = (
    DocumentType.MATERIAL_TRANSFER_AGREEMENT,
    DocumentType.NON_DISCLOSURE_AGREEMENT,
    DocumentType.EXPERIMENT_SPECIFICATION,
)
SDS_SERVICE_TYPES = frozenset({"ADME", "TOXICITY"})
SERVICE_TYPES = frozenset(
    {"BINDING_ASSAY", "ADME", "SOLUBILITY", "PERMEABILITY", "METABOLIC_STABILITY", "TOXICITY", "CUSTOM"}
)
# Signed by both sides before START_EXPERIMENT (the CRO section of DOMAIN.md).
SIGNED_BY_BOTH_SIDES = frozenset({DocumentType.SERVICE_AGREEMENT})

# Roles (DOMAIN.md "Roles"); the runtime's Principal knows the hierarchy.
DOCUMENT_WRITERS = ("pharma_scientist", "cro_technician")  # upload, generate, edit their organization's
DOCUMENT_READERS = ("pharma_scientist", "cro_technician", "auditor")
SIGNATURE_REQUESTERS = ("pharma_scientist", "cro_technician")


def required_documents(service_type: str) -> tuple[DocumentType, ...]:
    """The document types a submission to a service of this type needs (DOMAIN.md)."""
    extra = (DocumentType.SAFETY_DATA_SHEET,) if service_type in SDS_SERVICE_TYPES else ()
    return REQUIRED_FOR_EVERY_SUBMISSION + extra
