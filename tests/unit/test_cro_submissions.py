"""The submission domain without I/O: every state × step against the table, every role × action against
the rules, the gates, quotes, the molecule statuses a transition drives, and blinded sample codes."""

from __future__ import annotations

import random
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from services.cro.domain.samples import (
    SAMPLE_ALPHABET,
    check_sample_prefix,
    molecule_for_code,
    new_sample_prefix,
    sample_codes,
)
from services.cro.domain.submissions import (
    TRANSITIONS,
    WHO_MAY,
    AgreementFacts,
    DocumentFacts,
    Event,
    LineItem,
    MessagePosted,
    QuoteApproved,
    QuoteProvided,
    ServiceFacts,
    Submission,
    SubmissionCreated,
    SubmissionEdited,
    SubmissionMolecule,
    SubmissionTransitioned,
    allowed_actions,
    molecule_status_after,
    require_creator,
    rule_text,
)
from services.cro.domain.vocabulary import (
    ACTIVE,
    TERMINAL,
    Action,
    MoleculeStatus,
    Operation,
    ServiceType,
    Step,
    SubmissionStatus,
    SystemStep,
)
from services.runtime.auth import Principal
from services.runtime.errors import AuthorizationError, NotFoundError, PreconditionError, ValidationError

S, A = SubmissionStatus, Action
PHARMA_ORG, CRO_ORG, OTHER_ORG, PLATFORM_ORG = "org-pharma", "org-cro", "org-other", "org-platform"
AT = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
TODAY = AT.date()
SHA = "ab" * 32
SERVICE = ServiceFacts(id="svc-1", cro_organization_id=CRO_ORG, service_type=ServiceType.ADME, currency="USD")
MOLECULES = (SubmissionMolecule("m-1", "10 mM in DMSO"), SubmissionMolecule("m-2"), SubmissionMolecule("m-3"))
STEPS: list[Step] = [*Action, SystemStep.PACKAGE_BUILT]
ROLES = ("pharma_scientist", "pharma_admin", "cro_technician", "cro_admin", "auditor", "system_admin")
ORGANIZATION_OF_ROLE = {
    "pharma_scientist": (PHARMA_ORG, "PHARMA"),
    "pharma_admin": (PHARMA_ORG, "PHARMA"),
    "auditor": (PHARMA_ORG, "PHARMA"),
    "cro_technician": (CRO_ORG, "CRO"),
    "cro_admin": (CRO_ORG, "CRO"),
    "system_admin": (PLATFORM_ORG, "PLATFORM"),
}


def person(role: str, organization_id: str = "") -> Principal:
    default_org, kind = ORGANIZATION_OF_ROLE[role]
    return Principal(f"user-{role}", organization_id or default_org, kind, frozenset({role}))


SCIENTIST, PHARMA_ADMIN = person("pharma_scientist"), person("pharma_admin")
TECHNICIAN, CRO_ADMIN, SYSTEM_ADMIN = person("cro_technician"), person("cro_admin"), person("system_admin")
ALL_SIGNED = DocumentFacts()
BOTH_SIGNED = AgreementFacts(signed_by_pharma=True, signed_by_cro=True)


def draft(
    budget: Decimal | None = Decimal("5000"), molecules: tuple[SubmissionMolecule, ...] = MOLECULES
) -> Submission:
    submission, created = Submission.create(
        SCIENTIST, service=SERVICE, name="ADME panel", sample_prefix="7F3K", at=AT, molecules=molecules,
        specifications={"temperature": 37}, budget=budget,
    )
    assert created == SubmissionCreated(submission.id, PHARMA_ORG, CRO_ORG, "svc-1", SCIENTIST.subject, AT)
    return submission


def default_actor(submission: Submission, step: Step) -> Principal:
    """Someone the rules let take `step` in the submission's current state."""
    if step is A.REJECT:
        return PHARMA_ADMIN if submission.status is S.PRICING_PROVIDED else CRO_ADMIN
    if step is A.REQUEST_CHANGES:
        return SCIENTIST if submission.status in (S.PRICING_PROVIDED, S.RESULTS_UPLOADED) else TECHNICIAN
    pharma = {A.SUBMIT: SCIENTIST, A.APPROVE: PHARMA_ADMIN, A.CANCEL: SCIENTIST, A.REVIEW_RESULTS: SCIENTIST,
              A.COMPLETE: SCIENTIST}
    return pharma.get(step, CRO_ADMIN)


