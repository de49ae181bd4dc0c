"""The bus's tables in a service's own schema: the outbox and the processed-events ledger.

Each table is described once (a function returning fresh columns and indexes); the same
description builds the SQLAlchemy Core table the code queries and the table a service's Alembic
migration creates:

    def upgrade() -> None:
        create_outbox_table(op, "identity")
        create_processed_events_table(op, "identity")
"""

from __future__ import annotations

from functools import cache
from typing import Any, Protocol

from sqlalchemy import (
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.schema import SchemaItem

OUTBOX = "outbox"
PROCESSED_EVENTS = "processed_events"
OUTBOX_PUBLISHED_INDEX = "outbox_published_idx"
PROCESSED_AT_INDEX = "processed_events_processed_at_idx"

_metadata = MetaData()


class Migrator(Protocol):
    """What the migration helpers need of Alembic: `alembic.op` itself or an `Operations`."""

    def create_table(self, table_name: str, *columns: SchemaItem, **kw: Any) -> Any: ...

    def drop_table(self, table_name: str, *, schema: str | None = None, **kw: Any) -> None: ...

    def create_index(self, index_name: str, table_name: str, columns: Any, **kw: Any) -> Any: ...

    def drop_index(self, index_name: str, table_name: str | None = None, **kw: Any) -> Any: ...

    def get_context(self) -> Any: ...


def _outbox() -> list[SchemaItem]:
    return [
        Column("id", Uuid, primary_key=True),  # = EventEnvelope.id = Nats-Msg-Id
        Column("subject", Text, nullable=False),
        Column("payload", LargeBinary, nullable=False),  # serialized EventEnvelope
        # W3C trace context of the writing request, so the publish span joins its trace.
        Column("headers", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("published_at", DateTime(timezone=True)),
        Column("attempts", Integer, nullable=False, server_default=text("0")),
        # The relay only ever scans unpublished rows; this keeps that scan small however long the table grows.
        Index("outbox_unpublished_idx", "created_at", postgresql_where=text("published_at IS NULL")),
        # The retention sweep (bus.retention) deletes the oldest published rows in batches.
        Index(OUTBOX_PUBLISHED_INDEX, "published_at", postgresql_where=text("published_at IS NOT NULL")),
    ]


def _processed_events() -> list[SchemaItem]:
    return [
        Column("consumer", Text, nullable=False),
        Column("event_id", Text, nullable=False),
        Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        PrimaryKeyConstraint("consumer", "event_id"),
        Index(PROCESSED_AT_INDEX, "processed_at"),  # the retention sweep's oldest-first batches
    ]


@cache
def outbox_table(schema: str) -> Table:
    return Table(OUTBOX, _metadata, *_outbox(), schema=schema)


@cache
def processed_events_table(schema: str) -> Table:
    return Table(PROCESSED_EVENTS, _metadata, *_processed_events(), schema=schema)


def create_outbox_table(op: Migrator, schema: str) -> None:
    op.create_table(OUTBOX, *_outbox(), schema=schema)


def drop_outbox_table(op: Migrator, schema: str) -> None:
    op.drop_table(OUTBOX, schema=schema)


def create_processed_events_table(op: Migrator, schema: str) -> None:
    op.create_table(PROCESSED_EVENTS, *_processed_events(), schema=schema)


def drop_processed_events_table(op: Migrator, schema: str) -> None:
    op.drop_table(PROCESSED_EVENTS, schema=schema)


def create_retention_indexes(op: Migrator, schema: str, *, processed_events: bool = True) -> None:
    """The indexes bus.retention's sweep needs, for schemas created before it (new tables have them, hence
    IF NOT EXISTS). Built CONCURRENTLY, outside the migration's transaction: an outbox that was never
    pruned may be large, and a plain CREATE INDEX would block the services' writes while it builds."""
    with op.get_context().autocommit_block():
        op.create_index(
            OUTBOX_PUBLISHED_INDEX, OUTBOX, ["published_at"], schema=schema, postgresql_concurrently=True,
            postgresql_where=text("published_at IS NOT NULL"), if_not_exists=True,
        )
        if processed_events:
            op.create_index(
                PROCESSED_AT_INDEX, PROCESSED_EVENTS, ["processed_at"], schema=schema,
                postgresql_concurrently=True, if_not_exists=True,
            )


def drop_retention_indexes(op: Migrator, schema: str, *, processed_events: bool = True) -> None:
    op.drop_index(OUTBOX_PUBLISHED_INDEX, OUTBOX, schema=schema)
    if processed_events:
        op.drop_index(PROCESSED_AT_INDEX, PROCESSED_EVENTS, schema=schema)
