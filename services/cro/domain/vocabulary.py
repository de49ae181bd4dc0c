"""The words of the CRO domain (DOMAIN.md "CRO services and submissions"): submission statuses, the
actions people take on a submission, the system's own step, service types, the two sides, and the
molecule statuses a submission drives. Pure: no I/O, no grpc."""

from __future__ import annotations

from enum import StrEnum

EVENT_SOURCE = "cro"  # the `source` of every event this service records (bus subject prefix)


class SubmissionStatus(StrEnum):
    DRAFT = "DRAFT"
    SUBMITTED = "SUBMITTED"
    PENDING_REVIEW = "PENDING_REVIEW"
    PRICING_PROVIDED = "PRICING_PROVIDED"
    APPROVED = "APPROVED"
    IN_PROGRESS = "IN_PROGRESS"
    RESULTS_UPLOADED = "RESULTS_UPLOADED"
    RESULTS_REVIEWED = "RESULTS_REVIEWED"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"


class Action(StrEnum):
    """What a person does to a submission (DOMAIN.md's ten actions)."""

    SUBMIT = "SUBMIT"
    PROVIDE_PRICING = "PROVIDE_PRICING"
    APPROVE = "APPROVE"
    REJECT = "REJECT"
    REQUEST_CHANGES = "REQUEST_CHANGES"
    CANCEL = "CANCEL"
    START_EXPERIMENT = "START_EXPERIMENT"
    UPLOAD_RESULTS = "UPLOAD_RESULTS"
    REVIEW_RESULTS = "REVIEW_RESULTS"
    COMPLETE = "COMPLETE"


class SystemStep(StrEnum):
    """What the platform itself does: SUBMITTED → PENDING_REVIEW once the package is built and the CRO told."""

    PACKAGE_BUILT = "PACKAGE_BUILT"


Step = Action | SystemStep


class Operation(StrEnum):
    """Things people do to a submission that are not state transitions (they need a role all the same)."""

    CREATE = "CREATE"
    EDIT = "EDIT"
    POST_MESSAGE = "POST_MESSAGE"


class ServiceType(StrEnum):
    BINDING_ASSAY = "BINDING_ASSAY"
    ADME = "ADME"
    SOLUBILITY = "SOLUBILITY"
    PERMEABILITY = "PERMEABILITY"
    METABOLIC_STABILITY = "METABOLIC_STABILITY"
    TOXICITY = "TOXICITY"
    CUSTOM = "CUSTOM"


class Qualifier(StrEnum):
    """How a measured value relates to the truth: `<` and `>` are censored (the value is a bound)."""

    EQUAL = "="
    APPROXIMATE = "~"
    LESS = "<"
    GREATER = ">"


CENSORED = frozenset({Qualifier.LESS, Qualifier.GREATER})


class Side(StrEnum):
    """Which party of a submission someone acts for."""

    PHARMA = "PHARMA"
    CRO = "CRO"


class MoleculeStatus(StrEnum):
    """The molecule statuses a submission drives (the molecule service owns the molecule and consumes them)."""

    AVAILABLE = "AVAILABLE"
    PENDING = "PENDING"
    TESTING = "TESTING"
    RESULTS = "RESULTS"


# "Active" holds its molecules: a molecule is in at most one active submission.
ACTIVE = frozenset(
    {
        SubmissionStatus.SUBMITTED,
        SubmissionStatus.PENDING_REVIEW,
        SubmissionStatus.PRICING_PROVIDED,
        SubmissionStatus.APPROVED,
        SubmissionStatus.IN_PROGRESS,
        SubmissionStatus.RESULTS_UPLOADED,
        SubmissionStatus.RESULTS_REVIEWED,
    }
)
TERMINAL = frozenset({SubmissionStatus.COMPLETED, SubmissionStatus.CANCELLED, SubmissionStatus.REJECTED})
# The CRO sees a submission only once it was sent to it.
VISIBLE_TO_CRO = frozenset(SubmissionStatus) - {SubmissionStatus.DRAFT}

# Roles (DOMAIN.md "Roles"); the runtime's Principal knows the hierarchy and that system_admin passes.
PHARMA_SCIENTIST = "pharma_scientist"
PHARMA_ADMIN = "pharma_admin"
CRO_TECHNICIAN = "cro_technician"
CRO_ADMIN = "cro_admin"
SYSTEM_ADMIN = "system_admin"
SYSTEM_ACTOR = "system"  # the actor of the platform's own steps
