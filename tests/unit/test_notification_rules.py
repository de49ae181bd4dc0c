"""The notification service's pure rules: the vocabulary (every type from one event), who hears of what
(a table over one world of members), the texts and the preferences' defaults."""

from __future__ import annotations

from typing import Any

import pytest
from molbridge.notification.v1 import notification_service_pb2 as pb

from services.notification.domain.notices import describe, webhook_payload
from services.notification.domain.preferences import Preferences, check_changes, check_digest
from services.notification.domain.recipients import Member, Occurrence, Parties, recipients
from services.notification.domain.vocabulary import (
    EMAIL_BY_DEFAULT,
    SOURCES,
    TOPICS,
    Channel,
    EmailDigest,
    NotificationType,
    SubjectType,
    classify,
)
from services.runtime.errors import ValidationError

T = NotificationType
PHARMA, CRO, OTHER = "org-pharma", "org-cro", "org-other"

WORLD = [
    Member("submitter", PHARMA, frozenset({"pharma_scientist"})),
    Member("scientist", PHARMA, frozenset({"pharma_scientist"})),
    Member("padmin", PHARMA, frozenset({"pharma_admin"})),
    Member("padmin-gone", PHARMA, frozenset({"pharma_admin"}), active=False),
    Member("padmin-deleted", PHARMA, frozenset({"pharma_admin"}), active=False, deleted=True),
    Member("cadmin", CRO, frozenset({"cro_admin"})),
    Member("tech", CRO, frozenset({"cro_technician"})),
    Member("tech-gone", CRO, frozenset({"cro_technician"}), active=False),
    Member("stranger-admin", OTHER, frozenset({"pharma_admin", "cro_admin"})),
    Member("sysadmin", "org-platform", frozenset({"system_admin"})),
]
PARTIES = Parties("sub-1", PHARMA, CRO, created_by="submitter", name="Kinase panel")


def _submission(kind: NotificationType, actor: str = "", **kw: Any) -> Occurrence:
    return Occurrence(kind, "ev-1", PHARMA, SubjectType.SUBMISSION, "sub-1", actor_id=actor, submission=PARTIES, **kw)


ACTING = {m.user_id: m.organization_id for m in WORLD}

