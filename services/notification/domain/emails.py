"""Notification emails: the subject, plain-text and HTML body of one notification, and of a digest that
groups several (HOURLY / DAILY preferences). Rendered from the Jinja2 templates in
services/notification/templates (package data), with links into the app under the public base URL.

Pure: the templates ship with the code and rendering has no side effect; sending is the worker's job.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from functools import cache
from pathlib import Path
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from services.notification.domain.vocabulary import NotificationType

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
MAX_SUBJECT_LENGTH = 150
PREFERENCES_PATH = "/settings/notifications"
INBOX_PATH = "/notifications"


@dataclass(frozen=True)
class EmailCopy:
    """The words of one notification type: its subject (a format over the title) and the call to act."""

    subject: str
    heading: str  # the digest's group heading
    prompt: str
    action: str


DEFAULT_COPY = EmailCopy("{title}", "Other updates", "Open Molbridge for the details.", "Open in Molbridge")

# Keyed by the notification's type (vocabulary.NotificationType). An unknown type falls back to
# DEFAULT_COPY, so a new type is mailed with its title before anyone writes its copy.
COPY: Mapping[str, EmailCopy] = {
    NotificationType.SUBMISSION_SUBMITTED: EmailCopy(
        "New submission: {title}",
        "New submissions",
        "A submission awaits your review and pricing.",
        "Review the submission",
    ),
    NotificationType.SUBMISSION_QUOTED: EmailCopy(
        "Quote received: {title}",
        "Quotes received",
        "The CRO has priced the submission; approve or reject the quote.",
        "Review the quote",
    ),
    NotificationType.SUBMISSION_APPROVED: EmailCopy(
        "Quote approved: {title}",
        "Approved submissions",
        "The quote was approved; the experiment may start.",
        "Open the submission",
    ),
    NotificationType.SUBMISSION_REJECTED: EmailCopy(
        "Submission rejected: {title}", "Rejected submissions", "The submission was rejected.", "Open the submission"
    ),
    NotificationType.SUBMISSION_CANCELLED: EmailCopy(
        "Submission cancelled: {title}", "Cancelled submissions", "The submission was cancelled.", "Open the submission"
    ),
    NotificationType.SUBMISSION_STARTED: EmailCopy(
        "Experiment started: {title}", "Experiments started", "The CRO started the experiment.", "Open the submission"
    ),
    NotificationType.RESULTS_UPLOADED: EmailCopy(
        "Results uploaded: {title}", "Results uploaded", "Results are ready for your review.", "Review the results"
    ),
    NotificationType.RESULTS_REVIEWED: EmailCopy(
        "Results reviewed: {title}", "Results reviewed", "The results were reviewed.", "Open the results"
    ),
    NotificationType.MESSAGE_POSTED: EmailCopy(
        "New message: {title}", "New messages", "A new message was posted on a submission.", "Read the message"
    ),
    NotificationType.SIGNATURE_REQUESTED: EmailCopy(
        "Signature requested: {title}",
        "Signatures requested",
        "Your signature is requested on a document.",
        "Review and sign",
    ),
    NotificationType.SIGNATURE_COMPLETED: EmailCopy(
        "Document signed: {title}",
        "Documents signed",
        "Every signature on the document is complete.",
        "Open the document",
    ),
    NotificationType.SIGNATURE_DECLINED: EmailCopy(
        "Signature declined: {title}",
        "Signatures declined",
        "A signer declined to sign the document.",
        "Open the document",
    ),
    NotificationType.DOCUMENT_EXPIRING: EmailCopy(
        "Document expiring: {title}",
        "Documents expiring",
        "A document expires soon; renew it in time.",
        "Open the document",
    ),
    NotificationType.DOCUMENT_EXPIRED: EmailCopy(
        "Document expired: {title}",
        "Documents expired",
        "A document has expired; work that needs it is on hold.",
        "Open the document",
    ),
    NotificationType.IMPORT_FINISHED: EmailCopy(
        "Import finished: {title}",
        "Imports finished",
        "A molecule import you started has finished.",
        "See the import",
    ),
    NotificationType.IMPORT_FAILED: EmailCopy(
        "Import failed: {title}",
        "Imports failed",
        "A molecule import you started has failed.",
        "See what went wrong",
    ),
    NotificationType.PREDICTION_FINISHED: EmailCopy(
        "Prediction finished: {title}",
        "Predictions finished",
        "A prediction job you started has finished.",
        "See the predictions",
    ),
    NotificationType.PREDICTION_FAILED: EmailCopy(
        "Prediction failed: {title}",
        "Predictions failed",
        "A prediction job you started has failed.",
        "See what went wrong",
    ),
}


@dataclass(frozen=True)
class EmailItem:
    """One notification as an email shows it."""

    notification_type: str  # a NotificationType name
    title: str
    body: str
    link_path: str  # a path in the app ("/submissions/…"); an absolute https URL is used as is
    occurred_at: datetime


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str

    def message(self, *, sender: str, to: str, headers: Mapping[str, str] | None = None) -> EmailMessage:
        """A multipart/alternative message (text first, HTML preferred by readers that can)."""
        message = EmailMessage()
        message["Subject"] = self.subject
        message["From"] = sender
        message["To"] = to
        for name, value in (headers or {}).items():
            message[name] = value
        message.set_content(self.text)
        message.add_alternative(self.html, subtype="html")
        return message


def copy_for(notification_type: str) -> EmailCopy:
    return COPY.get(notification_type, DEFAULT_COPY)


def app_link(base_url: str, path: str) -> str:
    """`path` under the app's public base URL; an absolute http(s) URL stays as it is."""
    if path.startswith(("https://", "http://")):
        return path
    path = "/" + path.lstrip("/")
    return base_url.rstrip("/") + quote(path, safe="/?=&%#:@-._~")


