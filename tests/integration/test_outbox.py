"""The bus against real PostgreSQL and NATS: outbox → relay → JetStream → consumer runner.

Each test uses a fresh database and its own event source, so its subjects are its own on the
shared nats-server. Waits poll for a condition with a generous cap; nothing asserts on time.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from typing import Any, Protocol

import pytest
from alembic.migration import MigrationContext
from alembic.operations import Operations
from molbridge.events.v1.audit_pb2 import AuditRecorded
from molbridge.events.v1.envelope_pb2 import EventEnvelope
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import NotFoundError
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import Connection, func, select
from sqlalchemy import inspect as sql_inspect
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bus import (
    EVENTS_STREAM,
    Consumer,
    Handler,
    OutboxRelay,
    PoisonError,
    TransientError,
    add_event,
    build_envelope,
    connect,
    drop_outbox_table,
    drop_processed_events_table,
    ensure_streams,
    event_subject,
    first_delivery,
    outbox_table,
    source_events,
    unpack,
)
from tests.integration.bus_schema import bus_schema
from tests.waiting import eventually_async as eventually

SCHEMA = "bus_test"
Sessions = async_sessionmaker[AsyncSession]


class Runner(Protocol):
    async def run(self) -> None: ...
    def stop(self) -> None: ...


# ---------------------------------------------------------------- helpers



@contextlib.asynccontextmanager
async def running(*runners: Runner) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(runner.run()) for runner in runners]
    try:
        yield
    finally:
        for runner in runners:
            runner.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)  # a runner that crashed fails the test here


async def write_events(sessions: Sessions, source: str, count: int, *, commit: bool = True) -> list[str]:
    async with sessions() as session, session.begin() as transaction:
        ids = [
            await add_event(
                session,
                source=source,
                payload=AuditRecorded(action=f"test.{i}"),
                organization_id="org-1",
                actor_id="user-1",
                schema=SCHEMA,
            )
            for i in range(count)
        ]
        if not commit:
            await transaction.rollback()
    return ids


async def unpublished(engine: AsyncEngine) -> int:
    table = outbox_table(SCHEMA)
    async with engine.connect() as conn:
        return (await conn.execute(select(func.count()).where(table.c.published_at.is_(None)))).scalar_one()


async def stream_ids(js: JetStreamContext, source: str) -> list[str]:
    """The Nats-Msg-Id of every message the EVENTS stream holds for `source`, in stream order."""
    sub = await js.pull_subscribe(
        source_events(source), stream=EVENTS_STREAM, config=ConsumerConfig(ack_policy=AckPolicy.NONE)
    )
    ids: list[str] = []
    try:
        while True:
            messages = await sub.fetch(100, timeout=5)
            ids += [msg.headers["Nats-Msg-Id"] for msg in messages if msg.headers]
            if messages[-1].metadata.num_pending == 0:
                return ids
    finally:
        await sub.unsubscribe()


async def publish_direct(js: JetStreamContext, source: str, action: str) -> str:
    """Put one event straight on the stream (consumer tests do not need the outbox)."""
    event_id = str(uuid.uuid4())
    envelope = build_envelope(
        event_id=event_id, source=source, payload=AuditRecorded(action=action), occurred_at=datetime.now(UTC)
    )
    await js.publish(
        event_subject(source, AuditRecorded), envelope.SerializeToString(), headers={"Nats-Msg-Id": event_id}
    )
    return event_id


# ---------------------------------------------------------------- fixtures


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    async with bus_schema(database_url, SCHEMA) as engine:  # the helpers a service's migration calls
        yield engine


@pytest.fixture
def sessions(engine: AsyncEngine) -> Sessions:
    return async_sessionmaker(engine, expire_on_commit=False)


@pytest.fixture
async def nc(nats_server: Any) -> AsyncIterator[Client]:
    client = await connect(nats_server.url, name="bus-tests")
    await ensure_streams(client.jetstream())
    yield client
    await client.close()


@pytest.fixture
def js(nc: Client) -> JetStreamContext:
    return nc.jetstream()


@pytest.fixture
def source() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def make_consumer(js: JetStreamContext, source: str) -> AsyncIterator[Callable[..., Consumer]]:
    made: list[Consumer] = []

    def make(handler: Handler, **options: Any) -> Consumer:
        options = {"fetch_timeout": 0.25} | options  # stop() takes effect after at most one idle fetch
        consumer = Consumer(js, EVENTS_STREAM, f"test_{source}", source_events(source), handler, **options)
        made.append(consumer)
        return consumer

    yield make
    for consumer in made:
        with contextlib.suppress(NotFoundError):
            await js.delete_consumer(consumer.stream, consumer.durable)


@pytest.fixture
def relay(engine: AsyncEngine, js: JetStreamContext) -> OutboxRelay:
    return OutboxRelay(engine, SCHEMA, js, poll_interval=0.2, publish_timeout=1.0, max_backoff=0.5)


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    # The global provider can be set once per process: use the one already set (services' telemetry
    # does the same with ours), and stop collecting when this module is done.
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    assert isinstance(trace.get_tracer_provider(), TracerProvider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()


# ---------------------------------------------------------------- outbox and relay


async def _all_published(engine: AsyncEngine) -> bool:
    return await unpublished(engine) == 0


async def _publish_failed(engine: AsyncEngine) -> bool:
    table = outbox_table(SCHEMA)
    async with engine.connect() as conn:
        return (await conn.execute(select(func.max(table.c.attempts)))).scalar_one() > 1


async def test_committed_events_reach_jetstream_exactly_once(
    sessions: Sessions, engine: AsyncEngine, js: JetStreamContext, relay: OutboxRelay, source: str
) -> None:
    written = await write_events(sessions, source, 3) + await write_events(sessions, source, 2)

    async with running(relay):
        await eventually(lambda: _all_published(engine), what="publish")

    assert await stream_ids(js, source) == written  # one relay publishes oldest first
    assert (relay.published, relay.duplicates) == (5, 0)

    sub = await js.pull_subscribe(source_events(source), stream=EVENTS_STREAM)
    msg = (await sub.fetch(1))[0]
    envelope = EventEnvelope.FromString(msg.data)
    assert msg.subject == f"molbridge.events.{source}.audit_recorded"
    assert (envelope.id, envelope.source, envelope.organization_id, envelope.actor_id) == (
        written[0],
        source,
        "org-1",
        "user-1",
    )
    assert unpack(envelope, AuditRecorded).action == "test.0"
    await sub.unsubscribe()


async def test_the_relay_wakes_on_commit_rather_than_on_its_poll(
    sessions: Sessions, engine: AsyncEngine, js: JetStreamContext, source: str
) -> None:
    relay = OutboxRelay(engine, SCHEMA, js, poll_interval=3600)  # only NOTIFY can wake it in time
    async with running(relay):
        first = await write_events(sessions, source, 2)
        await eventually(lambda: relay.published == 2, what="the first commit published")
        second = await write_events(sessions, source, 1)
        await eventually(lambda: relay.published == 3, what="the second commit published")

    assert await stream_ids(js, source) == first + second


async def test_a_rolled_back_transaction_publishes_nothing(
    sessions: Sessions, engine: AsyncEngine, js: JetStreamContext, relay: OutboxRelay, source: str
) -> None:
    await write_events(sessions, source, 3, commit=False)
    marker = await write_events(sessions, source, 1)

    async with running(relay):
        await eventually(lambda: _all_published(engine), what="publish")

    assert await stream_ids(js, source) == marker


async def test_a_row_published_before_a_relay_crash_is_stored_once_even_across_a_nats_restart(
    sessions: Sessions,
    engine: AsyncEngine,
    js: JetStreamContext,
    nats_server: Any,
    relay: OutboxRelay,
    source: str,
) -> None:
    (event_id,) = await write_events(sessions, source, 1)
    # A relay published the row and died before marking it: the row is still unpublished.
    table = outbox_table(SCHEMA)
    async with engine.connect() as conn:
        row = (await conn.execute(select(table.c.subject, table.c.payload))).one()
    await js.publish(row.subject, row.payload, headers={"Nats-Msg-Id": event_id})
    await asyncio.to_thread(nats_server.restart)  # JetStream rebuilds its dedupe window from its store

    async with running(relay):
        await eventually(lambda: _all_published(engine), what="publish")

    assert (relay.published, relay.duplicates) == (1, 1)
    assert await stream_ids(js, source) == [event_id]


async def test_concurrent_relays_publish_each_event_once(
    sessions: Sessions, engine: AsyncEngine, js: JetStreamContext, nats_server: Any, source: str
) -> None:
    written = [event_id for _ in range(40) for event_id in await write_events(sessions, source, 5)]
    second = await connect(nats_server.url)
    relays = [
        OutboxRelay(engine, SCHEMA, js, batch_size=7, poll_interval=0.05),
        OutboxRelay(engine, SCHEMA, second.jetstream(), batch_size=7, poll_interval=0.05),
    ]
    try:
        async with running(*relays):
            await eventually(lambda: _all_published(engine), what="publish")
    finally:
        await second.close()

    ids = await stream_ids(js, source)
    assert sorted(ids) == sorted(written)
    # SKIP LOCKED kept the relays apart: not one row went out twice (so JetStream had nothing to drop).
    assert sum(r.published for r in relays) == len(written)
    assert sum(r.duplicates for r in relays) == 0


async def test_outbox_survives_a_nats_restart_while_events_are_written(
    sessions: Sessions,
    engine: AsyncEngine,
    js: JetStreamContext,
    nats_server: Any,
    relay: OutboxRelay,
    make_consumer: Callable[..., Consumer],
    source: str,
) -> None:
    total, per_transaction = 300, 3
    written: list[str] = []
    handled: Counter[str] = Counter()

    async def writer() -> None:
        for _ in range(total // per_transaction):
            written.extend(await write_events(sessions, source, per_transaction))

    async def handler(envelope: EventEnvelope, msg: Msg) -> None:
        handled[envelope.id] += 1

    consumer = make_consumer(handler, batch=50)
    try:
        async with running(relay, consumer):
            writing = asyncio.create_task(writer())
            await eventually(lambda: len(written) >= total // 3, what="first third written")
            await asyncio.to_thread(nats_server.stop)
            await eventually(lambda: len(written) >= 2 * total // 3 or writing.done(), what="second third")
            await eventually(lambda: _publish_failed(engine), what="the relay to run into the outage")
            await asyncio.to_thread(nats_server.start)
            await writing
            await eventually(lambda: _all_published(engine), what="every row published")
            await eventually(lambda: set(handled) == set(written), what="every event consumed")
    finally:
        await asyncio.to_thread(nats_server.start)  # no-op when running; never leave the server down

    ids = await stream_ids(js, source)
    assert len(written) == total
    assert len(ids) == len(set(ids)) == total  # every event stored, none twice
    assert set(ids) == set(written)


async def test_trace_runs_from_the_writing_request_through_the_message_to_the_consumer(
    spans: InMemorySpanExporter,
    sessions: Sessions,
    relay: OutboxRelay,
    make_consumer: Callable[..., Consumer],
    source: str,
) -> None:
    seen: dict[str, trace.SpanContext] = {}

    async def handler(envelope: EventEnvelope, msg: Msg) -> None:
        seen[envelope.id] = trace.get_current_span().get_span_context()

    with trace.get_tracer("tests").start_as_current_span("request") as request:
        (event_id,) = await write_events(sessions, source, 1)
    request_context = request.get_span_context()

    async with running(relay, make_consumer(handler)):
        await eventually(lambda: event_id in seen, what="the event handled")

    def span_named(prefix: str) -> Any:
        return next(
            (
                s
                for s in spans.get_finished_spans()
                if s.name.startswith(prefix) and s.attributes and s.attributes.get("messaging.message.id") == event_id
            ),
            None,
        )

    publish = await eventually(lambda: span_named("outbox publish "), what="the publish span")
    consume = await eventually(lambda: span_named("consume "), what="the consume span")
    assert publish.name == f"outbox publish {event_subject(source, AuditRecorded)}"
    assert publish.parent.span_id == request_context.span_id
    assert consume.parent.span_id == publish.context.span_id
    assert {publish.context.trace_id, consume.context.trace_id, seen[event_id].trace_id} == {request_context.trace_id}


# ---------------------------------------------------------------- consumer runner


async def test_handled_events_are_acked(
    js: JetStreamContext, make_consumer: Callable[..., Consumer], source: str
) -> None:
    handled: list[str] = []

    async def handler(envelope: EventEnvelope, msg: Msg) -> None:
        handled.append(envelope.id)

    sent = [await publish_direct(js, source, f"ok.{i}") for i in range(5)]
    consumer = make_consumer(handler, batch=2)
    async with running(consumer):
        await eventually(lambda: len(handled) == 5, what="five events handled")
        info = await eventually(lambda: _settled(js, consumer), what="all acked")

    assert handled == sent
    assert (consumer.acked, consumer.nakked, consumer.terminated) == (5, 0, 0)
    assert info.num_redelivered == 0


async def _settled(js: JetStreamContext, consumer: Consumer) -> Any:
    info = await js.consumer_info(consumer.stream, consumer.durable)
    return info if info.num_ack_pending == 0 and info.num_pending == 0 else None


async def test_transient_errors_are_retried_with_backoff_until_the_handler_succeeds(
    js: JetStreamContext, make_consumer: Callable[..., Consumer], source: str
) -> None:
    deliveries: list[int] = []

    async def handler(envelope: EventEnvelope, msg: Msg) -> None:
        deliveries.append(msg.metadata.num_delivered)
        if len(deliveries) < 3:
            raise TransientError("dependency down")

    consumer = make_consumer(handler, backoff=[0.05, 0.1])
    await publish_direct(js, source, "flaky")
    async with running(consumer):
        await eventually(lambda: consumer.acked == 1, what="success on the third delivery")

    assert deliveries == [1, 2, 3]
    assert (consumer.nakked, consumer.terminated) == (2, 0)


async def test_a_failing_message_is_terminated_after_max_deliver_and_the_others_flow_on(
    js: JetStreamContext, make_consumer: Callable[..., Consumer], source: str
) -> None:
    deliveries: Counter[str] = Counter()

    async def handler(envelope: EventEnvelope, msg: Msg) -> None:
        action = unpack(envelope, AuditRecorded).action
        deliveries[action] += 1
        if action == "bad":
            raise ValueError("this message can never be handled")

    consumer = make_consumer(handler, max_deliver=3, backoff=[0.05])
    await publish_direct(js, source, "bad")
    await publish_direct(js, source, "good.1")
    async with running(consumer):
        await eventually(lambda: consumer.terminated == 1, what="the bad message terminated")
        await publish_direct(js, source, "good.2")
        await eventually(lambda: consumer.acked == 2, what="the good messages handled")
        await eventually(lambda: _settled(js, consumer), what="nothing left pending")

    assert deliveries == {"bad": 3, "good.1": 1, "good.2": 1}


async def test_poison_is_terminated_at_once(
    js: JetStreamContext, make_consumer: Callable[..., Consumer], source: str
) -> None:
    calls: list[str] = []

    async def handler(envelope: EventEnvelope, msg: Msg) -> None:
        calls.append(envelope.id)
        raise PoisonError("refers to nothing")

    consumer = make_consumer(handler, max_deliver=5, backoff=[0.05])
    poison = await publish_direct(js, source, "poison")
    # Not even an envelope: undecodable bytes are poison too, the handler never sees them.
    await js.publish(event_subject(source, AuditRecorded), b"\x0a\xff", headers={"Nats-Msg-Id": "garbage"})
    async with running(consumer):
        await eventually(lambda: consumer.terminated == 2, what="both terminated")
        await eventually(lambda: _settled(js, consumer), what="nothing left pending")

    assert calls == [poison]
    assert consumer.nakked == 0


async def test_long_handlers_are_kept_alive_instead_of_redelivered(
    js: JetStreamContext, make_consumer: Callable[..., Consumer], source: str
) -> None:
    deliveries: list[tuple[str, int]] = []

    async def slow(envelope: EventEnvelope, msg: Msg) -> None:
        deliveries.append((envelope.id, msg.metadata.num_delivered))
        await asyncio.sleep(1.2)  # well past ack_wait: only in_progress() keeps the message ours

    # The second message waits in the fetched batch while the first is handled: it is kept alive too.
    consumer = make_consumer(slow, ack_wait=0.4, batch=2)
    sent = [await publish_direct(js, source, "slow.1"), await publish_direct(js, source, "slow.2")]
    async with running(consumer):
        await eventually(lambda: consumer.acked == 2, what="both handled")
        info = await eventually(lambda: _settled(js, consumer), what="both acked")

    assert deliveries == [(sent[0], 1), (sent[1], 1)]
    assert info.num_redelivered == 0


# ---------------------------------------------------------------- idempotent effects and migrations


async def test_first_delivery_is_true_once_per_consumer_and_committed_event(sessions: Sessions) -> None:
    async def first(consumer: str, event_id: str, *, commit: bool = True) -> bool:
        async with sessions() as session, session.begin() as transaction:
            result = await first_delivery(session, consumer, event_id, schema=SCHEMA)
            if not commit:
                await transaction.rollback()
        return result

    assert await first("audit", "e1", commit=False)  # rolled back: as if never handled
    assert await first("audit", "e1")
    assert not await first("audit", "e1")
    assert await first("mailer", "e1")
    assert await first("audit", "e2")


async def test_migration_helpers_create_and_drop_the_tables(engine: AsyncEngine) -> None:
    def tables(connection: Connection) -> set[str]:
        return set(sql_inspect(connection).get_table_names(schema=SCHEMA))

    def indexes(connection: Connection) -> dict[str, dict[str, Any]]:
        return {index["name"] or "": index for index in sql_inspect(connection).get_indexes("outbox", schema=SCHEMA)}

    def drop(connection: Connection) -> None:
        op = Operations(MigrationContext.configure(connection))
        drop_outbox_table(op, SCHEMA)
        drop_processed_events_table(op, SCHEMA)

    async with engine.begin() as conn:
        assert await conn.run_sync(tables) == {"outbox", "processed_events"}
        found = await conn.run_sync(indexes)
        assert set(found) == {"outbox_unpublished_idx", "outbox_published_idx"}  # the relay's, the retention's
        assert found["outbox_unpublished_idx"]["column_names"] == ["created_at"]
        assert "published_at IS NULL" in found["outbox_unpublished_idx"]["dialect_options"]["postgresql_where"]
        assert "published_at IS NOT NULL" in found["outbox_published_idx"]["dialect_options"]["postgresql_where"]
        await conn.run_sync(drop)
        assert await conn.run_sync(tables) == set()
