"""Audit trail: the trace id of the call that did an action; indexes for the actor filter and for
object histories (entries naming an object in their details).

Revision ID: 0002

Entries stored before have an empty trace id (their hashes do not cover it). Frozen explicit
operations, like 0001.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.add_column("audit_log", sa.Column("trace_id", sa.Text(), server_default="", nullable=False))
    op.create_index(op.f("ix_audit_log_actor_id"), "audit_log", ["actor_id"], unique=False)
    op.create_index(
        "ix_audit_log_details", "audit_log", ["details"], unique=False, postgresql_using="gin",
        postgresql_ops={"details": "jsonb_path_ops"},
    )


def downgrade() -> None:
    op.drop_index("ix_audit_log_details", table_name="audit_log")
    op.drop_index(op.f("ix_audit_log_actor_id"), table_name="audit_log")
    op.drop_column("audit_log", "trace_id")
