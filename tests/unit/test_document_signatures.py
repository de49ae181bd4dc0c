"""Signature requests' rules (services/document/domain/signatures.py): every request state × action."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from services.document.domain.signatures import (
    DocumentFacts,
    DocumentStatusMoved,
    Person,
    RequestFinished,
    SignatureRequest,
    SignerDeclined,
    SignerSigned,
    SignerSpec,
    SignerTurn,
    new_request,
)
from services.document.domain.vocabulary import DocumentStatus, EnvelopeStatus, SignerStatus
from services.runtime.errors import AuthorizationError, DomainError, PreconditionError, ValidationError

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
SHA = "a" * 64
PHARMA, CRO = "org-pharma", "org-cro"
REQUESTER = Person("u-scientist", PHARMA, frozenset({"pharma_scientist"}))
PHARMA_ADMIN = Person("u-padmin", PHARMA, frozenset({"pharma_admin"}), "Paula Admin", "paula@pharma.test")
OTHER_PHARMA_ADMIN = Person("u-padmin2", PHARMA, frozenset({"pharma_admin"}), "Peter Admin", "peter@pharma.test")
CRO_ADMIN = Person("u-cadmin", CRO, frozenset({"cro_admin"}), "Carl Admin", "carl@cro.test")
CRO_TECH = Person("u-ctech", CRO, frozenset({"cro_technician"}), "Tina Tech", "tina@cro.test")
STRANGER = Person("u-stranger", "org-x", frozenset({"pharma_admin"}))
SYSTEM_ADMIN = Person("u-root", "org-platform", frozenset({"system_admin"}))
AUDITOR = Person("u-auditor", PHARMA, frozenset({"auditor"}))

DOCUMENT = DocumentFacts(
    id="doc-1", organization_id=PHARMA, submission_id="sub-1", title="NDA", status=DocumentStatus.DRAFT,
    version=2, sha256=SHA, content_type="application/pdf",
)
# Pharma admin (named) first, then any CRO admin.
TWO_STEPS = (SignerSpec(user_id=PHARMA_ADMIN.user_id, routing_order=1),
             SignerSpec(organization_id=CRO, role="cro_admin", routing_order=2))


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def sent(specs: tuple[SignerSpec, ...] = TWO_STEPS, provider: str = "builtin") -> SignatureRequest:
    request = new_request(DOCUMENT, specs, provider=provider, requested_by=REQUESTER.user_id, at=T0)
    request.send()
    return request


def half_signed() -> SignatureRequest:
    request = sent()
    request.sign(PHARMA_ADMIN, "approved", SHA, at(1))
    return request


def completed() -> SignatureRequest:
    request = half_signed()
    request.sign(CRO_ADMIN, "reviewed", SHA, at(2))
    return request


def declined() -> SignatureRequest:
    request = sent()
    request.decline(PHARMA_ADMIN, "wrong counterparty", at(1))
    return request


def voided() -> SignatureRequest:
    request = sent()
    request.void(REQUESTER, "superseded", at(1))
    return request


def created() -> SignatureRequest:
    return new_request(DOCUMENT, TWO_STEPS, provider="builtin", requested_by=REQUESTER.user_id, at=T0)


def expired_docusign() -> SignatureRequest:
    request = sent(DOCUSIGN_SIGNERS, "docusign")
    request.apply_envelope_state(EnvelopeStatus.EXPIRED, (), at(5))
    return request


DOCUSIGN_SIGNERS = (
    SignerSpec(user_id=PHARMA_ADMIN.user_id, organization_id=PHARMA, name="Paula Admin",
               email="paula@pharma.test", routing_order=1),
    SignerSpec(name="Carl Admin", email="carl@cro.test", organization_id=CRO, routing_order=2),
)


@dataclass(frozen=True)
class Recipient:
    recipient_id: str
    status: SignerStatus
    signed_at: datetime | None = None
    declined_reason: str = ""


# -- starting a request ----------------------------------------------------------------------------------
def test_send_gives_the_first_routing_order_its_turn_and_the_document_waits():
    request = created()
    events = request.send()
    assert request.status is EnvelopeStatus.SENT
    assert events[0] == DocumentStatusMoved(DocumentStatus.DRAFT, DocumentStatus.PENDING_SIGNATURE)
    assert [type(e) for e in events[1:]] == [SignerTurn]
    assert [s.status for s in request.signers] == [SignerStatus.SENT, SignerStatus.WAITING]
    assert (request.version, request.sha256) == (2, SHA)


def test_equal_routing_orders_sign_in_parallel():
    specs = (SignerSpec(user_id=PHARMA_ADMIN.user_id, routing_order=1), SignerSpec(user_id=CRO_ADMIN.user_id,
                                                                                  routing_order=1))
    request = sent(specs)
    assert [s.status for s in request.signers] == [SignerStatus.SENT, SignerStatus.SENT]
    events = request.sign(CRO_ADMIN, "reviewed", SHA, at(1))
    assert request.status is EnvelopeStatus.SIGNED
    assert [type(e) for e in events] == [SignerSigned]
    events = request.sign(PHARMA_ADMIN, "approved", SHA, at(2))
    assert request.status is EnvelopeStatus.COMPLETED


def test_routing_orders_need_not_be_contiguous_and_zero_reads_as_one():
    specs = (SignerSpec(user_id=PHARMA_ADMIN.user_id, routing_order=0),
             SignerSpec(user_id=CRO_ADMIN.user_id, routing_order=5))
    request = sent(specs)
    assert request.signers[0].routing_order == 1
    events = request.sign(PHARMA_ADMIN, "approved", SHA, at(1))
    assert [type(e) for e in events] == [SignerSigned, SignerTurn]
    assert events[1].signer.position == 2  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("document", "error", "detail"),
    [
        (DocumentFacts(**{**DOCUMENT.__dict__, "status": DocumentStatus.SIGNED}), PreconditionError,
         "DOCUMENT_STATE"),
        (DocumentFacts(**{**DOCUMENT.__dict__, "status": DocumentStatus.PENDING_SIGNATURE}), PreconditionError,
         "DOCUMENT_STATE"),
        (DocumentFacts(**{**DOCUMENT.__dict__, "content_type": "text/plain"}), ValidationError, "NOT_A_PDF"),
    ],
)
def test_only_draft_pdf_documents_can_be_sent(document, error, detail):
    with pytest.raises(error) as caught:
        new_request(document, TWO_STEPS, provider="builtin", requested_by="u", at=T0)
    assert caught.value.detail == detail


@pytest.mark.parametrize(
    ("specs", "provider", "field"),
    [
        ((), "builtin", "signers"),
        ((SignerSpec(),), "builtin", "signers[0]"),
        ((SignerSpec(user_id="u", organization_id=CRO, role="cro_admin"),), "builtin", "signers[0]"),
        ((SignerSpec(organization_id=CRO),), "builtin", "signers[0]"),
        ((SignerSpec(organization_id=CRO, role="overlord"),), "builtin", "signers[0].role"),
        ((SignerSpec(user_id="u", routing_order=-1),), "builtin", "signers[0].routing_order"),
        ((SignerSpec(user_id="u"), SignerSpec(user_id="u")), "builtin", "signers"),
        ((SignerSpec(user_id="u", email="x@y.test"),), "docusign", "signers[0].name"),
        ((SignerSpec(name="X", email="not-an-email"),), "docusign", "signers[0].email"),
        ((SignerSpec(user_id="u"),), "fax", "provider"),
        (tuple(SignerSpec(user_id=f"u{i}") for i in range(21)), "builtin", "signers"),
    ],
)
def test_invalid_signers_are_refused_naming_the_field(specs, provider, field):
    with pytest.raises(ValidationError) as caught:
        new_request(DOCUMENT, specs, provider=provider, requested_by="u", at=T0)
    assert field in [name for name, _ in caught.value.field_violations]


# -- every state × every action -------------------------------------------------------------------------
STATES: dict[str, Callable[[], SignatureRequest]] = {
    "CREATED": created,
    "SENT": sent,
    "SIGNED": half_signed,
    "COMPLETED": completed,
    "DECLINED": declined,
    "VOIDED": voided,
    "EXPIRED": expired_docusign,
}
ACTIONS: dict[str, Callable[[SignatureRequest], object]] = {
    "send": lambda r: r.send(),
    "sign": lambda r: r.sign(_signer_for(r), "approved", SHA, at(9)),
    "decline": lambda r: r.decline(_signer_for(r), "no", at(9)),
    "void": lambda r: r.void(REQUESTER, "no longer needed", at(9)),
}


def _signer_for(request: SignatureRequest) -> Person:
    """Someone whose turn it is, when anyone's is."""
    current = request.current_signers()
    if current and current[0].spec.user_id == PHARMA_ADMIN.user_id:
        return PHARMA_ADMIN
    return CRO_ADMIN


