"""Result versions (issue 12): who may upload, change, withdraw and review a submission's results, and when.
Pure: no I/O.

A version is one processed upload: PENDING → PROCESSING → COMPLETED | FAILED (the worker), then the pharma
side's review (ACCEPTED keeps it COMPLETED, REJECTED makes it REJECTED). The current version is the one that
counts for the submission: the latest COMPLETED one not withdrawn; a new COMPLETED version supersedes it.

Decisions:
- A caller outside both organizations meets 404 (as for submissions); a party without the role meets 403.
- Uploading (processing a file) needs the submission IN_PROGRESS or RESULTS_UPLOADED; in RESULTS_UPLOADED a
  reviewed-and-accepted version would make a new upload pointless, but the submission is RESULTS_REVIEWED then.
- The CRO changes notes / QC flag or withdraws only before the review, and not while the worker has it.
- Only the current COMPLETED version not yet reviewed can be reviewed; REJECTED needs a reason.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from services.cro.domain.packages import canonical_json
from services.cro.domain.submissions import Submission
from services.cro.domain.vocabulary import CRO_TECHNICIAN, PHARMA_SCIENTIST, Side, SubmissionStatus
from services.runtime.auth import Principal
from services.runtime.errors import AuthorizationError, NotFoundError, PreconditionError, ValidationError

MAX_NOTES = 4000
MAX_REASON = 2000


class ResultStatus(StrEnum):
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    REJECTED = "REJECTED"


class QcFlag(StrEnum):
    PASSED = "PASSED"
    WARNING = "WARNING"
    FAILED = "FAILED"


class Decision(StrEnum):
    ACCEPTED = "ACCEPTED"
    REJECTED = "REJECTED"


class Mode(StrEnum):
    KEEP_VALID = "keep_valid"
    REJECT_ALL = "reject_all"


UPLOAD_STATES = frozenset({SubmissionStatus.IN_PROGRESS, SubmissionStatus.RESULTS_UPLOADED})
IN_WORK = frozenset({ResultStatus.PENDING, ResultStatus.PROCESSING})


def parse_mode(text: str) -> Mode:
    value = text.strip().lower() or Mode.KEEP_VALID.value
    if value not in {m.value for m in Mode}:
        problem = f"one of {', '.join(m.value for m in Mode)}"
        raise ValidationError(f"mode: {problem}", field_violations=[("mode", problem)])
    return Mode(value)


def input_sha256(file_sha256: str, mapping: Mapping[str, str], column_units: Mapping[str, str], mode: Mode) -> str:
    """What makes two ProcessResults the same: the file's bytes, the mapping, the units given and the mode."""
    payload = {"file": file_sha256, "mapping": dict(mapping), "column_units": dict(column_units), "mode": mode.value}
    return hashlib.sha256(canonical_json(payload)).hexdigest()


def not_found(result_id: str) -> NotFoundError:
    return NotFoundError(f"result {result_id} not found", detail="RESULT_NOT_FOUND")


def side_of(principal: Principal, organization_id: str, cro_organization_id: str) -> Side | None:
    if principal.organization_id == organization_id:
        return Side.PHARMA
    if principal.organization_id == cro_organization_id:
        return Side.CRO
    return None


def _require(principal: Principal, side: Side | None, wanted: Side, role: str, what: str) -> None:
    if side is wanted and principal.has_any_role(role) or principal.is_system_admin:
        return
    holders = f"{role} or above of the {'CRO' if wanted is Side.CRO else 'pharma'} organization"
    raise AuthorizationError(f"only a {holders} may {what}", detail="RESULT_ROLE", metadata={"rule": holders})


def check_upload(principal: Principal, submission: Submission) -> None:
    """The CRO side (cro_technician and up) of the submission, IN_PROGRESS or RESULTS_UPLOADED."""
    side = submission.side_of(principal)
    if side is None and not principal.is_system_admin:
        raise NotFoundError(f"submission {submission.id} not found", detail="SUBMISSION_NOT_FOUND")
    _require(principal, side, Side.CRO, CRO_TECHNICIAN, "upload results")
    if submission.status not in UPLOAD_STATES:
        raise PreconditionError(
            f"a {submission.status} submission does not take results: only IN_PROGRESS or RESULTS_UPLOADED does",
            detail="SUBMISSION_STATE",
            metadata={"status": submission.status.value},
        )


