"""The runtime's unit of work against real PostgreSQL: recorded events commit with the change or not at all."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from molbridge.events.v1.audit_pb2 import AuditRecorded
from molbridge.events.v1.envelope_pb2 import EventEnvelope
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from bus import create_outbox_table, outbox_table, unpack
from services.runtime.db import make_engine
from services.runtime.uow import EventSink, Transactions, UnitOfWork

SCHEMA = "uow_test"
things = sa.Table("things", sa.MetaData(), sa.Column("name", sa.Text, primary_key=True), schema=SCHEMA)


class ThingsUnitOfWork(UnitOfWork):
    def __init__(self, session: AsyncSession, sink: EventSink) -> None:
        super().__init__(session, sink)
        self.things = ThingRepository(session)


class ThingRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, name: str) -> None:
        await self._session.execute(sa.insert(things).values(name=name))


class Actor:
    subject = "user-1"
    organization_id = "org-1"


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(database_url, SCHEMA)
    async with engine.begin() as conn:
        await conn.execute(sa.text(f"CREATE SCHEMA {SCHEMA}"))
        await conn.run_sync(lambda sync: things.create(sync))

        def outbox(sync: sa.Connection) -> None:
            from alembic.migration import MigrationContext
            from alembic.operations import Operations

            create_outbox_table(Operations(MigrationContext.configure(sync)), SCHEMA)

        await conn.run_sync(outbox)
    yield engine
    await engine.dispose()


async def _outbox(engine: AsyncEngine) -> list[EventEnvelope]:
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.select(outbox_table(SCHEMA)).order_by("created_at"))).all()
    return [EventEnvelope.FromString(row.payload) for row in rows]


async def test_events_commit_with_the_change_in_order(engine: AsyncEngine) -> None:
    uow = Transactions(engine, EventSink("uowtest", SCHEMA), ThingsUnitOfWork)
    async with uow() as tx:
        await tx.things.add("a")
        first = tx.record(AuditRecorded(action="thing.created", target_id="a"), actor=Actor())
        second = tx.record(AuditRecorded(action="thing.touched", target_id="a"), organization_id="org-2", actor_id="")
    envelopes = await _outbox(engine)
    assert [e.id for e in envelopes] == [first, second]
    assert envelopes[0].source == "uowtest"
    assert (envelopes[0].organization_id, envelopes[0].actor_id) == ("org-1", "user-1")
    assert (envelopes[1].organization_id, envelopes[1].actor_id) == ("org-2", "")
    assert unpack(envelopes[1], AuditRecorded).action == "thing.touched"


async def test_a_rolled_back_change_leaves_no_event(engine: AsyncEngine) -> None:
    uow = Transactions(engine, EventSink("uowtest", SCHEMA), ThingsUnitOfWork)
    with pytest.raises(RuntimeError):
        async with uow() as tx:
            await tx.things.add("b")
            tx.record(AuditRecorded(action="thing.created", target_id="b"), actor=Actor())
            raise RuntimeError("the use case failed after recording")
    assert await _outbox(engine) == []
    async with engine.connect() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(things))).scalar_one() == 0


async def test_work_items_go_to_the_queue_subject(engine: AsyncEngine) -> None:
    uow = Transactions(engine, EventSink("uowtest", SCHEMA), ThingsUnitOfWork)
    async with uow() as tx:
        tx.enqueue("thing_jobs", AuditRecorded(action="work"), actor=Actor())
    async with engine.connect() as conn:
        subjects = (await conn.execute(sa.select(outbox_table(SCHEMA).c.subject))).scalars().all()
    assert subjects == ["molbridge.work.thing_jobs"]
