"""Notification and webhook commands: `notifications list|unread|read|watch|preferences show|set` and
`webhooks create|list|get|update|delete|deliveries|redeliver|test|rotate-secret`."""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any

from molbridge.notification.v1 import notification_service_pb2 as pb
from molbridge.notification.v1 import notification_service_pb2_grpc as pb_grpc

from cli import output
from cli.app import add_command
from cli.arguments import enum_choice, truncate
from cli.client import CliError, Gateway
from cli.cro_services import show_list
from molbridge_client.errors import Unavailable

TITLE_WIDTH = 60
URL_WIDTH = 50
WATCH_PAUSE_SECONDS = 1.0
WATCH_RETRIES = 5


def notification_type(value: str) -> int:
    return enum_choice(pb.Notification.Type, value, "notification type")


def channel(value: str) -> int:
    return enum_choice(pb.Preferences.Channel, value, "channel")


def digest(value: str) -> int:
    return enum_choice(pb.Preferences.EmailDigest, value, "digest")


def delivery_status(value: str) -> int:
    return enum_choice(pb.WebhookDelivery.Status, value, "delivery status")


def switch(value: str) -> tuple[int, int]:
    """TYPE:CHANNEL, e.g. submission-quoted:email."""
    kind, sep, where = value.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"{value!r}: expected TYPE:CHANNEL, e.g. submission-quoted:email")
    return notification_type(kind), channel(where)


def word(message: Any, field: str) -> str:
    return output.enum_word(message, field).lower().replace("_", "-")


def notifications_stub(gw: Gateway) -> pb_grpc.NotificationServiceStub:
    return gw.stub(pb_grpc.NotificationServiceStub)


def webhooks_stub(gw: Gateway) -> pb_grpc.WebhookServiceStub:
    return gw.stub(pb_grpc.WebhookServiceStub)


def show(args: argparse.Namespace, answer: Any, text: str) -> None:
    print(output.as_json(answer) if args.json else text)


# --- notifications ---------------------------------------------------------------------------------------

NOTIFICATION_HEADERS = ["ID", "WHEN", "TYPE", "TITLE", "READ"]


def notification_rows(items: Sequence[pb.Notification], width: int = TITLE_WIDTH) -> list[list[str]]:
    return [
        [n.id, output.timestamp(n.created_at), word(n, "type"), truncate(n.title, width), "yes" if n.read else "no"]
        for n in items
    ]


def notification_line(n: pb.Notification) -> str:
    return f"{output.timestamp(n.created_at)}  {word(n, 'type')}  {n.title}  {n.link}".rstrip()


def list_notifications(args: argparse.Namespace, gw: Gateway) -> None:
    request = pb.ListNotificationsRequest(unread_only=args.unread, type=args.type, page=args.page,
                                          page_size=args.page_size)
    answer = gw.call(notifications_stub(gw).ListNotifications, request)
    summary = f"{output.page_summary(answer.meta, 'notification')}, {answer.unread} unread"
    show_list(args, answer, "No notifications", NOTIFICATION_HEADERS,
              lambda width: notification_rows(answer.data, width), summary)


def unread(args: argparse.Namespace, gw: Gateway) -> None:
    answer = gw.call(notifications_stub(gw).GetUnreadCount, pb.GetUnreadCountRequest())
    show(args, answer, str(answer.unread))


def mark_read(args: argparse.Namespace, gw: Gateway) -> None:
    if args.all == bool(args.id):
        raise CliError("give a notification ID or --all", exit_code=2)
    stub = notifications_stub(gw)
    if args.all:
        marked = gw.call(stub.MarkAllNotificationsRead, pb.MarkAllNotificationsReadRequest())
        show(args, marked, f"{marked.marked} notification{'' if marked.marked == 1 else 's'} marked read")
        return
    answer = gw.call(stub.MarkNotificationRead, pb.MarkNotificationReadRequest(id=args.id))
    show(args, answer, f"Read: {answer.data.title} ({answer.unread} unread left)")


