"""The notification service's subscriptions and the delivery worker's entry point.

The server (`python -m services.notification`):
- identity's UserChanged → the directory (from the stream's start: every user ever announced);
- the events of domain/vocabulary.py SOURCES → `Dispatcher.dispatch` (one durable per event type, each
  event exactly once per recipient); a SubmissionTransitioned that tells nobody (e.g. PENDING_REVIEW)
  still records the submission's parties.

The worker (`python -m services.notification.worker`): sends queued emails and webhook deliveries.

Handlers only translate between the bus and the use cases (proto → Occurrence): no SQL here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from molbridge.events.v1.cro_pb2 import QuoteProvided, SubmissionMessagePosted, SubmissionTransitioned
from molbridge.events.v1.document_pb2 import (
    DocumentExpiring,
    DocumentStatusChanged,
    SignatureFinished,
    SignatureRequested,
)
from molbridge.events.v1.envelope_pb2 import EventEnvelope
from molbridge.events.v1.identity_pb2 import UserChanged
from molbridge.events.v1.molecule_pb2 import ImportFinished
from molbridge.events.v1.prediction_pb2 import PredictionJobFinished

from services.notification.domain.recipients import Member, Occurrence, Parties
from services.notification.domain.vocabulary import SOURCES, NotificationType, classify
from services.notification.service.directory import Directory
from services.notification.service.dispatch import Dispatcher, SubmissionState
from services.runtime.process import Subscription

DIRECTORY_DURABLE = "notification-directory"


def _at(value: Timestamp) -> datetime | None:
    """A Timestamp as an aware datetime; None when unset."""
    return value.ToDatetime(tzinfo=UTC) if value.seconds or value.nanos else None


def _facts(event: Message) -> dict[str, str]:
    """The event's single scalar fields as text (the notification's and the webhook payload's facts)."""
    facts: dict[str, str] = {}
    for field in event.DESCRIPTOR.fields:
        value = getattr(event, field.name)
        if not isinstance(value, (str, int, float, bool)):  # repeated fields and messages
            continue
        facts[field.name] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return facts


def _occurrence(kind: NotificationType, event: Message, envelope: EventEnvelope, **kw: Any) -> Occurrence:
    base = {
        "type": kind,
        "event_id": envelope.id,
        "organization_id": envelope.organization_id,
        "subject_type": SOURCES[kind].subject,
        "actor_id": envelope.actor_id,
        "occurred_at": _at(envelope.occurred_at),
        "facts": _facts(event),
    }
    return Occurrence(**{**base, **kw})


@dataclass(frozen=True)
class DirectoryHandler:
    directory: Directory

    async def __call__(self, event: UserChanged, envelope: EventEnvelope) -> None:
        member = Member(
            user_id=event.user_id,
            organization_id=event.organization_id,
            roles=frozenset(event.roles),
            active=event.active,
            deleted=event.deleted,
            email=event.email,
            display_name=event.display_name,
        )
        at = _at(event.at) or _at(envelope.occurred_at)
        assert at is not None  # every envelope carries its time
        await self.directory.user_changed(member, event.organization_kind, at)


