"""The submission aggregate (DOMAIN.md "CRO services and submissions", issue 11). Pure: no I/O, no grpc.

Two tables are the rules: TRANSITIONS (state × step → next state) and WHO_MAY (action → the roles and
side that may take it, in which states). A method of `Submission` checks, in this order: the caller is a
party (else 404, like any object of another organization), their role may take the action at all (403
naming the rule), the table allows it in the current state (409 naming the allowed actions), the rule
allows it in this state (403), then the action's gates (400 / 409) — and answers the events it caused.
Facts that live elsewhere (document signatures, specification errors, the clock) are passed in.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any

from services.cro.domain.results import requested_property_violations
from services.cro.domain.samples import check_sample_prefix, sample_codes
from services.cro.domain.vocabulary import (
    ACTIVE,
    CRO_ADMIN,
    CRO_TECHNICIAN,
    PHARMA_ADMIN,
    PHARMA_SCIENTIST,
    SYSTEM_ACTOR,
    SYSTEM_ADMIN,
    VISIBLE_TO_CRO,
    Action,
    MoleculeStatus,
    Operation,
    Side,
    Step,
    SubmissionStatus,
    SystemStep,
)
from services.runtime.auth import ROLE_IMPLIES, Principal
from services.runtime.errors import AuthorizationError, NotFoundError, PreconditionError, ValidationError

S = SubmissionStatus
A = Action

# Steps of the state machine that only the results flow takes (the upload worker, the review), so that a
# submission never reaches RESULTS_UPLOADED without a result version or RESULTS_REVIEWED without a review.
THROUGH_RESULTS: Mapping[Action, str] = {
    Action.UPLOAD_RESULTS: "upload the file with POST /results/upload, then POST /results/upload/{storage_key}/process",
    Action.REVIEW_RESULTS: "accept or reject the current version with PUT /results/{id}/status",
}

# -- the state machine, as data ----------------------------------------------------------------------------

# state → {step: next state}. A step missing here is refused (409). Steps that keep the state:
# REQUEST_CHANGES (posts a message), PROVIDE_PRICING in PRICING_PROVIDED (a new quote), UPLOAD_RESULTS in
# RESULTS_UPLOADED (corrected results after the pharma side asked for changes).
TRANSITIONS: Mapping[SubmissionStatus, Mapping[Step, SubmissionStatus]] = {
    S.DRAFT: {A.SUBMIT: S.SUBMITTED, A.CANCEL: S.CANCELLED},
    S.SUBMITTED: {
        SystemStep.PACKAGE_BUILT: S.PENDING_REVIEW,
        A.REJECT: S.REJECTED,
        A.CANCEL: S.CANCELLED,
        A.REQUEST_CHANGES: S.SUBMITTED,
    },
    S.PENDING_REVIEW: {
        A.PROVIDE_PRICING: S.PRICING_PROVIDED,
        A.REJECT: S.REJECTED,
        A.CANCEL: S.CANCELLED,
        A.REQUEST_CHANGES: S.PENDING_REVIEW,
    },
    S.PRICING_PROVIDED: {
        A.PROVIDE_PRICING: S.PRICING_PROVIDED,
        A.APPROVE: S.APPROVED,
        A.REJECT: S.REJECTED,
        A.CANCEL: S.CANCELLED,
        A.REQUEST_CHANGES: S.PRICING_PROVIDED,
    },
    S.APPROVED: {A.START_EXPERIMENT: S.IN_PROGRESS, A.CANCEL: S.CANCELLED},
    S.IN_PROGRESS: {A.UPLOAD_RESULTS: S.RESULTS_UPLOADED, A.CANCEL: S.CANCELLED},
    S.RESULTS_UPLOADED: {
        A.REVIEW_RESULTS: S.RESULTS_REVIEWED,
        A.UPLOAD_RESULTS: S.RESULTS_UPLOADED,
        A.CANCEL: S.CANCELLED,
        A.REQUEST_CHANGES: S.RESULTS_UPLOADED,
    },
    S.RESULTS_REVIEWED: {A.COMPLETE: S.COMPLETED, A.CANCEL: S.CANCELLED},
    S.COMPLETED: {},
    S.CANCELLED: {},
    S.REJECTED: {},
}


def allowed_actions(status: SubmissionStatus) -> tuple[Action, ...]:
    """The actions people may take in `status` (the system's own step is not one), in DOMAIN.md's order."""
    return tuple(a for a in Action if a in TRANSITIONS[status])


# -- who may, as data --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """`role` (or a role implying it, or system_admin) on `side` may take the action, in `states` if given
    (else wherever TRANSITIONS allows it). `scope` says what it is about, for the message."""

    side: Side
    role: str
    states: frozenset[SubmissionStatus] | None = None
    scope: str = ""

    @property
    def holders(self) -> tuple[str, ...]:
        higher = sorted(r for r, implied in ROLE_IMPLIES.items() if self.role in implied)
        return (self.role, *higher, SYSTEM_ADMIN)

    def holds_role(self, principal: Principal, side: Side | None) -> bool:
        return principal.is_system_admin or (side is self.side and principal.has_any_role(self.role))

    def admits(self, principal: Principal, side: Side | None, status: SubmissionStatus) -> bool:
        in_state = self.states is None or status in self.states
        return principal.is_system_admin or (self.holds_role(principal, side) and in_state)

    def describe(self, what: str) -> str:
        where = f" in {_either([s.value for s in S if s in self.states])}" if self.states else ""
        return f"only {_either(self.holders)} may {what}{' ' + self.scope if self.scope else ''}{where}"


BEFORE_WORK = frozenset({S.SUBMITTED, S.PENDING_REVIEW, S.PRICING_PROVIDED, S.APPROVED})

WHO_MAY: Mapping[Action | Operation, tuple[Rule, ...]] = {
    Operation.CREATE: (Rule(Side.PHARMA, PHARMA_SCIENTIST),),
    Operation.EDIT: (Rule(Side.PHARMA, PHARMA_SCIENTIST),),
    Operation.POST_MESSAGE: (Rule(Side.PHARMA, PHARMA_SCIENTIST), Rule(Side.CRO, CRO_TECHNICIAN)),
    A.SUBMIT: (Rule(Side.PHARMA, PHARMA_SCIENTIST),),
    A.PROVIDE_PRICING: (Rule(Side.CRO, CRO_ADMIN),),
    A.APPROVE: (Rule(Side.PHARMA, PHARMA_ADMIN, scope="a price"),),
    A.REJECT: (
        Rule(Side.PHARMA, PHARMA_ADMIN, frozenset({S.PRICING_PROVIDED}), scope="a price"),
        Rule(Side.CRO, CRO_ADMIN, frozenset({S.SUBMITTED, S.PENDING_REVIEW}), scope="a submission"),
    ),
    # The pharma side asks for a new price or corrected results; the CRO side asks about what was sent.
    A.REQUEST_CHANGES: (
        Rule(Side.PHARMA, PHARMA_SCIENTIST, frozenset({S.PRICING_PROVIDED, S.RESULTS_UPLOADED})),
        Rule(Side.CRO, CRO_TECHNICIAN, frozenset({S.SUBMITTED, S.PENDING_REVIEW, S.PRICING_PROVIDED})),
    ),
    A.CANCEL: (Rule(Side.PHARMA, PHARMA_SCIENTIST), Rule(Side.CRO, CRO_ADMIN, BEFORE_WORK)),
    A.START_EXPERIMENT: (Rule(Side.CRO, CRO_TECHNICIAN),),
    A.UPLOAD_RESULTS: (Rule(Side.CRO, CRO_TECHNICIAN),),
    A.REVIEW_RESULTS: (Rule(Side.PHARMA, PHARMA_SCIENTIST),),
    A.COMPLETE: (Rule(Side.PHARMA, PHARMA_SCIENTIST),),
}


OPERATION_VERBS: Mapping[Operation, str] = {
    Operation.CREATE: "create a submission",
    Operation.EDIT: "edit a submission",
    Operation.POST_MESSAGE: "post messages on a submission",
}


def rule_text(what: Action | Operation) -> str:
    """The sentence a refused caller reads, e.g. "only pharma_admin or system_admin may APPROVE a price"."""
    verb = what.value if isinstance(what, Action) else OPERATION_VERBS[what]
    return "; ".join(rule.describe(verb) for rule in WHO_MAY[what])


def require_creator(actor: Principal) -> None:
    """Who may create a submission at all: asked before anything the request names is looked up."""
    side = Side.PHARMA if actor.organization_kind == Side.PHARMA.value else None
    if not any(rule.holds_role(actor, side) for rule in WHO_MAY[Operation.CREATE]):
        raise _refuse(Operation.CREATE)


def _refuse(what: Action | Operation) -> AuthorizationError:
    return AuthorizationError(
        rule_text(what), detail="SUBMISSION_ROLE", metadata={"action": what.value, "rule": rule_text(what)}
    )


def _either(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


# -- molecule status follows the submission ------------------------------------------------------------------

MOLECULE_STATUS_ON_ENTRY: Mapping[SubmissionStatus, MoleculeStatus] = {
    S.SUBMITTED: MoleculeStatus.PENDING,
    S.IN_PROGRESS: MoleculeStatus.TESTING,
    S.RESULTS_REVIEWED: MoleculeStatus.RESULTS,
}
# The states whose molecules are PENDING or TESTING because of this submission: only they are released.
HOLDING = ACTIVE - {S.RESULTS_REVIEWED}


def molecule_status_after(from_status: SubmissionStatus, to_status: SubmissionStatus) -> MoleculeStatus | None:
    """What the submission's molecules become by this transition; None: they keep their status (a cancelled
    DRAFT never held them — they may be held by another submission — and reviewed results stay RESULTS)."""
    if from_status is to_status:
        return None
    if to_status in (S.CANCELLED, S.REJECTED):
        return MoleculeStatus.AVAILABLE if from_status in HOLDING else None
    return MOLECULE_STATUS_ON_ENTRY.get(to_status)


# -- facts passed in ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceFacts:
    """The CRO service a submission is made for."""

    id: str
    cro_organization_id: str
    service_type: str
    currency: str
    active: bool = True


@dataclass(frozen=True)
class DocumentFacts:
    """The document service's answer for SUBMIT: required types with no present document, and present ones
    that need the pharma side's signature and lack it."""

    missing: tuple[str, ...] = ()
    unsigned: tuple[str, ...] = ()

    @property
    def satisfied(self) -> bool:
        return not self.missing and not self.unsigned


