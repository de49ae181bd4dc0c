"""The delivery worker's two loops: queued webhook deliveries (signed POSTs) and queued emails (one per
notification, or a digest per recipient and period).

Neither loses work: rows are claimed with a lease (store/webhooks.py, store/emails.py), sent after the
claim commits, and their outcome recorded for that attempt only; a worker that stops mid-send leaves them
due again once the lease ends. A receiver may therefore see an event twice in the rare case the worker
dies between its 2xx and the record — the payload `id` (the event's) is the same, so it can drop the
duplicate; a DELIVERED row is never sent again.

Webhooks never wait on each other: each delivery is its own task, at most `per_endpoint` in flight per
endpoint and `overall` in all, so one slow or down endpoint holds at most its own slots. A down SMTP
server delays emails (retried with backoff, never given up); only a permanent refusal of the address
ends one (DEAD).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import smtplib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Protocol

from services.notification.domain.emails import (
    digest_cutoff,
    email_retry_at,
    render_digest,
    render_notification,
)
from services.notification.domain.vocabulary import DeliveryStatus, EmailDigest
from services.notification.domain.webhooks import (
    DELIVERY_TIMEOUT_S,
    SIGNATURE_HEADER,
    AttemptResult,
    after_attempt,
    encode_payload,
    signature_header,
    signing_secrets,
)
from services.notification.store import NotificationTransactions
from services.notification.store.emails import ClaimedEmail
from services.notification.store.webhooks import ClaimedDelivery
from services.runtime.email import SMTP_TIMEOUT_S, EmailSender

log = logging.getLogger("molbridge.notification.delivery")

POLL_INTERVAL_S = 0.5  # how often the loops look for due work
LEASE_MARGIN = timedelta(seconds=30)  # a claimed row is due again this long after the send's timeout
EMAIL_BATCH = 10  # immediate emails per claim (and as many digests)
# A claim's emails are sent one after the other: the lease covers them all at the SMTP timeout each,
# with room to record, so another replica never takes one still being sent.
EMAIL_LEASE = timedelta(seconds=2 * EMAIL_BATCH * SMTP_TIMEOUT_S + 60)
DEFAULT_SENDER = "Molbridge <no-reply@molbridge.local>"
EVENT_ID_HEADER = "Molbridge-Event-Id"


def _now() -> datetime:
    return datetime.now(UTC)


class WebhookPoster(Protocol):
    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> AttemptResult: ...


class SecretOpener(Protocol):
    def open(self, sealed: str) -> str: ...


class WebhookDispatcher:
    def __init__(
        self,
        uow: NotificationTransactions,
        poster: WebhookPoster,
        secrets: SecretOpener,
        *,
        clock: Callable[[], datetime] = _now,
        draw: Callable[[], float] = random.random,
        overall: int = 32,
        per_endpoint: int = 2,
        timeout_s: float = DELIVERY_TIMEOUT_S,
    ) -> None:
        self._uow = uow
        self._poster = poster
        self._secrets = secrets
        self._clock = clock
        self._draw = draw
        self._overall = overall
        self._per_endpoint = per_endpoint
        self._lease = timedelta(seconds=timeout_s) + LEASE_MARGIN
        self._in_flight: dict[str, int] = {}  # endpoint → deliveries being posted by this process
        self._tasks: set[asyncio.Task[None]] = set()

    async def dispatch_due(self) -> int:
        """Claims what is due (within the free slots) and starts posting it; returns how many started."""
        free = self._overall - len(self._tasks)
        if free <= 0:
            return 0
        # An endpoint with posts in flight gets no more until they finish: never more than per_endpoint.
        busy = set(self._in_flight)
        async with self._uow() as uow:
            claimed = await uow.webhooks.claim_due(
                self._clock(), limit=free, per_endpoint=self._per_endpoint, busy=busy, lease=self._lease
            )
        for delivery in claimed:
            self._in_flight[delivery.webhook_id] = self._in_flight.get(delivery.webhook_id, 0) + 1
            task = asyncio.create_task(self._attempt(delivery), name=f"webhook-delivery-{delivery.id}")
            self._tasks.add(task)
            task.add_done_callback(functools.partial(self._finished, delivery.webhook_id))
        return len(claimed)

    def _finished(self, endpoint: str, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        left = self._in_flight.get(endpoint, 1) - 1
        if left > 0:
            self._in_flight[endpoint] = left
        else:
            self._in_flight.pop(endpoint, None)
        if not task.cancelled() and task.exception() is not None:
            # e.g. a secret that does not decrypt: the row is due again when its lease ends
            log.error("a webhook delivery attempt failed", exc_info=task.exception())

    async def _attempt(self, delivery: ClaimedDelivery) -> None:
        body = encode_payload(delivery.payload)
        now = self._clock()
        stored = delivery.secrets
        secrets = signing_secrets(
            self._secrets.open(stored.current),
            self._secrets.open(stored.previous) if stored.previous else None,
            stored.previous_expires_at,
            now,
        )
        headers = {
            SIGNATURE_HEADER: signature_header(body, secrets, int(now.timestamp())),
            EVENT_ID_HEADER: str(delivery.payload.get("id", "")),
        }
        result = await self._poster.post(delivery.url, body, headers)
        finished = self._clock()
        decision = after_attempt(
            result,
            attempt=delivery.attempt,
            first_attempt_at=delivery.window_started_at,
            now=finished,
            draw=self._draw,
        )
        async with self._uow() as uow:
            await uow.webhooks.record_attempt(delivery, result, decision, finished)
        if decision.status is DeliveryStatus.DEAD:
            log.warning(
                "webhook delivery %s is DEAD after %d attempts (%s)", delivery.id, delivery.attempt, result.describe()
            )

    async def drain(self) -> None:
        """Waits for every post in flight to finish and be recorded."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def run_until_idle(self) -> None:
        """Sends everything due now, to the end (tests and one-off runs)."""
        while await self.dispatch_due() or self._tasks:
            await self.drain()

    async def run(self) -> None:
        """The worker's loop (a supervised job): forever, look for due deliveries every POLL_INTERVAL_S."""
        try:
            while True:
                await self.dispatch_due()
                await asyncio.sleep(POLL_INTERVAL_S)
        finally:
            for task in list(self._tasks):
                task.cancel()