@dataclass(frozen=True)
class EventHandlers:
    """One handler per event message: classify, map to an Occurrence, dispatch."""

    dispatcher: Dispatcher

    async def submission_transitioned(self, event: SubmissionTransitioned, envelope: EventEnvelope) -> None:
        parties = Parties(
            event.submission_id, event.organization_id, event.cro_organization_id, event.created_by, event.name
        )
        state = SubmissionState(parties, event.to_status, _at(event.at) or _at(envelope.occurred_at))
        kind = classify("SubmissionTransitioned", {"to_status": event.to_status})
        if kind is None:
            await self.dispatcher.remember(state, envelope.id)
            return
        occurrence = _occurrence(
            kind,
            event,
            envelope,
            organization_id=event.organization_id,
            subject_id=event.submission_id,
            submission=parties,
            from_status=event.from_status,
        )
        await self.dispatcher.dispatch(occurrence, state)

    async def quote_provided(self, event: QuoteProvided, envelope: EventEnvelope) -> None:
        parties = Parties(event.submission_id, event.organization_id, event.cro_organization_id)
        occurrence = _occurrence(
            NotificationType.SUBMISSION_QUOTED,
            event,
            envelope,
            organization_id=event.organization_id,
            subject_id=event.submission_id,
            submission=parties,
        )
        await self.dispatcher.dispatch(occurrence)

    async def message_posted(self, event: SubmissionMessagePosted, envelope: EventEnvelope) -> None:
        parties = Parties(event.submission_id, event.organization_id, event.cro_organization_id)
        occurrence = _occurrence(
            NotificationType.MESSAGE_POSTED,
            event,
            envelope,
            organization_id=event.organization_id,
            subject_id=event.submission_id,
            submission=parties,
            side=event.side,
            actor_id=event.author_id or envelope.actor_id,
        )
        await self.dispatcher.dispatch(occurrence)

    async def signature_requested(self, event: SignatureRequested, envelope: EventEnvelope) -> None:
        occurrence = _occurrence(
            NotificationType.SIGNATURE_REQUESTED,
            event,
            envelope,
            organization_id=event.organization_id,
            subject_id=event.request_id,
            submission=Parties(event.submission_id, "", "") if event.submission_id else None,
            signer_user_id=event.signer_user_id,
            signer_organization_id=event.signer_organization_id,
            signer_role=event.signer_role,
        )
        await self.dispatcher.dispatch(occurrence)

    async def signature_finished(self, event: SignatureFinished, envelope: EventEnvelope) -> None:
        kind = classify("SignatureFinished", {"status": event.status})
        if kind is None:
            return
        occurrence = _occurrence(
            kind,
            event,
            envelope,
            organization_id=event.organization_id,
            subject_id=event.request_id,
            submission=Parties(event.submission_id, "", "") if event.submission_id else None,
            requested_by=event.requested_by,
        )
        await self.dispatcher.dispatch(occurrence)

    async def document_status(self, event: DocumentStatusChanged, envelope: EventEnvelope) -> None:
        kind = classify("DocumentStatusChanged", {"to_status": event.to_status})
        if kind is None:
            return
        occurrence = _occurrence(
            kind, event, envelope, organization_id=event.organization_id, subject_id=event.document_id
        )
        await self.dispatcher.dispatch(occurrence)

    async def document_expiring(self, event: DocumentExpiring, envelope: EventEnvelope) -> None:
        occurrence = _occurrence(
            NotificationType.DOCUMENT_EXPIRING,
            event,
            envelope,
            organization_id=event.organization_id,
            subject_id=event.document_id,
        )
        await self.dispatcher.dispatch(occurrence)

    async def import_finished(self, event: ImportFinished, envelope: EventEnvelope) -> None:
        kind = classify("ImportFinished", {"status": event.status})
        if kind is None:
            return
        # The job's creator is the envelope's actor (the molecule worker records it so).
        occurrence = _occurrence(kind, event, envelope, subject_id=event.job_id, requested_by=envelope.actor_id)
        await self.dispatcher.dispatch(occurrence)

    async def prediction_finished(self, event: PredictionJobFinished, envelope: EventEnvelope) -> None:
        kind = classify("PredictionJobFinished", {"status": event.status})
        if kind is None:
            return
        occurrence = _occurrence(
            kind,
            event,
            envelope,
            organization_id=event.organization_id,
            subject_id=event.job_id,
            requested_by=event.requested_by,
        )
        await self.dispatcher.dispatch(occurrence)


def server_subscriptions(directory: Directory, dispatcher: Dispatcher) -> list[Subscription[Any]]:
    handlers = EventHandlers(dispatcher)
    topics: list[tuple[type[Message], str, str, Callable[[Any, EventEnvelope], Awaitable[None]]]] = [
        (SubmissionTransitioned, "cro", "submissions", handlers.submission_transitioned),
        (QuoteProvided, "cro", "quotes", handlers.quote_provided),
        (SubmissionMessagePosted, "cro", "messages", handlers.message_posted),
        (SignatureRequested, "document", "signature-requests", handlers.signature_requested),
        (SignatureFinished, "document", "signatures-finished", handlers.signature_finished),
        (DocumentStatusChanged, "document", "document-status", handlers.document_status),
        (DocumentExpiring, "document", "document-expiring", handlers.document_expiring),
        (ImportFinished, "molecule", "imports", handlers.import_finished),
        (PredictionJobFinished, "prediction", "predictions", handlers.prediction_finished),
    ]
    return [
        Subscription(UserChanged, durable=DIRECTORY_DURABLE, handler=DirectoryHandler(directory), source="identity"),
        *(
            Subscription(topic, durable=f"notification-{name}", handler=handler, source=source, max_deliver=10)
            for topic, source, name, handler in topics
        ),
    ]


if __name__ == "__main__":  # importing this module must not start a worker
    from services.notification.bootstrap import MIGRATIONS, NotificationSettings, build_worker
    from services.runtime.process import run_process

    run_process("notification-worker", build_worker, settings=NotificationSettings, migrations=MIGRATIONS)
