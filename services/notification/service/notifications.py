"""The caller's in-app notifications and preferences (NotificationService), and the live stream.

- Only the recipient sees a notification: every read and mark names the caller, so anyone else's is
  not found (404).
- WatchNotifications, on any replica: the watcher registers with this process's `NotificationFeed` first,
  then sends the unread notifications after `after_id` (when given) from the database, then each new one
  as its NotificationCreated arrives from the bus (`notification_feed`: one JetStream consumer per
  process, fanning out in memory), read again from the database for the watcher. A heartbeat (None)
  goes out first, once registered, then whenever nothing was sent for `heartbeat_s`. A watcher that
  falls WATCH_BACKLOG behind sees its stream end (the client resumes with `after_id`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Iterator

from molbridge.events.v1.envelope_pb2 import EventEnvelope
from molbridge.events.v1.notification_pb2 import NotificationCreated
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from bus.consumer import Consumer, PoisonError
from bus.envelope import unpack
from bus.streams import EVENTS_STREAM
from bus.subjects import event_subject
from services.notification.domain.notices import Notification
from services.notification.domain.preferences import Preferences, check_changes, check_digest
from services.notification.domain.vocabulary import EVENT_SOURCE, NotificationType
from services.notification.store import NotificationTransactions
from services.runtime.auth import Principal
from services.runtime.errors import NotFoundError, ValidationError
from services.runtime.pagination import PageRequest

log = logging.getLogger(__name__)

HEARTBEAT_S = 15.0
WATCH_BACKLOG = 1000
FEED_INACTIVE_THRESHOLD_S = 300.0  # the server drops a replica's consumer this long after it is gone
CREATED_SUBJECT = event_subject(EVENT_SOURCE, NotificationCreated)


class NotificationFeed:
    """This process's watchers, by recipient: `announce` hands a new notification's id to each of them."""

    def __init__(self, *, backlog: int = WATCH_BACKLOG) -> None:
        self._watchers: dict[str, set[asyncio.Queue[str | None]]] = defaultdict(set)
        self._backlog = backlog

    @contextlib.contextmanager
    def watch(self, recipient_id: str) -> Iterator[asyncio.Queue[str | None]]:
        """A queue of the recipient's new notification ids (None: the watcher fell behind)."""
        queue: asyncio.Queue[str | None] = asyncio.Queue(self._backlog + 1)
        self._watchers[recipient_id].add(queue)
        try:
            yield queue
        finally:
            watchers = self._watchers[recipient_id]
            watchers.discard(queue)
            if not watchers:
                del self._watchers[recipient_id]

    def announce(self, recipient_id: str, notification_id: str) -> None:
        for queue in self._watchers.get(recipient_id, ()):
            if queue.qsize() < self._backlog:
                queue.put_nowait(notification_id)
            elif queue.qsize() == self._backlog:
                queue.put_nowait(None)


class NotificationFeedConsumer(Consumer):
    """This replica's own consumer of NotificationCreated (new events only), feeding its watchers."""

    def __init__(self, js: JetStreamContext, feed: NotificationFeed, *, process_name: str) -> None:
        self._feed = feed
        # A name of its own: replicas sharing a consumer would split the events between them.
        name = f"notifications-{process_name}-{uuid.uuid4().hex[:12]}"
        super().__init__(js, EVENTS_STREAM, name, CREATED_SUBJECT, self._handle, batch=100, backoff=(1.0,))

    def config(self) -> ConsumerConfig:
        config = super().config()
        config.deliver_policy = DeliverPolicy.NEW
        config.inactive_threshold = FEED_INACTIVE_THRESHOLD_S
        return config

    async def _handle(self, envelope: EventEnvelope, msg: Msg) -> None:
        try:
            event = unpack(envelope, NotificationCreated)
        except TypeError as error:
            raise PoisonError(str(error)) from error
        self._feed.announce(event.recipient_id, event.notification_id)


def notification_feed(feed: NotificationFeed, process_name: str) -> Callable[[JetStreamContext], Consumer]:
    """A consumer factory for `Process(consumers=[…])`."""

    def make(js: JetStreamContext) -> Consumer:
        return NotificationFeedConsumer(js, feed, process_name=process_name)

    return make


class NotificationService:
    def __init__(self, uow: NotificationTransactions, feed: NotificationFeed, *, heartbeat_s: float = HEARTBEAT_S):
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
            return (await uow.preferences.of([principal.subject]))[principal.subject]


def _kind(name: str) -> NotificationType | None:
    if not name:
        return None
    if name not in NotificationType.__members__:
        raise ValidationError("Invalid filter", field_violations=[("type", "a Notification.Type")])
    return NotificationType(name)
