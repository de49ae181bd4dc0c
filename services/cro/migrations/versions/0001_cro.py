"""CRO schema: cro_services, submissions, submission_molecules (one active submission per molecule, by a
unique partial index), quotes, submission_steps, submission_packages, messages, message_reads,
idempotency keys, outbox, processed events.

Revision ID: 0001

Explicit operations (kept as they are): a later change of the models is a new revision, never an
edit here. tests/integration/test_migrations.py checks that the migrated database equals the models.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from bus.tables import create_outbox_table, create_processed_events_table
from services.runtime.idempotency import create_idempotency_table

revision = "0001"
down_revision = None

_id = sa.UUID(as_uuid=False)
MONEY = sa.Numeric(14, 2)


def _now(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False)


def _submission_fk() -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["submission_id"], ["submissions.id"], ondelete="CASCADE")


def upgrade() -> None:
    op.create_table(
        "cro_services",
        sa.Column("id", _id, nullable=False),
        sa.Column("organization_id", _id, nullable=False),
        sa.Column("organization_name", sa.Text(), server_default="", nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("service_type", sa.Text(), nullable=False),
        sa.Column("base_price", MONEY, nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("turnaround_days", sa.Integer(), nullable=False),
        sa.Column("specification_schema", JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        _now("created_at"),
        _now("updated_at"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("cro_services_org", "cro_services", ["organization_id", "name"], unique=False)
    op.create_index("cro_services_type", "cro_services", ["service_type", "active"], unique=False)
    op.create_table(
        "submissions",
        sa.Column("id", _id, nullable=False),
        sa.Column("organization_id", _id, nullable=False),
        sa.Column("cro_organization_id", _id, nullable=False),
        sa.Column("cro_service_id", _id, nullable=False),
        sa.Column("service_type", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("sample_prefix", sa.Text(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("budget", MONEY, nullable=True),
        sa.Column("specifications", JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("approved_quote_number", sa.Integer(), nullable=True),
        sa.Column("package_sha256", sa.Text(), server_default="", nullable=False),
        sa.Column("estimated_completion", sa.Date(), nullable=True),
        sa.Column("structures_revealed", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        _now("created_at"),
        _now("updated_at"),
        sa.ForeignKeyConstraint(["cro_service_id"], ["cro_services.id"], ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("submissions_org_created", "submissions", ["organization_id", "created_at"], unique=False)
    op.create_index("submissions_cro_status", "submissions", ["cro_organization_id", "status"], unique=False)
    op.create_index("submissions_service", "submissions", ["cro_service_id"], unique=False)
    op.create_table(
        "submission_molecules",
        sa.Column("submission_id", _id, nullable=False),
        sa.Column("molecule_id", _id, nullable=False),
        sa.Column("organization_id", _id, nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("concentration", sa.Text(), server_default="", nullable=False),
        sa.Column("notes", sa.Text(), server_default="", nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("sample_code", sa.Text(), server_default="", nullable=False),
        sa.Column("canonical_smiles", sa.Text(), server_default="", nullable=False),
        sa.Column("formula", sa.Text(), server_default="", nullable=False),
        sa.Column("molecular_weight", sa.Float(), nullable=True),
        sa.Column("inchi_key", sa.Text(), server_default="", nullable=False),
        sa.Column("registration_number", sa.Text(), server_default="", nullable=False),
        _submission_fk(),
        sa.PrimaryKeyConstraint("submission_id", "molecule_id"),
    )
    op.create_index(
        "submission_molecules_one_active",
        "submission_molecules",
        ["organization_id", "molecule_id"],
        unique=True,
        postgresql_where=sa.text("active"),
    )
    op.create_index("submission_molecules_molecule", "submission_molecules", ["molecule_id"], unique=False)
    op.create_table(
        "quotes",
        sa.Column("submission_id", _id, nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("price", MONEY, nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("turnaround_days", sa.Integer(), nullable=False),
        sa.Column("valid_until", sa.Date(), nullable=False),
        sa.Column("line_items", JSONB(), server_default=sa.text("'[]'::jsonb"), nullable=False),
        sa.Column("over_budget", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("note", sa.Text(), server_default="", nullable=False),
        sa.Column("provided_by", sa.Text(), nullable=False),
        sa.Column("provided_at", sa.DateTime(timezone=True), nullable=False),
        _submission_fk(),
        sa.PrimaryKeyConstraint("submission_id", "number"),
    )
    op.create_table(
        "submission_steps",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("submission_id", _id, nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), server_default="", nullable=False),
        _submission_fk(),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("submission_steps_submission", "submission_steps", ["submission_id", "id"], unique=False)
    op.create_table(
        "submission_packages",
        sa.Column("submission_id", _id, nullable=False),
        sa.Column("sha256", sa.Text(), nullable=False),
        sa.Column("storage_key", sa.Text(), nullable=False),
        _now("built_at"),
        _submission_fk(),
        sa.PrimaryKeyConstraint("submission_id"),
    )
    op.create_table(
        "messages",
        sa.Column("id", _id, nullable=False),
        sa.Column("seq", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("submission_id", _id, nullable=False),
        sa.Column("author_id", sa.Text(), nullable=False),
        sa.Column("side", sa.Text(), server_default="", nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("document_id", sa.Text(), server_default="", nullable=False),
        sa.Column("change_request", sa.Boolean(), server_default=sa.false(), nullable=False),
        _now("created_at"),
        _submission_fk(),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("seq"),
    )
    op.create_index("messages_submission_seq", "messages", ["submission_id", "seq"], unique=False)
    op.create_table(
        "message_reads",
        sa.Column("submission_id", _id, nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("last_read_seq", sa.BigInteger(), server_default="0", nullable=False),
        _now("read_at"),
        _submission_fk(),
        sa.PrimaryKeyConstraint("submission_id", "user_id"),
    )
    create_idempotency_table(op)
    create_outbox_table(op, "cro")
    create_processed_events_table(op, "cro")


def downgrade() -> None:
    op.drop_table("processed_events", schema="cro")
    op.drop_table("outbox", schema="cro")
    op.drop_table("idempotency_keys")
    for table in (
        "message_reads",
        "messages",
        "submission_packages",
        "submission_steps",
        "quotes",
        "submission_molecules",
        "submissions",
        "cro_services",
    ):
        op.drop_table(table)
