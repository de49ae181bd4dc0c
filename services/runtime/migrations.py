"""Alembic migrations per service schema, applied at start.

Each service keeps its revisions in `services/<name>/migrations/versions/`; its `env.py` is one
call to `run_env()`, so the Alembic plumbing lives here once.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, pool, text

from services.runtime.db import sqlalchemy_url


def upgrade(database_url: str, schema: str, script_location: Path) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(database_url))
    cfg.attributes["schema"] = schema
    command.upgrade(cfg, "head")


def run_env() -> None:
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
            context.configure(connection=connection, version_table_schema=schema, target_metadata=None)
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(hashtext(:s))"), {"s": f"migrate:{schema}"})
            connection.commit()
