"""Prediction schema: jobs, batches, results, outbox, processed events.

Revision ID: 0001

Frozen into explicit operations (generated once from the models, then kept as they are): a later
change of the models is a new revision, never an edit here. tests/integration/test_migrations.py
checks that the migrated database equals the models.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from bus.tables import create_outbox_table, create_processed_events_table

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("organization_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("requested_by", sa.Text(), nullable=False),
        sa.Column("properties", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("model", sa.Text(), server_default="", nullable=False),
        sa.Column("reason", sa.Text(), server_default="", nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("completed", sa.Integer(), server_default="0", nullable=False),
        sa.Column("failed", sa.Integer(), server_default="0", nullable=False),
        sa.Column("batch_count", sa.Integer(), nullable=False),
        sa.Column("batches_done", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("jobs_org_created", "jobs", ["organization_id", "created_at"], unique=False)
    op.create_table(
        "batches",
        sa.Column("job_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("batch_index", sa.Integer(), nullable=False),
        sa.Column("molecules", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "failures", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False
        ),
        sa.Column("unsupported", postgresql.ARRAY(sa.Text()), server_default="{}", nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", "batch_index"),
    )
    op.create_table(
        "results",
        sa.Column("job_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("molecule_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("property", sa.Text(), nullable=False),
        sa.Column("organization_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("units", sa.Text(), server_default="", nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("model_name", sa.Text(), nullable=False),
        sa.Column("model_version", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", "molecule_id", "property"),
    )
    op.create_index(
        "results_molecule", "results", ["organization_id", "molecule_id", "property", "created_at"], unique=False
    )
    create_outbox_table(op, "prediction")
    create_processed_events_table(op, "prediction")


def downgrade() -> None:
    op.drop_table("processed_events", schema="prediction")
    op.drop_table("outbox", schema="prediction")
    op.drop_table("results")
    op.drop_table("batches")
    op.drop_table("jobs")