def perform(submission: Submission, step: Step, actor: Principal | None = None, at: datetime = AT) -> list[Event]:
    """Takes `step` with every gate satisfied."""
    who = actor or default_actor(submission, step)
    match step:
        case SystemStep.PACKAGE_BUILT:
            return submission.package_built(package_sha256=SHA, at=at)
        case A.SUBMIT:
            return submission.submit(who, specification_violations=[], documents=ALL_SIGNED, at=at)
        case A.PROVIDE_PRICING:
            return submission.provide_pricing(
                who, price=Decimal("1000"), turnaround_days=10, valid_until=TODAY + timedelta(days=30), at=at
            )
        case A.APPROVE:
            return submission.approve(who, at=at)
        case A.REJECT:
            return submission.reject(who, reason="no capacity this quarter", at=at)
        case A.REQUEST_CHANGES:
            return submission.request_changes(who, text="please use 3 replicates", at=at)
        case A.CANCEL:
            return submission.cancel(who, reason="project stopped", at=at)
        case A.START_EXPERIMENT:
            return submission.start_experiment(who, agreement=BOTH_SIGNED, at=at)
        case A.UPLOAD_RESULTS:
            return submission.upload_results(who, at=at)
        case A.REVIEW_RESULTS:
            return submission.review_results(who, at=at)
        case A.COMPLETE:
            return submission.complete(who, at=at)
    raise AssertionError(step)


HAPPY_PATH: dict[SubmissionStatus, list[Step]] = {
    S.DRAFT: [],
    S.SUBMITTED: [A.SUBMIT],
    S.PENDING_REVIEW: [A.SUBMIT, SystemStep.PACKAGE_BUILT],
    S.PRICING_PROVIDED: [A.SUBMIT, SystemStep.PACKAGE_BUILT, A.PROVIDE_PRICING],
    S.APPROVED: [A.SUBMIT, SystemStep.PACKAGE_BUILT, A.PROVIDE_PRICING, A.APPROVE],
    S.IN_PROGRESS: [A.SUBMIT, SystemStep.PACKAGE_BUILT, A.PROVIDE_PRICING, A.APPROVE, A.START_EXPERIMENT],
}
HAPPY_PATH[S.RESULTS_UPLOADED] = [*HAPPY_PATH[S.IN_PROGRESS], A.UPLOAD_RESULTS]
HAPPY_PATH[S.RESULTS_REVIEWED] = [*HAPPY_PATH[S.RESULTS_UPLOADED], A.REVIEW_RESULTS]
HAPPY_PATH[S.COMPLETED] = [*HAPPY_PATH[S.RESULTS_REVIEWED], A.COMPLETE]
HAPPY_PATH[S.CANCELLED] = [A.CANCEL]
HAPPY_PATH[S.REJECTED] = [A.SUBMIT, A.REJECT]


def submission_in(status: SubmissionStatus, **values: object) -> Submission:
    submission = draft(**values)  # type: ignore[arg-type]
    for step in HAPPY_PATH[status]:
        perform(submission, step)
    assert submission.status is status
    return submission


# -- the table ------------------------------------------------------------------------------------------------

