"""Idempotent creates (AIP-155): a retried create with the same `request_id` returns the first resource.

The key maps to the id of what the first call created, written in the same transaction as the
created data, so a retry after a lost reply can neither create twice nor see a half-done create.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.runtime.errors import ValidationError

MAX_REQUEST_ID_LENGTH = 100

metadata = sa.MetaData()
idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("scope", sa.Text, primary_key=True),
    sa.Column("request_id", sa.Text, primary_key=True),
    sa.Column("resource_id", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
)


def create_idempotency_table(op) -> None:  # type: ignore[no-untyped-def]
    """For a service's Alembic migration."""
    op.create_table(
        "idempotency_keys",
        sa.Column("scope", sa.Text, primary_key=True),
        sa.Column("request_id", sa.Text, primary_key=True),
        sa.Column("resource_id", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )


async def idempotent(
    session: AsyncSession, scope: str, request_id: str, create: Callable[[], Awaitable[str]]
) -> str:
    """Runs `create` (which returns the new resource's id) once per (scope, request_id)."""
    if not request_id:
        return await create()
    if len(request_id) > MAX_REQUEST_ID_LENGTH:
        raise ValidationError(
            "request_id is too long", field_violations=[("request_id", f"at most {MAX_REQUEST_ID_LENGTH} chars")]
        )
    # Serialize concurrent retries of the same key: the second waits for the first to commit.
    await session.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(f"{scope}|{request_id}"))))
    stored = await session.scalar(
        sa.select(idempotency_keys.c.resource_id).where(
            idempotency_keys.c.scope == scope, idempotency_keys.c.request_id == request_id
        )
    )
    if stored is not None:
        return str(stored)
    resource_id = await create()
    await session.execute(insert(idempotency_keys).values(scope=scope, request_id=request_id, resource_id=resource_id))
    return resource_id