@dataclass(frozen=True)
class AgreementFacts:
    """The service agreement's signatures, for START_EXPERIMENT."""

    signed_by_pharma: bool = False
    signed_by_cro: bool = False


# -- values -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SubmissionMolecule:
    molecule_id: str
    concentration: str = ""  # as the scientist writes it, e.g. "10 mM in DMSO"
    notes: str = ""


@dataclass(frozen=True)
class LineItem:
    molecule_id: str
    assay: str
    replicates: int
    unit_price: Decimal

    @property
    def amount(self) -> Decimal:
        return self.unit_price * self.replicates


@dataclass(frozen=True)
class Quote:
    number: int  # 1, 2, … in the submission's quote history
    price: Decimal
    currency: str
    turnaround_days: int
    valid_until: date  # the last day it may be approved
    line_items: tuple[LineItem, ...]
    over_budget: bool  # shown to the approver
    provided_by: str
    provided_at: datetime
    note: str = ""

    def expired_on(self, today: date) -> bool:
        return today > self.valid_until


@dataclass(frozen=True)
class Message:
    id: str
    submission_id: str
    author: str
    side: Side | None  # None: a system_admin
    text: str
    document_id: str
    change_request: bool
    at: datetime


# -- events -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SubmissionCreated:
    submission_id: str
    organization_id: str
    cro_organization_id: str
    service_id: str
    actor: str
    at: datetime


