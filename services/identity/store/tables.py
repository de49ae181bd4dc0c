"""Identity tables (schema `identity`) as SQLAlchemy Core; the migrations create the same shapes."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

from services.runtime.db import timestamp_column

SCHEMA = "identity"

metadata = sa.MetaData()


organizations = sa.Table(
    "organizations",
    metadata,
    sa.Column("id", UUID(as_uuid=False), primary_key=True),
    sa.Column("name", sa.Text, nullable=False, unique=True),
    sa.Column("kind", sa.Text, nullable=False),
    timestamp_column("created_at", nullable=False, default_now=True),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", UUID(as_uuid=False), primary_key=True),
    sa.Column("email", sa.Text, nullable=False, unique=True),
    sa.Column("full_name", sa.Text, nullable=False),
    sa.Column("organization_id", UUID(as_uuid=False), sa.ForeignKey("organizations.id"), nullable=False, index=True),
    sa.Column("roles", ARRAY(sa.Text), nullable=False),
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("password_hash", sa.Text, nullable=False),
    sa.Column("failed_logins", sa.Integer, nullable=False, server_default="0"),
    timestamp_column("locked_until"),
    sa.Column("mfa_secret", sa.Text),
    sa.Column("mfa_enabled", sa.Boolean, nullable=False, server_default=sa.false()),
    # The last TOTP time step accepted: a code is good once.
    sa.Column("mfa_last_step", sa.BigInteger, nullable=False, server_default="0"),
    timestamp_column("last_login_at"),
    timestamp_column("created_at", nullable=False, default_now=True),
    timestamp_column("updated_at", nullable=False, default_now=True),
)

password_history = sa.Table(
    "password_history",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("user_id", UUID(as_uuid=False), sa.ForeignKey("users.id"), nullable=False, index=True),
    sa.Column("password_hash", sa.Text, nullable=False),
    timestamp_column("created_at", nullable=False, default_now=True),
)

refresh_tokens = sa.Table(
    "refresh_tokens",
    metadata,
    sa.Column("id", UUID(as_uuid=False), primary_key=True),
    sa.Column("family_id", UUID(as_uuid=False), nullable=False, index=True),
    sa.Column("user_id", UUID(as_uuid=False), sa.ForeignKey("users.id"), nullable=False, index=True),
    sa.Column("token_hash", sa.LargeBinary, nullable=False, unique=True),
    timestamp_column("expires_at", nullable=False),
    timestamp_column("used_at"),
    timestamp_column("revoked_at"),
    timestamp_column("created_at", nullable=False, default_now=True),
)

signing_keys = sa.Table(
    "signing_keys",
    metadata,
    sa.Column("kid", sa.Text, primary_key=True),
    sa.Column("private_pem", sa.LargeBinary, nullable=False),
    sa.Column("public_jwk", JSONB, nullable=False),
    # Published in the JWKS from creation; used for signing from activates_at, so every verifier
    # (Envoy caches the JWKS) knows a key before the first token signed with it arrives.
    timestamp_column("activates_at", nullable=False),
    timestamp_column("retired_at"),
    timestamp_column("created_at", nullable=False, default_now=True),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", UUID(as_uuid=False), primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("organization_id", UUID(as_uuid=False), sa.ForeignKey("organizations.id"), nullable=False, index=True),
    sa.Column("roles", ARRAY(sa.Text), nullable=False),
    sa.Column("prefix", sa.Text, nullable=False),
    sa.Column("secret_hash", sa.LargeBinary, nullable=False, unique=True),
    sa.Column("created_by", UUID(as_uuid=False), nullable=False),
    timestamp_column("created_at", nullable=False, default_now=True),
    timestamp_column("revoked_at"),
    timestamp_column("last_used_at"),
)

password_resets = sa.Table(
    "password_resets",
    metadata,
    sa.Column("token_hash", sa.LargeBinary, primary_key=True),
    sa.Column("user_id", UUID(as_uuid=False), sa.ForeignKey("users.id"), nullable=False),
    timestamp_column("expires_at", nullable=False),
    timestamp_column("used_at"),
    timestamp_column("created_at", nullable=False, default_now=True),
)

# The audit trail, fed from the bus; append-only, hash-chained (see domain.audit_hash).
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", UUID(as_uuid=False), primary_key=True),
    sa.Column("sequence", sa.BigInteger, nullable=False, unique=True),
    timestamp_column("occurred_at", nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False, index=True),
    sa.Column("outcome", sa.Text, nullable=False),
    sa.Column("actor_id", sa.Text, nullable=False, index=True),
    sa.Column("organization_id", sa.Text, nullable=False, index=True),
    sa.Column("target_type", sa.Text, nullable=False),
    sa.Column("target_id", sa.Text, nullable=False, index=True),
    sa.Column("client_address", sa.Text, nullable=False),
    sa.Column("request_id", sa.Text, nullable=False),
    sa.Column("details", JSONB, nullable=False),
    sa.Column("hash", sa.LargeBinary, nullable=False),
    sa.Column("trace_id", sa.Text, nullable=False, server_default=""),
    # An object's history finds the entries naming it in their details (`details @> {"submission_id": …}`).
    sa.Index("ix_audit_log_details", "details", postgresql_using="gin", postgresql_ops={"details": "jsonb_path_ops"}),
)