# Written out again here on purpose: DOMAIN.md's transitions, the system step, and the steps that keep the state.
EXPECTED: dict[SubmissionStatus, dict[Step, SubmissionStatus]] = {
    S.DRAFT: {A.SUBMIT: S.SUBMITTED, A.CANCEL: S.CANCELLED},
    S.SUBMITTED: {SystemStep.PACKAGE_BUILT: S.PENDING_REVIEW, A.REJECT: S.REJECTED, A.CANCEL: S.CANCELLED,
                  A.REQUEST_CHANGES: S.SUBMITTED},
    S.PENDING_REVIEW: {A.PROVIDE_PRICING: S.PRICING_PROVIDED, A.REJECT: S.REJECTED, A.CANCEL: S.CANCELLED,
                       A.REQUEST_CHANGES: S.PENDING_REVIEW},
    S.PRICING_PROVIDED: {A.APPROVE: S.APPROVED, A.REJECT: S.REJECTED, A.CANCEL: S.CANCELLED,
                         A.PROVIDE_PRICING: S.PRICING_PROVIDED, A.REQUEST_CHANGES: S.PRICING_PROVIDED},
    S.APPROVED: {A.START_EXPERIMENT: S.IN_PROGRESS, A.CANCEL: S.CANCELLED},
    S.IN_PROGRESS: {A.UPLOAD_RESULTS: S.RESULTS_UPLOADED, A.CANCEL: S.CANCELLED},
    S.RESULTS_UPLOADED: {A.REVIEW_RESULTS: S.RESULTS_REVIEWED, A.CANCEL: S.CANCELLED,
                         A.UPLOAD_RESULTS: S.RESULTS_UPLOADED, A.REQUEST_CHANGES: S.RESULTS_UPLOADED},
    S.RESULTS_REVIEWED: {A.COMPLETE: S.COMPLETED, A.CANCEL: S.CANCELLED},
    S.COMPLETED: {},
    S.CANCELLED: {},
    S.REJECTED: {},
}
DOMAIN_TRANSITIONS = {
    (S.DRAFT, S.SUBMITTED), (S.DRAFT, S.CANCELLED),
    (S.SUBMITTED, S.PENDING_REVIEW), (S.SUBMITTED, S.REJECTED), (S.SUBMITTED, S.CANCELLED),
    (S.PENDING_REVIEW, S.PRICING_PROVIDED), (S.PENDING_REVIEW, S.REJECTED), (S.PENDING_REVIEW, S.CANCELLED),
    (S.PRICING_PROVIDED, S.APPROVED), (S.PRICING_PROVIDED, S.REJECTED), (S.PRICING_PROVIDED, S.CANCELLED),
    (S.APPROVED, S.IN_PROGRESS), (S.APPROVED, S.CANCELLED),
    (S.IN_PROGRESS, S.RESULTS_UPLOADED), (S.IN_PROGRESS, S.CANCELLED),
    (S.RESULTS_UPLOADED, S.RESULTS_REVIEWED), (S.RESULTS_UPLOADED, S.CANCELLED),
    (S.RESULTS_REVIEWED, S.COMPLETED), (S.RESULTS_REVIEWED, S.CANCELLED),
}


def test_the_table_is_the_expected_one_and_moves_only_as_domain_md_allows() -> None:
    assert {status: dict(steps) for status, steps in TRANSITIONS.items()} == EXPECTED
    moves = {(state, target) for state, steps in TRANSITIONS.items() for target in steps.values() if target != state}
    assert moves == DOMAIN_TRANSITIONS
    assert {state for state, steps in TRANSITIONS.items() if not steps} == TERMINAL
    assert set(ACTIVE) == {S.SUBMITTED, S.PENDING_REVIEW, S.PRICING_PROVIDED, S.APPROVED, S.IN_PROGRESS,
                           S.RESULTS_UPLOADED, S.RESULTS_REVIEWED}


@pytest.mark.parametrize("state", list(S))
@pytest.mark.parametrize("step", STEPS)
def test_every_state_and_step(state: SubmissionStatus, step: Step) -> None:
    submission = submission_in(state)
    expected = EXPECTED[state].get(step)
    if expected is None:
        # system_admin passes every role rule, so what refuses is the state (409 naming what is allowed).
        with pytest.raises(PreconditionError) as refused:
            perform(submission, step, actor=SYSTEM_ADMIN)
        error = refused.value
        assert error.detail == "SUBMISSION_STATE" and error.metadata["status"] == state.value
        allowed = [a.value for a in Action if a in EXPECTED[state]]
        assert error.metadata["allowed_actions"] == ",".join(allowed)
        assert all(a in error.message for a in allowed) and (allowed or "final" in error.message)
        assert submission.status is state
        return
    events = perform(submission, step)
    assert submission.status is expected
    transitions = [e for e in events if isinstance(e, SubmissionTransitioned)]
    if expected is state:
        assert transitions == []
    else:
        [moved] = transitions
        assert (moved.from_status, moved.to_status, moved.action) == (state, expected, step)
        assert moved.molecule_ids == ("m-1", "m-2", "m-3") and moved.at == AT
        assert moved.molecule_status == molecule_status_after(state, expected)
        assert submission.step_times[expected] == AT
    if step is A.REQUEST_CHANGES:
        [posted] = events
        assert isinstance(posted, MessagePosted) and posted.message.change_request
    if step is A.PROVIDE_PRICING:
        assert isinstance(events[0], QuoteProvided) and events[0].quote is submission.current_quote
    if step is A.APPROVE:
        assert isinstance(events[1], QuoteApproved) and events[1].quote_number == 1


