"""The caller's in-app notifications and preferences (NotificationService), and the live stream.

- Only the recipient sees a notification: every read and mark names the caller, so anyone else's is
  not found (404).
- WatchNotifications, on any replica: the watcher registers with this process's `Feed` (runtime.feeds) first,
  then sends the unread notifications after `after_id` (when given) from the database, then each new one
  as its NotificationCreated arrives from the bus (`notification_feed`: one JetStream consumer per
  process, fanning out in memory), read again from the database for the watcher. A heartbeat (None)
  goes out first, once registered, then whenever nothing was sent for `heartbeat_s`. A watcher that
  falls WATCH_BACKLOG behind sees its stream end (the client resumes with `after_id`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable

from molbridge.events.v1.notification_pb2 import NotificationCreated
from nats.js import JetStreamContext

from bus.consumer import Consumer
from services.notification.domain.notices import Notification
from services.notification.domain.preferences import Preferences, check_changes, check_digest
from services.notification.domain.vocabulary import EVENT_SOURCE, NotificationType
from services.notification.store import NotificationTransactions
from services.runtime.audit import audit_event
from services.runtime.auth import Principal
from services.runtime.errors import NotFoundError, ValidationError
from services.runtime.feeds import Feed, feed_consumer
from services.runtime.pagination import PageRequest

log = logging.getLogger(__name__)

HEARTBEAT_S = 15.0


def notification_feed(feed: Feed, process_name: str) -> Callable[[JetStreamContext], Consumer]:
    """This replica's consumer of NotificationCreated, handing each new notification to its recipient's
    watchers (a consumer factory for `Process(consumers=[…])`)."""
    return feed_consumer(
        feed,
        process_name,
        source=EVENT_SOURCE,
        event_type=NotificationCreated,
        key_of=lambda event: (event.recipient_id, event.notification_id),
    )


class NotificationService:
    def __init__(self, uow: NotificationTransactions, feed: Feed, *, heartbeat_s: float = HEARTBEAT_S):
        self._uow = uow
        self.feed = feed  # the bootstrap feeds it from the bus (notification_feed)
        self._heartbeat_s = heartbeat_s

    async def list_notifications(
        self, principal: Principal, page: PageRequest, *, unread_only: bool, kind: str
    ) -> tuple[list[Notification], int, int]:
        """A page, its total, and the caller's unread count."""
        wanted = _kind(kind)
        async with self._uow() as uow:
            found, total = await uow.notifications.page(principal.subject, page, unread_only=unread_only, kind=wanted)
            return found, total, await uow.notifications.unread(principal.subject)

    async def unread_count(self, principal: Principal) -> int:
        async with self._uow() as uow:
            return await uow.notifications.unread(principal.subject)

    async def mark_read(self, principal: Principal, notification_id: str) -> tuple[Notification, int]:
        async with self._uow() as uow:
            found = await uow.notifications.mark_read(principal.subject, notification_id)
            if found is None:
                raise NotFoundError("Notification not found")
            return found, await uow.notifications.unread(principal.subject)

    async def mark_all_read(self, principal: Principal) -> int:
        async with self._uow() as uow:
            return await uow.notifications.mark_all_read(principal.subject)

    async def watch(self, principal: Principal, after_id: str = "") -> AsyncIterator[Notification | None]:
        """The unread notifications after `after_id` (none when empty), then each new one; None is a heartbeat."""
        recipient = principal.subject
        start: int | None = None
        if after_id.strip():
            async with self._uow() as uow:
                start = await uow.notifications.seq_of(recipient, after_id.strip())
            if start is None:
                raise NotFoundError(f"notification {after_id} not found", detail="NOTIFICATION_NOT_FOUND")
        # Registered before the backlog is read: a notification created in between is not missed.
        with self.feed.watch(recipient) as notices:
            async with self._uow() as uow:
                if start is None:  # only new ones
                    start = await uow.notifications.latest_seq(recipient)
                backlog = await uow.notifications.unread_after(recipient, start)
            yield None
            sent: set[str] = set()
            for notification in backlog:
                sent.add(notification.id)
                yield notification
            while True:
                try:
                    notification_id = await asyncio.wait_for(notices.get(), self._heartbeat_s)
                except TimeoutError:
                    yield None
                    continue
                if notification_id is None:
                    log.warning("a notification watcher fell behind; ending its stream")
                    return
                if notification_id in sent:
                    continue
                async with self._uow() as uow:
                    found = await uow.notifications.get(recipient, notification_id)
                if found is None or found.seq <= start:  # not theirs to see, or from before the watch
                    continue
                sent.add(notification_id)
                yield found

    async def preferences(self, principal: Principal) -> Preferences:
        async with self._uow() as uow:
            return (await uow.preferences.of([principal.subject]))[principal.subject]

    async def update_preferences(
        self, principal: Principal, changes: Iterable[tuple[str, str, bool]], digest: str, *, reset: bool
    ) -> Preferences:
        settings = check_changes(changes)
        new_digest = check_digest(digest)
        async with self._uow() as uow:
            if reset:
                await uow.preferences.reset(principal.subject)
            await uow.preferences.set(principal.subject, settings)
            if new_digest is not None:
                await uow.preferences.set_digest(principal.subject, new_digest)
            changed = [f"{s.type.value}.{s.channel.value}={'on' if s.enabled else 'off'}" for s in settings]
            details = {"settings": ",".join(changed), "email_digest": digest, "reset": str(reset).lower()}
            uow.record(
                audit_event(
                    "notification.preferences_updated", target_type="user", target_id=principal.subject, details=details
                ),
                actor=principal,
            )
            return (await uow.preferences.of([principal.subject]))[principal.subject]


def _kind(name: str) -> NotificationType | None:
    if not name:
        return None
    if name not in NotificationType.__members__:
        raise ValidationError("Invalid filter", field_violations=[("type", "a Notification.Type")])
    return NotificationType(name)
