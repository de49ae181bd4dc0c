"""The delivery worker's loops against real PostgreSQL, a real local webhook receiver (it verifies every
signature) and a real local SMTP listener (aiosmtpd), with a clock the test moves:

- a webhook endpoint down for a while receives every event exactly once after it recovers;
- a delivery failing for the whole 24 h window is DEAD, and a redelivery sends it again;
- a slow endpoint does not hold up another endpoint's deliveries; two dispatchers never send one twice;
- a rotated secret: both signatures for the grace period, either secret verifies;
- SMTP down → the email is sent later, exactly once; a digest gathers a period's notifications into one email.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from cryptography.fernet import Fernet
from sqlalchemy.ext.asyncio import AsyncEngine

from services.notification.adapters.secrets import SecretBox
from services.notification.adapters.webhook_sender import HttpWebhookSender
from services.notification.bootstrap import MIGRATIONS
from services.notification.domain.notices import Notification
from services.notification.domain.recipients import Member
from services.notification.domain.vocabulary import DeliveryStatus, EmailDigest, NotificationType
from services.notification.domain.webhooks import RETRY_WINDOW, UrlPolicy, Webhook
from services.notification.service.delivery import EmailDispatcher, WebhookDispatcher
from services.notification.service.webhooks import WebhookService
from services.notification.store import SCHEMA, NotificationTransactions, transactions
from services.notification.store.tables import email_deliveries
from services.runtime.auth import Principal
from services.runtime.db import make_engine
from services.runtime.email import SmtpSender
from services.runtime.errors import NotFoundError, PreconditionError
from services.runtime.pagination import PageRequest
from stack.ports import free_port
from tests.conftest import SmtpCollector
from tests.webhook_receiver import Receivers, WebhookReceiver

APP_URL = "https://app.molbridge.test"
LONG_TOLERANCE = 3 * 86400  # the test's clock runs ahead of the receiver's: accept its timestamps
ALL = PageRequest(1, 100)


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC) + timedelta(seconds=1)  # rows are queued at the database's now()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class World:
    engine: AsyncEngine
    uow: NotificationTransactions
    clock: Clock
    secrets: SecretBox
    sender: HttpWebhookSender
    webhooks: WebhookService
    admin: Principal
    receivers: Receivers

    def dispatcher(self, **options: int) -> WebhookDispatcher:
        return WebhookDispatcher(self.uow, self.sender, self.secrets, clock=self.clock, draw=lambda: 0.5, **options)

    def emails(self, smtp_port: int) -> EmailDispatcher:
        """The email loop, sending through the SMTP listener on `smtp_port` (or nothing listening there)."""
        sender = SmtpSender(f"smtp://127.0.0.1:{smtp_port}", timeout=2)
        return EmailDispatcher(self.uow, sender, app_url=APP_URL, clock=self.clock, draw=lambda: 0.5)

    async def endpoint(self, receiver: WebhookReceiver) -> Webhook:
        webhook, secret = await self.webhooks.create(self.admin, url=receiver.url, event_types=[], description="")
        receiver.secrets = [secret]
        return webhook

    async def queue_events(self, webhook: Webhook, count: int) -> list[str]:
        """`count` events for the endpoint, queued as the notification dispatcher queues them."""
        ids = []
        async with self.uow() as uow:
            for _ in range(count):
                event_id = str(uuid.uuid4())
                payload = {"id": event_id, "type": "submission.submitted", "organization_id": webhook.organization_id,
                           "data": {"title": "Kinase panel"}}
                await uow.deliveries.webhook(webhook.id, webhook.organization_id, event_id,
                                             NotificationType.SUBMISSION_SUBMITTED, payload)
                ids.append(event_id)
        return ids

    async def log(self, webhook: Webhook) -> dict[str, DeliveryStatus]:
        deliveries, _ = await self.webhooks.deliveries(self.admin, webhook.id, None, ALL)
        return {d.event_id: d.status for d in deliveries}


@pytest.fixture
async def world(database_url: str) -> AsyncIterator[World]:
    MIGRATIONS.upgrade(database_url)
    engine = make_engine(database_url, SCHEMA)
    uow = transactions(engine)
    clock = Clock()
    secrets = SecretBox(Fernet.generate_key())
    sender = HttpWebhookSender(UrlPolicy(allow_private=True), timeout=2.0)
    receivers = Receivers()
    admin = Principal(subject=str(uuid.uuid4()), organization_id=str(uuid.uuid4()), organization_kind="PHARMA",
                      roles=frozenset({"pharma_admin"}))
    try:
        yield World(engine, uow, clock, secrets, sender, WebhookService(uow, secrets, sender, clock), admin, receivers)
    finally:
        receivers.close()
        await sender.close()
        await engine.dispose()


async def test_an_endpoint_down_for_a_while_gets_every_event_exactly_once(world: World) -> None:
    receiver = world.receivers.new(tolerance=LONG_TOLERANCE)
    webhook = await world.endpoint(receiver)
    receiver.down()
    events = await world.queue_events(webhook, 5)
    dispatcher = world.dispatcher()

    await dispatcher.run_until_idle()
    assert set((await world.log(webhook)).values()) == {DeliveryStatus.RETRYING}
    world.clock.advance(minutes=10)
    await dispatcher.run_until_idle()  # still down: a second failed attempt each
    assert receiver.received == []

    receiver.up()
    world.clock.advance(hours=1)
    await dispatcher.run_until_idle()
    world.clock.advance(hours=30)
    await dispatcher.run_until_idle()  # nothing is due any more: nothing is sent again

    assert sorted(receiver.delivered_ids()) == sorted(events)
    assert len(receiver.received) == len(events)
    assert set((await world.log(webhook)).values()) == {DeliveryStatus.DELIVERED}
    deliveries, _ = await world.webhooks.deliveries(world.admin, webhook.id, DeliveryStatus.DELIVERED, ALL)
    assert {d.attempts for d in deliveries} == {3} and all(d.last_status_code == 204 for d in deliveries)


async def test_a_delivery_failing_all_window_is_dead_then_redelivered_once(world: World) -> None:
    receiver = world.receivers.new(tolerance=LONG_TOLERANCE)
    webhook = await world.endpoint(receiver)
    receiver.fail(10_000, status=503)
    [event] = await world.queue_events(webhook, 1)
    dispatcher = world.dispatcher()

    started = world.clock()
    for _ in range(200):
        await dispatcher.run_until_idle()
        [delivery], _ = await world.webhooks.deliveries(world.admin, webhook.id, None, ALL)
        if delivery.status is DeliveryStatus.DEAD:
            break
        assert delivery.status is DeliveryStatus.RETRYING and delivery.next_attempt_at is not None
        with pytest.raises(PreconditionError):  # one still being tried is left to its schedule
            await world.webhooks.redeliver(world.admin, webhook.id, delivery.id)
        world.clock.now = delivery.next_attempt_at
    assert delivery.status is DeliveryStatus.DEAD
    assert delivery.dead_at is not None and delivery.dead_at >= started + RETRY_WINDOW - timedelta(seconds=5)
    assert delivery.last_status_code == 503 and delivery.attempts == len(receiver.received) > 10
    assert receiver.delivered == []

    receiver.fail(0)
    requeued = await world.webhooks.redeliver(world.admin, webhook.id, delivery.id)
    assert requeued.status is DeliveryStatus.PENDING and requeued.attempts == 0
    await dispatcher.run_until_idle()
    world.clock.advance(days=2)
    await dispatcher.run_until_idle()
    assert receiver.delivered_ids() == [event]
    [done], _ = await world.webhooks.deliveries(world.admin, webhook.id, None, ALL)
    assert done.status is DeliveryStatus.DELIVERED and done.dead_at is None


async def test_a_slow_endpoint_does_not_hold_up_another(world: World) -> None:
    slow, fast = world.receivers.new(), world.receivers.new()
    slow_hook, fast_hook = await world.endpoint(slow), await world.endpoint(fast)
    slow.slow(1.0)
    slow_events = await world.queue_events(slow_hook, 6)
    fast_events = await world.queue_events(fast_hook, 3)
    dispatcher = world.dispatcher(overall=8, per_endpoint=2)

    running = asyncio.create_task(dispatcher.run())
    try:
        await fast.wait_for(3)
        # Every fast delivery is done while the slow endpoint's backlog is still being worked through.
        assert set((await world.log(fast_hook)).values()) == {DeliveryStatus.DELIVERED}
        assert DeliveryStatus.PENDING in set((await world.log(slow_hook)).values())
        await slow.wait_for(6, timeout=30)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert sorted(fast.delivered_ids()) == sorted(fast_events)
    assert sorted(slow.delivered_ids()) == sorted(slow_events)
    assert len(slow.received) == 6


async def test_two_dispatchers_never_send_one_delivery_twice(world: World) -> None:
    receiver = world.receivers.new()
    webhook = await world.endpoint(receiver)
    receiver.slow(0.05)
    events = await world.queue_events(webhook, 12)
    first, second = world.dispatcher(per_endpoint=3), world.dispatcher(per_endpoint=3)
    await asyncio.gather(first.run_until_idle(), second.run_until_idle())
    await first.run_until_idle()
    assert sorted(receiver.delivered_ids()) == sorted(events)
    assert len(receiver.received) == 12


async def test_a_rotated_secret_signs_with_both_for_the_grace_period(world: World) -> None:
    receiver = world.receivers.new(tolerance=LONG_TOLERANCE)
    webhook = await world.endpoint(receiver)
    old_secret = receiver.secrets[0]
    rotated, new_secret = await world.webhooks.rotate_secret(world.admin, webhook.id)
    assert new_secret != old_secret and rotated.secret_hint == new_secret[-4:] and rotated.secret_rotated_at

    receiver.secrets = [old_secret]  # a receiver not updated yet still verifies
    test = await world.webhooks.send_test(world.admin, webhook.id)
    await world.dispatcher().run_until_idle()
    [received] = await receiver.wait_for(1)
    assert received.headers["Molbridge-Signature"].count("v1=") == 2
    assert received.json()["type"] == "webhook.test" and received.json()["id"] == test.event_id

    world.clock.advance(hours=25)  # the grace period is over: only the new secret signs
    receiver.secrets = [new_secret]
    await world.webhooks.send_test(world.admin, webhook.id)
    await world.dispatcher().run_until_idle()
    [_, later] = await receiver.wait_for(2)
    assert later.headers["Molbridge-Signature"].count("v1=") == 1


async def test_webhooks_are_their_organizations_admins_only(world: World) -> None:
    receiver = world.receivers.new()
    webhook = await world.endpoint(receiver)
    stranger = Principal(subject="x", organization_id=str(uuid.uuid4()), organization_kind="CRO",
                         roles=frozenset({"cro_admin"}))
    with pytest.raises(NotFoundError):
        await world.webhooks.get(stranger, webhook.id)
    with pytest.raises(NotFoundError):
        await world.webhooks.send_test(stranger, webhook.id)
    listed, total = await world.webhooks.listing(stranger, ALL)
    assert (listed, total) == ([], 0)


# ---------------------------------------------------------------- email


@pytest.fixture
def smtp_port() -> Iterator[int]:
    yield free_port()


async def queue_email(world: World, recipient: Member, title: str, digest: EmailDigest) -> None:
    async with world.uow() as uow:
        await uow.directory.apply(recipient, "PHARMA", datetime.now(UTC))
        notification_id = str(uuid.uuid4())
        await uow.notifications.add(
            Notification(
                id=notification_id, recipient_id=recipient.user_id, type=NotificationType.SUBMISSION_QUOTED,
                title=title, body="The CRO priced it.", link=f"{APP_URL}/submissions/s-1",
                organization_id=recipient.organization_id, subject_type="submission", subject_id="s-1",
                submission_id="s-1", event_id=str(uuid.uuid4()), occurred_at=datetime.now(UTC), in_app=True, data={},
            )
        )
        await uow.deliveries.email(notification_id, recipient.user_id, recipient.email,
                                   NotificationType.SUBMISSION_QUOTED, digest)


def member(email: str) -> Member:
    return Member(user_id=str(uuid.uuid4()), organization_id=str(uuid.uuid4()), roles=frozenset({"pharma_admin"}),
                  email=email, display_name="Dana Scully")


async def test_a_down_smtp_server_delays_an_email_which_then_arrives_once(world: World, smtp_port: int) -> None:
    collector = SmtpCollector()
    emails = world.emails(smtp_port)
    dana = member("dana@pharma.test")
    await queue_email(world, dana, "Kinase panel", EmailDigest.OFF)

    assert await emails.send_due() == 0  # nobody listens on the port
    world.clock.advance(minutes=1)
    assert await emails.send_due() == 0

    smtp = Controller(collector, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    try:
        world.clock.advance(minutes=20)
        assert await emails.send_due() == 1
        world.clock.advance(hours=2)
        assert await emails.send_due() == 0
    finally:
        smtp.stop()
    [message] = collector.messages
    assert message["To"] == "dana@pharma.test" and message["Subject"] == "Quote received: Kinase panel"
    body = message.get_body(("plain",))
    assert body is not None and f"{APP_URL}/submissions/s-1" in body.get_content()


async def test_a_digest_gathers_the_periods_notifications_into_one_email(world: World, smtp_port: int) -> None:
    collector = SmtpCollector()
    smtp = Controller(collector, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    try:
        emails = world.emails(smtp_port)
        fox = member("fox@pharma.test")
        for title in ("Panel A", "Panel B", "Panel C"):
            await queue_email(world, fox, title, EmailDigest.HOURLY)
        early = await emails.send_due()
        assert early == 0 or world.clock().minute == 0  # the hour is not over yet (unless it just ended)
        world.clock.advance(hours=1)
        assert await emails.send_due() == 1 - early
        world.clock.advance(hours=1)
        assert await emails.send_due() == 0
    finally:
        smtp.stop()
    [digest] = collector.messages
    assert isinstance(digest, EmailMessage) and digest["To"] == "fox@pharma.test"
    assert digest["Subject"] == "Your hourly Molbridge digest: 3 updates"
    text = digest.get_body(("plain",))
    assert text is not None and all(title in text.get_content() for title in ("Panel A", "Panel B", "Panel C"))


class RefusingCollector(SmtpCollector):
    """Refuses every recipient for good (550), as a server does for an address that does not exist."""

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        return "550 5.1.1 No such user here"


async def email_statuses(world: World, recipient: Member) -> list[tuple[str, str]]:
    async with world.engine.connect() as connection:
        rows = await connection.execute(
            sa.select(email_deliveries.c.status, email_deliveries.c.last_error)
            .where(email_deliveries.c.recipient_id == recipient.user_id)
        )
        return [(row.status, row.last_error) for row in rows]


async def test_a_refused_address_or_a_departed_user_ends_the_email(world: World, smtp_port: int) -> None:
    collector = RefusingCollector()
    smtp = Controller(collector, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    try:
        emails = world.emails(smtp_port)
        ghost = member("ghost@pharma.test")
        await queue_email(world, ghost, "Kinase panel", EmailDigest.OFF)
        assert await emails.send_due() == 0
        [(status, error)] = await email_statuses(world, ghost)
        assert status == "DEAD" and "SMTPRecipientsRefused" in error

        gone = member("gone@pharma.test")
        await queue_email(world, gone, "Kinase panel", EmailDigest.OFF)
        async with world.uow() as uow:
            await uow.directory.apply(replace(gone, deleted=True), "PHARMA", datetime.now(UTC) + timedelta(seconds=1))
        assert await emails.send_due() == 0
        [(status, error)] = await email_statuses(world, gone)
        assert status == "DEAD" and "no longer an active user" in error
    finally:
        smtp.stop()
    assert collector.messages == []
