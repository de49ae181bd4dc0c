"""Notification schema: directory_users, submission_parties, notifications (unique per source event and
recipient), preferences, user_settings, webhooks, webhook_deliveries (unique per event and endpoint),
email_deliveries (one per notification), idempotency keys, outbox, processed events.

Revision ID: 0001

Explicit operations (kept as they are): a later change of the models is a new revision, never an
edit here. tests/integration/test_migrations.py checks that the migrated database equals the models.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from bus.tables import create_outbox_table, create_processed_events_table
from services.runtime.idempotency import create_idempotency_table

revision = "0001"
down_revision = None

_id = sa.UUID(as_uuid=False)
_UNSENT = "status IN ('PENDING', 'RETRYING')"


def _now(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False)


def _at(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _text(name: str) -> sa.Column:
    return sa.Column(name, sa.Text(), server_default="", nullable=False)


def _retries() -> list[sa.Column]:
    return [
        sa.Column("status", sa.Text(), server_default="PENDING", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        _at("next_attempt_at"),
        _at("last_attempt_at"),
    ]


def upgrade() -> None:
    op.create_table(
        "directory_users",
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("organization_id", sa.Text(), nullable=False),
        _text("organization_kind"),
        _text("email"),
        _text("display_name"),
        sa.Column("roles", ARRAY(sa.Text()), server_default="{}", nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("deleted", sa.Boolean(), server_default=sa.false(), nullable=False),
        _at("changed_at", nullable=False),
        _now("updated_at"),
        sa.PrimaryKeyConstraint("user_id"),
    )
    op.create_index("directory_users_org", "directory_users", ["organization_id"], unique=False)
    op.create_table(
        "submission_parties",
        sa.Column("submission_id", sa.Text(), nullable=False),
        sa.Column("organization_id", sa.Text(), nullable=False),
        sa.Column("cro_organization_id", sa.Text(), nullable=False),
        _text("name"),
        _text("created_by"),
        _text("status"),
        _at("changed_at"),
        _now("updated_at"),
        sa.PrimaryKeyConstraint("submission_id"),
    )
    op.create_table(
        "notifications",
        sa.Column("id", _id, nullable=False),
        sa.Column("seq", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("recipient_id", sa.Text(), nullable=False),
        _text("organization_id"),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        _text("body"),
        _text("link"),
        _text("subject_type"),
        _text("subject_id"),
        _text("submission_id"),
        sa.Column("event_id", sa.Text(), nullable=False),
        _at("occurred_at"),
        sa.Column("data", JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("in_app", sa.Boolean(), server_default=sa.true(), nullable=False),
        _at("read_at"),
        _now("created_at"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("seq"),
        sa.UniqueConstraint("event_id", "recipient_id", name="notifications_event_recipient"),
    )
    op.create_index("notifications_recipient_seq", "notifications", ["recipient_id", "seq"], unique=False)
    op.create_index(
        "notifications_unread",
        "notifications",
        ["recipient_id"],
        unique=False,
        postgresql_where=sa.text("read_at IS NULL AND in_app"),
    )
    op.create_table(
        "preferences",
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("notification_type", sa.Text(), nullable=False),
        sa.Column("channel", sa.Text(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        _now("updated_at"),
        sa.PrimaryKeyConstraint("user_id", "notification_type", "channel"),
    )
    op.create_table(
        "user_settings",
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("email_digest", sa.Text(), server_default="OFF", nullable=False),
        _now("updated_at"),
        sa.PrimaryKeyConstraint("user_id"),
    )
    op.create_table(
        "webhooks",
        sa.Column("id", _id, nullable=False),
        sa.Column("organization_id", sa.Text(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("event_types", ARRAY(sa.Text()), server_default="{}", nullable=False),
        _text("description"),
        sa.Column("active", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("secret_encrypted", sa.Text(), nullable=False),
        _text("secret_hint"),
        sa.Column("previous_secret_encrypted", sa.Text(), nullable=True),
        _at("previous_secret_expires_at"),
        _at("secret_rotated_at"),
        _text("created_by"),
        _now("created_at"),
        _now("updated_at"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("webhooks_org_created", "webhooks", ["organization_id", "created_at"], unique=False)
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", _id, nullable=False),
        sa.Column("webhook_id", _id, nullable=False),
        sa.Column("organization_id", sa.Text(), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        _text("event_type"),
        sa.Column("payload", JSONB(), nullable=False),
        sa.Column("test", sa.Boolean(), server_default=sa.false(), nullable=False),
        *_retries(),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        _text("last_error"),
        _at("delivered_at"),
        _at("dead_at"),
        _now("created_at"),
        _now("updated_at"),
        sa.ForeignKeyConstraint(["webhook_id"], ["webhooks.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_id", "webhook_id", name="webhook_deliveries_event_webhook"),
    )
    op.create_index(
        "webhook_deliveries_webhook_created", "webhook_deliveries", ["webhook_id", "created_at"], unique=False
    )
    op.create_index(
        "webhook_deliveries_due",
        "webhook_deliveries",
        ["next_attempt_at"],
        unique=False,
        postgresql_where=sa.text(_UNSENT),
    )
    op.create_table(
        "email_deliveries",
        sa.Column("id", _id, nullable=False),
        sa.Column("notification_id", _id, nullable=False),
        sa.Column("recipient_id", sa.Text(), nullable=False),
        sa.Column("email", sa.Text(), nullable=False),
        sa.Column("notification_type", sa.Text(), nullable=False),
        sa.Column("digest", sa.Text(), server_default="OFF", nullable=False),
        *_retries(),
        _text("last_error"),
        _at("delivered_at"),
        _at("dead_at"),
        _now("created_at"),
        _now("updated_at"),
        sa.ForeignKeyConstraint(["notification_id"], ["notifications.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("notification_id"),
    )
    op.create_index(
        "email_deliveries_due", "email_deliveries", ["next_attempt_at"], unique=False, postgresql_where=sa.text(_UNSENT)
    )
    op.create_index(
        "email_deliveries_recipient", "email_deliveries", ["recipient_id", "digest", "status"], unique=False
    )
    create_idempotency_table(op)
    create_outbox_table(op, "notification")
    create_processed_events_table(op, "notification")


def downgrade() -> None:
    op.drop_table("processed_events", schema="notification")
    op.drop_table("outbox", schema="notification")
    op.drop_table("idempotency_keys")
    for table in (
        "email_deliveries",
        "webhook_deliveries",
        "webhooks",
        "user_settings",
        "preferences",
        "notifications",
        "submission_parties",
        "directory_users",
    ):
        op.drop_table(table)
