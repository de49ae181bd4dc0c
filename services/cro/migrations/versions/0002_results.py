"""Results (issue 12): result_files (stored uploads), results (versions, at most one current per
submission by a unique partial index), result_values (aggregates), result_measurements (replicates),
result_errors (row errors with the row's cells).

Revision ID: 0002

Frozen explicit operations, like 0001.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"

_id = sa.UUID(as_uuid=False)
_EMPTY_OBJECT = sa.text("'{}'::jsonb")


def _now(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False)


def _text(name: str) -> sa.Column:
    return sa.Column(name, sa.Text(), server_default="", nullable=False)


def _count(name: str) -> sa.Column:
    return sa.Column(name, sa.Integer(), server_default="0", nullable=False)


def _result_fk() -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["result_id"], ["results.id"], ondelete="CASCADE")


def upgrade() -> None:
    op.create_table(
        "result_files",
        sa.Column("storage_key", sa.Text(), nullable=False),
        sa.Column("organization_id", _id, nullable=False),
        sa.Column("filename", sa.Text(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.Text(), nullable=False),
        _text("content_type"),
        sa.Column("created_by", sa.Text(), nullable=False),
        _now("created_at"),
        sa.PrimaryKeyConstraint("storage_key"),
    )
    op.create_table(
        "results",
        sa.Column("id", _id, nullable=False),
        sa.Column("submission_id", _id, nullable=False),
        sa.Column("organization_id", _id, nullable=False),
        sa.Column("cro_organization_id", _id, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("current", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("superseded_by", _id, nullable=True),
        sa.Column("withdrawn", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("storage_key", sa.Text(), nullable=False),
        _text("filename"),
        sa.Column("file_sha256", sa.Text(), nullable=False),
        sa.Column("input_sha256", sa.Text(), nullable=False),
        sa.Column("mapping", JSONB(), server_default=_EMPTY_OBJECT, nullable=False),
        sa.Column("column_units", JSONB(), server_default=_EMPTY_OBJECT, nullable=False),
        sa.Column("mode", sa.Text(), nullable=False),
        _text("format"),
        _text("content_sha256"),
        _count("total_rows"),
        _count("processed_rows"),
        _count("values_accepted"),
        _count("rows_rejected"),
        _count("error_count"),
        sa.Column("qc", JSONB(), server_default=_EMPTY_OBJECT, nullable=False),
        _text("qc_flag"),
        _text("qc_note"),
        _text("notes"),
        _text("failure_reason"),
        _text("review_decision"),
        _text("review_reason"),
        _text("reviewed_by"),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("uploaded_by", sa.Text(), nullable=False),
        _now("created_at"),
        _now("updated_at"),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["submission_id"], ["submissions.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["storage_key"], ["result_files.storage_key"], ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("submission_id", "version", name="results_submission_version"),
    )
    op.create_index(
        "results_one_current", "results", ["submission_id"], unique=True, postgresql_where=sa.text("current")
    )
    op.create_index("results_org_created", "results", ["organization_id", "created_at"], unique=False)
    op.create_index("results_cro_created", "results", ["cro_organization_id", "created_at"], unique=False)
    op.create_table(
        "result_values",
        sa.Column("result_id", _id, nullable=False),
        sa.Column("molecule_id", _id, nullable=False),
        sa.Column("property", sa.Text(), nullable=False),
        sa.Column("sample_code", sa.Text(), nullable=False),
        _text("units"),
        sa.Column("qualifier", sa.Text(), nullable=True),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("mean", sa.Float(), nullable=True),
        sa.Column("sd", sa.Float(), nullable=True),
        sa.Column("n", sa.Integer(), nullable=False),
        _count("n_censored"),
        _result_fk(),
        sa.PrimaryKeyConstraint("result_id", "molecule_id", "property"),
    )
    op.create_index("result_values_molecule", "result_values", ["molecule_id"], unique=False)
    op.create_table(
        "result_measurements",
        sa.Column("result_id", _id, nullable=False),
        sa.Column("row_number", sa.Integer(), nullable=False),
        sa.Column("property", sa.Text(), nullable=False),
        sa.Column("molecule_id", _id, nullable=False),
        sa.Column("sample_code", sa.Text(), nullable=False),
        sa.Column("qualifier", sa.Text(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        _text("units"),
        _text("replicate"),
        _text("notes"),
        _text("original"),
        _result_fk(),
        sa.PrimaryKeyConstraint("result_id", "row_number", "property"),
    )
    op.create_table(
        "result_errors",
        sa.Column("result_id", _id, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("row_number", sa.Integer(), nullable=False),
        _text("column_name"),
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        _text("property"),
        sa.Column("cells", JSONB(), server_default=sa.text("'[]'::jsonb"), nullable=False),
        _result_fk(),
        sa.PrimaryKeyConstraint("result_id", "seq"),
    )


def downgrade() -> None:
    op.drop_table("result_errors")
    op.drop_table("result_measurements")
    op.drop_index("result_values_molecule", table_name="result_values")
    op.drop_table("result_values")
    op.drop_index("results_cro_created", table_name="results")
    op.drop_index("results_org_created", table_name="results")
    op.drop_index("results_one_current", table_name="results", postgresql_where=sa.text("current"))
    op.drop_table("results")
    op.drop_table("result_files")
