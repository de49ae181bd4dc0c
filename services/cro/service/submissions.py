"""Submission use cases: drafts of the pharma side, the actions of both sides through the domain's state
machine, the blinded view of the CRO side, quotes, the package, revealed structures.

Facts that live in other services are asked for outside the transaction, with the caller's own
credentials (the molecule service: the molecules are the caller's; the document service: the required
documents and their signatures), then the action runs in one transaction with its events: the bus
events (SubmissionTransitioned, QuoteProvided, SubmissionMessagePosted, SubmissionPackageRequested) and
an AuditRecorded per change. `request_id` on create and actions: the same key answers the first outcome.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from molbridge.events.v1 import cro_pb2

from services.cro.domain import submissions as domain
from services.cro.domain.catalogue import specification_violations
from services.cro.domain.samples import new_sample_prefix
from services.cro.domain.submissions import (
    KEEP,
    THROUGH_RESULTS,
    AgreementFacts,
    DocumentFacts,
    LineItem,
    Quote,
    ServiceFacts,
    Submission,
    SubmissionMolecule,
)
from services.cro.domain.vocabulary import (
    PHARMA_SCIENTIST,
    VISIBLE_TO_CRO,
    Action,
    Side,
    SubmissionStatus,
)
from services.cro.service.packages import package_request
from services.cro.service.ports import DocumentRequirementsPort, MoleculeLookup
from services.cro.store.packages import StoredPackage
from services.cro.store.submissions import MoleculeRow, MoleculeSnapshot, SubmissionFilter
from services.cro.store.uow import CroTransactions, CroUnitOfWork
from services.runtime.audit import audit_event
from services.runtime.auth import Principal
from services.runtime.document_client import DocumentFingerprint, DocumentRequirements
from services.runtime.errors import (
    AuthorizationError,
    DomainError,
    NotFoundError,
    PreconditionError,
    ValidationError,
)
from services.runtime.pagination import PageRequest
from services.runtime.storage import ObjectStorage

log = logging.getLogger("molbridge.cro.submissions")

PACKAGE_QUEUE = "submission_packages"  # the WORK stream queue the package worker consumes
NDA = "NON_DISCLOSURE_AGREEMENT"
SERVICE_AGREEMENT = "SERVICE_AGREEMENT"
# What the CRO side never sees of a molecule while structures are hidden (the package manifest too).
# The CRO side never learns the pharma side's own handles for a molecule (it works from sample codes); the
# structure itself (and the InChIKey, which gives it away) only once the pharma side reveals structures.
PHARMA_HANDLES = frozenset({"molecule_id", "registration_number"})
STRUCTURE_KEYS = frozenset({"smiles", "canonical_smiles", "inchi_key"})

AUDIT_ACTIONS: Mapping[str, str] = {
    "SUBMIT": "submission.submitted",
    "PACKAGE_BUILT": "submission.package_built",
    "PROVIDE_PRICING": "submission.priced",
    "APPROVE": "submission.approved",
    "REJECT": "submission.rejected",
    "REQUEST_CHANGES": "submission.changes_requested",
    "CANCEL": "submission.cancelled",
    "START_EXPERIMENT": "submission.started",
    "UPLOAD_RESULTS": "submission.results_uploaded",
    "REVIEW_RESULTS": "submission.results_reviewed",
    "COMPLETE": "submission.completed",
}


@dataclass(frozen=True)
class MoleculeView:
    """A molecule as the caller may see it (blank fields: hidden from the caller)."""

    molecule_id: str
    sample_code: str
    registration_number: str
    smiles: str
    formula: str
    molecular_weight: float | None
    concentration: str
    notes: str


@dataclass(frozen=True)
class SubmissionView:
    submission: Submission
    service_name: str
    molecules: tuple[MoleculeView, ...]
    permitted_actions: tuple[str, ...]
    blinded: bool  # the CRO side, structures hidden

    def quote_molecule(self, molecule_id: str) -> str:
        """A line item's molecule as the caller may see it (the sample code for a blinded caller)."""
        if not self.blinded:
            return molecule_id
        return self.submission.sample_codes.get(molecule_id, "")


