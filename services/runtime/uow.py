"""The unit of work every service's use cases run in: one transaction, its repositories, its events.

    async with self._uow() as uow:
        submission = await uow.submissions.get(principal, submission_id, lock=True)
        uow.record(submission.submit(), actor=principal)
        await uow.submissions.save(submission)

`record` keeps the event; the outbox rows are written just before the commit, in the same
transaction, so a change and its events exist together or not at all. Where the events go
(`source`, `schema`) is bound once, when the service builds its `Transactions`.
A service subclasses `UnitOfWork` to attach its repositories (built from `self.session`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bus.outbox import insert_outbox_rows, outbox_row
from bus.subjects import work_subject


class Actor(Protocol):
    """Who caused an event (a `Principal` fits)."""

    @property
    def subject(self) -> str: ...

    @property
    def organization_id(self) -> str: ...


@dataclass(frozen=True)
class EventSink:
    """Where a service's events go: its source name on the bus and the schema of its outbox."""

    source: str
    schema: str


class UnitOfWork:
    def __init__(self, session: AsyncSession, sink: EventSink) -> None:
        self.session = session
        self._sink = sink
        self._rows: list[dict[str, Any]] = []

    def record(
        self,
        event: Message,
        *,
        actor: Actor | None = None,
        organization_id: str | None = None,
        actor_id: str | None = None,
    ) -> str:
        """An event (a fact) caused by this change; returns its id. Explicit ids override the actor's."""
        return self._keep(event, actor, organization_id, actor_id, subject=None)

    def enqueue(
        self,
        queue: str,
        item: Message,
        *,
        actor: Actor | None = None,
        organization_id: str | None = None,
        actor_id: str | None = None,
    ) -> str:
        """A work item for one worker of `queue`, committed with this change; returns its id."""
        return self._keep(item, actor, organization_id, actor_id, subject=work_subject(queue))

    def _keep(
        self, payload: Message, actor: Actor | None, organization_id: str | None, actor_id: str | None,
        *, subject: str | None,
    ) -> str:
        if organization_id is None:
            organization_id = actor.organization_id if actor else ""
        if actor_id is None:
            actor_id = actor.subject if actor else ""
        row = outbox_row(
            source=self._sink.source, payload=payload, organization_id=organization_id, actor_id=actor_id,
            subject=subject,
        )
        self._rows.append(row)
        return str(row["id"])

    async def flush_events(self) -> None:
        """Writes the recorded events into the outbox (done for you before the commit)."""
        rows, self._rows = self._rows, []
        await insert_outbox_rows(self.session, self._sink.schema, rows)


U = TypeVar("U", bound=UnitOfWork)


class Transactions(Generic[U]):
    """The factory a service's use cases hold: `async with self._uow() as uow: …`."""

    def __init__(
        self, engine: AsyncEngine, sink: EventSink, make: Callable[[AsyncSession, EventSink], U]
    ) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._sink = sink
        self._make = make

    @asynccontextmanager
    async def __call__(self) -> AsyncIterator[U]:
        async with self._sessions() as session, session.begin():
            uow = self._make(session, self._sink)
            yield uow
            await uow.flush_events()
