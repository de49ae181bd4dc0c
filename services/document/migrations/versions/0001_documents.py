"""Document schema: documents, document_versions, submission_shares, outbox, processed events.

Revision ID: 0001

Explicit operations (kept as they are): a later change of the models is a new revision, never an
edit here. tests/integration/test_migrations.py checks that the migrated database equals the models.
"""

import sqlalchemy as sa
from alembic import op

from bus.tables import create_outbox_table, create_processed_events_table

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "documents",
        sa.Column("id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("organization_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("submission_id", sa.Text(), server_default="", nullable=False),
        sa.Column("document_type", sa.Text(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("current_version", sa.Integer(), nullable=False),
        sa.Column("expires_on", sa.Date(), nullable=True),
        sa.Column("template", sa.Text(), server_default="", nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("documents_org_created", "documents", ["organization_id", "created_at"], unique=False)
    op.create_index("documents_submission", "documents", ["submission_id", "organization_id"], unique=False)
    op.create_index(
        "documents_expiring",
        "documents",
        ["expires_on"],
        unique=False,
        postgresql_where=sa.text("expires_on IS NOT NULL AND status NOT IN ('EXPIRED', 'ARCHIVED')"),
    )
    op.create_table(
        "document_versions",
        sa.Column("document_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("filename", sa.Text(), nullable=False),
        sa.Column("content_type", sa.Text(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.Text(), nullable=False),
        sa.Column("origin", sa.Text(), nullable=False),
        sa.Column("signed", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("object_key", sa.Text(), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["document_id"], ["documents.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("document_id", "version"),
    )
    op.create_table(
        "submission_shares",
        sa.Column("submission_id", sa.Text(), nullable=False),
        sa.Column("owner_organization_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("cro_organization_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("shared_by", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("submission_id", "owner_organization_id", "cro_organization_id"),
    )
    op.create_index(
        "submission_shares_cro", "submission_shares", ["cro_organization_id", "submission_id"], unique=False
    )
    create_outbox_table(op, "document")
    create_processed_events_table(op, "document")


def downgrade() -> None:
    op.drop_table("processed_events", schema="document")
    op.drop_table("outbox", schema="document")
    op.drop_table("submission_shares")
    op.drop_table("document_versions")
    op.drop_table("documents")
