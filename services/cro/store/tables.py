"""CRO tables (schema `cro`) as SQLAlchemy Core; the migration creates the same shapes.

`submission_molecules.active` mirrors "the submission is active" (SUBMITTED … RESULTS_REVIEWED) and is
kept with the status, so the unique partial index can say, in the database, that a molecule is in at
most one active submission of its organization. The snapshot columns (smiles, formula, …) are written
at SUBMIT and never change afterwards: they are what was sent.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, UUID

from services.runtime.db import timestamp_column

SCHEMA = "cro"

metadata = sa.MetaData()

_id = UUID(as_uuid=False)
MONEY = sa.Numeric(14, 2)

cro_services = sa.Table(
    "cro_services",
    metadata,
    sa.Column("id", _id, primary_key=True),
    sa.Column("organization_id", _id, nullable=False),
    # As identity named it when the service was created or last changed (shown to pharma users, who may
    # not read the CRO organization themselves).
    sa.Column("organization_name", sa.Text, nullable=False, server_default=""),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("service_type", sa.Text, nullable=False),
    sa.Column("base_price", MONEY, nullable=False),
    sa.Column("currency", sa.Text, nullable=False),
    sa.Column("turnaround_days", sa.Integer, nullable=False),
    sa.Column("specification_schema", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("created_by", sa.Text, nullable=False),
    timestamp_column("created_at", nullable=False, default_now=True),
    timestamp_column("updated_at", nullable=False, default_now=True),
    sa.Index("cro_services_org", "organization_id", "name"),
    sa.Index("cro_services_type", "service_type", "active"),
)

submissions = sa.Table(
    "submissions",
    metadata,
    sa.Column("id", _id, primary_key=True),
    sa.Column("organization_id", _id, nullable=False),
    sa.Column("cro_organization_id", _id, nullable=False),
    sa.Column("cro_service_id", _id, sa.ForeignKey("cro_services.id", ondelete="RESTRICT"), nullable=False),
    sa.Column("service_type", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("sample_prefix", sa.Text, nullable=False),
    sa.Column("currency", sa.Text, nullable=False),
    sa.Column("budget", MONEY),
    sa.Column("specifications", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("approved_quote_number", sa.Integer),
    sa.Column("package_sha256", sa.Text, nullable=False, server_default=""),
    sa.Column("estimated_completion", sa.Date),
    sa.Column("structures_revealed", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_by", sa.Text, nullable=False),
    timestamp_column("created_at", nullable=False, default_now=True),
    timestamp_column("updated_at", nullable=False, default_now=True),
    sa.Index("submissions_org_created", "organization_id", "created_at"),
    sa.Index("submissions_cro_status", "cro_organization_id", "status"),
    sa.Index("submissions_service", "cro_service_id"),
)

submission_molecules = sa.Table(
    "submission_molecules",
    metadata,
    sa.Column("submission_id", _id, sa.ForeignKey("submissions.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("molecule_id", _id, primary_key=True),
    sa.Column("organization_id", _id, nullable=False),  # the pharma organization (the index's scope)
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("concentration", sa.Text, nullable=False, server_default=""),
    sa.Column("notes", sa.Text, nullable=False, server_default=""),
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("sample_code", sa.Text, nullable=False, server_default=""),
    sa.Column("canonical_smiles", sa.Text, nullable=False, server_default=""),
    sa.Column("formula", sa.Text, nullable=False, server_default=""),
    sa.Column("molecular_weight", sa.Float),
    sa.Column("inchi_key", sa.Text, nullable=False, server_default=""),
    sa.Column("registration_number", sa.Text, nullable=False, server_default=""),
    # A molecule is in at most one active submission: enforced here, not only in code.
    sa.Index(
        "submission_molecules_one_active",
        "organization_id",
        "molecule_id",
        unique=True,
        postgresql_where=sa.text("active"),
    ),
    sa.Index("submission_molecules_molecule", "molecule_id"),
)

quotes = sa.Table(
    "quotes",
    metadata,
    sa.Column("submission_id", _id, sa.ForeignKey("submissions.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("number", sa.Integer, primary_key=True),
    sa.Column("price", MONEY, nullable=False),
    sa.Column("currency", sa.Text, nullable=False),
    sa.Column("turnaround_days", sa.Integer, nullable=False),
    sa.Column("valid_until", sa.Date, nullable=False),
    sa.Column("line_items", JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
    sa.Column("over_budget", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("note", sa.Text, nullable=False, server_default=""),
    sa.Column("provided_by", sa.Text, nullable=False),
    timestamp_column("provided_at", nullable=False),
)

submission_steps = sa.Table(
    "submission_steps",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("submission_id", _id, sa.ForeignKey("submissions.id", ondelete="CASCADE"), nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    timestamp_column("at", nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    sa.Index("submission_steps_submission", "submission_id", "id"),
)

submission_packages = sa.Table(
    "submission_packages",
    metadata,
    sa.Column("submission_id", _id, sa.ForeignKey("submissions.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("sha256", sa.Text, nullable=False),
    sa.Column("storage_key", sa.Text, nullable=False),
    timestamp_column("built_at", nullable=False, default_now=True),
)

messages = sa.Table(
    "messages",
    metadata,
    sa.Column("id", _id, primary_key=True),
    # The thread's order (and WatchMessages' `after_id` cursor): ids are random, this is not.
    sa.Column("seq", sa.BigInteger, sa.Identity(), nullable=False, unique=True),
    sa.Column("submission_id", _id, sa.ForeignKey("submissions.id", ondelete="CASCADE"), nullable=False),
    sa.Column("author_id", sa.Text, nullable=False),
    sa.Column("side", sa.Text, nullable=False, server_default=""),  # PHARMA | CRO | "" (a system_admin)
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("document_id", sa.Text, nullable=False, server_default=""),
    sa.Column("change_request", sa.Boolean, nullable=False, server_default=sa.false()),
    timestamp_column("created_at", nullable=False, default_now=True),
    sa.Index("messages_submission_seq", "submission_id", "seq"),
)

message_reads = sa.Table(
    "message_reads",
    metadata,
    sa.Column("submission_id", _id, sa.ForeignKey("submissions.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("last_read_seq", sa.BigInteger, nullable=False, server_default="0"),
    timestamp_column("read_at", nullable=False, default_now=True),
)

# --- results (issue 12) ----------------------------------------------------------------------------------
# A stored results CSV (UploadResults): the bytes are in object storage, under the CRO organization.
result_files = sa.Table(
    "result_files",
    metadata,
    sa.Column("storage_key", sa.Text, primary_key=True),
    sa.Column("organization_id", _id, nullable=False),  # the uploading CRO organization
    sa.Column("filename", sa.Text, nullable=False),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.Text, nullable=False),
    sa.Column("content_type", sa.Text, nullable=False, server_default=""),
    sa.Column("created_by", sa.Text, nullable=False),
    timestamp_column("created_at", nullable=False, default_now=True),
)

# One processed upload of a submission's measured values: a version. `current` marks the version that
# counts (at most one per submission, enforced by the partial unique index); `input_sha256` (file bytes +
# mapping + mode) makes processing the same file again answer the current version instead of a new one.
results = sa.Table(
    "results",
    metadata,
    sa.Column("id", _id, primary_key=True),
    sa.Column("submission_id", _id, sa.ForeignKey("submissions.id", ondelete="CASCADE"), nullable=False),
    sa.Column("organization_id", _id, nullable=False),  # the pharma organization
    sa.Column("cro_organization_id", _id, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("status", sa.Text, nullable=False),  # PENDING | PROCESSING | COMPLETED | FAILED | REJECTED
    sa.Column("current", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("superseded_by", _id),
    sa.Column("withdrawn", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("storage_key", sa.Text, sa.ForeignKey("result_files.storage_key", ondelete="RESTRICT"), nullable=False),
    sa.Column("filename", sa.Text, nullable=False, server_default=""),
    sa.Column("file_sha256", sa.Text, nullable=False),
    sa.Column("input_sha256", sa.Text, nullable=False),
    sa.Column("mapping", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("column_units", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("mode", sa.Text, nullable=False),  # keep_valid | reject_all
    sa.Column("format", sa.Text, nullable=False, server_default=""),  # LONG | WIDE
    sa.Column("content_sha256", sa.Text, nullable=False, server_default=""),
    sa.Column("total_rows", sa.Integer, nullable=False, server_default="0"),
    sa.Column("processed_rows", sa.Integer, nullable=False, server_default="0"),
    sa.Column("values_accepted", sa.Integer, nullable=False, server_default="0"),
    sa.Column("rows_rejected", sa.Integer, nullable=False, server_default="0"),
    sa.Column("error_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("qc", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("qc_flag", sa.Text, nullable=False, server_default=""),  # PASSED | WARNING | FAILED
    sa.Column("qc_note", sa.Text, nullable=False, server_default=""),
    sa.Column("notes", sa.Text, nullable=False, server_default=""),
    sa.Column("failure_reason", sa.Text, nullable=False, server_default=""),
    sa.Column("review_decision", sa.Text, nullable=False, server_default=""),  # ACCEPTED | REJECTED
    sa.Column("review_reason", sa.Text, nullable=False, server_default=""),
    sa.Column("reviewed_by", sa.Text, nullable=False, server_default=""),
    timestamp_column("reviewed_at"),
    sa.Column("uploaded_by", sa.Text, nullable=False),
    timestamp_column("created_at", nullable=False, default_now=True),
    timestamp_column("updated_at", nullable=False, default_now=True),
    timestamp_column("finished_at"),
    sa.UniqueConstraint("submission_id", "version", name="results_submission_version"),
    sa.Index("results_one_current", "submission_id", unique=True, postgresql_where=sa.text("current")),
    sa.Index("results_org_created", "organization_id", "created_at"),
    sa.Index("results_cro_created", "cro_organization_id", "created_at"),
)

# The accepted values of a version, one per (molecule, property): the replicates aggregated.
result_values = sa.Table(
    "result_values",
    metadata,
    sa.Column("result_id", _id, sa.ForeignKey("results.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("molecule_id", _id, primary_key=True),
    sa.Column("property", sa.Text, primary_key=True),
    sa.Column("sample_code", sa.Text, nullable=False),
    sa.Column("units", sa.Text, nullable=False, server_default=""),
    sa.Column("qualifier", sa.Text),  # = ~ < >; NULL: replicates censored both ways (conflicting)
    sa.Column("value", sa.Float),
    sa.Column("mean", sa.Float),
    sa.Column("sd", sa.Float),
    sa.Column("n", sa.Integer, nullable=False),
    sa.Column("n_censored", sa.Integer, nullable=False, server_default="0"),
    sa.Index("result_values_molecule", "molecule_id"),
)

# The accepted replicates of a version, as read (canonical units).
result_measurements = sa.Table(
    "result_measurements",
    metadata,
    sa.Column("result_id", _id, sa.ForeignKey("results.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("row_number", sa.Integer, primary_key=True),
    sa.Column("property", sa.Text, primary_key=True),
    sa.Column("molecule_id", _id, nullable=False),
    sa.Column("sample_code", sa.Text, nullable=False),
    sa.Column("qualifier", sa.Text, nullable=False),
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("units", sa.Text, nullable=False, server_default=""),
    sa.Column("replicate", sa.Text, nullable=False, server_default=""),
    sa.Column("notes", sa.Text, nullable=False, server_default=""),
    sa.Column("original", sa.Text, nullable=False, server_default=""),
)

# The row errors of a version, with the row's original cells for the error report.
result_errors = sa.Table(
    "result_errors",
    metadata,
    sa.Column("result_id", _id, sa.ForeignKey("results.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("row_number", sa.Integer, nullable=False),
    sa.Column("column_name", sa.Text, nullable=False, server_default=""),
    sa.Column("code", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("property", sa.Text, nullable=False, server_default=""),
    sa.Column("cells", JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
)