# state → the actions it allows (the rest are refused with RESOURCE_CONFLICT).
ALLOWED = {
    "CREATED": {"send"},
    "SENT": {"sign", "decline", "void"},
    "SIGNED": {"sign", "decline", "void"},
    "COMPLETED": set(),
    "DECLINED": set(),
    "VOIDED": set(),
    "EXPIRED": set(),
}
AFTER = {  # (state, action) → request status after, document status move
    ("CREATED", "send"): (EnvelopeStatus.SENT, (DocumentStatus.DRAFT, DocumentStatus.PENDING_SIGNATURE)),
    ("SENT", "sign"): (EnvelopeStatus.SIGNED, None),
    ("SENT", "decline"): (EnvelopeStatus.DECLINED, (DocumentStatus.PENDING_SIGNATURE, DocumentStatus.REJECTED)),
    ("SENT", "void"): (EnvelopeStatus.VOIDED, (DocumentStatus.PENDING_SIGNATURE, DocumentStatus.DRAFT)),
    ("SIGNED", "sign"): (EnvelopeStatus.COMPLETED, (DocumentStatus.PENDING_SIGNATURE, DocumentStatus.SIGNED)),
    ("SIGNED", "decline"): (EnvelopeStatus.DECLINED, (DocumentStatus.PENDING_SIGNATURE, DocumentStatus.REJECTED)),
    ("SIGNED", "void"): (EnvelopeStatus.VOIDED, (DocumentStatus.PENDING_SIGNATURE, DocumentStatus.DRAFT)),
}