def test_terminal_states_name_no_action_and_the_system_step_is_not_a_user_action() -> None:
    assert allowed_actions(S.COMPLETED) == ()
    assert allowed_actions(S.SUBMITTED) == (A.REJECT, A.REQUEST_CHANGES, A.CANCEL)
    with pytest.raises(PreconditionError, match="allowed actions: none: it is final"):
        submission_in(S.CANCELLED).cancel(SCIENTIST, at=AT)


def test_transition_events_carry_the_actor_and_the_reason() -> None:
    submission = submission_in(S.SUBMITTED)
    [rejected] = submission.reject(CRO_ADMIN, reason="  out of scope ", at=AT)
    assert isinstance(rejected, SubmissionTransitioned)
    assert (rejected.actor, rejected.reason, rejected.action) == (CRO_ADMIN.subject, "out of scope", A.REJECT)
    built = submission_in(S.SUBMITTED).package_built(package_sha256=SHA, at=AT)[0]
    assert isinstance(built, SubmissionTransitioned) and built.actor == "system"


def test_a_rejection_needs_a_reason() -> None:
    submission = submission_in(S.PENDING_REVIEW)
    with pytest.raises(ValidationError) as refused:
        submission.reject(CRO_ADMIN, reason=" ", at=AT)
    assert refused.value.field_violations[0][0] == "reason" and submission.status is S.PENDING_REVIEW


# -- who may -----------------------------------------------------------------------------------------------------

PHARMA_ANY = {"pharma_scientist", "pharma_admin", "system_admin"}
PHARMA_ADMINS = {"pharma_admin", "system_admin"}
CRO_ANY = {"cro_technician", "cro_admin", "system_admin"}
CRO_ADMINS = {"cro_admin", "system_admin"}
# (action, state where the table allows it) → the roles that may take it there.
MAY: dict[tuple[Action, SubmissionStatus], set[str]] = {
    (A.SUBMIT, S.DRAFT): PHARMA_ANY,
    (A.PROVIDE_PRICING, S.PENDING_REVIEW): CRO_ADMINS,
    (A.PROVIDE_PRICING, S.PRICING_PROVIDED): CRO_ADMINS,
    (A.APPROVE, S.PRICING_PROVIDED): PHARMA_ADMINS,
    (A.REJECT, S.SUBMITTED): CRO_ADMINS,
    (A.REJECT, S.PENDING_REVIEW): CRO_ADMINS,
    (A.REJECT, S.PRICING_PROVIDED): PHARMA_ADMINS,
    (A.REQUEST_CHANGES, S.SUBMITTED): CRO_ANY,
    (A.REQUEST_CHANGES, S.PENDING_REVIEW): CRO_ANY,
    (A.REQUEST_CHANGES, S.PRICING_PROVIDED): PHARMA_ANY | CRO_ANY,
    (A.REQUEST_CHANGES, S.RESULTS_UPLOADED): PHARMA_ANY,
    (A.CANCEL, S.DRAFT): PHARMA_ANY,
    (A.CANCEL, S.SUBMITTED): PHARMA_ANY | CRO_ADMINS,
    (A.CANCEL, S.PENDING_REVIEW): PHARMA_ANY | CRO_ADMINS,
    (A.CANCEL, S.PRICING_PROVIDED): PHARMA_ANY | CRO_ADMINS,
    (A.CANCEL, S.APPROVED): PHARMA_ANY | CRO_ADMINS,
    (A.CANCEL, S.IN_PROGRESS): PHARMA_ANY,
    (A.CANCEL, S.RESULTS_UPLOADED): PHARMA_ANY,
    (A.CANCEL, S.RESULTS_REVIEWED): PHARMA_ANY,
    (A.START_EXPERIMENT, S.APPROVED): CRO_ANY,
    (A.UPLOAD_RESULTS, S.IN_PROGRESS): CRO_ANY,
    (A.UPLOAD_RESULTS, S.RESULTS_UPLOADED): CRO_ANY,
    (A.REVIEW_RESULTS, S.RESULTS_UPLOADED): PHARMA_ANY,
    (A.COMPLETE, S.RESULTS_REVIEWED): PHARMA_ANY,
}


def test_the_role_matrix_covers_every_allowed_action() -> None:
    assert set(MAY) == {(a, s) for s, steps in EXPECTED.items() for a in steps if isinstance(a, Action)}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("action", "state"), list(MAY))