@dataclass(frozen=True)
class SubmissionEdited:
    submission_id: str
    fields: tuple[str, ...]
    actor: str
    at: datetime


@dataclass(frozen=True)
class SubmissionTransitioned:
    submission_id: str
    organization_id: str
    cro_organization_id: str
    from_status: SubmissionStatus
    to_status: SubmissionStatus
    action: Step
    actor: str
    reason: str
    at: datetime
    molecule_ids: tuple[str, ...]
    molecule_status: MoleculeStatus | None  # what the molecules become; None: unchanged


@dataclass(frozen=True)
class QuoteProvided:
    submission_id: str
    organization_id: str
    cro_organization_id: str
    quote: Quote
    actor: str
    at: datetime


@dataclass(frozen=True)
class QuoteApproved:
    submission_id: str
    quote_number: int
    price: Decimal
    currency: str
    over_budget: bool
    actor: str
    at: datetime


@dataclass(frozen=True)
class MessagePosted:
    message: Message


Event = SubmissionCreated | SubmissionEdited | SubmissionTransitioned | QuoteProvided | QuoteApproved | MessagePosted


# -- field checks ---------------------------------------------------------------------------------------------

MAX_NAME = 200
MAX_CONCENTRATION = 100
MAX_NOTES = 2000
MAX_MESSAGE = 5000
MAX_ASSAY = 200
CURRENCY = re.compile(r"^[A-Z]{3}$")  # ISO 4217 alphabetic code
SHA256 = re.compile(r"^[0-9a-f]{64}$")