@pytest.mark.parametrize("state", list(STATES))
@pytest.mark.parametrize("action", list(ACTIONS))
def test_state_by_action(state, action):
    request = STATES[state]()
    before = request.status
    if state == "EXPIRED" and action in ("sign", "decline"):  # a DocuSign request: refused either way
        with pytest.raises(PreconditionError):
            ACTIONS[action](request)
        return
    if action not in ALLOWED[state]:
        with pytest.raises(PreconditionError) as caught:
            ACTIONS[action](request)
        assert caught.value.code == "RESOURCE_CONFLICT"
        assert request.status is before
        return
    events = ACTIONS[action](request)
    status, move = AFTER[(state, action)]
    assert request.status is status
    moves = [(e.from_status, e.to_status) for e in events if isinstance(e, DocumentStatusMoved)]  # type: ignore[attr-defined]
    assert moves == ([move] if move else [])
    finished = [e for e in events if isinstance(e, RequestFinished)]  # type: ignore[attr-defined]
    assert [f.status for f in finished] == ([status] if request.finished else [])
    if request.finished:
        assert request.finished_at == at(9)


# -- signing ---------------------------------------------------------------------------------------------
def test_a_signature_records_who_when_what_it_means_and_the_exact_version():
    request = half_signed()
    first = request.signers[0]
    assert (first.status, first.signed_by, first.printed_name, first.meaning, first.signed_at, first.signed_sha256) == (
        SignerStatus.SIGNED, PHARMA_ADMIN.user_id, "Paula Admin", "approved", at(1), SHA)
    assert first.organization_id == PHARMA
    assert request.signers[1].status is SignerStatus.SENT


