"""Molecule status driven by submissions: which submission event set it, and when.

Revision ID: 0003

`status_submission_id` and `status_set_at` remember the SubmissionTransitioned that last set a
molecule's status, so an older event delivered late never overwrites a newer status. Frozen
explicit operations, like 0001.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.add_column("molecules", sa.Column("status_submission_id", sa.UUID(as_uuid=False), nullable=True))
    op.add_column("molecules", sa.Column("status_set_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("molecules", "status_set_at")
    op.drop_column("molecules", "status_submission_id")