def permanent_refusal(error: BaseException) -> bool:
    """The SMTP server refused the recipient or the message for good (5xx): retrying cannot help."""
    cause = error.__cause__ or error
    if isinstance(cause, smtplib.SMTPRecipientsRefused):
        return all(code >= 500 for code, _ in cause.recipients.values())
    if isinstance(cause, smtplib.SMTPResponseException):
        return cause.smtp_code >= 500 and not isinstance(cause, smtplib.SMTPAuthenticationError)
    return False


class EmailDispatcher:
    def __init__(
        self,
        uow: NotificationTransactions,
        sender: EmailSender,
        *,
        app_url: str,
        from_address: str = DEFAULT_SENDER,
        clock: Callable[[], datetime] = _now,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self._uow = uow
        self._sender = sender
        self._app_url = app_url
        self._from = from_address
        self._clock = clock
        self._draw = draw

    async def send_due(self) -> int:
        """Sends the emails and digests due now; returns how many emails were delivered."""
        now = self._clock()
        cutoffs = {digest.value: digest_cutoff(now, digest.value) for digest in (EmailDigest.HOURLY, EmailDigest.DAILY)}
        async with self._uow() as uow:
            claimed = await uow.emails.claim_immediate(now, limit=EMAIL_BATCH, lease=EMAIL_LEASE)
            claimed += await uow.emails.claim_digests(now, cutoffs, limit=EMAIL_BATCH, lease=EMAIL_LEASE)
        delivered = 0
        for email in claimed:
            delivered += await self._send(email)
        return delivered

    async def _send(self, email: ClaimedEmail) -> int:
        if not email.reachable or not email.email:
            async with self._uow() as uow:
                await uow.emails.record(
                    email,
                    DeliveryStatus.DEAD,
                    self._clock(),
                    error="the recipient is no longer an active user with an address",
                )
            return 0
        if email.digest == EmailDigest.OFF.value:
            rendered = render_notification(email.items[0], recipient_name=email.recipient_name, base_url=self._app_url)
        else:
            rendered = render_digest(
                email.items, recipient_name=email.recipient_name, base_url=self._app_url, period=email.digest
            )
        # The same Message-ID on every attempt: a mail system that got it twice can tell.
        message = rendered.message(
            sender=self._from, to=email.email, headers={"Message-ID": f"<notification-{email.ids[0]}@molbridge.local>"}
        )
        try:
            await self._sender.send(message)
        except Exception as error:  # noqa: BLE001 - any failure of the channel delays; it never loses the email
            now = self._clock()
            reason = f"{type(error).__name__}: {error}"[:300]
            async with self._uow() as uow:
                if permanent_refusal(error):
                    await uow.emails.record(email, DeliveryStatus.DEAD, now, error=reason)
                else:
                    await uow.emails.record(
                        email,
                        DeliveryStatus.RETRYING,
                        now,
                        next_attempt_at=email_retry_at(email.attempt, now, self._draw),
                        error=reason,
                    )
            log.warning("email to recipient %s not sent (%s)", email.recipient_id, reason)
            return 0
        async with self._uow() as uow:
            await uow.emails.record(email, DeliveryStatus.DELIVERED, self._clock())
        return 1

    async def run(self) -> None:
        """The worker's loop (a supervised job)."""
        while True:
            while await self.send_due():
                pass
            await asyncio.sleep(POLL_INTERVAL_S)