def test_the_last_signature_completes_and_the_document_is_signed():
    request = half_signed()
    events = request.sign(CRO_ADMIN, "reviewed", SHA, at(2))
    assert [type(e) for e in events] == [SignerSigned, RequestFinished, DocumentStatusMoved]
    assert request.status is EnvelopeStatus.COMPLETED and request.finished_at == at(2)
    assert request.signed_organizations() == {PHARMA, CRO}


def test_a_role_slot_takes_any_user_of_the_organization_with_the_role_or_a_higher_one():
    specs = (SignerSpec(organization_id=CRO, role="cro_technician"),)
    request = sent(specs)
    assert request.may_sign(CRO_ADMIN) and request.may_sign(CRO_TECH)
    assert not request.may_sign(PHARMA_ADMIN)
    admin_only = sent((SignerSpec(organization_id=CRO, role="cro_admin"),))
    assert not admin_only.may_sign(CRO_TECH)


@pytest.mark.parametrize(
    ("prepare", "person", "meaning", "sha", "error", "detail"),
    [
        (sent, CRO_ADMIN, "reviewed", SHA, PreconditionError, "NOT_YOUR_TURN"),  # out of turn
        (sent, OTHER_PHARMA_ADMIN, "approved", SHA, AuthorizationError, "NOT_A_SIGNER"),  # wrong person
        (sent, STRANGER, "approved", SHA, AuthorizationError, "NOT_A_SIGNER"),
        (sent, SYSTEM_ADMIN, "approved", SHA, AuthorizationError, "NOT_A_SIGNER"),  # no signing for others
        (half_signed, PHARMA_ADMIN, "approved", SHA, PreconditionError, "ALREADY_SIGNED"),
        (sent, PHARMA_ADMIN, "approved", "b" * 64, PreconditionError, "DOCUMENT_CHANGED"),  # the version moved
        (sent, PHARMA_ADMIN, "witnessed", SHA, ValidationError, ""),  # meaning outside the vocabulary
        (sent, PHARMA_ADMIN, "APPROVED", SHA, ValidationError, ""),
        (completed, CRO_ADMIN, "reviewed", SHA, PreconditionError, "REQUEST_FINISHED"),
        (lambda: sent((SignerSpec(user_id=AUDITOR.user_id),)), AUDITOR, "approved", SHA, AuthorizationError,
         "READ_ONLY_ROLE"),  # named by mistake: an auditor still never signs
    ],
)
def test_sign_refuses(prepare, person, meaning, sha, error, detail):
    request = prepare()
    snapshot = [(s.status, s.signed_by) for s in request.signers]
    with pytest.raises(error) as caught:
        request.sign(person, meaning, sha, at(5))
    assert caught.value.detail == detail
    assert [(s.status, s.signed_by) for s in request.signers] == snapshot


def test_one_user_fills_one_slot_only():
    specs = (SignerSpec(organization_id=PHARMA, role="pharma_admin"), SignerSpec(organization_id=PHARMA,
                                                                                 role="pharma_admin"))
    request = sent(specs)
    request.sign(PHARMA_ADMIN, "approved", SHA, at(1))
    with pytest.raises(PreconditionError, match="already signed"):
        request.sign(PHARMA_ADMIN, "reviewed", SHA, at(2))
    request.sign(OTHER_PHARMA_ADMIN, "reviewed", SHA, at(2))
    assert request.status is EnvelopeStatus.COMPLETED


def test_a_named_slot_is_filled_before_a_role_slot():
    specs = (SignerSpec(organization_id=PHARMA, role="pharma_admin"), SignerSpec(user_id=PHARMA_ADMIN.user_id))
    request = sent(specs)
    request.sign(PHARMA_ADMIN, "approved", SHA, at(1))
    assert [s.status for s in request.signers] == [SignerStatus.SENT, SignerStatus.SIGNED]


def test_a_docusign_request_is_not_signed_built_in():
    request = sent(DOCUSIGN_SIGNERS, "docusign")
    with pytest.raises(PreconditionError) as caught:
        request.sign(PHARMA_ADMIN, "approved", SHA, at(1))
    assert caught.value.detail == "SIGNED_ELSEWHERE"


