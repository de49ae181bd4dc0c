"""Indexes for the retention sweep (bus.retention), built concurrently: see bus.tables.

Revision ID: 0002
"""

from alembic import op

from bus.tables import create_retention_indexes, drop_retention_indexes

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    create_retention_indexes(op, "notification")


def downgrade() -> None:
    drop_retention_indexes(op, "notification")