def watch(args: argparse.Namespace, gw: Gateway) -> None:
    """New notifications as they arrive, until interrupted; a dropped stream is opened again after the last
    one shown."""
    print("(watching your notifications: Ctrl-C to stop)", file=sys.stderr, flush=True)
    after_id, failures = args.after or "", 0
    while True:
        stream = gw.stream(notifications_stub(gw).WatchNotifications, pb.WatchNotificationsRequest(after_id=after_id))
        try:
            for response in stream:
                failures = 0
                if response.notification.id:
                    n = response.notification
                    print(output.as_json(n) if args.json else notification_line(n), flush=True)
                    after_id = n.id
        except Unavailable:
            failures += 1
            if failures > WATCH_RETRIES:
                raise
        finally:
            stream.cancel()
        time.sleep(WATCH_PAUSE_SECONDS * 2 ** min(failures, 4))


PREFERENCE_HEADERS = ["TYPE", "IN-APP", "EMAIL"]


def preference_rows(preferences: pb.Preferences) -> list[list[str]]:
    table: dict[str, dict[str, str]] = {}
    for setting in preferences.settings:
        table.setdefault(word(setting, "type"), {})[word(setting, "channel")] = "on" if setting.enabled else "off"
    return [[kind, row.get("in-app", "-"), row.get("email", "-")] for kind, row in table.items()]


def print_preferences(args: argparse.Namespace, answer: Any) -> None:
    if args.json:
        print(output.as_json(answer))
        return
    output.listing(args, PREFERENCE_HEADERS, preference_rows(answer.data),
                   f"email digest: {word(answer.data, 'email_digest')}")


def preferences_show(args: argparse.Namespace, gw: Gateway) -> None:
    print_preferences(args, gw.call(notifications_stub(gw).GetPreferences, pb.GetPreferencesRequest()))


def preferences_set(args: argparse.Namespace, gw: Gateway) -> None:
    settings = [pb.ChannelSetting(type=kind, channel=where, enabled=True) for kind, where in args.enable] + [
        pb.ChannelSetting(type=kind, channel=where, enabled=False) for kind, where in args.disable
    ]
    if not settings and not args.digest and not args.reset:
        raise CliError("nothing to change: give --enable, --disable, --digest or --reset", exit_code=2)
    request = pb.UpdatePreferencesRequest(settings=settings, email_digest=args.digest,
                                          reset_to_defaults=args.reset)
    print_preferences(args, gw.call(notifications_stub(gw).UpdatePreferences, request))


# --- webhooks --------------------------------------------------------------------------------------------

WEBHOOK_HEADERS = ["ID", "URL", "EVENTS", "ACTIVE", "SECRET", "CREATED"]
DELIVERY_HEADERS = ["ID", "EVENT", "TYPE", "STATUS", "ATTEMPTS", "LAST", "NEXT / DONE", "ERROR"]


def events_text(webhook: pb.Webhook) -> str:
    if not webhook.event_types:
        return "all"
    enum = pb.Notification.Type
    return ",".join(enum.Name(t).lower().replace("_", "-") for t in webhook.event_types)


def webhook_rows(items: Sequence[pb.Webhook], width: int = URL_WIDTH) -> list[list[str]]:
    return [
        [w.id, truncate(w.url, width), truncate(events_text(w), width), "yes" if w.active else "no",
         f"…{w.secret_hint}", output.timestamp(w.created_at)]
        for w in items
    ]


def webhook_fields(w: pb.Webhook) -> str:
    return output.fields([
        ("id", w.id), ("url", w.url), ("events", events_text(w)), ("active", "yes" if w.active else "no"),
        ("description", w.description or "-"), ("secret", f"…{w.secret_hint}"),
        ("secret rotated", output.timestamp(w.secret_rotated_at)), ("created", output.timestamp(w.created_at)),
        ("updated", output.timestamp(w.updated_at)),
    ])


def with_secret(webhook: pb.Webhook, secret: str) -> str:
    if not secret:
        return webhook_fields(webhook) + "\n(created by an earlier request with this request id: no secret shown)"
    return (f"{webhook_fields(webhook)}\n\nsigning secret: {secret}\n"
            "Store it now: it is not shown again (verify the Molbridge-Signature header with it).")