# -- declining and voiding ---------------------------------------------------------------------------------
def test_decline_records_the_reason_and_needs_one():
    request = sent()
    with pytest.raises(ValidationError):
        request.decline(PHARMA_ADMIN, "  ", at(1))
    events = request.decline(PHARMA_ADMIN, "wrong counterparty", at(1))
    assert [type(e) for e in events] == [SignerDeclined, RequestFinished, DocumentStatusMoved]
    assert request.signers[0].decline_reason == "wrong counterparty"
    assert request.signers[0].status is SignerStatus.DECLINED


def test_only_the_current_signer_declines():
    request = sent()
    with pytest.raises(PreconditionError):
        request.decline(CRO_ADMIN, "not yet my turn", at(1))
    with pytest.raises(AuthorizationError):
        request.decline(STRANGER, "not mine", at(1))


@pytest.mark.parametrize(
    ("person", "allowed"),
    [
        (REQUESTER, True),
        (PHARMA_ADMIN, True),  # an admin of the owning organization
        (SYSTEM_ADMIN, True),
        (Person("u-other", PHARMA, frozenset({"pharma_scientist"})), False),
        (CRO_ADMIN, False),  # an admin, but of another organization
    ],
)
def test_who_may_void(person, allowed):
    request = sent()
    if allowed:
        assert [type(e) for e in request.void(person, "superseded", at(1))] == [RequestFinished, DocumentStatusMoved]
    else:
        with pytest.raises(AuthorizationError):
            request.void(person, "superseded", at(1))
        assert request.status is EnvelopeStatus.SENT


def test_void_needs_a_reason():
    with pytest.raises(ValidationError):
        sent().void(REQUESTER, "", at(1))


# -- DocuSign states --------------------------------------------------------------------------------------
def test_envelope_states_move_forward_only():
    request = sent(DOCUSIGN_SIGNERS, "docusign")
    events = request.apply_envelope_state(EnvelopeStatus.DELIVERED, (Recipient("1", SignerStatus.DELIVERED),), at(1))
    assert events == [] and request.status is EnvelopeStatus.DELIVERED
    assert request.signers[0].status is SignerStatus.DELIVERED
    events = request.apply_envelope_state(
        EnvelopeStatus.SENT, (Recipient("1", SignerStatus.SIGNED, at(2)), Recipient("2", SignerStatus.SENT)), at(2))
    assert [type(e) for e in events] == [SignerSigned, SignerTurn]
    assert request.status is EnvelopeStatus.SIGNED  # SENT is older than DELIVERED; one signature makes it SIGNED
    assert request.signers[0].printed_name == "Paula Admin" and request.signers[0].signed_at == at(2)
    # The same state again, and an older one, change nothing.
    assert request.apply_envelope_state(
        EnvelopeStatus.SIGNED, (Recipient("1", SignerStatus.SIGNED, at(2)), Recipient("2", SignerStatus.SENT)), at(3)
    ) == []
    assert request.apply_envelope_state(EnvelopeStatus.SENT, (Recipient("1", SignerStatus.SENT),), at(3)) == []
    assert request.status is EnvelopeStatus.SIGNED and request.signers[0].status is SignerStatus.SIGNED


def test_a_completed_envelope_signs_everyone_and_the_document():
    request = sent(DOCUSIGN_SIGNERS, "docusign")
    both = (Recipient("1", SignerStatus.SIGNED, at(1)), Recipient("2", SignerStatus.SIGNED, at(2)))
    events = request.apply_envelope_state(EnvelopeStatus.COMPLETED, both, at(3))
    assert [type(e) for e in events] == [SignerSigned, SignerSigned, RequestFinished, DocumentStatusMoved]
    assert request.status is EnvelopeStatus.COMPLETED and request.finished_at == at(3)
    assert events[-1] == DocumentStatusMoved(DocumentStatus.PENDING_SIGNATURE, DocumentStatus.SIGNED)
    assert request.signed_organizations() == {PHARMA, CRO}
    # Redelivered: nothing more.
    assert request.apply_envelope_state(EnvelopeStatus.COMPLETED, (), at(4)) == []


