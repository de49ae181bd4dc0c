"""Notification emails rendered from the packaged templates: subject and bodies per type, links into the
app, escaping, and a digest that groups several notifications."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.notification.domain.emails import (
    COPY,
    EmailItem,
    app_link,
    digest_cutoff,
    email_retry_at,
    group_for_digest,
    render_digest,
    render_notification,
)

BASE = "https://app.molbridge.example/"
T0 = datetime(2026, 12, 3, 9, 30, tzinfo=UTC)


def item(kind: str = "SUBMISSION_SUBMITTED", title: str = "Solubility panel", **changes: object) -> EmailItem:
    values: dict[str, object] = {
        "notification_type": kind, "title": title, "body": "Acme Pharma submitted 12 molecules.",
        "link_path": "/submissions/sub-1", "occurred_at": T0,
    }
    values.update(changes)
    return EmailItem(**values)  # type: ignore[arg-type]


def test_a_notification_email_has_its_type_subject_and_a_link_into_the_app() -> None:
    email = render_notification(item(), recipient_name="Dana", base_url=BASE)
    assert email.subject == "New submission: Solubility panel"
    link = "https://app.molbridge.example/submissions/sub-1"
    for body in (email.text, email.html):
        assert "Dana" in body and "Solubility panel" in body and link in body
        assert "https://app.molbridge.example/settings/notifications" in body
    assert COPY["SUBMISSION_SUBMITTED"].action in email.html
    assert "2026-12-03 09:30 UTC" in email.text


@pytest.mark.parametrize("kind", sorted(COPY))
def test_every_known_type_renders(kind: str) -> None:
    email = render_notification(item(kind), recipient_name="Dana", base_url=BASE)
    assert "Solubility panel" in email.subject
    assert COPY[kind].prompt in email.text


def test_an_unknown_type_falls_back_to_its_title() -> None:
    email = render_notification(item("something.new", "A new thing"), recipient_name="", base_url=BASE)
    assert email.subject == "A new thing"
    assert "Hello there" in email.text


def test_html_is_escaped_and_the_subject_stays_on_one_line() -> None:
    email = render_notification(
        item(title="<b>Panel</b>\r\nBcc: victim@example.com", body="<script>alert(1)</script>"),
        recipient_name="<i>Dana</i>", base_url=BASE,
    )
    assert "\n" not in email.subject and "\r" not in email.subject
    assert "<script>" not in email.html and "&lt;script&gt;" in email.html
    assert "<i>Dana</i>" not in email.html
    assert "<script>alert(1)</script>" in email.text  # plain text is not HTML


def test_a_message_is_multipart_with_text_and_html() -> None:
    email = render_notification(item(), recipient_name="Dana", base_url=BASE)
    message = email.message(sender="Molbridge <no-reply@molbridge.example>", to="dana@acme.example",
                            headers={"X-Molbridge-Notification": "n-1"})
    assert message["To"] == "dana@acme.example"
    assert message["X-Molbridge-Notification"] == "n-1"
    assert [part.get_content_type() for part in message.iter_parts()] == ["text/plain", "text/html"]


def test_links() -> None:
    assert app_link("https://x.example/", "submissions/1") == "https://x.example/submissions/1"
    assert app_link("https://x.example", "/a b") == "https://x.example/a%20b"
    assert app_link("https://x.example", "https://docs.example/y") == "https://docs.example/y"


def test_a_digest_groups_notifications_by_type_oldest_first() -> None:
    items = [
        item("MESSAGE_POSTED", "Re: panel", occurred_at=T0 + timedelta(minutes=20), link_path="/submissions/sub-1#m"),
        item("SUBMISSION_SUBMITTED", "Panel A", occurred_at=T0),
        item("MESSAGE_POSTED", "Question", occurred_at=T0 + timedelta(minutes=5), link_path="/submissions/sub-2"),
    ]
    groups = group_for_digest(items, BASE)
    assert [g.heading for g in groups] == ["New submissions", "New messages"]
    assert [e.item.title for e in groups[1].entries] == ["Question", "Re: panel"]

    email = render_digest(items, recipient_name="Dana", base_url=BASE, period="DAILY")
    assert email.subject == "Your daily Molbridge digest: 3 updates"
    for body in (email.text, email.html):
        assert body.index("Panel A") < body.index("Question") < body.index("Re: panel")
        assert "https://app.molbridge.example/submissions/sub-2" in body
        assert "https://app.molbridge.example/notifications" in body
    assert "New messages (2)" in email.text


def test_a_digest_of_one_and_an_empty_digest() -> None:
    assert render_digest([item()], recipient_name="D", base_url=BASE, period="HOURLY").subject == (
        "Your hourly Molbridge digest: 1 update"
    )
    with pytest.raises(ValueError):
        render_digest([], recipient_name="D", base_url=BASE, period="DAILY")


def test_a_failed_email_is_retried_with_a_capped_backoff_forever() -> None:
    assert email_retry_at(1, T0, lambda: 0.5) == T0 + timedelta(seconds=15)
    assert email_retry_at(50, T0, lambda: 0.999999) <= T0 + timedelta(minutes=15)
    assert email_retry_at(3, T0, lambda: 0.0) == T0 + timedelta(seconds=1)


def test_digest_cutoffs() -> None:
    now = datetime(2026, 12, 3, 14, 25, 7, tzinfo=UTC)
    assert digest_cutoff(now, "HOURLY") == datetime(2026, 12, 3, 14, 0, tzinfo=UTC)
    assert digest_cutoff(now, "DAILY") == datetime(2026, 12, 3, 0, 0, tzinfo=UTC)
    with pytest.raises(ValueError):
        digest_cutoff(now, "OFF")


def test_only_a_permanent_smtp_refusal_ends_an_email() -> None:
    import smtplib

    from services.notification.service.delivery import permanent_refusal
    from services.runtime.errors import IntegrationError

    def wrapped(cause: BaseException) -> IntegrationError:
        error = IntegrationError("Could not send email through SMTP; try again later")
        error.__cause__ = cause
        return error

    assert permanent_refusal(wrapped(smtplib.SMTPRecipientsRefused({"a@x.test": (550, b"no such user")})))
    assert not permanent_refusal(wrapped(smtplib.SMTPRecipientsRefused({"a@x.test": (451, b"try later")})))
    assert permanent_refusal(wrapped(smtplib.SMTPDataError(554, b"rejected")))
    assert not permanent_refusal(wrapped(smtplib.SMTPAuthenticationError(535, b"bad credentials")))  # config: retry
    assert not permanent_refusal(wrapped(ConnectionRefusedError()))
    assert not permanent_refusal(wrapped(smtplib.SMTPServerDisconnected()))
