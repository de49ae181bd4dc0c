"""A schema holding only the bus's tables (outbox and processed events), built by the same helpers a
service's Alembic migration calls, for tests of bus/ against the real PostgreSQL."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

from bus import create_outbox_table, create_processed_events_table
from services.runtime.db import make_engine


@contextlib.asynccontextmanager
async def bus_schema(database_url: str, schema: str) -> AsyncIterator[AsyncEngine]:
    def migrate(connection: Connection) -> None:
        op = Operations(MigrationContext.configure(connection))
        create_outbox_table(op, schema)
        create_processed_events_table(op, schema)

    engine = make_engine(database_url, schema, pool_size=5)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            await conn.run_sync(migrate)
        yield engine
    finally:
        await engine.dispose()