def test_every_role_and_action(role: str, action: Action, state: SubmissionStatus) -> None:
    submission = submission_in(state)
    actor = person(role)
    if role in MAY[(action, state)]:
        perform(submission, action, actor=actor)
        assert submission.status is EXPECTED[state][action]
    elif role.startswith("cro_") and state is S.DRAFT:
        with pytest.raises(NotFoundError):  # the CRO does not see a draft at all
            perform(submission, action, actor=actor)
    else:
        with pytest.raises(AuthorizationError) as refused:
            perform(submission, action, actor=actor)
        assert refused.value.message == rule_text(action) and refused.value.detail == "SUBMISSION_ROLE"
        assert submission.status is state


def test_the_rules_read_as_sentences() -> None:
    assert rule_text(A.APPROVE) == "only pharma_admin or system_admin may APPROVE a price"
    assert rule_text(A.SUBMIT) == "only pharma_scientist, pharma_admin or system_admin may SUBMIT"
    assert rule_text(A.REJECT) == (
        "only pharma_admin or system_admin may REJECT a price in PRICING_PROVIDED; "
        "only cro_admin or system_admin may REJECT a submission in SUBMITTED or PENDING_REVIEW"
    )
    assert rule_text(A.CANCEL).endswith(
        "only cro_admin or system_admin may CANCEL in SUBMITTED, PENDING_REVIEW, PRICING_PROVIDED or APPROVED"
    )
    assert set(WHO_MAY) == set(Action) | set(Operation)


@pytest.mark.parametrize("action", list(Action))
def test_another_organization_sees_nothing(action: Action) -> None:
    outsider = person("pharma_admin", OTHER_ORG)
    state = next(s for (a, s) in MAY if a is action)
    with pytest.raises(NotFoundError):
        perform(submission_in(state), action, actor=outsider)


@pytest.mark.parametrize("role", ROLES)
def test_who_may_create_edit_and_post_messages(role: str) -> None:
    actor = person(role)
    pharma = role in PHARMA_ANY
    if pharma:
        submission, _ = Submission.create(actor, service=SERVICE, name="n", sample_prefix="7F3K", at=AT)
        assert submission.organization_id == actor.organization_id and submission.status is S.DRAFT
    else:
        with pytest.raises(AuthorizationError, match="may create a submission"):
            Submission.create(actor, service=SERVICE, name="n", sample_prefix="7F3K", at=AT)
    if pharma:
        assert isinstance(draft().edit(actor, name="renamed", at=AT), SubmissionEdited)
    else:
        expected_error = NotFoundError if role.startswith("cro_") else AuthorizationError
        with pytest.raises(expected_error):
            draft().edit(actor, name="renamed", at=AT)
    submitted = submission_in(S.SUBMITTED)
    if role == "auditor":
        with pytest.raises(AuthorizationError, match="may post messages on a submission"):
            submitted.post_message(actor, text="hello", at=AT)
    else:
        posted = submitted.post_message(actor, text=" hello ", at=AT)
        assert posted.message.text == "hello" and not posted.message.change_request
        assert posted.message.side == submitted.side_of(actor)


def test_permitted_actions_are_the_table_and_the_rules_together() -> None:
    assert submission_in(S.PRICING_PROVIDED).permitted_actions(PHARMA_ADMIN) == (A.APPROVE, A.REJECT,
                                                                                A.REQUEST_CHANGES, A.CANCEL)
    assert submission_in(S.PRICING_PROVIDED).permitted_actions(TECHNICIAN) == (A.REQUEST_CHANGES,)
    assert submission_in(S.IN_PROGRESS).permitted_actions(CRO_ADMIN) == (A.UPLOAD_RESULTS,)
    assert submission_in(S.APPROVED).permitted_actions(person("auditor")) == ()
    assert submission_in(S.APPROVED).permitted_actions(person("cro_admin", OTHER_ORG)) == ()


# -- gates -----------------------------------------------------------------------------------------------------


def test_submit_needs_molecules_and_valid_specifications() -> None:
    submission = draft(molecules=())
    with pytest.raises(ValidationError) as refused:
        submission.submit(
            SCIENTIST, specification_violations=[("temperature", "must be <= 40"), ("", "'assay' is required")],
            documents=ALL_SIGNED, at=AT,
        )
    assert refused.value.field_violations == [
        ("molecules", "add at least one molecule"),
        ("specifications.temperature", "must be <= 40"),
        ("specifications", "'assay' is required"),
    ]
    assert submission.status is S.DRAFT and submission.sample_codes == {}


