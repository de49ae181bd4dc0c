"""The words of the notification service (issue 13 "Notifications"): notification types and the bus
events they come from, channels, email digests, delivery statuses and the default preferences.
Pure: no I/O, no grpc.

Each type is one existing event (or one condition on it) of one service; a type's `topic` is the
dotted name partner webhooks see (`"type": "submission.submitted"`). QuoteProvided (not the
transition to PRICING_PROVIDED) tells a quote, so a changed quote is told again and no quote twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

EVENT_SOURCE = "notification"  # the `source` of the events this service records (NotificationCreated)


class NotificationType(StrEnum):
    """molbridge.notification.v1.Notification.Type names."""

    SUBMISSION_SUBMITTED = "SUBMISSION_SUBMITTED"
    SUBMISSION_QUOTED = "SUBMISSION_QUOTED"
    SUBMISSION_APPROVED = "SUBMISSION_APPROVED"
    SUBMISSION_REJECTED = "SUBMISSION_REJECTED"
    SUBMISSION_CANCELLED = "SUBMISSION_CANCELLED"
    SUBMISSION_STARTED = "SUBMISSION_STARTED"
    RESULTS_UPLOADED = "RESULTS_UPLOADED"
    RESULTS_REVIEWED = "RESULTS_REVIEWED"
    MESSAGE_POSTED = "MESSAGE_POSTED"
    SIGNATURE_REQUESTED = "SIGNATURE_REQUESTED"
    SIGNATURE_COMPLETED = "SIGNATURE_COMPLETED"
    SIGNATURE_DECLINED = "SIGNATURE_DECLINED"
    DOCUMENT_EXPIRING = "DOCUMENT_EXPIRING"
    DOCUMENT_EXPIRED = "DOCUMENT_EXPIRED"
    IMPORT_FINISHED = "IMPORT_FINISHED"
    IMPORT_FAILED = "IMPORT_FAILED"
    PREDICTION_FINISHED = "PREDICTION_FINISHED"
    PREDICTION_FAILED = "PREDICTION_FAILED"


class Channel(StrEnum):
    """molbridge.notification.v1.Preferences.Channel names."""

    IN_APP = "IN_APP"
    EMAIL = "EMAIL"
    WEBHOOK = "WEBHOOK"


USER_CHANNELS = (Channel.IN_APP, Channel.EMAIL)  # webhooks are chosen per endpoint, not per user


class EmailDigest(StrEnum):
    """molbridge.notification.v1.Preferences.EmailDigest names."""

    OFF = "OFF"
    HOURLY = "HOURLY"
    DAILY = "DAILY"


class DeliveryStatus(StrEnum):
    """A webhook delivery's or an email's state (molbridge.notification.v1.WebhookDelivery.Status names).
    An email waiting for its digest stays PENDING with `digest` HOURLY/DAILY."""

    PENDING = "PENDING"
    DELIVERED = "DELIVERED"
    RETRYING = "RETRYING"
    DEAD = "DEAD"


class SubjectType(StrEnum):
    """What a notification is about (its `subject_type`)."""

    SUBMISSION = "submission"
    DOCUMENT = "document"
    SIGNATURE_REQUEST = "signature_request"
    IMPORT_JOB = "import_job"
    PREDICTION_JOB = "prediction_job"


@dataclass(frozen=True)
class Source:
    """Where a type comes from: the emitting service, the event's proto message name, and the condition
    on it (the field and the values that select this type; empty: every event of that message)."""

    service: str
    event: str
    field: str = ""
    values: frozenset[str] = frozenset()
    topic: str = ""  # the dotted name webhooks see
    subject: SubjectType = SubjectType.SUBMISSION


def _transition(to_status: str, topic: str) -> Source:
    return Source("cro", "SubmissionTransitioned", "to_status", frozenset({to_status}), topic)


SOURCES: dict[NotificationType, Source] = {
    NotificationType.SUBMISSION_SUBMITTED: _transition("SUBMITTED", "submission.submitted"),
    NotificationType.SUBMISSION_QUOTED: Source("cro", "QuoteProvided", topic="submission.quoted"),
    NotificationType.SUBMISSION_APPROVED: _transition("APPROVED", "submission.approved"),
    NotificationType.SUBMISSION_REJECTED: _transition("REJECTED", "submission.rejected"),
    NotificationType.SUBMISSION_CANCELLED: _transition("CANCELLED", "submission.cancelled"),
    NotificationType.SUBMISSION_STARTED: _transition("IN_PROGRESS", "submission.started"),
    NotificationType.RESULTS_UPLOADED: _transition("RESULTS_UPLOADED", "submission.results_uploaded"),
    NotificationType.RESULTS_REVIEWED: _transition("RESULTS_REVIEWED", "submission.results_reviewed"),
    NotificationType.MESSAGE_POSTED: Source("cro", "SubmissionMessagePosted", topic="message.posted"),
    NotificationType.SIGNATURE_REQUESTED: Source(
        "document", "SignatureRequested", topic="signature.requested", subject=SubjectType.SIGNATURE_REQUEST
    ),
    NotificationType.SIGNATURE_COMPLETED: Source(
        "document",
        "SignatureFinished",
        "status",
        frozenset({"COMPLETED"}),
        "signature.completed",
        SubjectType.SIGNATURE_REQUEST,
    ),
    NotificationType.SIGNATURE_DECLINED: Source(
        "document",
        "SignatureFinished",
        "status",
        frozenset({"DECLINED", "VOIDED", "EXPIRED"}),
        "signature.declined",
        SubjectType.SIGNATURE_REQUEST,
    ),
    NotificationType.DOCUMENT_EXPIRING: Source(
        "document", "DocumentExpiring", topic="document.expiring", subject=SubjectType.DOCUMENT
    ),
    NotificationType.DOCUMENT_EXPIRED: Source(
        "document",
        "DocumentStatusChanged",
        "to_status",
        frozenset({"EXPIRED"}),
        "document.expired",
        SubjectType.DOCUMENT,
    ),
    NotificationType.IMPORT_FINISHED: Source(
        "molecule", "ImportFinished", "status", frozenset({"completed"}), "import.finished", SubjectType.IMPORT_JOB
    ),
    NotificationType.IMPORT_FAILED: Source(
        "molecule",
        "ImportFinished",
        "status",
        frozenset({"failed", "cancelled"}),
        "import.failed",
        SubjectType.IMPORT_JOB,
    ),
    NotificationType.PREDICTION_FINISHED: Source(
        "prediction",
        "PredictionJobFinished",
        "status",
        frozenset({"COMPLETED"}),
        "prediction.finished",
        SubjectType.PREDICTION_JOB,
    ),
    NotificationType.PREDICTION_FAILED: Source(
        "prediction",
        "PredictionJobFinished",
        "status",
        frozenset({"FAILED"}),
        "prediction.failed",
        SubjectType.PREDICTION_JOB,
    ),
}

TOPICS: dict[str, NotificationType] = {source.topic: kind for kind, source in SOURCES.items()}
TEST_TOPIC = "webhook.test"  # SendWebhookTest's payload type


def classify(event: str, values: dict[str, str]) -> NotificationType | None:
    """The type an event is, from its proto message name and its fields (as text); None: not one we tell."""
    for kind, source in SOURCES.items():
        if source.event != event:
            continue
        if not source.field or values.get(source.field, "") in source.values:
            return kind
    return None


def topic(kind: NotificationType) -> str:
    return SOURCES[kind].topic


# Emails by default only where someone has to act, or something went wrong; everything shows in-app.
EMAIL_BY_DEFAULT = frozenset(
    {
        NotificationType.SUBMISSION_SUBMITTED,
        NotificationType.SUBMISSION_QUOTED,
        NotificationType.SUBMISSION_APPROVED,
        NotificationType.SUBMISSION_REJECTED,
        NotificationType.SUBMISSION_CANCELLED,
        NotificationType.RESULTS_UPLOADED,
        NotificationType.RESULTS_REVIEWED,
        NotificationType.SIGNATURE_REQUESTED,
        NotificationType.SIGNATURE_DECLINED,
        NotificationType.DOCUMENT_EXPIRING,
        NotificationType.DOCUMENT_EXPIRED,
        NotificationType.IMPORT_FAILED,
        NotificationType.PREDICTION_FAILED,
    }
)
DEFAULT_DIGEST = EmailDigest.OFF


def default_enabled(kind: NotificationType, channel: Channel) -> bool:
    """A switch nobody set: every type in-app; emails per EMAIL_BY_DEFAULT; no user-level webhook switch."""
    if channel is Channel.IN_APP:
        return True
    if channel is Channel.EMAIL:
        return kind in EMAIL_BY_DEFAULT
    return False