CASES = [
    # (what, occurrence, expected recipients)
    ("submitted → cro admins", _submission(T.SUBMISSION_SUBMITTED, "submitter", from_status="DRAFT"), {"cadmin"}),
    ("quoted → submitter + pharma admins", _submission(T.SUBMISSION_QUOTED, "cadmin"), {"submitter", "padmin"}),
    ("approved → cro side", _submission(T.SUBMISSION_APPROVED, "padmin"), {"cadmin", "tech"}),
    ("started → cro side but the actor", _submission(T.SUBMISSION_STARTED, "cadmin"), {"tech"}),
    ("results uploaded → pharma side", _submission(T.RESULTS_UPLOADED, "tech"), {"submitter", "padmin"}),
    ("results reviewed → cro side", _submission(T.RESULTS_REVIEWED, "submitter"), {"cadmin", "tech"}),
    ("rejected by the cro → pharma side", _submission(T.SUBMISSION_REJECTED, "cadmin"), {"submitter", "padmin"}),
    ("rejected by pharma → cro side", _submission(T.SUBMISSION_REJECTED, "padmin"), {"cadmin", "tech"}),
    ("cancelled by pharma → cro side", _submission(T.SUBMISSION_CANCELLED, "submitter"), {"cadmin", "tech"}),
    (
        "cancelled by the system → both sides",
        _submission(T.SUBMISSION_CANCELLED, "system"),
        {"submitter", "padmin", "cadmin", "tech"},
    ),
    (
        "cancelled from DRAFT → never the cro",
        _submission(T.SUBMISSION_CANCELLED, "system", from_status="DRAFT"),
        {"submitter", "padmin"},
    ),
    ("pharma message → cro side", _submission(T.MESSAGE_POSTED, "scientist", side="PHARMA"), {"cadmin", "tech"}),
    ("cro message → pharma side", _submission(T.MESSAGE_POSTED, "tech", side="CRO"), {"submitter", "padmin"}),
    (
        "signature of a named signer",
        Occurrence(
            T.SIGNATURE_REQUESTED,
            "ev",
            PHARMA,
            SubjectType.SIGNATURE_REQUEST,
            "sr",
            actor_id="padmin",
            signer_user_id="scientist",
        ),
        {"scientist"},
    ),
    (
        "signature by role: that role and above in the signer organization, not the requester",
        Occurrence(
            T.SIGNATURE_REQUESTED,
            "ev",
            PHARMA,
            SubjectType.SIGNATURE_REQUEST,
            "sr",
            actor_id="padmin",
            signer_organization_id=PHARMA,
            signer_role="pharma_scientist",
        ),
        {"submitter", "scientist"},
    ),
    (
        "signature of the CRO on a submission's shared document",
        Occurrence(
            T.SIGNATURE_REQUESTED,
            "ev",
            PHARMA,
            SubjectType.SIGNATURE_REQUEST,
            "sr",
            actor_id="padmin",
            signer_organization_id=CRO,
            signer_role="cro_admin",
            submission=PARTIES,
        ),
        {"cadmin"},
    ),
    (
        "a named signer outside the organizations concerned → nobody",
        Occurrence(
            T.SIGNATURE_REQUESTED,
            "ev",
            PHARMA,
            SubjectType.SIGNATURE_REQUEST,
            "sr",
            actor_id="padmin",
            signer_user_id="stranger-admin",
        ),
        set(),
    ),
    (
        "signature finished → the requester",
        Occurrence(T.SIGNATURE_COMPLETED, "ev", PHARMA, SubjectType.SIGNATURE_REQUEST, "sr", requested_by="padmin"),
        {"padmin"},
    ),
    (
        "document expiring → the owner's admins",
        Occurrence(T.DOCUMENT_EXPIRING, "ev", CRO, SubjectType.DOCUMENT, "doc"),
        {"cadmin"},
    ),
    (
        "document expired → the owner's admins",
        Occurrence(T.DOCUMENT_EXPIRED, "ev", PHARMA, SubjectType.DOCUMENT, "doc"),
        {"padmin"},
    ),
    (
        "import → who started it, even as the actor",
        Occurrence(
            T.IMPORT_FAILED, "ev", PHARMA, SubjectType.IMPORT_JOB, "job", actor_id="scientist", requested_by="scientist"
        ),
        {"scientist"},
    ),
    (
        "prediction of someone in another organization → nobody",
        Occurrence(T.PREDICTION_FINISHED, "ev", PHARMA, SubjectType.PREDICTION_JOB, "job", requested_by="tech"),
        set(),
    ),
    (
        "a submission event whose parties are unknown → nobody",
        Occurrence(T.SUBMISSION_SUBMITTED, "ev", PHARMA, SubjectType.SUBMISSION, "sub-x"),
        set(),
    ),
]


@pytest.mark.parametrize(("what", "occurrence", "expected"), CASES, ids=[c[0] for c in CASES])
def test_recipients(what: str, occurrence: Occurrence, expected: set[str]) -> None:
    chosen = recipients(occurrence, WORLD, ACTING.get(occurrence.actor_id))
    assert {m.user_id for m in chosen} == expected
    assert all(m.reachable for m in chosen)


def test_every_proto_type_has_one_source_and_topic() -> None:
    assert {t.name for t in NotificationType} == set(pb.Notification.Type.keys()) - {"TYPE_UNSPECIFIED"}
    assert set(SOURCES) == set(NotificationType)
    assert len(TOPICS) == len(NotificationType)


