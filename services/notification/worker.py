"""The notification service's subscriptions and the delivery worker's entry point.

The server (`python -m services.notification`):
- identity's UserChanged → the directory (from the stream's start: every user ever announced);
- the events of domain/vocabulary.py SOURCES → `Dispatcher.dispatch` (one durable per event type, each
  event exactly once per recipient); a SubmissionTransitioned that tells nobody (e.g. PENDING_REVIEW)
  still records the submission's parties. A quote or message of a submission whose parties are not
  known yet (its transition travels on another consumer) is retried for up to SUBMISSION_WAIT, then
  told without its submitter. An event older than the horizon (default 7 days) tells nobody: the
  durables start at the stream's start, and a first start must not tell years of history.

The worker (`python -m services.notification.worker`): sends queued emails and webhook deliveries.

Handlers only translate between the bus and the use cases (proto → Occurrence): no SQL here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
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
from services.notification.domain.vocabulary import SOURCES, classify
from services.notification.service.directory import Directory
from services.notification.service.dispatch import Dispatcher, SubmissionState, SubmissionUnknown
from services.runtime.process import Subscription, TransientError

DIRECTORY_DURABLE = "notification-directory"
SUBMISSION_WAIT = timedelta(seconds=20)  # how long a submission's event may wait for the submission's parties
DEFAULT_HORIZON = timedelta(days=7)  # events older than this tell nobody (MOLBRIDGE_NOTIFICATION_HORIZON_DAYS)
SUBMISSION_RETRY_S = 3.0  # between its tries (well within the subscription's max_deliver)


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
class Topic:
    """An event this service tells: where it comes from, its durable, and what the rules need from it
    beyond what every event gives (the envelope's organization, actor and time; the fields as facts)."""

    event: type[Message]
    source: str
    durable: str
    fields: Callable[[Any, EventEnvelope], dict[str, Any]]
    state: Callable[[Any, EventEnvelope], SubmissionState] | None = None  # what it says about its submission


def _parties(event: Any) -> Parties:
    """A submission's parties as a CRO event names them (the submitter only where it says so)."""
    return Parties(
        event.submission_id,
        event.organization_id,
        event.cro_organization_id,
        getattr(event, "created_by", ""),
        getattr(event, "name", ""),
    )


def _submission_of(event: Any) -> Parties | None:
    """A document event's submission: its id only (the dispatcher knows the parties)."""
    return Parties(event.submission_id, "", "") if event.submission_id else None


TOPICS: tuple[Topic, ...] = (
    Topic(
        SubmissionTransitioned,
        "cro",
        "submissions",
        lambda e, _: {
            "organization_id": e.organization_id,
            "subject_id": e.submission_id,
            "submission": _parties(e),
            "from_status": e.from_status,
        },
        state=lambda e, envelope: SubmissionState(_parties(e), e.to_status, _at(e.at) or _at(envelope.occurred_at)),
    ),
    Topic(
        QuoteProvided,
        "cro",
        "quotes",
        lambda e, _: {"organization_id": e.organization_id, "subject_id": e.submission_id, "submission": _parties(e)},
    ),
    Topic(
        SubmissionMessagePosted,
        "cro",
        "messages",
        lambda e, envelope: {
            "organization_id": e.organization_id,
            "subject_id": e.submission_id,
            "submission": _parties(e),
            "side": e.side,
            "actor_id": e.author_id or envelope.actor_id,
        },
    ),
    Topic(
        SignatureRequested,
        "document",
        "signature-requests",
        lambda e, _: {
            "organization_id": e.organization_id,
            "subject_id": e.request_id,
            "submission": _submission_of(e),
            "signer_user_id": e.signer_user_id,
            "signer_organization_id": e.signer_organization_id,
            "signer_role": e.signer_role,
        },
    ),
    Topic(
        SignatureFinished,
        "document",
        "signatures-finished",
        lambda e, _: {
            "organization_id": e.organization_id,
            "subject_id": e.request_id,
            "submission": _submission_of(e),
            "requested_by": e.requested_by,
        },
    ),
    Topic(
        DocumentStatusChanged,
        "document",
        "document-status",
        lambda e, _: {"organization_id": e.organization_id, "subject_id": e.document_id},
    ),
    Topic(
        DocumentExpiring,
        "document",
        "document-expiring",
        lambda e, _: {"organization_id": e.organization_id, "subject_id": e.document_id},
    ),
    # The import's creator is the envelope's actor (the molecule worker records it so).
    Topic(
        ImportFinished,
        "molecule",
        "imports",
        lambda e, envelope: {"subject_id": e.job_id, "requested_by": envelope.actor_id},
    ),
    Topic(
        PredictionJobFinished,
        "prediction",
        "predictions",
        lambda e, _: {"organization_id": e.organization_id, "subject_id": e.job_id, "requested_by": e.requested_by},
    ),
)


@dataclass(frozen=True)
class EventHandler:
    """Classifies one event (vocabulary SOURCES), maps it to an Occurrence and dispatches it; an event that
    tells nobody still tells its submission's parties."""

    topic: Topic
    dispatcher: Dispatcher
    horizon: timedelta = DEFAULT_HORIZON

    async def __call__(self, event: Message, envelope: EventEnvelope) -> None:
        facts = _facts(event)
        age = datetime.now(UTC) - (_at(envelope.occurred_at) or datetime.now(UTC))
        # Past the horizon nobody is told (a first start on a stream holding years of events).
        kind = classify(event.DESCRIPTOR.name, facts) if age <= self.horizon else None
        state = self.topic.state(event, envelope) if self.topic.state else None
        if kind is None:
            if state is not None:
                await self.dispatcher.remember(state, envelope.id)
            return
        common: dict[str, Any] = {
            "organization_id": envelope.organization_id,
            "actor_id": envelope.actor_id,
            "occurred_at": _at(envelope.occurred_at),
            "facts": facts,
        }
        occurrence = Occurrence(
            type=kind,
            event_id=envelope.id,
            subject_type=SOURCES[kind].subject,
            **{**common, **self.topic.fields(event, envelope)},
        )
        # A young event of a submission not known yet waits for its transition (on another consumer);
        # an old one is told with what it says (its submitter unknown).
        try:
            await self.dispatcher.dispatch(occurrence, state, wait_for_submission=age < SUBMISSION_WAIT)
        except SubmissionUnknown as unknown:
            raise TransientError(str(unknown), delay=SUBMISSION_RETRY_S) from unknown


def server_subscriptions(
    directory: Directory, dispatcher: Dispatcher, *, horizon: timedelta = DEFAULT_HORIZON
) -> list[Subscription[Any]]:
    return [
        Subscription(UserChanged, durable=DIRECTORY_DURABLE, handler=DirectoryHandler(directory), source="identity"),
        *(
            Subscription(
                topic.event,
                durable=f"notification-{topic.durable}",
                handler=EventHandler(topic, dispatcher, horizon),
                source=topic.source,
                max_deliver=20,  # room for the SUBMISSION_WAIT tries and then real failures
            )
            for topic in TOPICS
        ),
    ]


if __name__ == "__main__":  # importing this module must not start a worker
    from services.notification.bootstrap import MIGRATIONS, NotificationSettings, build_worker
    from services.runtime.process import run_process

    run_process("notification-worker", build_worker, settings=NotificationSettings, migrations=MIGRATIONS)
