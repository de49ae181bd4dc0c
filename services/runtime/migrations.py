"""Alembic migrations per service schema: the server upgrades at start, workers wait for the head.

Each service keeps explicit revisions in `services/<name>/migrations/versions/`; its `env.py` is one
call to `run_env(metadata)` (the models autogenerate and `alembic check` compare against), so the
Alembic plumbing lives here once. `MigrationSpec(schema, script_location)` is what a service hands to
`run_process`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

import stamina
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, Table, create_engine, pool, text
from sqlalchemy.exc import OperationalError

from services.runtime.db import sqlalchemy_url

log = logging.getLogger("molbridge.migrations")


class SchemaBehind(Exception):
    """The schema is not at the head revision yet (its server has not migrated it)."""


@dataclass(frozen=True)
class MigrationSpec:
    """A service schema and the folder of its Alembic revisions (`env.py` + `versions/`)."""

    schema: str
    script_location: Path

    def config(self, database_url: str) -> Config:
        cfg = Config()
        cfg.set_main_option("script_location", str(self.script_location))
        cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(database_url))
        cfg.attributes["schema"] = self.schema
        return cfg

    def upgrade(self, database_url: str) -> None:
        command.upgrade(self.config(database_url), "head")

    def heads(self) -> set[str]:
        return set(ScriptDirectory(str(self.script_location)).get_heads())

    def current(self, database_url: str) -> set[str]:
        engine = create_engine(sqlalchemy_url(database_url), poolclass=pool.NullPool)
        try:
            with engine.connect() as connection:
                context = MigrationContext.configure(connection, opts={"version_table_schema": self.schema})
                return set(context.get_current_heads())
        finally:
            engine.dispose()

    async def wait_until_at_head(self, database_url: str, *, timeout: float) -> None:
        """For workers: wait (jittered backoff, up to `timeout` s) until the server has migrated (and
        PostgreSQL answers); then raises the last SchemaBehind or connection error."""
        heads = self.heads()
        async for attempt in stamina.retry_context(
            on=(SchemaBehind, OperationalError, OSError), attempts=None, timeout=timeout, wait_max=2.0
        ):
            with attempt:
                current = await asyncio.to_thread(self.current, database_url)
                if current != heads:
                    log.info("schema %s at %s, waiting for %s", self.schema, sorted(current), sorted(heads))
                    raise SchemaBehind(self.schema)


def service_metadata(*sources: MetaData | Table) -> MetaData:
    """The models of one service schema as one unqualified MetaData (what `alembic check` compares the
    database with): its store tables plus the shared ones (outbox, processed events, idempotency keys)."""
    target = MetaData()
    for source in sources:
        tables = source.tables.values() if isinstance(source, MetaData) else [source]
        for table in tables:
            table.to_metadata(target, schema=None)  # type: ignore[arg-type]  # None = unqualified, as documented
    return target


def upgrade(database_url: str, schema: str, script_location: Path) -> None:
    """Kept for callers not yet on MigrationSpec."""
    MigrationSpec(schema, script_location).upgrade(database_url)


def run_env(target_metadata: MetaData | None = None) -> None:
    from alembic import context

    schema = context.config.attributes["schema"]
    engine = create_engine(context.config.get_main_option("sqlalchemy.url") or "", poolclass=pool.NullPool)
    with engine.connect() as connection:
        # Several replicas may start at once: one migrates, the others wait and find nothing to do.
        connection.execute(text("SELECT pg_advisory_lock(hashtext(:s))"), {"s": f"migrate:{schema}"})
        try:
            connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            connection.execute(text(f'SET search_path TO "{schema}", public'))
            connection.commit()
            context.configure(
                connection=connection,
                version_table_schema=schema,
                target_metadata=target_metadata,
                include_name=_only_schema(schema),
                compare_type=True,
                compare_server_default=True,
            )
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(hashtext(:s))"), {"s": f"migrate:{schema}"})
            connection.commit()


def _only_schema(schema: str):  # type: ignore[no-untyped-def]
    """Autogenerate looks at this service's schema only, and not at Alembic's own version table."""

    def include_name(name: str | None, type_: str, parent_names: dict[str, str | None]) -> bool:
        if type_ == "schema":
            return name in (None, schema)
        if type_ == "table":
            return name != "alembic_version"
        return True

    return include_name