@pytest.mark.parametrize(
    ("event", "fields", "expected"),
    [
        ("SubmissionTransitioned", {"to_status": "SUBMITTED"}, T.SUBMISSION_SUBMITTED),
        ("SubmissionTransitioned", {"to_status": "PENDING_REVIEW"}, None),
        ("SubmissionTransitioned", {"to_status": "PRICING_PROVIDED"}, None),  # QuoteProvided tells it
        ("SubmissionTransitioned", {"to_status": "IN_PROGRESS"}, T.SUBMISSION_STARTED),
        ("QuoteProvided", {}, T.SUBMISSION_QUOTED),
        ("SignatureFinished", {"status": "VOIDED"}, T.SIGNATURE_DECLINED),
        ("SignatureFinished", {"status": "COMPLETED"}, T.SIGNATURE_COMPLETED),
        ("DocumentStatusChanged", {"to_status": "SIGNED"}, None),
        ("DocumentStatusChanged", {"to_status": "EXPIRED"}, T.DOCUMENT_EXPIRED),
        ("ImportFinished", {"status": "cancelled"}, T.IMPORT_FAILED),
        ("PredictionJobFinished", {"status": "COMPLETED"}, T.PREDICTION_FINISHED),
        ("AuditRecorded", {}, None),
    ],
)
def test_classify(event: str, fields: dict[str, str], expected: NotificationType | None) -> None:
    assert classify(event, fields) is expected


def test_defaults_every_type_in_app_and_emails_where_someone_acts() -> None:
    prefs = Preferences()
    assert all(prefs.enabled(t, Channel.IN_APP) for t in NotificationType)
    assert prefs.channels(T.SUBMISSION_SUBMITTED) == {Channel.IN_APP, Channel.EMAIL}
    assert prefs.channels(T.MESSAGE_POSTED) == {Channel.IN_APP}
    assert T.IMPORT_FAILED in EMAIL_BY_DEFAULT and T.IMPORT_FINISHED not in EMAIL_BY_DEFAULT
    assert prefs.digest is EmailDigest.OFF
    assert len(prefs.settings()) == 2 * len(NotificationType)


def test_a_choice_overrides_the_default() -> None:
    prefs = Preferences({(T.SUBMISSION_SUBMITTED, Channel.IN_APP): False, (T.MESSAGE_POSTED, Channel.EMAIL): True})
    assert prefs.channels(T.SUBMISSION_SUBMITTED) == {Channel.EMAIL}
    assert prefs.channels(T.MESSAGE_POSTED) == {Channel.IN_APP, Channel.EMAIL}


def test_bad_changes_are_named() -> None:
    with pytest.raises(ValidationError) as caught:
        check_changes([("SUBMISSION_SUBMITTED", "WEBHOOK", True), ("NOPE", "EMAIL", False), ("", "IN_APP", True)])
    fields = [field for field, _ in caught.value.field_violations]
    assert fields == ["settings[0].channel", "settings[1].type", "settings[2].type"]
    assert check_changes([("RESULTS_UPLOADED", "EMAIL", False)])[0].enabled is False
    assert check_digest("") is None and check_digest("DAILY") is EmailDigest.DAILY
    with pytest.raises(ValidationError):
        check_digest("WEEKLY")


def test_texts_and_payload() -> None:
    o = _submission(
        T.SUBMISSION_QUOTED,
        "cadmin",
        facts={"number": "2", "price": "1200.00", "currency": "EUR", "turnaround_days": "14"},
    )
    notice = describe(o, "https://app.example/")
    assert notice.title == 'Quote for submission "Kinase panel"'
    assert notice.body == "Quote 2: 1200.00 EUR, 14 days."
    assert notice.link == "https://app.example/submissions/sub-1"
    payload = webhook_payload(o, "https://app.example")
    assert payload["type"] == "submission.quoted" and payload["id"] == "ev-1"
    assert payload["data"]["submission_id"] == "sub-1" and payload["data"]["price"] == "1200.00"
    rejected = describe(_submission(T.SUBMISSION_REJECTED, "cadmin"), "http://x")
    assert rejected.body == "Reason: none given"


def test_every_source_event_is_subscribed_from_its_service() -> None:
    from services.notification.worker import TOPICS

    subscribed = {(topic.source, topic.event.DESCRIPTOR.name) for topic in TOPICS}
    assert subscribed == {(source.service, source.event) for source in SOURCES.values()}