def test_submit_names_the_missing_and_unsigned_documents() -> None:
    submission = draft()
    documents = DocumentFacts(missing=("SAFETY_DATA_SHEET",), unsigned=("NON_DISCLOSURE_AGREEMENT",))
    with pytest.raises(PreconditionError) as refused:
        submission.submit(SCIENTIST, specification_violations=[], documents=documents, at=AT)
    error = refused.value
    assert error.detail == "DOCUMENTS_INCOMPLETE"
    assert "missing: SAFETY_DATA_SHEET" in error.message
    assert "not signed by the pharma side: NON_DISCLOSURE_AGREEMENT" in error.message
    assert error.metadata == {"missing": "SAFETY_DATA_SHEET", "unsigned": "NON_DISCLOSURE_AGREEMENT"}
    assert submission.status is S.DRAFT


@pytest.mark.parametrize(
    ("agreement", "named"),
    [
        (AgreementFacts(), "pharma and CRO"),
        (AgreementFacts(signed_by_pharma=True), "CRO"),
        (AgreementFacts(signed_by_cro=True), "pharma"),
    ],
)
def test_start_needs_the_service_agreement_signed_by_both_sides(agreement: AgreementFacts, named: str) -> None:
    submission = submission_in(S.APPROVED)
    with pytest.raises(PreconditionError, match=f"not signed by the {named} side") as refused:
        submission.start_experiment(TECHNICIAN, agreement=agreement, at=AT)
    assert refused.value.detail == "SERVICE_AGREEMENT_UNSIGNED" and submission.status is S.APPROVED


def test_the_package_hash_must_be_a_sha256() -> None:
    submission = submission_in(S.SUBMITTED)
    with pytest.raises(ValidationError):
        submission.package_built(package_sha256="not-a-hash", at=AT)
    submission.package_built(package_sha256=SHA, at=AT)
    assert submission.package_sha256 == SHA


def test_only_a_draft_is_edited_and_only_real_changes_are_reported() -> None:
    submission = draft()
    assert submission.edit(SCIENTIST, name="ADME panel", at=AT) is None
    edited = submission.edit(
        SCIENTIST, molecules=MOLECULES[:1], specifications={"temperature": 25}, budget=None, at=AT
    )
    assert edited == SubmissionEdited(submission.id, ("molecules", "specifications", "budget"), SCIENTIST.subject, AT)
    assert submission.molecule_ids == ("m-1",) and submission.budget is None
    with pytest.raises(ValidationError) as refused:
        submission.edit(SCIENTIST, name=" ", molecules=[SubmissionMolecule("m-1"), SubmissionMolecule("m-1")],
                        currency="usd!", at=AT)
    assert [name for name, _ in refused.value.field_violations] == ["name", "molecules[1].molecule_id", "currency"]
    perform(submission, A.SUBMIT)
    with pytest.raises(PreconditionError, match="only a DRAFT can"):
        submission.edit(SCIENTIST, name="late", at=AT)


def test_create_checks_the_service_and_the_fields() -> None:
    with pytest.raises(PreconditionError) as inactive:
        Submission.create(SCIENTIST, service=ServiceFacts("svc-2", CRO_ORG, "ADME", "USD", active=False),
                          name="n", sample_prefix="7F3K", at=AT)
    assert inactive.value.detail == "SERVICE_INACTIVE"
    with pytest.raises(ValidationError) as refused:
        Submission.create(SCIENTIST, service=SERVICE, name="", sample_prefix="7F3K", at=AT, budget=Decimal("-1"),
                          currency="dollars")
    assert [name for name, _ in refused.value.field_violations] == ["name", "currency", "budget"]
    with pytest.raises(ValidationError, match="sample_prefix"):
        Submission.create(SCIENTIST, service=SERVICE, name="n", sample_prefix="O0I1", at=AT)
    submission, _ = Submission.create(SCIENTIST, service=SERVICE, name="n", sample_prefix="7F3K", at=AT,
                                      currency="eur")
    assert submission.currency == "EUR"


def test_messages_start_once_submitted_and_need_text() -> None:
    with pytest.raises(PreconditionError, match="DRAFT has no thread"):
        draft().post_message(SCIENTIST, text="hello", at=AT)
    with pytest.raises(ValidationError):
        submission_in(S.SUBMITTED).post_message(TECHNICIAN, text="   ", at=AT)
    posted = submission_in(S.SUBMITTED).post_message(TECHNICIAN, text="which buffer?", at=AT, document_id="doc-9")
    assert posted.message.document_id == "doc-9" and posted.message.author == TECHNICIAN.subject