def one_line(text: str, limit: int = MAX_SUBJECT_LENGTH) -> str:
    """A header-safe subject: no line breaks (header injection), at most `limit` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


@cache
def _environment(autoescape: bool) -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        undefined=StrictUndefined,
        autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False) if autoescape else False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _render(name: str, context: Mapping[str, object]) -> tuple[str, str]:
    text = _environment(False).get_template(f"{name}.txt.j2").render(context)
    html = _environment(True).get_template(f"{name}.html.j2").render(context)
    return text, html


def render_notification(item: EmailItem, *, recipient_name: str, base_url: str) -> RenderedEmail:
    copy = copy_for(item.notification_type)
    subject = one_line(copy.subject.format(title=item.title))
    text, html = _render(
        "notification",
        {
            "subject": subject,
            "item": item,
            "copy": copy,
            "recipient_name": recipient_name or "there",
            "link": app_link(base_url, item.link_path),
            "preferences_url": app_link(base_url, PREFERENCES_PATH),
        },
    )
    return RenderedEmail(subject, text, html)


@dataclass(frozen=True)
class DigestEntry:
    item: EmailItem
    link: str


@dataclass(frozen=True)
class DigestGroup:
    heading: str
    entries: tuple[DigestEntry, ...]


def group_for_digest(items: Sequence[EmailItem], base_url: str) -> list[DigestGroup]:
    """Items grouped by type (groups in order of their first item; items oldest first within a group)."""
    ordered = sorted(items, key=lambda item: item.occurred_at)
    groups: dict[str, list[DigestEntry]] = {}
    for item in ordered:
        groups.setdefault(copy_for(item.notification_type).heading, []).append(
            DigestEntry(item, app_link(base_url, item.link_path))
        )
    return [DigestGroup(heading, tuple(entries)) for heading, entries in groups.items()]


def render_digest(items: Sequence[EmailItem], *, recipient_name: str, base_url: str, period: str) -> RenderedEmail:
    """One email for several notifications; `period` is HOURLY or DAILY (the preference that gathered them)."""
    if not items:
        raise ValueError("a digest needs at least one notification")
    count = len(items)
    label = {"HOURLY": "hourly", "DAILY": "daily"}.get(period.upper(), "")
    noun = "update" if count == 1 else "updates"
    subject = one_line(f"Your {label + ' ' if label else ''}Molbridge digest: {count} {noun}")
    text, html = _render(
        "digest",
        {
            "subject": subject,
            "intro": f"Here {'is' if count == 1 else 'are'} {count} {noun} since your last digest.",
            "groups": group_for_digest(items, base_url),
            "recipient_name": recipient_name or "there",
            "inbox_url": app_link(base_url, INBOX_PATH),
            "preferences_url": app_link(base_url, PREFERENCES_PATH),
        },
    )
    return RenderedEmail(subject, text, html)


# ---------------------------------------------------------------- when emails go

EMAIL_FIRST_RETRY_S = 30.0
EMAIL_MAX_RETRY_WAIT_S = 900.0  # a down SMTP server is tried at least every 15 minutes, for as long as it takes


def email_retry_at(attempt: int, now: datetime, draw: Callable[[], float]) -> datetime:
    """When to try again after the `attempt`-th failed send (1-based): full jitter over an exponential,
    capped ceiling. An email whose server is down is never given up (it is delayed, never lost); only a
    permanent refusal (the server rejects the address) ends it."""
    ceiling = min(EMAIL_MAX_RETRY_WAIT_S, EMAIL_FIRST_RETRY_S * 2 ** min(attempt - 1, 30))
    return now + timedelta(seconds=max(1.0, draw() * ceiling))


def digest_cutoff(now: datetime, digest: str) -> datetime:
    """A digest gathers what was queued before the current period began (the full hour for HOURLY, UTC
    midnight for DAILY): at most one digest per recipient and period, sent once the period is over."""
    now = now.astimezone(UTC)
    if digest == "HOURLY":
        return now.replace(minute=0, second=0, microsecond=0)
    if digest == "DAILY":
        return now.replace(hour=0, minute=0, second=0, microsecond=0)
    raise ValueError(f"not a digest period: {digest!r}")
