"""Signature requests, their signers, and the DocuSign Connect events already applied.

Revision ID: 0002
Revises: 0001

Explicit operations (kept as they are): a later change of the models is a new revision, never an
edit here.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"

_FINISHED = "status NOT IN ('COMPLETED', 'DECLINED', 'EXPIRED', 'VOIDED')"


def upgrade() -> None:
    op.create_table(
        "signature_requests",
        sa.Column("id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("document_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("organization_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("submission_id", sa.Text(), server_default="", nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.Text(), nullable=False),
        sa.Column("signed_version", sa.Integer(), server_default="0", nullable=False),
        sa.Column("envelope_id", sa.Text(), server_default="", nullable=False),
        sa.Column("message", sa.Text(), server_default="", nullable=False),
        sa.Column("requested_by", sa.Text(), nullable=False),
        sa.Column("idempotency_key", sa.Text(), server_default="", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["document_id"], ["documents.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("signature_requests_document", "signature_requests", ["document_id", "created_at"], unique=False)
    op.create_index(
        "signature_requests_one_open", "signature_requests", ["document_id"], unique=True,
        postgresql_where=sa.text(_FINISHED),
    )
    op.create_index(
        "signature_requests_envelope", "signature_requests", ["envelope_id"], unique=True,
        postgresql_where=sa.text("envelope_id <> ''"),
    )
    op.create_index(
        "signature_requests_idempotency", "signature_requests", ["document_id", "idempotency_key"], unique=True,
        postgresql_where=sa.text("idempotency_key <> ''"),
    )
    op.create_table(
        "signature_signers",
        sa.Column("request_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("routing_order", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Text(), server_default="", nullable=False),
        sa.Column("organization_id", sa.Text(), server_default="", nullable=False),
        sa.Column("role", sa.Text(), server_default="", nullable=False),
        sa.Column("name", sa.Text(), server_default="", nullable=False),
        sa.Column("email", sa.Text(), server_default="", nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("signed_by", sa.Text(), server_default="", nullable=False),
        sa.Column("printed_name", sa.Text(), server_default="", nullable=False),
        sa.Column("signer_email", sa.Text(), server_default="", nullable=False),
        sa.Column("signer_organization_id", sa.Text(), server_default="", nullable=False),
        sa.Column("meaning", sa.Text(), server_default="", nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("signed_sha256", sa.Text(), server_default="", nullable=False),
        sa.Column("decline_reason", sa.Text(), server_default="", nullable=False),
        sa.ForeignKeyConstraint(["request_id"], ["signature_requests.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("request_id", "position"),
    )
    op.create_table(
        "applied_connect_events",
        sa.Column("event_key", sa.Text(), nullable=False),
        sa.Column("envelope_id", sa.Text(), nullable=False),
        sa.Column("event", sa.Text(), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("event_key"),
    )


def downgrade() -> None:
    op.drop_table("applied_connect_events")
    op.drop_table("signature_signers")
    op.drop_index("signature_requests_idempotency", table_name="signature_requests")
    op.drop_index("signature_requests_envelope", table_name="signature_requests")
    op.drop_index("signature_requests_one_open", table_name="signature_requests")
    op.drop_index("signature_requests_document", table_name="signature_requests")
    op.drop_table("signature_requests")
