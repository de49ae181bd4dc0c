"""Molecule schema: molecules, properties, provenance, flags, libraries, uploads, import jobs, outbox.

Revision ID: 0001
"""

from alembic import op

from bus.tables import create_outbox_table, create_processed_events_table
from services.molecule.store import SCHEMA, metadata
from services.runtime.idempotency import create_idempotency_table

revision = "0001"
down_revision = None


def upgrade() -> None:
    # The tables as store.py declares them. Before the first schema change, freeze this revision into
    # explicit op.create_table calls (alembic autogenerate) so it keeps meaning what it meant.
    metadata.create_all(op.get_bind())
    create_idempotency_table(op)
    create_outbox_table(op, SCHEMA)
    create_processed_events_table(op, SCHEMA)


def downgrade() -> None:
    metadata.drop_all(op.get_bind())
    op.drop_table("idempotency_keys")
    op.drop_table("outbox")
    op.drop_table("processed_events")
