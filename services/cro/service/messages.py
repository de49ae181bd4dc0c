"""Message threads (issue 11 "Messages"): list, post, read marks, unread counts and the live stream.

- Who: both parties of a submission (the pharma organization; the CRO organization once the submission
  is past DRAFT) read the thread; posting follows the domain (`Submission.post_message`: no thread in
  DRAFT, pharma_scientist+ / cro_technician+). Anyone else gets 404, as for the submission itself.
- A posted message records SubmissionMessagePosted (notifications, and the live stream of every replica)
  and an AuditRecorded in the same transaction. `request_id` makes a retried post return the first one.
- A referenced document must be a document of the same submission that the caller can read: asked from
  the document service (GetDocument with the caller's credentials), so visibility is the document
  service's own rule.
- Read marks are per user and only move forward; unread = messages by others after the caller's mark.
- WatchMessages, on any replica: the watcher registers with this process's `MessageFeed` first, then
  sends the messages after `after_id` from the database, then each new message as its event arrives
  from the bus (`message_feed`: one JetStream consumer per process, fanning out in memory), read again
  from the database by id for the watcher (so authorization is checked on every message). A heartbeat
  (None) goes out first, once the watcher is registered, then whenever nothing was sent for `heartbeat_s`,
  so proxies keep the stream open. A client
  that goes away cancels the stream; its registration is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from molbridge.events.v1.cro_pb2 import SubmissionMessagePosted
from molbridge.events.v1.envelope_pb2 import EventEnvelope
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from bus.consumer import Consumer, PoisonError
from bus.envelope import unpack
from bus.streams import EVENTS_STREAM
from bus.subjects import event_subject
from services.cro.domain.submissions import Message, MessagePosted, Submission
from services.runtime.audit import audit_event
from services.runtime.auth import Principal
from services.runtime.db import canonical_uuid
from services.runtime.errors import NotFoundError, ValidationError
from services.runtime.pagination import PageRequest

if TYPE_CHECKING:  # the store binds the tables; the feed above needs none of it
    from services.cro.store.messages import UnreadCount
    from services.cro.store.uow import CroTransactions, CroUnitOfWork

log = logging.getLogger(__name__)

HEARTBEAT_S = 15.0
WATCH_BACKLOG = 1000  # notices a watcher may have waiting; beyond that its stream ends (the client resumes)
FEED_INACTIVE_THRESHOLD_S = 300.0  # the server drops a replica's consumer this long after it is gone
MESSAGE_POSTED_SUBJECT = event_subject("cro", SubmissionMessagePosted)


class DocumentLookup(Protocol):
    """The document service as the thread sees it."""

    async def submission_of(self, document_id: str, credentials: Mapping[str, str]) -> str | None:
        """The submission id of the document if the caller may read it ("" for none); None if it cannot."""
        ...


# -- the live part ------------------------------------------------------------------------------------------


class MessageFeed:
    """This process's watchers, by submission: `announce` hands a posted message's id to each of them."""

    def __init__(self, *, backlog: int = WATCH_BACKLOG) -> None:
        self._watchers: dict[str, set[asyncio.Queue[str | None]]] = defaultdict(set)
        self._backlog = backlog

    @contextlib.contextmanager
    def watch(self, submission_id: str) -> Iterator[asyncio.Queue[str | None]]:
        """A queue of message ids posted in the thread (None: the watcher fell behind)."""
        queue: asyncio.Queue[str | None] = asyncio.Queue(self._backlog + 1)
        self._watchers[submission_id].add(queue)
        try:
            yield queue
        finally:
            watchers = self._watchers[submission_id]
            watchers.discard(queue)
            if not watchers:
                del self._watchers[submission_id]

    def announce(self, submission_id: str, message_id: str) -> None:
        for queue in self._watchers.get(submission_id, ()):
            if queue.qsize() < self._backlog:
                queue.put_nowait(message_id)
            elif queue.qsize() == self._backlog:
                queue.put_nowait(None)

    def watchers(self, submission_id: str) -> int:
        return len(self._watchers.get(submission_id, ()))


class MessageFeedConsumer(Consumer):
    """This replica's own consumer of SubmissionMessagePosted (new events only), feeding its watchers."""

    def __init__(self, js: JetStreamContext, feed: MessageFeed, *, process_name: str) -> None:
        self._feed = feed
        # A name of its own: replicas sharing a consumer would split the events between them.
        name = f"messages-{process_name}-{uuid.uuid4().hex[:12]}"
        super().__init__(js, EVENTS_STREAM, name, MESSAGE_POSTED_SUBJECT, self._handle, batch=100, backoff=(1.0,))

    def config(self) -> ConsumerConfig:
        config = super().config()
        config.deliver_policy = DeliverPolicy.NEW
        config.inactive_threshold = FEED_INACTIVE_THRESHOLD_S
        return config

    async def _handle(self, envelope: EventEnvelope, msg: Msg) -> None:
        try:
            event = unpack(envelope, SubmissionMessagePosted)
        except TypeError as error:
            raise PoisonError(str(error)) from error
        self._feed.announce(event.submission_id, event.message_id)


