"""Molecule tables (schema `molecule`) as SQLAlchemy Core; the migration creates the same shapes.

Identity of a molecule is (organization_id, inchi_key) of its standardized parent. Property
values are rows keyed by (molecule, name, source) so every source is kept side by side; the
effective value a filter or sort uses is EXPERIMENTAL > IMPORTED > PREDICTED > CALCULATED.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

from services.runtime.db import timestamp_column

SCHEMA = "molecule"

metadata = sa.MetaData()

_id = UUID(as_uuid=False)


molecules = sa.Table(
    "molecules",
    metadata,
    sa.Column("id", _id, primary_key=True),
    sa.Column("organization_id", _id, nullable=False),
    sa.Column("inchi_key", sa.Text, nullable=False),
    # <PREFIX>-000123: unique in the organization, issued in registration order, never reused.
    sa.Column("registration_number", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False, server_default=""),
    sa.Column("smiles", sa.Text, nullable=False),  # as first submitted
    sa.Column("canonical_smiles", sa.Text, nullable=False),  # of the standardized parent
    sa.Column("formula", sa.Text, nullable=False),
    sa.Column("molecular_weight", sa.Float, nullable=False),
    sa.Column("status", sa.Text, nullable=False, server_default="AVAILABLE"),
    # The submission event that last set `status` (SubmissionTransitioned), and its time: an older one
    # delivered late is ignored.
    sa.Column("status_submission_id", _id),
    timestamp_column("status_set_at"),
    sa.Column("morgan_fp", sa.LargeBinary, nullable=False),  # radius 2, 2048 bits, packed little-endian
    sa.Column("pattern_fp", sa.LargeBinary, nullable=False),  # RDKit pattern fingerprint, 2048 bits
    sa.Column("created_by", sa.Text, nullable=False),
    timestamp_column("created_at", nullable=False, default_now=True),
    timestamp_column("updated_at", nullable=False, default_now=True),
    sa.UniqueConstraint("organization_id", "inchi_key", name="molecules_identity"),
    sa.UniqueConstraint("organization_id", "registration_number", name="molecules_registration_number"),
    sa.Index("molecules_org_created", "organization_id", "created_at"),
    # Few rows: lets "members that are not archived" (library counts) skip a scan of every molecule.
    sa.Index("molecules_archived", "id", postgresql_where=sa.text("status = 'ARCHIVED'")),
)

# One row per organization: the prefix and the next number; `locked` once a number was issued (the
# prefix may change only before). Registrations take this row's lock, so numbers follow commit order.
registration_counters = sa.Table(
    "registration_counters",
    metadata,
    sa.Column("organization_id", _id, primary_key=True),
    sa.Column("prefix", sa.Text, nullable=False),
    sa.Column("next_value", sa.BigInteger, nullable=False, server_default="1"),
    sa.Column("locked", sa.Boolean, nullable=False, server_default=sa.false()),
)

# Names a molecule was imported under (the file's name / id column): partners' ids, looked up exactly.
molecule_aliases = sa.Table(
    "molecule_aliases",
    metadata,
    sa.Column("organization_id", _id, primary_key=True),
    sa.Column("alias", sa.Text, primary_key=True),
    sa.Column("molecule_id", _id, sa.ForeignKey("molecules.id", ondelete="CASCADE"), nullable=False, index=True),
    timestamp_column("created_at", nullable=False, default_now=True),
)

molecule_properties = sa.Table(
    "molecule_properties",
    metadata,
    sa.Column("molecule_id", _id, sa.ForeignKey("molecules.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("source", sa.Text, primary_key=True),  # CALCULATED | IMPORTED | PREDICTED | EXPERIMENTAL
    sa.Column("value_num", sa.Float),
    sa.Column("value_text", sa.Text),
    sa.Column("units", sa.Text, nullable=False, server_default=""),
    # Where the value came from: {"job_id", "row"} for imports, {"prediction_job_id", "model", …} for predictions.
    sa.Column("provenance", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    timestamp_column("updated_at", nullable=False, default_now=True),
)

# Every registration of a structure: which upload and row (or API call) brought it, as submitted.
molecule_provenance = sa.Table(
    "molecule_provenance",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("molecule_id", _id, sa.ForeignKey("molecules.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("job_id", _id),  # null for API registrations
    sa.Column("row_number", sa.Integer),
    sa.Column("original_smiles", sa.Text, nullable=False),
    sa.Column("registered_by", sa.Text, nullable=False),
    timestamp_column("created_at", nullable=False, default_now=True),
    sa.UniqueConstraint("job_id", "row_number", name="provenance_once_per_row"),
)

flags = sa.Table(
    "flags",
    metadata,
    sa.Column("molecule_id", _id, sa.ForeignKey("molecules.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("type", sa.Text, primary_key=True),  # PRIORITY | FAVORITE | REVIEW
    sa.Column("level", sa.Text, nullable=False, server_default=""),  # HIGH | MEDIUM | LOW for PRIORITY
    sa.Column("notes", sa.Text, nullable=False, server_default=""),
    timestamp_column("created_at", nullable=False, default_now=True),
    sa.Index("flags_user_type", "user_id", "type"),
)

libraries = sa.Table(
    "libraries",
    metadata,
    sa.Column("id", _id, primary_key=True),
    sa.Column("organization_id", _id, nullable=False, index=True),
    sa.Column("owner_id", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("category", sa.Text, nullable=False, server_default="GENERAL"),
    sa.Column("visibility", sa.Text, nullable=False, server_default="PRIVATE"),  # PRIVATE | ORGANIZATION
    timestamp_column("created_at", nullable=False, default_now=True),
    timestamp_column("updated_at", nullable=False, default_now=True),
    sa.UniqueConstraint("owner_id", "name", name="libraries_name_per_owner"),
)
# Names are unique per owner ignoring case too ("Hits" and "hits" are one name in a picker).
sa.Index("libraries_name_per_owner_ci", libraries.c.owner_id, sa.func.lower(libraries.c.name), unique=True)

library_molecules = sa.Table(
    "library_molecules",
    metadata,
    sa.Column("library_id", _id, sa.ForeignKey("libraries.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("molecule_id", _id, sa.ForeignKey("molecules.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("added_by", sa.Text, nullable=False),
    timestamp_column("added_at", nullable=False, default_now=True),
    sa.Index("library_molecules_molecule", "molecule_id"),
)

library_grants = sa.Table(
    "library_grants",
    metadata,
    sa.Column("library_id", _id, sa.ForeignKey("libraries.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("level", sa.Text, nullable=False),  # OWNER | EDITOR | VIEWER
    sa.Index("library_grants_user", "user_id"),  # "libraries shared with me"
)

uploads = sa.Table(
    "uploads",
    metadata,
    sa.Column("storage_key", sa.Text, primary_key=True),
    sa.Column("organization_id", _id, nullable=False),
    sa.Column("filename", sa.Text, nullable=False),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    sa.Column("content_type", sa.Text, nullable=False, server_default=""),
    sa.Column("created_by", sa.Text, nullable=False),
    timestamp_column("created_at", nullable=False, default_now=True),
)

import_jobs = sa.Table(
    "import_jobs",
    metadata,
    sa.Column("id", _id, primary_key=True),
    sa.Column("organization_id", _id, nullable=False),
    sa.Column("storage_key", sa.Text, sa.ForeignKey("uploads.storage_key"), nullable=False),
    sa.Column("filename", sa.Text, nullable=False),
    sa.Column("mapping", JSONB, nullable=False),
    sa.Column("dialect", JSONB, nullable=False),
    # The file's header as read at start: column positions for workers, column names for the error report.
    sa.Column("headers", ARRAY(sa.Text), nullable=False, server_default="{}"),
    sa.Column("mode", sa.Text, nullable=False),  # keep_valid | reject_all
    sa.Column("library_id", _id),
    sa.Column("predict", ARRAY(sa.Text), nullable=False, server_default="{}"),
    sa.Column("status", sa.Text, nullable=False),  # QUEUED | PROCESSING | COMPLETED | FAILED | CANCELLED
    sa.Column("total_rows", sa.Integer, nullable=False, server_default="0"),
    sa.Column("chunk_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("chunks_done", sa.Integer, nullable=False, server_default="0"),
    sa.Column("processed_rows", sa.Integer, nullable=False, server_default="0"),
    sa.Column("registered", sa.Integer, nullable=False, server_default="0"),
    sa.Column("merged", sa.Integer, nullable=False, server_default="0"),
    sa.Column("rejected", sa.Integer, nullable=False, server_default="0"),
    sa.Column("failure_reason", sa.Text, nullable=False, server_default=""),
    sa.Column("created_by", sa.Text, nullable=False),
    timestamp_column("created_at", nullable=False, default_now=True),
    timestamp_column("started_at"),
    timestamp_column("finished_at"),
    timestamp_column("updated_at", nullable=False, default_now=True),
    sa.Index("import_jobs_org_created", "organization_id", "created_at"),
)

# A chunk's effects and its row here commit together: a redelivered chunk finds its row and stops.
import_chunks = sa.Table(
    "import_chunks",
    metadata,
    sa.Column("job_id", _id, sa.ForeignKey("import_jobs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("chunk_index", sa.Integer, primary_key=True),
    sa.Column("phase", sa.Text, primary_key=True, server_default="register"),  # validate | register
    sa.Column("processed_rows", sa.Integer, nullable=False),
    sa.Column("registered", sa.Integer, nullable=False),
    sa.Column("merged", sa.Integer, nullable=False),
    sa.Column("rejected", sa.Integer, nullable=False),
    # reject_all: a validated chunk's RDKit results (import_domain.encode_valid), kept for the commit
    # phase so nothing is computed twice; cleared when the job registers, fails or is cancelled.
    sa.Column("results", sa.LargeBinary),
    timestamp_column("processed_at", nullable=False, default_now=True),
)

import_rejections = sa.Table(
    "import_rejections",
    metadata,
    sa.Column("job_id", _id, sa.ForeignKey("import_jobs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("row_number", sa.Integer, primary_key=True),
    sa.Column("cells", ARRAY(sa.Text), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
)