class _Keep(Enum):
    KEEP = "KEEP"


KEEP = _Keep.KEEP  # edit(): leave the field as it is


def _check(violations: list[tuple[str, str]], message: str) -> None:
    if violations:
        summary = "; ".join(f"{name}: {problem}" for name, problem in violations)
        raise ValidationError(f"{message}: {summary}", field_violations=violations)


def _name_violations(name: str) -> list[tuple[str, str]]:
    if not name.strip():
        return [("name", "required")]
    return [("name", f"at most {MAX_NAME} characters")] if len(name.strip()) > MAX_NAME else []


def _molecule_violations(molecules: Sequence[SubmissionMolecule]) -> list[tuple[str, str]]:
    violations, seen = [], set()
    for i, molecule in enumerate(molecules):
        where = f"molecules[{i}]"
        if not molecule.molecule_id.strip():
            violations.append((f"{where}.molecule_id", "required"))
        elif molecule.molecule_id in seen:
            violations.append((f"{where}.molecule_id", f"molecule {molecule.molecule_id} is listed twice"))
        seen.add(molecule.molecule_id)
        if len(molecule.concentration) > MAX_CONCENTRATION:
            violations.append((f"{where}.concentration", f"at most {MAX_CONCENTRATION} characters"))
        if len(molecule.notes) > MAX_NOTES:
            violations.append((f"{where}.notes", f"at most {MAX_NOTES} characters"))
    return violations


def _money_violations(name: str, value: Decimal, *, zero_allowed: bool) -> list[tuple[str, str]]:
    if not value.is_finite():
        return [(name, "must be a number")]
    if value < 0 or (value == 0 and not zero_allowed):
        return [(name, "must be at least 0" if zero_allowed else "must be greater than 0")]
    return []


def _currency_violations(name: str, currency: str) -> list[tuple[str, str]]:
    return [] if CURRENCY.match(currency) else [(name, "an ISO 4217 code of three capital letters, e.g. USD")]


def _party(principal: Principal, organization_id: str, cro_organization_id: str) -> Side | None:
    if principal.organization_id == organization_id:
        return Side.PHARMA
    if principal.organization_id == cro_organization_id:
        return Side.CRO
    return None


# -- the aggregate --------------------------------------------------------------------------------------------