@dataclass(frozen=True)
class LineItemInput:
    molecule: str  # molecule id or sample code
    assay: str
    replicates: int
    unit_price: str


@dataclass(frozen=True)
class ActionInput:
    action: str
    reason: str = ""
    text: str = ""
    price: str = ""
    currency: str = ""
    turnaround_days: int = 0
    valid_until: str = ""
    line_items: Sequence[LineItemInput] = ()
    note: str = ""
    request_id: str = ""


@dataclass(frozen=True)
class ListFilters:
    status: str = ""
    cro_organization_id: str = ""
    cro_service_id: str = ""
    created_from: str = ""
    created_to: str = ""
    molecule_id: str = ""


@dataclass
class _Facts:
    """What an action needs from other services, gathered before its transaction."""

    snapshots: list[MoleculeSnapshot] = field(default_factory=list)
    specification_violations: list[tuple[str, str]] = field(default_factory=list)
    documents: DocumentFacts = DocumentFacts()
    agreement: AgreementFacts = AgreementFacts()
    fingerprints: list[DocumentFingerprint] = field(default_factory=list)  # SUBMIT: what the package records


def _now() -> datetime:
    return datetime.now(UTC)


def _money(name: str, text: str, violations: list[tuple[str, str]]) -> Decimal | None:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        violations.append((name, "a decimal number, e.g. 1250.00"))
        return None
    if not value.is_finite():
        violations.append((name, "a decimal number, e.g. 1250.00"))
        return None
    return value


def _day(name: str, text: str, violations: list[tuple[str, str]]) -> date | None:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        violations.append((name, "a date YYYY-MM-DD"))
        return None


def _raise_if(violations: list[tuple[str, str]], message: str) -> None:
    if violations:
        summary = "; ".join(f"{name}: {problem}" for name, problem in violations)
        raise ValidationError(f"{message}: {summary}", field_violations=violations)


def _not_found(submission_id: str) -> NotFoundError:
    return NotFoundError(f"submission {submission_id} not found", detail="SUBMISSION_NOT_FOUND")