# -- quotes --------------------------------------------------------------------------------------------------------


def quote(submission: Submission, price: str = "1000", *, days: int = 10, valid_for: int = 30,
          items: tuple[LineItem, ...] = (), at: datetime = AT) -> list[Event]:
    return submission.provide_pricing(
        CRO_ADMIN, price=Decimal(price), turnaround_days=days, valid_until=at.date() + timedelta(days=valid_for),
        line_items=items, at=at,
    )


def test_every_quote_is_kept_and_the_cro_reprices_inside_pricing_provided() -> None:
    submission = submission_in(S.PENDING_REVIEW)
    first = quote(submission, "4000")
    assert [type(e) for e in first] == [QuoteProvided, SubmissionTransitioned]
    later = AT + timedelta(days=1)
    second = quote(submission, "4500", days=12, at=later)
    assert [type(e) for e in second] == [QuoteProvided] and submission.status is S.PRICING_PROVIDED
    assert [(q.number, q.price) for q in submission.quotes] == [(1, Decimal("4000")), (2, Decimal("4500"))]
    assert submission.current_quote is submission.quotes[1] and submission.price == Decimal("4500")
    events = submission.approve(PHARMA_ADMIN, at=later)
    assert events[1] == QuoteApproved(submission.id, 2, Decimal("4500"), "USD", False, PHARMA_ADMIN.subject, later)
    assert submission.approved_quote is submission.quotes[1] and submission.turnaround_days == 12


@pytest.mark.parametrize(("budget", "price", "over"), [("5000", "5000.00", False), ("5000", "5000.01", True),
                                                      (None, "999999", False)])
def test_a_price_above_the_budget_is_flagged(budget: str | None, price: str, over: bool) -> None:
    submission = submission_in(S.PENDING_REVIEW, budget=Decimal(budget) if budget else None)
    provided = quote(submission, price)[0]
    assert isinstance(provided, QuoteProvided) and provided.quote.over_budget is over
    approved = submission.approve(PHARMA_ADMIN, at=AT)[1]
    assert isinstance(approved, QuoteApproved) and approved.over_budget is over  # flagged, not forbidden


def test_an_expired_quote_cannot_be_approved_but_its_last_day_can() -> None:
    submission = submission_in(S.PENDING_REVIEW)
    quote(submission, valid_for=5)
    last_day = AT + timedelta(days=5)
    with pytest.raises(PreconditionError) as refused:
        submission.approve(PHARMA_ADMIN, at=last_day + timedelta(days=1))
    assert refused.value.detail == "QUOTE_EXPIRED" and "quote 1 expired on 2026-12-08" in refused.value.message
    assert submission.status is S.PRICING_PROVIDED
    submission.approve(PHARMA_ADMIN, at=last_day)
    assert submission.status is S.APPROVED


def test_line_items_must_add_up_to_the_price() -> None:
    items = (LineItem("m-1", "microsomal stability", 3, Decimal("100.50")),
             LineItem("m-2", "microsomal stability", 2, Decimal("200")))
    submission = submission_in(S.PENDING_REVIEW)
    with pytest.raises(ValidationError) as refused:
        quote(submission, "700", items=items)
    assert refused.value.field_violations == [("line_items", "add up to 701.50, not the price 700")]
    assert submission.quotes == [] and submission.status is S.PENDING_REVIEW
    quote(submission, "701.5", items=items)
    assert submission.current_quote is not None and submission.current_quote.line_items == items


def test_a_quote_is_checked_field_by_field() -> None:
    submission = submission_in(S.PENDING_REVIEW)
    bad_items = (LineItem("m-404", " ", 0, Decimal("-1")),)
    with pytest.raises(ValidationError) as refused:
        submission.provide_pricing(
            CRO_ADMIN, price=Decimal("NaN"), currency="EUR", turnaround_days=0, valid_until=TODAY - timedelta(days=1),
            line_items=bad_items, at=AT,
        )
    assert [name for name, _ in refused.value.field_violations] == [
        "price", "currency", "turnaround_days", "valid_until",
        "line_items[0].molecule_id", "line_items[0].assay", "line_items[0].replicates", "line_items[0].unit_price",
    ]
    with pytest.raises(ValidationError, match="greater than 0"):
        quote(submission, "0")


