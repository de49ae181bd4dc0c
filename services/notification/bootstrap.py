"""Composition root of the notification service: typed settings, adapters and use cases, built once.

`python -m services.notification` serves NotificationService and WebhookService, relays the schema's
outbox (NotificationCreated, audit events), keeps the user directory from identity's UserChanged, turns
the other services' events into notifications (worker.py; one in-app notification per recipient and
event, the email and webhook deliveries queued in the same transaction) and feeds this replica's
WatchNotifications streams from the bus. `python -m services.notification.worker` (build_worker) sends
the queued emails and webhook deliveries. `build_parts` makes every part over one engine, so tests
serve the real servicers.

Settings: MOLBRIDGE_APP_URL (base of links in notifications; default MOLBRIDGE_PUBLIC_URL / the local
gateway), MOLBRIDGE_WEBHOOK_SECRET_KEY (Fernet key for webhook secrets at rest; unset: a key file under
<data dir>/notification, for local runs), MOLBRIDGE_WEBHOOK_ALLOW_PRIVATE (webhook URLs on loopback or
private addresses; off by default, the local stack turns it on), MOLBRIDGE_NOTIFICATION_HORIZON_DAYS
(events older than this tell nobody; default 7).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
from molbridge.notification.v1 import notification_service_pb2_grpc as pb_grpc
from pydantic import Field
from sqlalchemy.ext.asyncio import AsyncEngine

from services.notification import worker
from services.notification.adapters.secrets import SecretBox, key_from_file
from services.notification.adapters.webhook_sender import HttpWebhookSender
from services.notification.domain.webhooks import UrlPolicy
from services.notification.server.notifications import NotificationServicer
from services.notification.server.webhooks import WebhookServicer
from services.notification.service.delivery import EmailDispatcher, WebhookDispatcher
from services.notification.service.directory import Directory
from services.notification.service.dispatch import Dispatcher
from services.notification.service.notifications import NotificationService, notification_feed
from services.notification.service.webhooks import WebhookService
from services.notification.store import SCHEMA, NotificationTransactions, transactions
from services.runtime import telemetry
from services.runtime.email import make_email_sender
from services.runtime.feeds import Feed
from services.runtime.identity_client import RemoteIdentity, remote_authenticator
from services.runtime.migrations import MigrationSpec
from services.runtime.process import Hook, Outbox, Process, Subscription
from services.runtime.revocation import revocation_feed
from services.runtime.settings import Settings

MIGRATIONS = MigrationSpec(SCHEMA, Path(__file__).parent / "migrations")

Servicer = tuple[Callable[[Any, grpc.aio.Server], None], Any]


class NotificationSettings(Settings):
    """The notification service's variables, on top of what every process reads (SMTP_* for email)."""

    app_url_override: str | None = Field(None, validation_alias="MOLBRIDGE_APP_URL")
    webhook_secret_key: str | None = Field(None, validation_alias="MOLBRIDGE_WEBHOOK_SECRET_KEY", repr=False)
    allow_private_webhooks: bool = Field(False, validation_alias="MOLBRIDGE_WEBHOOK_ALLOW_PRIVATE")
    horizon_days: float = Field(7.0, gt=0, validation_alias="MOLBRIDGE_NOTIFICATION_HORIZON_DAYS")

    @property
    def app_url(self) -> str:
        """Base of the links in notifications, emails and webhook payloads (no trailing slash)."""
        return (self.app_url_override or self.public_url).rstrip("/")

    def secret_box(self) -> SecretBox:
        key = (
            self.webhook_secret_key.encode()
            if self.webhook_secret_key
            else key_from_file(self.data_dir / "notification")
        )
        return SecretBox(key)


@dataclass
class NotificationParts:
    settings: NotificationSettings
    uow: NotificationTransactions
    secrets: SecretBox
    notifications: NotificationService
    directory: Directory
    dispatcher: Dispatcher
    webhooks: WebhookService
    webhook_sender: HttpWebhookSender
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    @property
    def servicers(self) -> list[Servicer]:
        return [
            (pb_grpc.add_NotificationServiceServicer_to_server, NotificationServicer(self.notifications)),
            (pb_grpc.add_WebhookServiceServicer_to_server, WebhookServicer(self.webhooks)),
        ]

    @property
    def jobs(self) -> list[Hook]:
        return []

    @property
    def subscriptions(self) -> list[Subscription[Any]]:
        """The server's: the directory and every event that notifies someone."""
        horizon = timedelta(days=self.settings.horizon_days)
        return worker.server_subscriptions(self.directory, self.dispatcher, horizon=horizon)


def build_parts(settings: NotificationSettings, database: AsyncEngine) -> NotificationParts:
    """Every part of the service over `database`; call it inside the running event loop."""
    uow = transactions(database)
    secrets = settings.secret_box()
    sender = HttpWebhookSender(UrlPolicy(allow_private=settings.allow_private_webhooks))
    return NotificationParts(
        settings=settings,
        uow=uow,
        secrets=secrets,
        notifications=NotificationService(uow, Feed()),
        directory=Directory(uow),
        dispatcher=Dispatcher(uow, settings.app_url),
        webhooks=WebhookService(uow, secrets, sender),
        webhook_sender=sender,
        on_stop=[sender.close],
    )


def build_server(settings: NotificationSettings) -> Process:
    database = telemetry.traced_engine(settings.database_url, SCHEMA)
    identity = RemoteIdentity(settings.addr_of("identity"))
    parts = build_parts(settings, database)
    return Process(
        servicers=parts.servicers,
        authenticator=remote_authenticator(identity),
        subscriptions=parts.subscriptions,
        outbox=Outbox(database, SCHEMA),
        consumers=[
            revocation_feed(identity.revocations, "notification"),  # revoked tokens refused at once
            notification_feed(parts.notifications.feed, "notification"),  # new notifications to this replica's watchers
        ],
        jobs=parts.jobs,
        on_stop=[identity.close, *parts.on_stop, database.dispose],
    )


def build_worker(settings: NotificationSettings) -> Process:
    """The delivery worker: sends the queued emails and webhook deliveries (built by `deliver`). It relays
    the schema's outbox too."""
    database = telemetry.traced_engine(settings.database_url, SCHEMA)
    parts = build_parts(settings, database)
    webhooks = WebhookDispatcher(parts.uow, parts.webhook_sender, parts.secrets)
    emails = EmailDispatcher(parts.uow, make_email_sender(settings), app_url=settings.app_url)
    return Process(
        outbox=Outbox(database, SCHEMA),
        jobs=[webhooks.run, emails.run],
        on_stop=[*parts.on_stop, database.dispose],
    )