def _timestamp(at: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(at)
    return stamp


def _for_cro(value: Any, hidden: frozenset[str]) -> Any:
    """The manifest as the CRO side sees it: without the `hidden` keys at any depth."""
    if isinstance(value, dict):
        return {k: _for_cro(v, hidden) for k, v in value.items() if k not in hidden}
    if isinstance(value, list):
        return [_for_cro(v, hidden) for v in value]
    return value


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

    # -- drafts ----------------------------------------------------------------------------------------

    async def create(
        self,
        principal: Principal,
        credentials: Mapping[str, str],
        *,
        name: str,
        service_id: str,
        molecules: Sequence[SubmissionMolecule] = (),
        specifications: Mapping[str, Any] | None = None,
        budget: str = "",
        request_id: str = "",
    ) -> SubmissionView:
        domain.require_creator(principal)  # permission before the service it names (403, never 400)
        violations: list[tuple[str, str]] = []
        amount = _money("budget", budget, violations) if budget.strip() else None
        _raise_if(violations, "the submission is not valid")
        async with self._uow() as uow:
            service = await uow.catalogue.get(service_id)
        if service is None or not (service.active or principal.can_see_organization(service.organization_id)):
            raise ValidationError(
                f"cro_service_id: no active CRO service {service_id}",
                field_violations=[("cro_service_id", f"no active CRO service {service_id}")],
            )
        now = _now()
        submission, created = Submission.create(
            principal,
            service=ServiceFacts(service.id, service.organization_id, service.service_type.value, service.currency,
                                 service.active),
            name=name,
            sample_prefix=new_sample_prefix(),
            at=now,
            molecules=molecules,
            specifications=specifications,
            budget=amount,
        )
        await self._check_molecules(credentials, [m.molecule_id for m in submission.molecules])

        async with self._uow() as uow:

            async def add() -> str:
                await uow.submissions.add(submission)
                await uow.submissions.add_step(
                    submission.id, SubmissionStatus.DRAFT, at=now, actor=principal.subject, action="CREATE"
                )
                uow.record(
                    self._audit("submission.created", submission, {"cro_service_id": service.id}), actor=principal
                )
                return submission.id

            submission_id = await uow.once(f"submission:{principal.organization_id}", request_id, add)
            return await self._view(uow, principal, await self._visible(uow, principal, submission_id))

    async def update(
        self,
        principal: Principal,
        credentials: Mapping[str, str],
        submission_id: str,
        *,
        name: str = "",
        molecules: Sequence[SubmissionMolecule] | None = None,
        specifications: Mapping[str, Any] | None = None,
        budget: str = "",
    ) -> SubmissionView:
        violations: list[tuple[str, str]] = []
        new_budget: Decimal | None | Any = KEEP
        if budget.strip().lower() == "none":
            new_budget = None
        elif budget.strip():
            new_budget = _money("budget", budget, violations)
        _raise_if(violations, "the change is not valid")
        if molecules is not None:
            async with self._uow() as uow:  # who may edit is asked before the molecule service
                current = await self._visible(uow, principal, submission_id)
                current.edit(principal, at=_now())
            await self._check_molecules(credentials, [m.molecule_id for m in molecules])
        async with self._uow() as uow:
            submission = await self._visible(uow, principal, submission_id, lock=True)
            edited = submission.edit(
                principal,
                at=_now(),
                name=name if name else KEEP,
                molecules=tuple(molecules) if molecules is not None else KEEP,
                specifications=dict(specifications) if specifications is not None else KEEP,
                budget=new_budget,
            )
            if edited is not None:
                await uow.submissions.save(submission)
                uow.record(
                    self._audit("submission.updated", submission, {"fields": ",".join(edited.fields)}),
                    actor=principal,
                )
            return await self._view(uow, principal, submission)

    # -- reading -----------------------------------------------------------------------------------------

    async def get(self, principal: Principal, submission_id: str) -> SubmissionView:
        async with self._uow() as uow:
            return await self._view(uow, principal, await self._visible(uow, principal, submission_id))

    async def list_submissions(
        self, principal: Principal, filters: ListFilters, page: PageRequest
    ) -> tuple[list[SubmissionView], int]:
        """The caller's organization's submissions (pharma: all; CRO: from SUBMITTED on), molecules left out."""
        found = self._filter(principal, filters)
        async with self._uow() as uow:
            submissions, total = await uow.submissions.find(found, page)
            names = {s.service_id: await self._service_name(uow, s.service_id) for s in submissions}
        views = [
            SubmissionView(
                s, names[s.service_id], (), tuple(a.value for a in s.permitted_actions(principal)),
                self._blinded(principal, s),
            )
            for s in submissions
        ]
        return views, total

    async def status_counts(self, principal: Principal) -> dict[str, int]:
        """Every status with the caller's organization's count (zeros included)."""
        async with self._uow() as uow:
            counts = await uow.submissions.status_counts(self._filter(principal, ListFilters()))
        return {status.value: counts.get(status.value, 0) for status in SubmissionStatus}

    async def quotes(self, principal: Principal, submission_id: str) -> tuple[SubmissionView, list[Quote]]:
        """Every quote, newest first (with the view, to show line items as the caller may)."""
        view = await self.get(principal, submission_id)
        return view, list(reversed(view.submission.quotes))

    async def document_requirements(
        self, principal: Principal, credentials: Mapping[str, str], submission_id: str
    ) -> DocumentRequirements:
        async with self._uow() as uow:
            submission = await self._visible(uow, principal, submission_id)
        return await self._documents.requirements(
            credentials,
            submission.id,
            submission.service_type,
            include_service_agreement=submission.status is not SubmissionStatus.DRAFT,
        )

    async def package(self, principal: Principal, submission_id: str) -> tuple[StoredPackage, dict[str, Any]]:
        """The stored package and its manifest (blinded for the CRO side unless structures are revealed)."""
        async with self._uow() as uow:
            submission = await self._visible(uow, principal, submission_id)
            stored = await uow.packages.get(submission.id)
        if stored is None:
            raise NotFoundError(
                f"submission {submission.id} has no package yet: it is built once the submission is submitted",
                detail="PACKAGE_NOT_FOUND",
            )
        manifest = json.loads(await self._storage.get_bytes(stored.storage_key))
        if submission.side_of(principal) is not Side.CRO:
            return stored, manifest
        hidden = PHARMA_HANDLES if submission.structures_revealed else PHARMA_HANDLES | STRUCTURE_KEYS
        return stored, _for_cro(manifest, hidden)

    # -- revealing structures -----------------------------------------------------------------------------

    async def set_structures_revealed(
        self, principal: Principal, credentials: Mapping[str, str], submission_id: str, *, revealed: bool
    ) -> SubmissionView:
        """The pharma side shows (NDA signed and not expired) or hides the structures to the CRO."""
        async with self._uow() as uow:
            submission = await self._visible(uow, principal, submission_id)
        if not principal.is_system_admin and (
            submission.side_of(principal) is not Side.PHARMA or not principal.has_any_role(PHARMA_SCIENTIST)
        ):
            raise AuthorizationError(
                "only pharma_scientist, pharma_admin or system_admin of the submitting organization may reveal "
                "or hide structures",
                detail="SUBMISSION_ROLE",
            )
        if revealed:
            found = await self._documents.requirements(credentials, submission.id, submission.service_type)
            nda = found.of(NDA)
            if nda is None or not (nda.present and nda.signed_by_owner):
                raise PreconditionError(
                    "structures are shown only once the NDA is signed and not expired",
                    detail="NDA_REQUIRED",
                )
        async with self._uow() as uow:
            submission = await self._visible(uow, principal, submission_id, lock=True)
            if submission.structures_revealed != revealed:
                submission.structures_revealed = revealed
                submission.updated_at = _now()
                await uow.submissions.save(submission)
                uow.record(
                    self._audit(
                        "submission.structures_revealed" if revealed else "submission.structures_hidden", submission
                    ),
                    actor=principal,
                )
            return await self._view(uow, principal, submission)

    # -- actions -----------------------------------------------------------------------------------------

    async def act(
        self, principal: Principal, credentials: Mapping[str, str], submission_id: str, request: ActionInput
    ) -> SubmissionView:
        action = self._action(request.action)
        async with self._uow() as uow:
            current = await self._visible(uow, principal, submission_id)
            service = await uow.catalogue.get(current.service_id) if action is Action.SUBMIT else None
        facts = _Facts()
        # Other services are asked only when the action may go ahead (a retried one finds it done).
        if action in current.permitted_actions(principal):
            if action is Action.SUBMIT:
                facts = await self._submit_facts(
                    credentials, current, service.specification_schema if service else {}
                )
            elif action is Action.START_EXPERIMENT:
                facts = await self._agreement_facts(credentials, current)
        submitted = False
        async with self._uow() as uow:

            async def run() -> str:
                nonlocal submitted
                submission = await self._visible(uow, principal, submission_id, lock=True)
                events = self._apply(submission, principal, action, request, facts)
                if action is Action.SUBMIT:
                    submitted = True
                await uow.submissions.save(submission)
                if action is Action.SUBMIT:
                    await uow.submissions.snapshot(submission.id, facts.snapshots)
                    uow.enqueue(PACKAGE_QUEUE, package_request(submission.id, facts.fingerprints), actor=principal)
                await self.record(uow, submission, events, principal)
                return submission.id

            await uow.once(f"submission_action:{submission_id}", request.request_id, run)
            view = await self._view(uow, principal, await self._visible(uow, principal, submission_id))
        if submitted:
            await self._share_documents(credentials, view.submission)
        return view

    def _apply(
        self, submission: Submission, principal: Principal, action: Action, request: ActionInput, facts: _Facts
    ) -> list[domain.Event]:
        at = _now()
        if action is Action.SUBMIT:
            return submission.submit(
                principal, specification_violations=facts.specification_violations, documents=facts.documents, at=at
            )
        if action is Action.PROVIDE_PRICING:
            return self._provide_pricing(submission, principal, request, at)
        if action is Action.APPROVE:
            return submission.approve(principal, at=at)
        if action is Action.REJECT:
            return submission.reject(principal, reason=request.reason, at=at)
        if action is Action.REQUEST_CHANGES:
            return submission.request_changes(principal, text=request.text, at=at)
        if action is Action.CANCEL:
            return submission.cancel(principal, reason=request.reason, at=at)
        if action is Action.START_EXPERIMENT:
            return submission.start_experiment(principal, agreement=facts.agreement, at=at)
        if action in THROUGH_RESULTS:
            submission.check_action(principal, action)  # the same 404/403/409 answers as any action first
            raise PreconditionError(
                f"{action.value} is done through the results API: {THROUGH_RESULTS[action]}",
                detail="USE_RESULTS_API",
            )
        return submission.complete(principal, at=at)

    def _provide_pricing(
        self, submission: Submission, principal: Principal, request: ActionInput, at: datetime
    ) -> list[domain.Event]:
        submission.check_action(principal, Action.PROVIDE_PRICING)  # party, role and state before the input
        violations: list[tuple[str, str]] = []
        price = _money("price", request.price, violations) if request.price.strip() else None
        if price is None and not violations:
            violations.append(("price", "required"))
        valid_until = _day("valid_until", request.valid_until, violations) if request.valid_until.strip() else None
        if valid_until is None and ("valid_until", "a date YYYY-MM-DD") not in violations:
            violations.append(("valid_until", "required (YYYY-MM-DD)"))
        by_code = {code: molecule_id for molecule_id, code in submission.sample_codes.items()}
        items = []
        for i, item in enumerate(request.line_items):
            unit = _money(f"line_items[{i}].unit_price", item.unit_price, violations)
            molecule_id = by_code.get(item.molecule.strip().upper(), item.molecule.strip())
            items.append(LineItem(molecule_id, item.assay, item.replicates, unit if unit is not None else Decimal(0)))
        _raise_if(violations, "the quote is not valid")
        assert price is not None and valid_until is not None
        return submission.provide_pricing(
            principal,
            price=price,
            turnaround_days=request.turnaround_days,
            valid_until=valid_until,
            at=at,
            currency=request.currency,
            line_items=items,
            note=request.note,
        )

    async def record(
        self, uow: CroUnitOfWork, submission: Submission, events: Sequence[domain.Event], actor: Principal | None
    ) -> None:
        """Stores what the domain events say (steps, messages) and records their bus and audit events.
        `actor` None: the system's own step (the package worker)."""
        organization = submission.organization_id
        for event in events:
            if isinstance(event, domain.SubmissionTransitioned):
                await uow.submissions.add_step(
                    submission.id, event.to_status, at=event.at, actor=event.actor, action=event.action.value,
                    reason=event.reason,
                )
                uow.record(self._transitioned(submission, event), organization_id=organization, actor_id=event.actor)
                uow.record(
                    self._audit(
                        AUDIT_ACTIONS[event.action.value],
                        submission,
                        {"from": event.from_status.value, "to": event.to_status.value, "reason": event.reason},
                    ),
                    organization_id=actor.organization_id if actor else organization,
                    actor_id=event.actor,
                )
            elif isinstance(event, domain.QuoteProvided):
                quote = event.quote
                uow.record(
                    cro_pb2.QuoteProvided(
                        submission_id=submission.id,
                        organization_id=organization,
                        cro_organization_id=submission.cro_organization_id,
                        number=quote.number,
                        price=str(quote.price),
                        currency=quote.currency,
                        turnaround_days=quote.turnaround_days,
                        over_budget=quote.over_budget,
                    ),
                    organization_id=organization,
                    actor_id=event.actor,
                )
                if submission.status is SubmissionStatus.PRICING_PROVIDED and quote.number > 1:
                    uow.record(
                        self._audit(
                            "submission.priced",
                            submission,
                            {"quote": str(quote.number), "price": str(quote.price), "from": "PRICING_PROVIDED",
                             "to": "PRICING_PROVIDED"},
                        ),
                        organization_id=actor.organization_id if actor else organization,
                        actor_id=event.actor,
                    )
            elif isinstance(event, domain.MessagePosted):
                message = event.message
                await uow.messages.add(message)
                uow.record(
                    cro_pb2.SubmissionMessagePosted(
                        message_id=message.id,
                        submission_id=submission.id,
                        organization_id=organization,
                        cro_organization_id=submission.cro_organization_id,
                        author_id=message.author,
                        side=message.side.value if message.side else "",
                        change_request=message.change_request,
                    ),
                    organization_id=organization,
                    actor_id=message.author,
                )
                if message.change_request:
                    uow.record(
                        self._audit(
                            AUDIT_ACTIONS["REQUEST_CHANGES"],
                            submission,
                            {"from": submission.status.value, "to": submission.status.value, "message_id": message.id},
                        ),
                        organization_id=actor.organization_id if actor else organization,
                        actor_id=message.author,
                    )

    # -- facts from other services --------------------------------------------------------------------------

    async def _check_molecules(self, credentials: Mapping[str, str], molecule_ids: Sequence[str]) -> None:
        """The molecules must be the caller's organization's (the molecule service scopes by credentials)."""
        if not molecule_ids:
            return
        _, missing = await self._molecules.batch_get(list(molecule_ids), credentials)
        if missing:
            index = {molecule_id: i for i, molecule_id in enumerate(molecule_ids)}
            violations = [(f"molecules[{index.get(m, 0)}].molecule_id", f"no molecule {m} in your organization")
                          for m in missing]
            _raise_if(violations, "the submission is not valid")

    async def _submit_facts(
        self, credentials: Mapping[str, str], submission: Submission, schema: Mapping[str, Any]
    ) -> _Facts:
        records, missing = (
            await self._molecules.batch_get(list(submission.molecule_ids), credentials)
            if submission.molecules else ([], [])
        )
        if missing:
            _raise_if(
                [("molecules", f"no longer in your organization: {', '.join(missing)}")],
                "the submission cannot be submitted yet",
            )
        found = await self._documents.requirements(credentials, submission.id, submission.service_type)
        present = [r.document_id for r in found.requirements if r.present and r.document_id]
        # The versions and hashes the package records (the package worker has no caller to ask with).
        fingerprints = await self._documents.fingerprints(credentials, present) if found.complete else []
        return _Facts(
            snapshots=[
                MoleculeSnapshot(
                    r.id, r.canonical_smiles, r.formula, r.molecular_weight, r.inchi_key, r.registration_number
                )
                for r in records
            ],
            specification_violations=specification_violations(schema, submission.specifications),
            documents=DocumentFacts(missing=found.missing, unsigned=found.unsigned),
            fingerprints=fingerprints,
        )

    async def _agreement_facts(self, credentials: Mapping[str, str], submission: Submission) -> _Facts:
        found = await self._documents.requirements(
            credentials, submission.id, submission.service_type, include_service_agreement=True
        )
        agreement = found.of(SERVICE_AGREEMENT)
        signed = agreement is not None and agreement.present
        return _Facts(
            agreement=AgreementFacts(
                signed_by_pharma=signed and agreement is not None and agreement.signed_by_owner,
                signed_by_cro=signed and agreement is not None and agreement.signed_by_counterparty,
            )
        )

    async def _share_documents(self, credentials: Mapping[str, str], submission: Submission) -> None:
        """The CRO reads and signs the submission's documents once it is submitted. The submission is
        committed already: a document service that cannot answer now is logged, not the caller's error."""
        try:
            await self._documents.share(
                credentials, submission.id, submission.organization_id, submission.cro_organization_id
            )
        except DomainError as error:
            log.warning("sharing the documents of submission %s failed: %s", submission.id, error.message)

    # -- helpers -----------------------------------------------------------------------------------------

    @staticmethod
    def _action(name: str) -> Action:
        value = name.strip().upper()
        if value not in Action.__members__:
            problem = f"one of {', '.join(Action)}"
            raise ValidationError(f"action: {problem}", field_violations=[("action", problem)])
        return Action(value)

    @staticmethod
    async def _visible(
        uow: CroUnitOfWork, principal: Principal, submission_id: str, *, lock: bool = False
    ) -> Submission:
        """The pharma side sees its submissions; the CRO side from SUBMITTED on; anyone else nothing (404)."""
        submission = await uow.submissions.get(submission_id, lock=lock)
        if submission is None:
            raise _not_found(submission_id)
        side = submission.side_of(principal)
        if principal.is_system_admin or side is Side.PHARMA:
            return submission
        if side is Side.CRO and submission.status in VISIBLE_TO_CRO:
            return submission
        raise _not_found(submission_id)

    @staticmethod
    def _blinded(principal: Principal, submission: Submission) -> bool:
        return submission.side_of(principal) is Side.CRO and not submission.structures_revealed

    @staticmethod
    def _filter(principal: Principal, filters: ListFilters) -> SubmissionFilter:
        violations: list[tuple[str, str]] = []
        if filters.status and filters.status not in SubmissionStatus.__members__:
            violations.append(("status", f"one of {', '.join(SubmissionStatus)}"))
        created_from = _day("created_from", filters.created_from, violations) if filters.created_from else None
        created_to = _day("created_to", filters.created_to, violations) if filters.created_to else None
        _raise_if(violations, "invalid filters")
        kind = principal.organization_kind
        return SubmissionFilter(
            pharma_organization_id=principal.organization_id if kind == Side.PHARMA.value else "",
            cro_organization_id=principal.organization_id if kind == Side.CRO.value else "",
            everyone=principal.is_system_admin,
            status=filters.status,
            for_cro_organization_id=filters.cro_organization_id,
            cro_service_id=filters.cro_service_id,
            created_from=created_from,
            created_to=created_to,
            molecule_id=filters.molecule_id,
        )

    @staticmethod
    async def _service_name(uow: CroUnitOfWork, service_id: str) -> str:
        service = await uow.catalogue.get(service_id)
        return service.name if service else ""

    async def _view(self, uow: CroUnitOfWork, principal: Principal, submission: Submission) -> SubmissionView:
        blinded = self._blinded(principal, submission)
        cro_side = submission.side_of(principal) is Side.CRO
        rows = await uow.submissions.molecules(submission.id)
        return SubmissionView(
            submission=submission,
            service_name=await self._service_name(uow, submission.service_id),
            molecules=tuple(self._molecule_view(row, cro_side=cro_side, blinded=blinded) for row in rows),
            permitted_actions=tuple(a.value for a in submission.permitted_actions(principal)),
            blinded=blinded,
        )

    @staticmethod
    def _molecule_view(row: MoleculeRow, *, cro_side: bool, blinded: bool) -> MoleculeView:
        """The CRO side sees sample codes, formula and weight, and the structure once revealed; never the
        pharma side's molecule ids or registration numbers."""
        snap = row.snapshot
        if cro_side:
            smiles = "" if blinded else snap.canonical_smiles
            return MoleculeView("", row.sample_code, "", smiles, snap.formula, snap.molecular_weight,
                                row.concentration, row.notes)
        return MoleculeView(row.molecule_id, row.sample_code, snap.registration_number, snap.canonical_smiles,
                            snap.formula, snap.molecular_weight, row.concentration, row.notes)

    @staticmethod
    def _transitioned(submission: Submission, event: domain.SubmissionTransitioned) -> cro_pb2.SubmissionTransitioned:
        return cro_pb2.SubmissionTransitioned(
            submission_id=submission.id,
            organization_id=submission.organization_id,
            cro_organization_id=submission.cro_organization_id,
            from_status=event.from_status.value,
            to_status=event.to_status.value,
            action=event.action.value,
            reason=event.reason,
            molecule_ids=list(event.molecule_ids),
            molecule_status=event.molecule_status.value if event.molecule_status else "",
            name=submission.name,
            created_by=submission.created_by,
            at=_timestamp(event.at),
        )

    @staticmethod
    def _audit(action: str, submission: Submission, details: Mapping[str, str] | None = None) -> Any:
        return audit_event(
            action,
            target_type="submission",
            target_id=submission.id,
            details={"name": submission.name, **{k: v for k, v in (details or {}).items() if v}},
        )
