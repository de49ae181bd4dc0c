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
- WatchMessages, on any replica: the watcher registers with this process's `Feed` (runtime/feeds.py) first, then
  sends the messages after `after_id` from the database, then each new message as its event arrives
  from the bus (`message_feed`: one JetStream consumer per process, fanning out in memory), read again
  from the database by id for the watcher (so authorization is checked on every message). A heartbeat
  (None) goes out first, once the watcher is registered, then whenever nothing was sent for `heartbeat_s`,
  so proxies keep the stream open. A client
  that goes away cancels the stream; its registration is removed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from molbridge.events.v1.cro_pb2 import SubmissionMessagePosted
from nats.js import JetStreamContext

from bus.consumer import Consumer
from services.cro.domain.submissions import Message, MessagePosted, Submission
from services.runtime.audit import audit_event
from services.runtime.auth import Principal
from services.runtime.db import canonical_uuid
from services.runtime.errors import NotFoundError, ValidationError
from services.runtime.feeds import Feed, feed_consumer
from services.runtime.pagination import PageRequest

if TYPE_CHECKING:  # the store binds the tables; the feed above needs none of it
    from services.cro.store.messages import UnreadCount
    from services.cro.store.uow import CroTransactions, CroUnitOfWork

log = logging.getLogger(__name__)

HEARTBEAT_S = 15.0


class DocumentLookup(Protocol):
    """The document service as the thread sees it."""

    async def submission_of(self, document_id: str, credentials: Mapping[str, str]) -> str | None:
        """The submission id of the document if the caller may read it ("" for none); None if it cannot."""
        ...


# -- the live part ------------------------------------------------------------------------------------------


def message_feed(feed: Feed, process_name: str) -> Callable[[JetStreamContext], Consumer]:
    """A consumer factory for `Process(consumers=[…])`: posted messages to this replica's watchers, by
    submission."""
    return feed_consumer(
        feed,
        process_name,
        source="cro",
        event_type=SubmissionMessagePosted,
        key_of=lambda event: (event.submission_id, event.message_id),
    )


# -- use cases ----------------------------------------------------------------------------------------------


class MessageService:
    def __init__(
        self,
        uow: CroTransactions,
        documents: DocumentLookup,
        feed: Feed,
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
