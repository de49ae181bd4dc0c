"""Database access: one async engine per service, scoped to the service's own schema, and column/SQL helpers.

Services run their use cases in services.runtime.uow (repositories, events)."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.sql import Executable

from services.runtime.errors import ConflictError, UnavailableError

# How long a caller is told to wait when the database cannot be reached: PostgreSQL restarts or fails
# over in seconds, and pool_pre_ping reconnects on the next request after it is back.
DATABASE_RETRY_AFTER_S = 5.0


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


def database_unavailable(error: BaseException) -> UnavailableError | None:
    """The retryable answer for a failure to reach PostgreSQL (down, restarting, connection cut, pool
    exhausted, a server-side cancel or deadlock), else None. Sending the request again is safe: a
    transaction either committed whole or not at all, and creates take a `request_id` (AIP-155)."""
    transient = isinstance(error, OperationalError | InterfaceError | PoolTimeoutError) or (
        isinstance(error, DBAPIError) and error.connection_invalidated
    )
    if not transient:
        return None
    return UnavailableError(
        "The service's database is unavailable; try again in a few seconds",
        detail="DATABASE_UNAVAILABLE",
        retry_after=DATABASE_RETRY_AFTER_S,
    )
