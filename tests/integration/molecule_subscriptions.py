"""One of the molecule service's declared subscriptions running in a process of its own (no servicers) on a
real PostgreSQL and NATS, and how a test publishes to it as the outbox relay does and waits for it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from typing import Any

import sqlalchemy as sa
from google.protobuf.message import Message
from molbridge.events.v1.envelope_pb2 import EventEnvelope
from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bus import connect, ensure_streams, event_subject, outbox_table, unpack
from services.molecule import bootstrap
from services.molecule.service.experimental import ExperimentalValueConsumer
from services.molecule.service.predictions import PredictionConsumer
from services.molecule.service.submissions import SubmissionStatusConsumer
from services.molecule.store.tables import SCHEMA
from services.molecule.store.uow import MoleculeTransactions, molecule_transactions
from services.runtime.db import make_engine
from services.runtime.process import Outbox, Process, running
from services.runtime.settings import Settings


@dataclass
class Subscribed:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    js: JetStreamContext
    transactions: MoleculeTransactions
    durable: str
    subject: str

    async def scalar(self, statement: str, **params: Any) -> Any:
        async with self.sessions.begin() as session:
            return await session.scalar(sa.text(statement), params)

    async def recorded(self, event_type: type[Message]) -> list[Any]:
        """The molecule service's recorded events of this type (its outbox)."""
        outbox = outbox_table(SCHEMA)
        async with self.sessions.begin() as session:
            payloads = await session.scalars(
                sa.select(outbox.c.payload).where(outbox.c.subject == event_subject("molecule", event_type))
            )
            return [unpack(EventEnvelope.FromString(p), event_type) for p in payloads]

    async def publish(self, envelope: EventEnvelope, *, dedupe: bool = True) -> None:
        """As the relay does (Nats-Msg-Id = event id); dedupe=False: a redelivered copy JetStream keeps."""
        headers = {"Nats-Msg-Id": envelope.id if dedupe else str(uuid.uuid4())}
        await self.js.publish(self.subject, envelope.SerializeToString(), headers=headers)

    async def handled(self, envelope: EventEnvelope, timeout: float = 20.0) -> None:
        async def poll() -> None:
            while not await self.scalar(
                "SELECT count(*) FROM processed_events WHERE consumer = :c AND event_id = :e",
                c=self.durable,
                e=envelope.id,
            ):
                await asyncio.sleep(0.05)

        await asyncio.wait_for(poll(), timeout)

    def parts(self) -> dict[str, Any]:
        """The fields, for a test's subclass: `World(**subscribed.parts(), …)`."""
        return {f.name: getattr(self, f.name) for f in fields(Subscribed)}


@asynccontextmanager
async def subscribed(
    database_url: str, nats_url: str, durable: str, source: str, event_type: type[Message]
) -> AsyncIterator[Subscribed]:
    """The subscription `durable` as the molecule server declares it, running until the block ends."""
    bootstrap.MIGRATIONS.upgrade(database_url)
    engine = make_engine(database_url, SCHEMA)
    settings = Settings.from_env(
        "molecule-test",
        {"DATABASE_URL": database_url, "NATS_URL": nats_url, "MOLBRIDGE_MOLECULE_TEST_HEALTH_ADDR": "off"},
    )
    transactions = molecule_transactions(engine)
    declared = bootstrap.subscriptions(
        PredictionConsumer(transactions),
        SubmissionStatusConsumer(transactions),
        ExperimentalValueConsumer(transactions),
    )
    process = Process(subscriptions=[s for s in declared if s.durable == durable], outbox=Outbox(engine, SCHEMA))
    nats = await connect(nats_url)
    js = nats.jetstream()
    await ensure_streams(js)
    try:
        async with running("molecule-test", process, settings):
            yield Subscribed(
                engine,
                async_sessionmaker(engine, expire_on_commit=False),
                js,
                transactions,
                durable,
                event_subject(source, event_type),
            )
    finally:
        await nats.close()
        await engine.dispose()