def delivery_rows(items: Sequence[pb.WebhookDelivery], width: int = URL_WIDTH) -> list[list[str]]:
    rows = []
    for d in items:
        settled = d.delivered_at if d.HasField("delivered_at") else d.dead_at if d.HasField("dead_at") else (
            d.next_attempt_at)
        rows.append([
            d.id, d.event_id, "test" if d.test else word(d, "event_type"), word(d, "status"), str(d.attempts),
            str(d.last_status_code or "-"), output.timestamp(settled), truncate(d.last_error or "-", width),
        ])
    return rows


def create_webhook(args: argparse.Namespace, gw: Gateway) -> None:
    request = pb.CreateWebhookRequest(url=args.url, event_types=args.events, description=args.description,
                                      request_id=str(uuid.uuid4()))
    answer = gw.call(webhooks_stub(gw).CreateWebhook, request)
    show(args, answer, with_secret(answer.data, answer.secret))


def list_webhooks(args: argparse.Namespace, gw: Gateway) -> None:
    answer = gw.call(webhooks_stub(gw).ListWebhooks, pb.ListWebhooksRequest(page=args.page, page_size=args.page_size))
    show_list(args, answer, "No webhooks", WEBHOOK_HEADERS, lambda width: webhook_rows(answer.data, width),
              output.page_summary(answer.meta, "webhook"))


def get_webhook(args: argparse.Namespace, gw: Gateway) -> None:
    answer = gw.call(webhooks_stub(gw).GetWebhook, pb.GetWebhookRequest(id=args.id))
    show(args, answer, webhook_fields(answer.data))


def update_webhook(args: argparse.Namespace, gw: Gateway) -> None:
    request = pb.UpdateWebhookRequest(id=args.id, event_types=args.events or [],
                                      replace_event_types=args.events is not None)
    if args.url is not None:
        request.url = args.url
    if args.description is not None:
        request.description = args.description
    if args.active is not None:
        request.active = args.active
    answer = gw.call(webhooks_stub(gw).UpdateWebhook, request)
    show(args, answer, webhook_fields(answer.data))


def delete_webhook(args: argparse.Namespace, gw: Gateway) -> None:
    answer = gw.call(webhooks_stub(gw).DeleteWebhook, pb.DeleteWebhookRequest(id=args.id))
    show(args, answer, f"Webhook {args.id} deleted")


def rotate_secret(args: argparse.Namespace, gw: Gateway) -> None:
    answer = gw.call(webhooks_stub(gw).RotateWebhookSecret, pb.RotateWebhookSecretRequest(id=args.id))
    show(args, answer, with_secret(answer.data, answer.secret)
         + "\nThe previous secret keeps signing (a second v1 signature) for 24 hours.")


def deliveries(args: argparse.Namespace, gw: Gateway) -> None:
    request = pb.ListWebhookDeliveriesRequest(id=args.id, status=args.status, page=args.page,
                                              page_size=args.page_size)
    answer = gw.call(webhooks_stub(gw).ListWebhookDeliveries, request)
    show_list(args, answer, "No deliveries", DELIVERY_HEADERS, lambda width: delivery_rows(answer.data, width),
              output.page_summary(answer.meta, "delivery").replace("deliverys", "deliveries"))


def redeliver(args: argparse.Namespace, gw: Gateway) -> None:
    request = pb.RedeliverWebhookDeliveryRequest(id=args.id, delivery_id=args.delivery_id)
    answer = gw.call(webhooks_stub(gw).RedeliverWebhookDelivery, request)
    show(args, answer, f"Delivery {answer.data.id} queued again (event {answer.data.event_id})")


def send_test(args: argparse.Namespace, gw: Gateway) -> None:
    answer = gw.call(webhooks_stub(gw).SendWebhookTest, pb.SendWebhookTestRequest(id=args.id))
    show(args, answer, f"Test event {answer.data.event_id} queued as delivery {answer.data.id} "
         f"(see `molbridge webhooks deliveries {args.id}`)")


def _paging(cmd: argparse.ArgumentParser, noun: str) -> None:
    cmd.add_argument("--page", type=int, default=1)
    cmd.add_argument("--page-size", type=int, default=0, help=f"{noun} per page (server default 50)")


