"""What a notification says: its title, a sentence of detail and a link into the app, and the JSON a
partner webhook receives for the same event. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.notification.domain.recipients import Occurrence
from services.notification.domain.vocabulary import NotificationType, SubjectType, topic

T = NotificationType

_TITLES: dict[NotificationType, str] = {
    T.SUBMISSION_SUBMITTED: "New submission {name}",
    T.SUBMISSION_QUOTED: "Quote for submission {name}",
    T.SUBMISSION_APPROVED: "Submission {name} was approved",
    T.SUBMISSION_REJECTED: "Submission {name} was rejected",
    T.SUBMISSION_CANCELLED: "Submission {name} was cancelled",
    T.SUBMISSION_STARTED: "Work started on submission {name}",
    T.RESULTS_UPLOADED: "Results uploaded for submission {name}",
    T.RESULTS_REVIEWED: "Results of submission {name} were reviewed",
    T.MESSAGE_POSTED: "New message on submission {name}",
    T.SIGNATURE_REQUESTED: "Your signature is requested: {title}",
    T.SIGNATURE_COMPLETED: "Signatures completed: {title}",
    T.SIGNATURE_DECLINED: "Signature request ended ({status}): {title}",
    T.DOCUMENT_EXPIRING: "Document expires on {expires_on}: {title}",
    T.DOCUMENT_EXPIRED: "Document expired: {title}",
    T.IMPORT_FINISHED: "Import finished",
    T.IMPORT_FAILED: "Import {status}",
    T.PREDICTION_FINISHED: "Predictions finished",
    T.PREDICTION_FAILED: "Predictions failed",
}

_BODIES: dict[NotificationType, str] = {
    T.SUBMISSION_SUBMITTED: "A pharma partner sent a submission for review.",
    T.SUBMISSION_QUOTED: "Quote {number}: {price} {currency}, {turnaround_days} days.",
    T.SUBMISSION_APPROVED: "The quote was approved: the work can start.",
    T.SUBMISSION_REJECTED: "Reason: {reason}",
    T.SUBMISSION_CANCELLED: "Reason: {reason}",
    T.SUBMISSION_STARTED: "The experiment started.",
    T.RESULTS_UPLOADED: "Results are ready for review.",
    T.RESULTS_REVIEWED: "The results were reviewed.",
    T.MESSAGE_POSTED: "{change_request}Open the thread to read it.",
    T.SIGNATURE_REQUESTED: "Sign as {signer_role}.",
    T.SIGNATURE_COMPLETED: "Every signer signed.",
    T.SIGNATURE_DECLINED: "The request ended without every signature.",
    T.DOCUMENT_EXPIRING: "{days_left} days left: renew it to keep submissions going.",
    T.DOCUMENT_EXPIRED: "It is no longer valid; upload a new version.",
    T.IMPORT_FINISHED: "{registered} registered, {merged} merged, {rejected} rejected.",
    T.IMPORT_FAILED: "{registered} registered, {merged} merged, {rejected} rejected.",
    T.PREDICTION_FINISHED: "{completed} of {total} molecules predicted.",
    T.PREDICTION_FAILED: "None of the {total} molecules could be predicted.",
}

_PATHS: dict[SubjectType, str] = {
    SubjectType.SUBMISSION: "/submissions/{id}",
    SubjectType.DOCUMENT: "/documents/{id}",
    SubjectType.SIGNATURE_REQUEST: "/documents/{document_id}",
    SubjectType.IMPORT_JOB: "/imports/{id}",
    SubjectType.PREDICTION_JOB: "/predictions/{id}",
}


class _Facts(dict[str, str]):
    """A missing fact reads as "" instead of failing the whole notification."""

    def __missing__(self, key: str) -> str:
        return ""


@dataclass(frozen=True)
class Notice:
    title: str
    body: str
    link: str


def describe(o: Occurrence, app_url: str) -> Notice:
    facts = _Facts(o.facts)
    if o.submission is not None:
        facts.setdefault("name", o.submission.name)
    if facts["name"]:
        facts["name"] = f'"{facts["name"]}"'
    if o.type is NotificationType.SUBMISSION_REJECTED or o.type is NotificationType.SUBMISSION_CANCELLED:
        facts["reason"] = facts["reason"] or "none given"
    if o.type is NotificationType.MESSAGE_POSTED and facts["change_request"] == "true":
        facts["change_request"] = "Changes are requested. "
    else:
        facts["change_request"] = ""
    title = " ".join(_TITLES[o.type].format_map(facts).split())
    body = _BODIES[o.type].format_map(facts).strip()
    path = _PATHS[o.subject_type].format_map(_Facts({**facts, "id": o.subject_id}))
    return Notice(title=title, body=body, link=f"{app_url.rstrip('/')}{path}")


def webhook_payload(o: Occurrence, app_url: str) -> dict[str, Any]:
    """The body partner endpoints receive (signed by the delivery worker)."""
    notice = describe(o, app_url)
    return {
        "id": o.event_id,
        "type": topic(o.type),
        "occurred_at": o.occurred_at.isoformat() if o.occurred_at else None,
        "organization_id": o.organization_id,
        "data": {
            "subject_type": o.subject_type.value,
            "subject_id": o.subject_id,
            "submission_id": o.submission.submission_id if o.submission else o.facts.get("submission_id", ""),
            "title": notice.title,
            "link": notice.link,
            **{k: v for k, v in sorted(o.facts.items()) if k not in {"submission_id"}},
        },
    }


@dataclass(frozen=True)
class Notification:
    """One notification of one recipient (unique per source event and recipient)."""

    id: str
    recipient_id: str
    type: NotificationType
    title: str
    body: str
    link: str
    organization_id: str
    subject_type: str
    subject_id: str
    submission_id: str
    event_id: str
    occurred_at: datetime | None
    in_app: bool = True  # False: kept for its email only (IN_APP switched off), never listed
    data: dict[str, str] = field(default_factory=dict)  # the event's facts, for the email templates
    created_at: datetime | None = None
    read_at: datetime | None = None
    seq: int = 0