@dataclass
class ResultVersion:
    id: str
    submission_id: str
    organization_id: str  # pharma
    cro_organization_id: str
    version: int
    status: ResultStatus
    storage_key: str
    file_sha256: str
    input_sha256: str
    mode: Mode
    uploaded_by: str
    filename: str = ""
    mapping: dict[str, str] = field(default_factory=dict)
    column_units: dict[str, str] = field(default_factory=dict)
    current: bool = False
    superseded_by: str = ""
    withdrawn: bool = False
    format: str = ""
    content_sha256: str = ""
    total_rows: int = 0
    processed_rows: int = 0
    values_accepted: int = 0
    rows_rejected: int = 0
    error_count: int = 0
    qc: dict[str, Any] = field(default_factory=dict)
    qc_flag: str = ""
    qc_note: str = ""
    notes: str = ""
    failure_reason: str = ""
    review_decision: str = ""
    review_reason: str = ""
    reviewed_by: str = ""
    reviewed_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    finished_at: datetime | None = None
    submission_name: str = ""  # read along, for the views

    @property
    def final(self) -> bool:
        return self.status not in IN_WORK

    @property
    def reviewed(self) -> bool:
        return bool(self.review_decision)

    def side_of(self, principal: Principal) -> Side | None:
        return side_of(principal, self.organization_id, self.cro_organization_id)

    def visible_to(self, principal: Principal) -> bool:
        return principal.is_system_admin or self.side_of(principal) is not None

    def _check_cro_change(self, principal: Principal, what: str) -> None:
        _require(principal, self.side_of(principal), Side.CRO, CRO_TECHNICIAN, what)
        if self.reviewed:
            raise PreconditionError(
                f"result {self.id} was reviewed ({self.review_decision}): it can no longer be changed",
                detail="RESULT_REVIEWED",
            )
        if self.withdrawn:
            raise PreconditionError(f"result {self.id} was withdrawn", detail="RESULT_WITHDRAWN")
        if not self.final:
            raise PreconditionError(
                f"result {self.id} is {self.status}: wait until it is processed", detail="RESULT_PROCESSING"
            )

    def update(
        self, principal: Principal, *, notes: str | None, qc_flag: QcFlag | None, qc_note: str, at: datetime
    ) -> list[str]:
        """The CRO's notes and QC flag (a flag needs a note); answers the fields changed."""
        self._check_cro_change(principal, "change a result")
        violations = []
        if notes is not None and len(notes) > MAX_NOTES:
            violations.append(("notes", f"at most {MAX_NOTES} characters"))
        if qc_flag is not None and not qc_note.strip():
            violations.append(("qc_note", "required with qc_flag: say why the QC flag is set"))
        if len(qc_note) > MAX_NOTES:
            violations.append(("qc_note", f"at most {MAX_NOTES} characters"))
        if violations:
            raise ValidationError(
                "the change is not valid: " + "; ".join(f"{n}: {p}" for n, p in violations),
                field_violations=violations,
            )
        changed: list[str] = []
        if notes is not None and notes.strip() != self.notes:
            self.notes, changed = notes.strip(), [*changed, "notes"]
        if qc_flag is not None and (qc_flag.value, qc_note.strip()) != (self.qc_flag, self.qc_note):
            self.qc_flag, self.qc_note, changed = qc_flag.value, qc_note.strip(), [*changed, "qc_flag"]
        if changed:
            self.updated_at = at
        return changed

    def withdraw(self, principal: Principal, *, at: datetime) -> bool:
        """Withdrawn (kept in the history, no longer current); False when it already was (a retried call)."""
        if self.withdrawn:
            _require(principal, self.side_of(principal), Side.CRO, CRO_TECHNICIAN, "withdraw a result")
            return False
        self._check_cro_change(principal, "withdraw a result")
        self.withdrawn, self.current, self.updated_at = True, False, at
        return True

    def review(self, principal: Principal, *, decision: Decision, reason: str, at: datetime) -> None:
        """The pharma side's decision on the current COMPLETED version not yet reviewed."""
        _require(principal, self.side_of(principal), Side.PHARMA, PHARMA_SCIENTIST, "review results")
        reason = reason.strip()
        if decision is Decision.REJECTED and not reason:
            raise ValidationError(
                "reason: required when rejecting results", field_violations=[("reason", "required when rejecting")]
            )
        if len(reason) > MAX_REASON:
            raise ValidationError(
                f"reason: at most {MAX_REASON} characters", field_violations=[("reason", f"at most {MAX_REASON}")]
            )
        if self.reviewed:
            raise PreconditionError(
                f"result {self.id} was already reviewed ({self.review_decision})", detail="RESULT_REVIEWED"
            )
        if self.status is not ResultStatus.COMPLETED or not self.current:
            raise PreconditionError(
                f"result {self.id} is {'not current' if self.status is ResultStatus.COMPLETED else self.status}:"
                " only the submission's current COMPLETED version can be reviewed",
                detail="RESULT_STATE",
                metadata={"status": self.status.value, "current": str(self.current).lower()},
            )
        self.review_decision, self.review_reason = decision.value, reason
        self.reviewed_by, self.reviewed_at, self.updated_at = principal.subject, at, at
        if decision is Decision.REJECTED:
            self.status = ResultStatus.REJECTED


def uploader(version: ResultVersion) -> Principal:
    """The uploader as the actor of the submission's UPLOAD_RESULTS step, taken when the worker completes the
    version: ProcessResults checked their side and role (cro_technician) when the version was created."""
    return Principal(
        subject=version.uploaded_by,
        organization_id=version.cro_organization_id,
        organization_kind=Side.CRO.value,
        roles=frozenset({CRO_TECHNICIAN}),
    )


def qc_flag_of(clean: bool) -> QcFlag:
    return QcFlag.PASSED if clean else QcFlag.WARNING