def register(subparsers: Any) -> None:
    group = subparsers.add_parser("notifications", help="your notifications and notification preferences")
    commands = group.add_subparsers(dest="notifications_command", required=True, metavar="COMMAND")
    cmd = add_command(commands, "list", "your notifications, newest first", gateway=list_notifications)
    cmd.add_argument("--unread", action="store_true", help="only unread ones")
    cmd.add_argument("--type", type=notification_type, default=0, help="only this type, e.g. submission-quoted")
    _paging(cmd, "notifications")
    add_command(commands, "unread", "how many notifications are unread", gateway=unread)
    cmd = add_command(commands, "read", "mark a notification (or --all) read", gateway=mark_read)
    cmd.add_argument("id", nargs="?", default="", metavar="ID")
    cmd.add_argument("--all", action="store_true", help="every notification")
    cmd = add_command(commands, "watch", "print notifications as they arrive (Ctrl-C to stop)", gateway=watch)
    cmd.add_argument("--after", default="", metavar="ID", help="first the unread ones after this notification")
    prefs = commands.add_parser("preferences", help="show or change your preferences")
    prefs_commands = prefs.add_subparsers(dest="preferences_command", required=True, metavar="COMMAND")
    add_command(prefs_commands, "show", "every type × channel and the email digest", gateway=preferences_show)
    cmd = add_command(prefs_commands, "set", "switch types on or off per channel; set the digest",
                      gateway=preferences_set)
    cmd.add_argument("--enable", type=switch, action="append", default=[], metavar="TYPE:CHANNEL",
                     help="e.g. message-posted:email (repeatable; channels in-app, email)")
    cmd.add_argument("--disable", type=switch, action="append", default=[], metavar="TYPE:CHANNEL")
    cmd.add_argument("--digest", type=digest, default=0, help="off, hourly or daily")
    cmd.add_argument("--reset", action="store_true", help="every switch back to its default first")

    group = subparsers.add_parser("webhooks", help="your organization's outbound webhooks (org admins)")
    commands = group.add_subparsers(dest="webhooks_command", required=True, metavar="COMMAND")
    cmd = add_command(commands, "create", "register an endpoint; prints its signing secret once",
                      gateway=create_webhook)
    cmd.add_argument("url", metavar="URL")
    cmd.add_argument("--events", type=notification_type, nargs="+", default=[], metavar="TYPE",
                     help="event types to receive (default: every type), e.g. submission-submitted")
    cmd.add_argument("--description", default="")
    cmd = add_command(commands, "list", "your organization's endpoints", gateway=list_webhooks)
    _paging(cmd, "webhooks")
    cmd = add_command(commands, "get", "one endpoint", gateway=get_webhook)
    cmd.add_argument("id", metavar="ID")
    cmd = add_command(commands, "update", "change an endpoint; options not given stay", gateway=update_webhook)
    cmd.add_argument("id", metavar="ID")
    cmd.add_argument("--url")
    cmd.add_argument("--events", type=notification_type, nargs="*", metavar="TYPE",
                     help="replace the event types (none given: every type)")
    cmd.add_argument("--description")
    active = cmd.add_mutually_exclusive_group()
    active.add_argument("--active", dest="active", action="store_true", default=None)
    active.add_argument("--inactive", dest="active", action="store_false")
    cmd = add_command(commands, "delete", "remove an endpoint and its delivery log", gateway=delete_webhook)
    cmd.add_argument("id", metavar="ID")
    cmd = add_command(commands, "deliveries", "an endpoint's delivery log, newest first", gateway=deliveries)
    cmd.add_argument("id", metavar="ID")
    cmd.add_argument("--status", type=delivery_status, default=0, help="pending, delivered, retrying or dead")
    _paging(cmd, "deliveries")
    cmd = add_command(commands, "redeliver", "send a DEAD or DELIVERED delivery again", gateway=redeliver)
    cmd.add_argument("id", metavar="ID")
    cmd.add_argument("delivery_id", metavar="DELIVERY_ID")
    cmd = add_command(commands, "test", "queue a signed test event to the endpoint", gateway=send_test)
    cmd.add_argument("id", metavar="ID")
    cmd = add_command(commands, "rotate-secret", "a new signing secret (the old one works 24 h more)",
                      gateway=rotate_secret)
    cmd.add_argument("id", metavar="ID")
