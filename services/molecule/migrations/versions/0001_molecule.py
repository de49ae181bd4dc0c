"""Molecule schema: molecules, properties, provenance, flags, libraries, uploads, import jobs, outbox.

Revision ID: 0001

Frozen into explicit operations (generated once from the models, then kept as they are): a later
change of the models is a new revision, never an edit here. tests/integration/test_migrations.py
checks that the migrated database equals the models.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from bus.tables import create_outbox_table, create_processed_events_table
from services.runtime.idempotency import create_idempotency_table

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "libraries",
        sa.Column("id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("organization_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("owner_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("category", sa.Text(), server_default="GENERAL", nullable=False),
        sa.Column("visibility", sa.Text(), server_default="PRIVATE", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("owner_id", "name", name="libraries_name_per_owner"),
    )
    op.create_index(op.f("ix_libraries_organization_id"), "libraries", ["organization_id"], unique=False)
    op.create_index(
        "libraries_name_per_owner_ci", "libraries", ["owner_id", sa.literal_column("lower(name)")], unique=True
    )
    op.create_table(
        "molecules",
        sa.Column("id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("organization_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("inchi_key", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), server_default="", nullable=False),
        sa.Column("smiles", sa.Text(), nullable=False),
        sa.Column("canonical_smiles", sa.Text(), nullable=False),
        sa.Column("formula", sa.Text(), nullable=False),
        sa.Column("molecular_weight", sa.Float(), nullable=False),
        sa.Column("status", sa.Text(), server_default="AVAILABLE", nullable=False),
        sa.Column("morgan_fp", sa.LargeBinary(), nullable=False),
        sa.Column("pattern_fp", sa.LargeBinary(), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("organization_id", "inchi_key", name="molecules_identity"),
    )
    op.create_index(
        "molecules_archived", "molecules", ["id"], unique=False, postgresql_where=sa.text("status = 'ARCHIVED'")
    )
    op.create_index("molecules_org_created", "molecules", ["organization_id", "created_at"], unique=False)
    op.create_table(
        "uploads",
        sa.Column("storage_key", sa.Text(), nullable=False),
        sa.Column("organization_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("filename", sa.Text(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("content_type", sa.Text(), server_default="", nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("storage_key"),
    )
    op.create_table(
        "flags",
        sa.Column("molecule_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("level", sa.Text(), server_default="", nullable=False),
        sa.Column("notes", sa.Text(), server_default="", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["molecule_id"], ["molecules.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("molecule_id", "user_id", "type"),
    )
    op.create_index("flags_user_type", "flags", ["user_id", "type"], unique=False)
    op.create_table(
        "import_jobs",
        sa.Column("id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("organization_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("storage_key", sa.Text(), nullable=False),
        sa.Column("filename", sa.Text(), nullable=False),
        sa.Column("mapping", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("dialect", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("headers", postgresql.ARRAY(sa.Text()), server_default="{}", nullable=False),
        sa.Column("mode", sa.Text(), nullable=False),
        sa.Column("library_id", sa.UUID(as_uuid=False), nullable=True),
        sa.Column("predict", postgresql.ARRAY(sa.Text()), server_default="{}", nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("total_rows", sa.Integer(), server_default="0", nullable=False),
        sa.Column("chunk_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("chunks_done", sa.Integer(), server_default="0", nullable=False),
        sa.Column("processed_rows", sa.Integer(), server_default="0", nullable=False),
        sa.Column("registered", sa.Integer(), server_default="0", nullable=False),
        sa.Column("merged", sa.Integer(), server_default="0", nullable=False),
        sa.Column("rejected", sa.Integer(), server_default="0", nullable=False),
        sa.Column("failure_reason", sa.Text(), server_default="", nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["storage_key"],
            ["uploads.storage_key"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("import_jobs_org_created", "import_jobs", ["organization_id", "created_at"], unique=False)
    op.create_table(
        "library_grants",
        sa.Column("library_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("level", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["library_id"], ["libraries.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("library_id", "user_id"),
    )
    op.create_index("library_grants_user", "library_grants", ["user_id"], unique=False)
    op.create_table(
        "library_molecules",
        sa.Column("library_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("molecule_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("added_by", sa.Text(), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["library_id"], ["libraries.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["molecule_id"], ["molecules.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("library_id", "molecule_id"),
    )
    op.create_index("library_molecules_molecule", "library_molecules", ["molecule_id"], unique=False)
    op.create_table(
        "molecule_properties",
        sa.Column("molecule_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("value_num", sa.Float(), nullable=True),
        sa.Column("value_text", sa.Text(), nullable=True),
        sa.Column("units", sa.Text(), server_default="", nullable=False),
        sa.Column(
            "provenance", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["molecule_id"], ["molecules.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("molecule_id", "name", "source"),
    )
    op.create_table(
        "molecule_provenance",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("molecule_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("job_id", sa.UUID(as_uuid=False), nullable=True),
        sa.Column("row_number", sa.Integer(), nullable=True),
        sa.Column("original_smiles", sa.Text(), nullable=False),
        sa.Column("registered_by", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["molecule_id"], ["molecules.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id", "row_number", name="provenance_once_per_row"),
    )
    op.create_index(op.f("ix_molecule_provenance_molecule_id"), "molecule_provenance", ["molecule_id"], unique=False)
    op.create_table(
        "import_chunks",
        sa.Column("job_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("chunk_index", sa.Integer(), nullable=False),
        sa.Column("phase", sa.Text(), server_default="register", nullable=False),
        sa.Column("processed_rows", sa.Integer(), nullable=False),
        sa.Column("registered", sa.Integer(), nullable=False),
        sa.Column("merged", sa.Integer(), nullable=False),
        sa.Column("rejected", sa.Integer(), nullable=False),
        sa.Column("results", sa.LargeBinary(), nullable=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["import_jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", "chunk_index", "phase"),
    )
    op.create_table(
        "import_rejections",
        sa.Column("job_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("row_number", sa.Integer(), nullable=False),
        sa.Column("cells", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["import_jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", "row_number"),
    )
    create_idempotency_table(op)
    create_outbox_table(op, "molecule")
    create_processed_events_table(op, "molecule")


def downgrade() -> None:
    op.drop_table("processed_events", schema="molecule")
    op.drop_table("outbox", schema="molecule")
    op.drop_table("idempotency_keys")
    op.drop_table("import_rejections")
    op.drop_table("import_chunks")
    op.drop_table("molecule_provenance")
    op.drop_table("molecule_properties")
    op.drop_table("library_molecules")
    op.drop_table("library_grants")
    op.drop_table("import_jobs")
    op.drop_table("flags")
    op.drop_table("uploads")
    op.drop_table("molecules")
    op.drop_table("libraries")
