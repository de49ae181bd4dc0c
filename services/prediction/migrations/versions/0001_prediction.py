"""Prediction schema: jobs, batches, results, outbox, processed events.

Revision ID: 0001
"""

from alembic import op

from bus.tables import create_outbox_table, create_processed_events_table
from services.prediction.store import SCHEMA, metadata

revision = "0001"
down_revision = None


def upgrade() -> None:
    # The tables as store.py declares them (freeze into explicit op.create_table before a schema change).
    metadata.create_all(op.get_bind())
    create_outbox_table(op, SCHEMA)
    create_processed_events_table(op, SCHEMA)


def downgrade() -> None:
    metadata.drop_all(op.get_bind())
    op.drop_table("outbox")
    op.drop_table("processed_events")
