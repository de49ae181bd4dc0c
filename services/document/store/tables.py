"""Document tables (schema `document`) as SQLAlchemy Core; the migration creates the same shapes.

A document row holds its current state; its files are `document_versions` rows (never updated: a
version, signed or not, is immutable; the bytes live in object storage under `object_key`).
`submission_shares` says which CRO organization may read a pharma organization's documents of a
submission (and the other way round).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import UUID

from services.runtime.db import timestamp_column

SCHEMA = "document"

metadata = sa.MetaData()

_id = UUID(as_uuid=False)

documents = sa.Table(
    "documents",
    metadata,
    sa.Column("id", _id, primary_key=True),
    sa.Column("organization_id", _id, nullable=False),
    sa.Column("submission_id", sa.Text, nullable=False, server_default=""),  # the CRO service's id, opaque
    sa.Column("document_type", sa.Text, nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("current_version", sa.Integer, nullable=False),
    sa.Column("expires_on", sa.Date),
    sa.Column("template", sa.Text, nullable=False, server_default=""),
    sa.Column("created_by", sa.Text, nullable=False),
    timestamp_column("created_at", nullable=False, default_now=True),
    timestamp_column("updated_at", nullable=False, default_now=True),
    sa.Index("documents_org_created", "organization_id", "created_at"),
    sa.Index("documents_submission", "submission_id", "organization_id"),
    # The expiry sweep scans only documents that can still expire.
    sa.Index(
        "documents_expiring",
        "expires_on",
        postgresql_where=sa.text("expires_on IS NOT NULL AND status NOT IN ('EXPIRED', 'ARCHIVED')"),
    ),
)

document_versions = sa.Table(
    "document_versions",
    metadata,
    sa.Column("document_id", _id, sa.ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("filename", sa.Text, nullable=False),
    sa.Column("content_type", sa.Text, nullable=False),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.Text, nullable=False),
    sa.Column("origin", sa.Text, nullable=False),  # upload | generated | signed | docusign
    sa.Column("signed", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("object_key", sa.Text, nullable=False),
    sa.Column("created_by", sa.Text, nullable=False),
    timestamp_column("created_at", nullable=False, default_now=True),
)

submission_shares = sa.Table(
    "submission_shares",
    metadata,
    sa.Column("submission_id", sa.Text, primary_key=True),
    sa.Column("owner_organization_id", _id, primary_key=True),  # the pharma organization
    sa.Column("cro_organization_id", _id, primary_key=True),
    sa.Column("shared_by", sa.Text, nullable=False),
    timestamp_column("created_at", nullable=False, default_now=True),
    sa.Index("submission_shares_cro", "cro_organization_id", "submission_id"),
)
