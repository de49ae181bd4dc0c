"""Retention against real PostgreSQL and nats-server: the bus's tables are pruned in batches (never an
unpublished outbox row), several sweepers share the work, the runtime runs the sweep, the migrations
add the sweep's indexes to existing schemas, and EVENTS gets its limits on create and on update."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from nats.js.api import StreamConfig
from sqlalchemy import create_engine, func, insert, inspect, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from bus import connect, outbox_table, processed_events_table
from bus.retention import RetentionPolicy, RetentionSweep
from bus.streams import DAY_S, EVENTS_STREAM, WORK_STREAM, StreamPolicy, ensure_streams
from services.runtime.db import sqlalchemy_url
from services.runtime.migrations import MigrationSpec
from services.runtime.process import Outbox, Process, running
from services.runtime.settings import REPO_ROOT, Settings
from stack.nats import NatsServer
from tests.integration.bus_schema import bus_schema

SCHEMA = "retention_test"
NOW = datetime.now(UTC)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    async with bus_schema(database_url, SCHEMA) as engine:
        yield engine


async def add_outbox(engine: AsyncEngine, count: int, *, age_days: float, published: bool) -> None:
    at = NOW - timedelta(days=age_days)
    rows = [
        {"id": uuid.uuid4(), "subject": "molbridge.events.t.x", "payload": b"x", "created_at": at,
         "published_at": at if published else None}
        for _ in range(count)
    ]
    async with engine.begin() as conn:
        await conn.execute(insert(outbox_table(SCHEMA)), rows)


async def add_markers(engine: AsyncEngine, count: int, *, age_days: float) -> None:
    at = NOW - timedelta(days=age_days)
    rows = [{"consumer": "c", "event_id": str(uuid.uuid4()), "processed_at": at} for _ in range(count)]
    async with engine.begin() as conn:
        await conn.execute(insert(processed_events_table(SCHEMA)), rows)


async def counts(engine: AsyncEngine) -> dict[str, int]:
    outbox, markers = outbox_table(SCHEMA), processed_events_table(SCHEMA)
    async with engine.connect() as conn:
        return {
            "published": (await conn.scalar(select(func.count()).where(outbox.c.published_at.is_not(None)))) or 0,
            "unpublished": (await conn.scalar(select(func.count()).where(outbox.c.published_at.is_(None)))) or 0,
            "markers": (await conn.scalar(select(func.count()).select_from(markers))) or 0,
        }


POLICY = RetentionPolicy(outbox_s=7 * DAY_S, processed_events_s=45 * DAY_S, batch=10)


async def test_old_rows_are_deleted_in_batches_and_unpublished_rows_never(engine: AsyncEngine) -> None:
    await add_outbox(engine, 25, age_days=8, published=True)
    await add_outbox(engine, 3, age_days=6, published=True)
    await add_outbox(engine, 4, age_days=30, published=False)  # stuck for a month: still to be published
    await add_markers(engine, 12, age_days=46)
    await add_markers(engine, 2, age_days=44)

    swept = await RetentionSweep(engine, SCHEMA, POLICY).sweep()

    # 25 outbox rows in batches of 10, 10, 5; 12 markers in 10, 2.
    assert (swept.outbox, swept.processed_events, swept.batches) == (25, 12, 5)
    assert await counts(engine) == {"published": 3, "unpublished": 4, "markers": 2}
    again = await RetentionSweep(engine, SCHEMA, POLICY).sweep()
    assert (again.outbox, again.processed_events) == (0, 0)


async def test_concurrent_sweepers_share_the_work(engine: AsyncEngine) -> None:
    await add_outbox(engine, 600, age_days=10, published=True)
    await add_markers(engine, 400, age_days=50)
    await add_outbox(engine, 5, age_days=10, published=False)
    sweepers = [RetentionSweep(engine, SCHEMA, RetentionPolicy(batch=50)) for _ in range(3)]

    results = await asyncio.gather(*(sweeper.sweep() for sweeper in sweepers))
    # A sweeper stops at a short batch (rows claimed by another); a second round finishes what is left.
    results += await asyncio.gather(*(sweeper.sweep() for sweeper in sweepers))

    assert sum(r.outbox for r in results) == 600 and sum(r.processed_events for r in results) == 400
    assert await counts(engine) == {"published": 0, "unpublished": 5, "markers": 0}


async def test_the_sweep_query_uses_its_index(engine: AsyncEngine) -> None:
    await add_outbox(engine, 2000, age_days=1, published=True)
    async with engine.begin() as conn:
        await conn.execute(text(f'ANALYZE "{SCHEMA}".outbox'))
        await conn.execute(text(f'ANALYZE "{SCHEMA}".processed_events'))
        await conn.execute(text("SET LOCAL enable_seqscan = off"))  # tiny tables: ask whether an index fits
        plans = [
            "\n".join(row[0] for row in await conn.execute(text(f"EXPLAIN {query}")))
            for query in (
                f"SELECT id FROM \"{SCHEMA}\".outbox WHERE published_at IS NOT NULL AND published_at < now() "
                "ORDER BY published_at LIMIT 10",
                f"SELECT consumer FROM \"{SCHEMA}\".processed_events WHERE processed_at < now() "
                "ORDER BY processed_at LIMIT 10",
            )
        ]
    assert "outbox_published_idx" in plans[0]
    assert "processed_events_processed_at_idx" in plans[1]


async def test_the_runtime_sweeps_the_schema_whose_outbox_it_relays(
    engine: AsyncEngine, database_url: str, nats_server: Any
) -> None:
    await add_outbox(engine, 7, age_days=8, published=True)
    await add_markers(engine, 3, age_days=46)
    config = Settings.from_env("retention-toy", {"DATABASE_URL": database_url, "NATS_URL": nats_server.url})
    async with running("retention-toy", Process(outbox=Outbox(engine, SCHEMA)), config) as started:
        assert started.retention is not None
        for _ in range(3000):  # the sweep runs once at start; poll until it has
            if started.retention.last is not None:
                break
            await asyncio.sleep(0.01)
        assert started.retention.last is not None
        assert (started.retention.last.outbox, started.retention.last.processed_events) == (7, 3)
    assert await counts(engine) == {"published": 0, "unpublished": 0, "markers": 0}


SERVICES = sorted(path.parent.parent.name for path in (REPO_ROOT / "services").glob("*/migrations/env.py"))


@pytest.mark.parametrize("service", SERVICES)
def test_an_existing_schema_gets_the_sweep_indexes(service: str, database_url: str) -> None:
    spec = MigrationSpec(service, REPO_ROOT / "services" / service / "migrations")
    spec.upgrade(database_url)
    command.downgrade(spec.config(database_url), "-1")  # the schema as it was before retention
    engine = create_engine(sqlalchemy_url(database_url, async_driver=False))
    try:
        def indexes() -> set[str]:
            with engine.connect() as connection:
                found = inspect(connection)
                tables = {"outbox", "processed_events"} & set(found.get_table_names(schema=service))
                return {index["name"] or "" for table in tables for index in found.get_indexes(table, schema=service)}

        assert "outbox_published_idx" not in indexes()
        spec.upgrade(database_url)
        ledger = {"processed_events_processed_at_idx"} if service != "identity" else set()  # identity has none
        expected = {"outbox_published_idx"} | ledger
        assert expected <= indexes()
    finally:
        engine.dispose()


# ---------------------------------------------------------------- the EVENTS stream


@pytest.fixture
def own_nats(tmp_path: Path) -> Any:
    """A server of this test's own: the session's EVENTS stream is shared by every other test."""
    server = NatsServer(tmp_path / "store", log_path=tmp_path / "nats.log")
    server.start()
    yield server
    server.stop()


async def test_events_gets_its_limits_and_an_existing_stream_is_updated(own_nats: NatsServer) -> None:
    nc = await connect(own_nats.url, name="retention-tests")
    try:
        js = nc.jetstream()
        # The stream as earlier releases created it: no limits.
        await js.add_stream(StreamConfig(name=EVENTS_STREAM, subjects=["molbridge.events.>"], duplicate_window=600))
        assert (await js.stream_info(EVENTS_STREAM)).config.max_age == 0

        await ensure_streams(js)  # the defaults
        config = (await js.stream_info(EVENTS_STREAM)).config
        assert (config.max_age, config.max_bytes) == (30 * DAY_S, 10 << 30)

        await ensure_streams(js, policy=StreamPolicy(max_age_s=2 * DAY_S, max_bytes=4096))  # a changed setting
        config = (await js.stream_info(EVENTS_STREAM)).config
        assert (config.max_age, config.max_bytes) == (2 * DAY_S, 4096)
        work = (await js.stream_info(WORK_STREAM)).config
        assert (work.max_age, work.max_bytes) == (0, -1)  # a work item is never dropped undone

        for i in range(100):  # ~20 KiB into a 4 KiB stream: the oldest go
            await js.publish("molbridge.events.t.x", b"x" * 150, headers={"Nats-Msg-Id": f"m{i}"})
        state = (await js.stream_info(EVENTS_STREAM)).state
        assert state.bytes <= 4096 and state.first_seq > 1 and state.last_seq == 100
    finally:
        await nc.close()
