"""Live streams on every replica: a process's watchers by key, fed from the bus by a consumer of its own.

A server-streaming RPC (a submission's messages, a user's notifications) registers with this process's
`Feed` under a key, then waits on its queue; `feed_consumer` is the JetStream consumer (one per process,
new events only, its own name: replicas sharing one would split the events) that hands each event's item
id to the watchers of its key. The watcher reads the item again from the database (authorization is
checked on every item). A watcher that falls `backlog` behind gets None and ends its stream (the client
resumes with its cursor).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import TypeVar

from google.protobuf.message import Message
from molbridge.events.v1.envelope_pb2 import EventEnvelope
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from bus.consumer import Consumer, PoisonError
from bus.envelope import unpack
from bus.streams import EVENTS_STREAM
from bus.subjects import event_subject

WATCH_BACKLOG = 1000  # ids a watcher may have waiting; beyond that its stream ends (the client resumes)
FEED_INACTIVE_THRESHOLD_S = 300.0  # the server drops a replica's consumer this long after it is gone

E = TypeVar("E", bound=Message)


class Feed:
    """This process's watchers, by key: `announce` hands an item id to each watcher of the key."""

    def __init__(self, *, backlog: int = WATCH_BACKLOG) -> None:
        self._watchers: dict[str, set[asyncio.Queue[str | None]]] = defaultdict(set)
        self._backlog = backlog

    @contextlib.contextmanager
    def watch(self, key: str) -> Iterator[asyncio.Queue[str | None]]:
        """A queue of the key's new item ids (None: the watcher fell behind)."""
        queue: asyncio.Queue[str | None] = asyncio.Queue(self._backlog + 1)
        self._watchers[key].add(queue)
        try:
            yield queue
        finally:
            watchers = self._watchers[key]
            watchers.discard(queue)
            if not watchers:
                del self._watchers[key]

    def announce(self, key: str, item_id: str) -> None:
        for queue in self._watchers.get(key, ()):
            if queue.qsize() < self._backlog:
                queue.put_nowait(item_id)
            elif queue.qsize() == self._backlog:
                queue.put_nowait(None)

    def watchers(self, key: str) -> int:
        return len(self._watchers.get(key, ()))


class FeedConsumer(Consumer):
    """This replica's own consumer of one event type (new events only), feeding its watchers."""

    def __init__(
        self,
        js: JetStreamContext,
        feed: Feed,
        *,
        source: str,
        event_type: type[E],
        key_of: Callable[[E], tuple[str, str]],
        name: str,
    ) -> None:
        self._feed = feed
        self._event_type = event_type
        self._key_of = key_of
        subject = event_subject(source, event_type)
        super().__init__(js, EVENTS_STREAM, name, subject, self._handle, batch=100, backoff=(1.0,))

    def config(self) -> ConsumerConfig:
        config = super().config()
        config.deliver_policy = DeliverPolicy.NEW
        config.inactive_threshold = FEED_INACTIVE_THRESHOLD_S
        return config

    async def _handle(self, envelope: EventEnvelope, msg: Msg) -> None:
        try:
            event = unpack(envelope, self._event_type)
        except TypeError as error:
            raise PoisonError(str(error)) from error
        self._feed.announce(*self._key_of(event))


def feed_consumer(
    feed: Feed, process_name: str, *, source: str, event_type: type[E], key_of: Callable[[E], tuple[str, str]]
) -> Callable[[JetStreamContext], Consumer]:
    """A consumer factory for `Process(consumers=[…])`: `key_of(event)` answers (watch key, item id)."""

    def make(js: JetStreamContext) -> Consumer:
        name = f"{process_name}-feed-{uuid.uuid4().hex[:12]}"
        return FeedConsumer(js, feed, source=source, event_type=event_type, key_of=key_of, name=name)

    return make
