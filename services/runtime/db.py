"""Database access: one async engine per service, scoped to the service's own schema, and column/SQL helpers.

Services run their use cases in services.runtime.uow (repositories, events)."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.sql import Executable

from services.runtime.errors import ConflictError


def sqlalchemy_url(url: str, *, async_driver: bool = True) -> str:
    """DATABASE_URL is a plain postgresql:// URL; SQLAlchemy wants the psycopg 3 dialect named."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    raise ValueError(f"DATABASE_URL must be a postgresql:// URL, got {url.split(':', 1)[0]}://…")


def make_engine(url: str, schema: str, *, pool_size: int = 10) -> AsyncEngine:
    # search_path pins every unqualified name to the service's own schema.
    return create_async_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        hide_parameters=True,  # error texts must never quote values: they may be passwords or tokens
        connect_args={"options": f"-c search_path={schema},public"},
    )


def timestamp_column(name: str, *, nullable: bool = True, default_now: bool = False) -> sa.Column:
    """A timezone-aware timestamp column, optionally defaulting to the database's now()."""
    return sa.Column(
        name, sa.DateTime(timezone=True), nullable=nullable, server_default=sa.func.now() if default_now else None
    )


def canonical_uuid(value: object) -> str | None:
    """The lower-case hyphenated form of a UUID, or None: a malformed id matches nothing (a 404,
    not a database error)."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return None


async def execute_unique(session: AsyncSession, statement: Executable, conflict: ConflictError) -> None:
    """Runs an insert or update whose unique constraint may clash; a clash becomes `conflict` (409)
    and leaves the surrounding transaction usable."""
    try:
        async with session.begin_nested():
            await session.execute(statement)
    except IntegrityError as exc:
        raise conflict from exc
