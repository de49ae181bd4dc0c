"""Prediction tables (schema `prediction`) as SQLAlchemy Core; the migration creates the same shapes.

A job is split into batches when it is created; each batch row carries its molecules' structures
and the values their desirability score starts from (the service never reads the molecule schema).
A batch is done when its results and its `done_at` commit together, so a redelivered batch message
finds it done and changes nothing.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

from services.runtime.db import timestamp_column

SCHEMA = "prediction"

metadata = sa.MetaData()

_id = UUID(as_uuid=False)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", _id, primary_key=True),
    sa.Column("organization_id", _id, nullable=False),
    sa.Column("requested_by", sa.Text, nullable=False),
    sa.Column("properties", ARRAY(sa.Text), nullable=False),
    sa.Column("model", sa.Text, nullable=False, server_default=""),
    sa.Column("reason", sa.Text, nullable=False, server_default=""),  # "api", "import:<job id>", …
    sa.Column("status", sa.Text, nullable=False),  # queued | processing | completed | failed
    sa.Column("total", sa.Integer, nullable=False),  # molecules
    sa.Column("completed", sa.Integer, nullable=False, server_default="0"),  # molecules of done batches
    sa.Column("failed", sa.Integer, nullable=False, server_default="0"),  # molecules the engine could not do
    sa.Column("batch_count", sa.Integer, nullable=False),
    sa.Column("batches_done", sa.Integer, nullable=False, server_default="0"),
    timestamp_column("created_at", nullable=False, default_now=True),
    timestamp_column("updated_at", nullable=False, default_now=True),
    sa.Index("jobs_org_created", "organization_id", "created_at"),
)

batches = sa.Table(
    "batches",
    metadata,
    sa.Column("job_id", _id, sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("batch_index", sa.Integer, primary_key=True),
    # [[molecule id, smiles, [[property, source, value], …]], …] (rows of older releases: [id, smiles])
    sa.Column("molecules", JSONB, nullable=False),
    sa.Column("failures", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),  # id → reason
    sa.Column("unsupported", ARRAY(sa.Text), nullable=False, server_default="{}"),
    timestamp_column("done_at"),
)

results = sa.Table(
    "results",
    metadata,
    sa.Column("job_id", _id, sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("molecule_id", _id, primary_key=True),
    sa.Column("property", sa.Text, primary_key=True),
    sa.Column("organization_id", _id, nullable=False),
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("units", sa.Text, nullable=False, server_default=""),
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("model_name", sa.Text, nullable=False),
    sa.Column("model_version", sa.Text, nullable=False),
    timestamp_column("created_at", nullable=False, default_now=True),
    # "The latest prediction of each property of a molecule" reads this index backwards.
    sa.Index("results_molecule", "organization_id", "molecule_id", "property", "created_at"),
)