def message_feed(feed: MessageFeed, process_name: str) -> Callable[[JetStreamContext], Consumer]:
    """A consumer factory for `Process(consumers=[…])`."""

    def make(js: JetStreamContext) -> Consumer:
        return MessageFeedConsumer(js, feed, process_name=process_name)

    return make


# -- use cases ----------------------------------------------------------------------------------------------


class MessageService:
    def __init__(
        self,
        uow: CroTransactions,
        documents: DocumentLookup,
        feed: MessageFeed,
        *,
        heartbeat_s: float = HEARTBEAT_S,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._uow = uow
        self._documents = documents
        self.feed = feed  # the bootstrap feeds it from the bus (message_feed)
        self._heartbeat_s = heartbeat_s
        self._clock = clock

    async def list_messages(
        self, principal: Principal, submission_id: str, page: PageRequest
    ) -> tuple[list[Message], int]:
        async with self._uow() as uow:
            submission_id = await _thread(uow, principal, submission_id)
            return await uow.messages.page(submission_id, page)

    async def post_message(
        self,
        principal: Principal,
        submission_id: str,
        *,
        text: str,
        document_id: str = "",
        request_id: str = "",
        credentials: Mapping[str, str],
    ) -> Message:
        document_id = document_id.strip()
        if document_id:  # permission before existence: a stranger learns nothing from a document id
            async with self._uow() as uow:
                await _thread(uow, principal, submission_id)
            await self._check_document(submission_id, document_id, credentials)
        async with self._uow() as uow:
            submission = await _visible(uow, principal, submission_id)

            async def post() -> str:
                posted = submission.post_message(principal, text=text, at=self._clock(), document_id=document_id)
                await uow.messages.add(posted.message)
                _record(uow, posted, submission.organization_id, submission.cro_organization_id, principal)
                return posted.message.id

            message_id = await uow.once(f"{principal.subject}:PostMessage:{submission.id}", request_id, post)
            found = await uow.messages.visible_message(principal, message_id)
        if found is None:  # the request_id was used for another thread's message
            raise ValidationError(
                "request_id was already used for another message", field_violations=[("request_id", "already used")]
            )
        return found[1]

    async def mark_read(self, principal: Principal, submission_id: str, up_to_message_id: str = "") -> int:
        """Marks the thread read up to a message (default: the latest); answers what is left unread."""
        async with self._uow() as uow:
            submission_id = await _thread(uow, principal, submission_id)
            if up_to_message_id.strip():
                seq = await uow.messages.seq_of(submission_id, up_to_message_id.strip())
                if seq is None:
                    raise NotFoundError(
                        f"message {up_to_message_id} not found in this thread", detail="MESSAGE_NOT_FOUND"
                    )
            else:
                seq = await uow.messages.latest_seq(submission_id)
            await uow.messages.mark_read(submission_id, principal.subject, seq)
            return await uow.messages.unread(submission_id, principal.subject)

    async def unread_counts(self, principal: Principal) -> tuple[list[UnreadCount], int]:
        async with self._uow() as uow:
            counts = await uow.messages.unread_counts(principal)
        return counts, sum(count.unread for count in counts)

    async def watch(
        self, principal: Principal, submission_id: str, after_id: str = ""
    ) -> AsyncIterator[Message | None]:
        """The messages after `after_id` (none when empty), then each new one; None is a heartbeat."""
        start: int | None = None
        async with self._uow() as uow:
            submission_id = await _thread(uow, principal, submission_id)
            if after_id.strip():
                start = await uow.messages.seq_of(submission_id, after_id.strip())
                if start is None:
                    raise NotFoundError(f"message {after_id} not found in this thread", detail="MESSAGE_NOT_FOUND")
        # Registered before the backlog is read: a message posted in between is not missed.
        with self.feed.watch(submission_id) as notices:
            async with self._uow() as uow:
                if start is None:  # only new ones: what is already stored is history
                    start = await uow.messages.latest_seq(submission_id)
                backlog = await uow.messages.after(submission_id, start)
            yield None  # at once: the page (and any proxy) sees the stream open before anything is posted
            sent: set[str] = set()
            for _, message in backlog:
                sent.add(message.id)
                yield message
            while True:
                try:
                    message_id = await asyncio.wait_for(notices.get(), self._heartbeat_s)
                except TimeoutError:
                    yield None
                    continue
                if message_id is None:  # fell WATCH_BACKLOG behind: end; the client resumes with after_id
                    log.warning("a watcher of thread %s fell behind; ending its stream", submission_id)
                    return
                if message_id in sent:
                    continue
                async with self._uow() as uow:
                    found = await uow.messages.visible_message(principal, message_id)
                if found is None:  # not (or no longer) visible to the watcher: the stream ends
                    return
                if found[0] <= start:  # the bus is late with a message from before the watch began
                    continue
                sent.add(message_id)
                yield found[1]

    async def _check_document(self, submission_id: str, document_id: str, credentials: Mapping[str, str]) -> None:
        if await self._documents.submission_of(document_id, credentials) != submission_id:
            raise ValidationError(
                "document_id must be a document of this submission that you can read",
                field_violations=[("document_id", "not a document of this submission")],
            )


async def _thread(uow: CroUnitOfWork, principal: Principal, submission_id: str) -> str:
    """The submission's id if `principal` may read its thread (404 otherwise)."""
    submission = await _visible(uow, principal, submission_id)
    return submission.id


async def _visible(uow: CroUnitOfWork, principal: Principal, submission_id: str) -> Submission:
    submission = await uow.submissions.get(submission_id) if canonical_uuid(submission_id) else None
    if submission is None or not submission.visible_to(principal):
        raise NotFoundError(f"submission {submission_id} not found", detail="SUBMISSION_NOT_FOUND")
    return submission


def _record(
    uow: CroUnitOfWork, posted: MessagePosted, organization_id: str, cro_organization_id: str, actor: Principal
) -> None:
    message = posted.message
    uow.record(
        SubmissionMessagePosted(
            message_id=message.id,
            submission_id=message.submission_id,
            organization_id=organization_id,
            cro_organization_id=cro_organization_id,
            author_id=message.author,
            side=message.side.value if message.side else "",
            change_request=message.change_request,
        ),
        actor=actor,
    )
    uow.record(
        audit_event(
            "submission.message_posted",
            target_type="submission",
            target_id=message.submission_id,
            details={"message_id": message.id, **({"document_id": message.document_id} if message.document_id else {})},
        ),
        actor=actor,
    )
