"""Indexes for the retention sweep (bus.retention), built concurrently: see bus.tables.

Revision ID: 0003
"""

from alembic import op

from bus.tables import create_retention_indexes, drop_retention_indexes

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    create_retention_indexes(op, "identity", processed_events=False)


def downgrade() -> None:
    drop_retention_indexes(op, "identity", processed_events=False)