def test_completed_without_recipient_details_still_signs_every_slot():
    request = sent(DOCUSIGN_SIGNERS, "docusign")
    request.apply_envelope_state(EnvelopeStatus.COMPLETED, (), at(3))
    assert all(s.status is SignerStatus.SIGNED for s in request.signers)


@pytest.mark.parametrize(
    ("status", "document_after"),
    [(EnvelopeStatus.DECLINED, DocumentStatus.REJECTED), (EnvelopeStatus.VOIDED, DocumentStatus.DRAFT),
     (EnvelopeStatus.EXPIRED, DocumentStatus.DRAFT)],
)
def test_a_terminal_envelope_rejects_the_document_or_puts_it_back_to_draft(status, document_after):
    request = sent(DOCUSIGN_SIGNERS, "docusign")
    recipients = (Recipient("1", SignerStatus.DECLINED, at(1), "no"),) if status is EnvelopeStatus.DECLINED else ()
    events = request.apply_envelope_state(status, recipients, at(2))
    assert events[-2:] == [RequestFinished(status, at(2)),
                           DocumentStatusMoved(DocumentStatus.PENDING_SIGNATURE, document_after)]
    assert request.status is status
    # A later "completed" for a finished request changes nothing.
    assert request.apply_envelope_state(EnvelopeStatus.COMPLETED, (), at(3)) == []
    assert request.status is status


def test_unknown_recipients_are_ignored():
    request = sent(DOCUSIGN_SIGNERS, "docusign")
    assert request.apply_envelope_state(EnvelopeStatus.SENT, (Recipient("9", SignerStatus.SIGNED),), at(1)) == []


def test_a_signed_version_attaches_once_to_a_completed_request():
    request = half_signed()
    with pytest.raises(PreconditionError):
        request.attach_signed_version(3)
    request.sign(CRO_ADMIN, "reviewed", SHA, at(2))
    request.attach_signed_version(3)
    assert request.signed_version == 3
    with pytest.raises(PreconditionError):
        request.attach_signed_version(4)


def test_domain_errors_carry_the_envelope_codes():
    with pytest.raises(DomainError) as caught:
        completed().void(REQUESTER, "late", at(9))
    assert caught.value.code == "RESOURCE_CONFLICT"


def test_checks_before_re_authentication_change_nothing():
    request = sent()
    slot = request.check_signature(PHARMA_ADMIN, "approved", SHA)
    assert slot.position == 1 and slot.status is SignerStatus.SENT
    with pytest.raises(PreconditionError):
        request.check_signature(CRO_ADMIN, "reviewed", SHA)
    assert [s.status for s in request.signers] == [SignerStatus.SENT, SignerStatus.WAITING]


def test_turn_of_answers_the_current_slot_or_refuses():
    request = sent(DOCUSIGN_SIGNERS, "docusign")
    assert request.turn_of(PHARMA_ADMIN).position == 1
    with pytest.raises(AuthorizationError):
        request.turn_of(STRANGER)
    request.apply_envelope_state(EnvelopeStatus.VOIDED, (), at(1))
    with pytest.raises(PreconditionError) as finished:
        request.turn_of(PHARMA_ADMIN)
    assert finished.value.detail == "REQUEST_FINISHED"


def test_a_rejected_document_can_be_sent_again():
    rejected = DocumentFacts(**{**DOCUMENT.__dict__, "status": DocumentStatus.REJECTED})
    request = new_request(rejected, TWO_STEPS, provider="builtin", requested_by="u", at=T0)
    assert request.status is EnvelopeStatus.CREATED


def test_an_auditor_is_never_a_signer_role():
    with pytest.raises(ValidationError) as caught:
        sent((SignerSpec(organization_id=PHARMA, role="auditor"),))
    assert caught.value.field_violations == [("signers[0].role", "auditors are read-only and cannot sign")]