def test_the_estimated_completion_follows_the_start_and_the_turnaround() -> None:
    submission = submission_in(S.PENDING_REVIEW)
    quote(submission, days=21)
    submission.approve(PHARMA_ADMIN, at=AT)
    started = datetime(2026, 12, 10, 9, 30, tzinfo=UTC)
    submission.start_experiment(TECHNICIAN, agreement=BOTH_SIGNED, at=started)
    assert submission.estimated_completion == date(2026, 12, 31)
    assert submission.step_times[S.IN_PROGRESS] == started


# -- molecule status ------------------------------------------------------------------------------------------------

MOLECULE_STATUS: dict[tuple[SubmissionStatus, SubmissionStatus], MoleculeStatus | None] = {
    (S.DRAFT, S.SUBMITTED): MoleculeStatus.PENDING,
    (S.APPROVED, S.IN_PROGRESS): MoleculeStatus.TESTING,
    (S.RESULTS_UPLOADED, S.RESULTS_REVIEWED): MoleculeStatus.RESULTS,
    (S.SUBMITTED, S.REJECTED): MoleculeStatus.AVAILABLE,
    (S.PENDING_REVIEW, S.REJECTED): MoleculeStatus.AVAILABLE,
    (S.PRICING_PROVIDED, S.REJECTED): MoleculeStatus.AVAILABLE,
    **{(state, S.CANCELLED): MoleculeStatus.AVAILABLE for state in
       (S.SUBMITTED, S.PENDING_REVIEW, S.PRICING_PROVIDED, S.APPROVED, S.IN_PROGRESS, S.RESULTS_UPLOADED)},
    # A draft never held its molecules (they may be held by another submission); reviewed results stay RESULTS.
    (S.DRAFT, S.CANCELLED): None,
    (S.RESULTS_REVIEWED, S.CANCELLED): None,
}


@pytest.mark.parametrize(("from_status", "to_status"), sorted(DOMAIN_TRANSITIONS))
def test_molecule_status_follows_every_transition(from_status: SubmissionStatus, to_status: SubmissionStatus) -> None:
    assert molecule_status_after(from_status, to_status) == MOLECULE_STATUS.get((from_status, to_status))


def test_steps_that_keep_the_state_leave_the_molecules_alone() -> None:
    assert all(molecule_status_after(state, state) is None for state in S)


# -- blinded sample codes ------------------------------------------------------------------------------------------

CODE = re.compile(r"^S-[2-9A-HJKMNP-TW-Z]{4}-\d{2,}$")


def test_the_alphabet_has_no_look_alikes() -> None:
    assert not set("0O1ILUV") & set(SAMPLE_ALPHABET)
    assert len(set(SAMPLE_ALPHABET)) == len(SAMPLE_ALPHABET)


def test_prefixes_are_random_from_the_alphabet() -> None:
    seeded = random.Random(7)
    prefixes = {new_sample_prefix(seeded.choice) for _ in range(200)}
    assert len(prefixes) > 190 and all(check_sample_prefix(p) == p for p in prefixes)
    assert all(len(new_sample_prefix()) == 4 for _ in range(10))


def test_codes_are_numbered_unique_and_well_formed() -> None:
    ids = [f"m-{i}" for i in range(150)]
    codes = sample_codes("7F3K", ids)
    assert codes["m-0"] == "S-7F3K-01" and codes["m-98"] == "S-7F3K-99" and codes["m-149"] == "S-7F3K-150"
    assert len(set(codes.values())) == 150 and all(CODE.match(c) for c in codes.values())
    assert molecule_for_code(codes, "s-7f3k-07") == "m-6"
    with pytest.raises(NotFoundError):
        molecule_for_code(codes, "S-7F3K-151")


def test_codes_are_fixed_at_submit_in_molecule_order() -> None:
    submission = draft()
    assert submission.sample_codes == {}
    perform(submission, A.SUBMIT)
    assert submission.sample_codes == {"m-1": "S-7F3K-01", "m-2": "S-7F3K-02", "m-3": "S-7F3K-03"}


def test_who_may_create_is_asked_on_its_own_before_anything_is_looked_up() -> None:
    for creator in (SCIENTIST, PHARMA_ADMIN, SYSTEM_ADMIN):
        require_creator(creator)
    for refused in (TECHNICIAN, CRO_ADMIN, person("auditor")):
        with pytest.raises(AuthorizationError) as error:
            require_creator(refused)
        assert error.value.detail == "SUBMISSION_ROLE", refused
