"""Indexes for the retention sweep (bus.retention), built concurrently: see bus.tables.

Revision ID: 0004
"""

from alembic import op

from bus.tables import create_retention_indexes, drop_retention_indexes

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    create_retention_indexes(op, "molecule")


def downgrade() -> None:
    drop_retention_indexes(op, "molecule")