@dataclass
class Submission:
    id: str
    organization_id: str  # the pharma organization that owns it
    cro_organization_id: str
    service_id: str
    service_type: str
    name: str
    created_by: str
    sample_prefix: str
    currency: str  # of the budget and of every quote
    status: SubmissionStatus = S.DRAFT
    molecules: tuple[SubmissionMolecule, ...] = ()
    specifications: dict[str, Any] = field(default_factory=dict)
    budget: Decimal | None = None
    quotes: list[Quote] = field(default_factory=list)  # oldest first; every quote is kept
    approved_quote_number: int | None = None
    sample_codes: dict[str, str] = field(default_factory=dict)  # molecule id → code, fixed at SUBMIT
    package_sha256: str = ""
    estimated_completion: date | None = None
    step_times: dict[SubmissionStatus, datetime] = field(default_factory=dict)  # when each state was entered
    created_at: datetime | None = None
    updated_at: datetime | None = None
    structures_revealed: bool = False  # the pharma side showed the structures to the CRO

    @classmethod
    def create(
        cls,
        actor: Principal,
        *,
        service: ServiceFacts,
        name: str,
        sample_prefix: str,
        at: datetime,
        molecules: Sequence[SubmissionMolecule] = (),
        specifications: Mapping[str, Any] | None = None,
        budget: Decimal | None = None,
        currency: str = "",
        submission_id: str | None = None,
    ) -> tuple[Submission, SubmissionCreated]:
        """A DRAFT of the caller's (pharma) organization for an active CRO service."""
        require_creator(actor)
        if not service.active:
            raise PreconditionError(
                f"the CRO service {service.id} is no longer offered: choose an active service",
                detail="SERVICE_INACTIVE",
                metadata={"service_id": service.id},
            )
        currency = currency.strip().upper() or service.currency
        violations = _name_violations(name) + _molecule_violations(molecules)
        violations += _currency_violations("currency", currency)
        violations += requested_property_violations(specifications or {})
        if budget is not None:
            violations += _money_violations("budget", budget, zero_allowed=False)
        _check(violations, "the submission is not valid")
        submission = cls(
            id=submission_id or str(uuid.uuid4()),
            organization_id=actor.organization_id,
            cro_organization_id=service.cro_organization_id,
            service_id=service.id,
            service_type=service.service_type,
            name=name.strip(),
            created_by=actor.subject,
            sample_prefix=check_sample_prefix(sample_prefix),
            currency=currency,
            molecules=tuple(molecules),
            specifications=dict(specifications or {}),
            budget=budget,
            step_times={S.DRAFT: at},
            created_at=at,
            updated_at=at,
        )
        event = SubmissionCreated(
            submission.id, submission.organization_id, submission.cro_organization_id, service.id, actor.subject, at
        )
        return submission, event

    # -- reading ------------------------------------------------------------------------------------------

    @property
    def molecule_ids(self) -> tuple[str, ...]:
        return tuple(m.molecule_id for m in self.molecules)

    @property
    def current_quote(self) -> Quote | None:
        return self.quotes[-1] if self.quotes else None

    @property
    def approved_quote(self) -> Quote | None:
        if self.approved_quote_number is None:
            return None
        return self.quotes[self.approved_quote_number - 1]

    @property
    def price(self) -> Decimal | None:
        quote = self.approved_quote or self.current_quote
        return quote.price if quote else None

    @property
    def turnaround_days(self) -> int | None:
        quote = self.approved_quote or self.current_quote
        return quote.turnaround_days if quote else None

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    def side_of(self, principal: Principal) -> Side | None:
        """The party `principal` acts for; None for a system_admin outside both organizations."""
        return _party(principal, self.organization_id, self.cro_organization_id)

    def permitted_actions(self, principal: Principal) -> tuple[Action, ...]:
        """What `principal` may try now (the gates may still refuse): for the buttons a page shows."""
        side = self.side_of(principal)
        if side is None and not principal.is_system_admin:
            return ()
        return tuple(
            action
            for action in allowed_actions(self.status)
            if any(rule.admits(principal, side, self.status) for rule in WHO_MAY[action])
        )

    # -- editing a draft ----------------------------------------------------------------------------------

    def edit(
        self,
        actor: Principal,
        *,
        at: datetime,
        name: str | _Keep = KEEP,
        molecules: Sequence[SubmissionMolecule] | _Keep = KEEP,
        specifications: Mapping[str, Any] | _Keep = KEEP,
        budget: Decimal | None | _Keep = KEEP,
        currency: str | _Keep = KEEP,
    ) -> SubmissionEdited | None:
        """Changes a DRAFT (pharma only). None when nothing changed."""
        self._authorize(actor, Operation.EDIT)
        if self.status is not S.DRAFT:
            raise PreconditionError(
                f"a {self.status} submission can no longer be edited: only a DRAFT can",
                detail="SUBMISSION_STATE",
                metadata={"status": self.status.value},
            )
        violations: list[tuple[str, str]] = []
        if not isinstance(name, _Keep):
            violations += _name_violations(name)
        if not isinstance(molecules, _Keep):
            violations += _molecule_violations(molecules)
        if not isinstance(budget, _Keep) and budget is not None:
            violations += _money_violations("budget", budget, zero_allowed=False)
        if not isinstance(specifications, _Keep):
            violations += requested_property_violations(specifications)
        if not isinstance(currency, _Keep):
            currency = currency.strip().upper()
            violations += _currency_violations("currency", currency)
        _check(violations, "the submission is not valid")
        changes: dict[str, Any] = {
            "name": name if isinstance(name, _Keep) else name.strip(),
            "molecules": molecules if isinstance(molecules, _Keep) else tuple(molecules),
            "specifications": specifications if isinstance(specifications, _Keep) else dict(specifications),
            "budget": budget,
            "currency": currency,
        }
        changed = tuple(
            key for key, value in changes.items() if not isinstance(value, _Keep) and value != getattr(self, key)
        )
        if not changed:
            return None
        for key in changed:
            setattr(self, key, changes[key])
        self.updated_at = at
        return SubmissionEdited(self.id, changed, actor.subject, at)

    # -- the actions --------------------------------------------------------------------------------------

    def check_action(self, actor: Principal, action: Action) -> SubmissionStatus:
        """The refusals an action meets before its input is looked at (404, 403, 409: party, role, state,
        rule), e.g. for a caller that parses the input only then; answers the next state."""
        return self._begin(actor, action)

    def submit(
        self,
        actor: Principal,
        *,
        specification_violations: Sequence[tuple[str, str]],
        documents: DocumentFacts,
        at: datetime,
    ) -> list[Event]:
        """DRAFT → SUBMITTED: needs molecules, specifications valid against the service's schema (the
        violations found, passed in; fields relative to the specifications) and the required documents."""
        target = self._begin(actor, A.SUBMIT)
        violations = [] if self.molecules else [("molecules", "add at least one molecule")]
        violations += [
            (f"specifications.{name}" if name else "specifications", problem)
            for name, problem in specification_violations
        ]
        _check(violations, "the submission cannot be submitted yet")
        if not documents.satisfied:
            problems = []
            if documents.missing:
                problems.append(f"missing: {', '.join(documents.missing)}")
            if documents.unsigned:
                problems.append(f"not signed by the pharma side: {', '.join(documents.unsigned)}")
            raise PreconditionError(
                f"the required documents are not complete ({'; '.join(problems)})",
                detail="DOCUMENTS_INCOMPLETE",
                metadata={"missing": ",".join(documents.missing), "unsigned": ",".join(documents.unsigned)},
            )
        self.sample_codes = sample_codes(self.sample_prefix, self.molecule_ids)
        return [self._move(A.SUBMIT, target, actor.subject, at)]

    def package_built(self, *, package_sha256: str, at: datetime) -> list[Event]:
        """The system's step SUBMITTED → PENDING_REVIEW: the immutable package is stored, the CRO told."""
        target = self._target(SystemStep.PACKAGE_BUILT)
        if not SHA256.match(package_sha256):
            _check([("package_sha256", "64 lowercase hexadecimal characters")], "the package hash is not valid")
        self.package_sha256 = package_sha256
        return [self._move(SystemStep.PACKAGE_BUILT, target, SYSTEM_ACTOR, at)]

    def provide_pricing(
        self,
        actor: Principal,
        *,
        price: Decimal,
        turnaround_days: int,
        valid_until: date,
        at: datetime,
        currency: str = "",
        line_items: Sequence[LineItem] = (),
        note: str = "",
    ) -> list[Event]:
        """A quote (a new one in PRICING_PROVIDED: the old ones stay in the history)."""
        target = self._begin(actor, A.PROVIDE_PRICING)
        currency = currency.strip().upper() or self.currency
        violations = _money_violations("price", price, zero_allowed=False)
        if currency != self.currency:
            violations.append(("currency", f"must be the submission's currency {self.currency}"))
        if turnaround_days < 1:
            violations.append(("turnaround_days", "at least 1 day"))
        if valid_until < at.date():
            violations.append(("valid_until", "must not be in the past"))
        if len(note) > MAX_NOTES:
            violations.append(("note", f"at most {MAX_NOTES} characters"))
        violations += self._line_item_violations(line_items, price)
        _check(violations, "the quote is not valid")
        quote = Quote(
            number=len(self.quotes) + 1,
            price=price,
            currency=currency,
            turnaround_days=turnaround_days,
            valid_until=valid_until,
            line_items=tuple(line_items),
            over_budget=self.budget is not None and price > self.budget,
            provided_by=actor.subject,
            provided_at=at,
            note=note,
        )
        self.quotes.append(quote)
        events: list[Event] = [
            QuoteProvided(self.id, self.organization_id, self.cro_organization_id, quote, actor.subject, at)
        ]
        if target is not self.status:
            events.append(self._move(A.PROVIDE_PRICING, target, actor.subject, at))
        self.updated_at = at
        return events

    def _line_item_violations(self, line_items: Sequence[LineItem], price: Decimal) -> list[tuple[str, str]]:
        violations: list[tuple[str, str]] = []
        for i, item in enumerate(line_items):
            where = f"line_items[{i}]"
            if item.molecule_id not in self.molecule_ids:
                violations.append((f"{where}.molecule_id", f"molecule {item.molecule_id} is not in the submission"))
            if not item.assay.strip() or len(item.assay) > MAX_ASSAY:
                violations.append((f"{where}.assay", f"required, at most {MAX_ASSAY} characters"))
            if item.replicates < 1:
                violations.append((f"{where}.replicates", "at least 1"))
            violations += _money_violations(f"{where}.unit_price", item.unit_price, zero_allowed=True)
        if line_items and not violations and price.is_finite():
            total = sum((item.amount for item in line_items), Decimal(0))
            if total != price:
                violations.append(("line_items", f"add up to {total}, not the price {price}"))
        return violations

    def approve(self, actor: Principal, *, at: datetime) -> list[Event]:
        """PRICING_PROVIDED → APPROVED: the current quote, while it is valid."""
        target = self._begin(actor, A.APPROVE)
        quote = self.current_quote
        if quote is None:  # PRICING_PROVIDED always has one; a stored row without one is refused all the same
            raise PreconditionError("there is no quote to approve", detail="QUOTE_REQUIRED")
        if quote.expired_on(at.date()):
            raise PreconditionError(
                f"quote {quote.number} expired on {quote.valid_until.isoformat()}: ask the CRO for a new price",
                detail="QUOTE_EXPIRED",
                metadata={"quote_number": str(quote.number), "valid_until": quote.valid_until.isoformat()},
            )
        self.approved_quote_number = quote.number
        approved = QuoteApproved(
            self.id, quote.number, quote.price, quote.currency, quote.over_budget, actor.subject, at
        )
        return [self._move(A.APPROVE, target, actor.subject, at), approved]

    def reject(self, actor: Principal, *, reason: str, at: datetime) -> list[Event]:
        target = self._begin(actor, A.REJECT)
        if not reason.strip():
            _check([("reason", "say why the submission is rejected")], "a rejection needs a reason")
        return [self._move(A.REJECT, target, actor.subject, at, reason.strip())]

    def cancel(self, actor: Principal, *, at: datetime, reason: str = "") -> list[Event]:
        target = self._begin(actor, A.CANCEL)
        return [self._move(A.CANCEL, target, actor.subject, at, reason.strip())]

    def request_changes(self, actor: Principal, *, text: str, at: datetime, document_id: str = "") -> list[Event]:
        """Keeps the state; the request is a message to the other side."""
        self._begin(actor, A.REQUEST_CHANGES)
        return [MessagePosted(self._message(actor, text, document_id, at, change_request=True))]

    def start_experiment(self, actor: Principal, *, agreement: AgreementFacts, at: datetime) -> list[Event]:
        """APPROVED → IN_PROGRESS once both sides signed the service agreement; sets the estimated completion."""
        target = self._begin(actor, A.START_EXPERIMENT)
        signatures = (("pharma", agreement.signed_by_pharma), ("CRO", agreement.signed_by_cro))
        unsigned = [side for side, signed in signatures if not signed]
        if unsigned:
            raise PreconditionError(
                "the service agreement must be signed by both sides before the experiment starts "
                f"(not signed by the {' and '.join(unsigned)} side)",
                detail="SERVICE_AGREEMENT_UNSIGNED",
                metadata={"unsigned_by": ",".join(unsigned)},
            )
        if self.turnaround_days is not None:
            self.estimated_completion = at.date() + timedelta(days=self.turnaround_days)
        return [self._move(A.START_EXPERIMENT, target, actor.subject, at)]

    def upload_results(self, actor: Principal, *, at: datetime) -> list[Event]:
        target = self._begin(actor, A.UPLOAD_RESULTS)
        if target is self.status:  # corrected results: the state stays
            self.updated_at = at
            return []
        return [self._move(A.UPLOAD_RESULTS, target, actor.subject, at)]

    def review_results(self, actor: Principal, *, at: datetime) -> list[Event]:
        target = self._begin(actor, A.REVIEW_RESULTS)
        return [self._move(A.REVIEW_RESULTS, target, actor.subject, at)]

    def complete(self, actor: Principal, *, at: datetime) -> list[Event]:
        target = self._begin(actor, A.COMPLETE)
        return [self._move(A.COMPLETE, target, actor.subject, at)]

    def post_message(self, actor: Principal, *, text: str, at: datetime, document_id: str = "") -> MessagePosted:
        """A message in the submission's thread: both sides, once the CRO can see the submission."""
        self._authorize(actor, Operation.POST_MESSAGE)
        if self.status not in VISIBLE_TO_CRO:
            raise PreconditionError(
                "a DRAFT has no thread yet: messages start once the submission is submitted",
                detail="SUBMISSION_STATE",
                metadata={"status": self.status.value},
            )
        return MessagePosted(self._message(actor, text, document_id, at, change_request=False))

    def visible_to(self, actor: Principal) -> bool:
        """Whether `actor` sees the submission (and its thread): its parties, the CRO only past DRAFT."""
        side = self.side_of(actor)
        return actor.is_system_admin or side is Side.PHARMA or (side is Side.CRO and self.status in VISIBLE_TO_CRO)

    # -- the machinery --------------------------------------------------------------------------------------

    def _authorize(self, actor: Principal, what: Action | Operation) -> Side | None:
        """Party (404 otherwise: the CRO does not see a DRAFT) and role (403 naming the rule)."""
        side = self.side_of(actor)
        unseen = side is None or (side is Side.CRO and self.status not in VISIBLE_TO_CRO)
        if unseen and not actor.is_system_admin:
            raise NotFoundError(f"submission {self.id} not found", detail="SUBMISSION_NOT_FOUND")
        if not any(rule.holds_role(actor, side) for rule in WHO_MAY[what]):
            raise _refuse(what)
        return side

    def _target(self, step: Step) -> SubmissionStatus:
        """The next state of `step` in the current one (409 naming the allowed actions otherwise)."""
        target = TRANSITIONS[self.status].get(step)
        if target is None:
            allowed = allowed_actions(self.status)
            listed = ", ".join(allowed) if allowed else "none: it is final"
            raise PreconditionError(
                f"a {self.status} submission does not accept {step}; allowed actions: {listed}",
                detail="SUBMISSION_STATE",
                metadata={"status": self.status.value, "action": step.value, "allowed_actions": ",".join(allowed)},
            )
        return target

    def _begin(self, actor: Principal, action: Action) -> SubmissionStatus:
        side = self._authorize(actor, action)
        target = self._target(action)
        if not any(rule.admits(actor, side, self.status) for rule in WHO_MAY[action]):
            raise _refuse(action)
        return target

    def _move(
        self, step: Step, target: SubmissionStatus, actor: str, at: datetime, reason: str = ""
    ) -> SubmissionTransitioned:
        from_status, self.status = self.status, target
        self.step_times[target] = at
        self.updated_at = at
        return SubmissionTransitioned(
            submission_id=self.id,
            organization_id=self.organization_id,
            cro_organization_id=self.cro_organization_id,
            from_status=from_status,
            to_status=target,
            action=step,
            actor=actor,
            reason=reason,
            at=at,
            molecule_ids=self.molecule_ids,
            molecule_status=molecule_status_after(from_status, target),
        )

    def _message(self, actor: Principal, text: str, document_id: str, at: datetime, *, change_request: bool) -> Message:
        text = text.strip()
        if not text or len(text) > MAX_MESSAGE:
            _check([("text", f"required, at most {MAX_MESSAGE} characters")], "the message is not valid")
        return Message(
            id=str(uuid.uuid4()),
            submission_id=self.id,
            author=actor.subject,
            side=self.side_of(actor),
            text=text,
            document_id=document_id.strip(),
            change_request=change_request,
            at=at,
        )
