"""`molbridge notifications …` and `molbridge webhooks …` without a gateway: argument parsing and what the
tables show."""

from __future__ import annotations

import pytest
from molbridge.notification.v1 import notification_service_pb2 as pb

from cli.main import build_parser
from cli.notifications import delivery_rows, events_text, preference_rows, with_secret

Type = pb.Notification.Type


def parse(*argv: str):  # type: ignore[no-untyped-def]
    return build_parser().parse_args(list(argv))


def test_webhook_create_takes_event_type_words() -> None:
    args = parse("webhooks", "create", "https://partner.example/hook", "--events", "submission-submitted",
                 "RESULTS_UPLOADED")
    assert args.url == "https://partner.example/hook"
    assert args.events == [Type.SUBMISSION_SUBMITTED, Type.RESULTS_UPLOADED]
    with pytest.raises(SystemExit):
        parse("webhooks", "create", "https://x.example", "--events", "no-such-type")


def test_preferences_set_takes_type_channel_switches_and_a_digest() -> None:
    args = parse("notifications", "preferences", "set", "--enable", "message-posted:email", "--disable",
                 "submission-quoted:in-app", "--digest", "daily")
    assert args.enable == [(Type.MESSAGE_POSTED, pb.Preferences.EMAIL)]
    assert args.disable == [(Type.SUBMISSION_QUOTED, pb.Preferences.IN_APP)]
    assert args.digest == pb.Preferences.DAILY
    with pytest.raises(SystemExit):
        parse("notifications", "preferences", "set", "--enable", "message-posted")


def test_update_leaves_what_is_not_given() -> None:
    args = parse("webhooks", "update", "w-1", "--inactive")
    assert (args.url, args.events, args.description, args.active) == (None, None, None, False)
    assert parse("webhooks", "update", "w-1", "--events").events == []  # every type


def test_tables() -> None:
    assert events_text(pb.Webhook()) == "all"
    assert events_text(pb.Webhook(event_types=[Type.MESSAGE_POSTED])) == "message-posted"
    dead = pb.WebhookDelivery(id="d-1", event_id="e-1", event_type=Type.SUBMISSION_SUBMITTED,
                              status=pb.WebhookDelivery.DEAD, attempts=31, last_status_code=503, last_error="HTTP 503")
    assert delivery_rows([dead])[0][:6] == ["d-1", "e-1", "submission-submitted", "dead", "31", "503"]
    test = pb.WebhookDelivery(id="d-2", test=True, status=pb.WebhookDelivery.PENDING)
    assert delivery_rows([test])[0][2:4] == ["test", "pending"]
    prefs = pb.Preferences(settings=[
        pb.ChannelSetting(type=Type.MESSAGE_POSTED, channel=pb.Preferences.IN_APP, enabled=True),
        pb.ChannelSetting(type=Type.MESSAGE_POSTED, channel=pb.Preferences.EMAIL, enabled=False),
    ])
    assert preference_rows(prefs) == [["message-posted", "on", "off"]]
    shown = with_secret(pb.Webhook(id="w-1", url="https://x.example", secret_hint="abcd"), "whsec_xyzabcd")
    assert "whsec_xyzabcd" in shown and "not shown again" in shown
