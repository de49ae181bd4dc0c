"""Notification tables (schema `notification`) as SQLAlchemy Core; the migration creates the same shapes.

- `directory_users`: every user as identity last announced them (UserChanged, newest `changed_at` wins),
  and `submission_parties`: each submission's two organizations, name and submitter (SubmissionTransitioned):
  event-carried state, so recipients are found without calling another service.
- `notifications`: one row per source event and recipient (unique), whatever is redelivered. A row whose
  IN_APP switch was off is kept with `in_app` false (it still carries the email), never listed.
- `preferences` (switches a user set; absent = the vocabulary's default) and `user_settings` (digest).
- Delivery work, written in the same transaction as the notification and sent by the delivery worker:
  `email_deliveries` (one per notification: the recipient's address then, PENDING until sent; a digest
  email waits with `digest` HOURLY/DAILY) and `webhook_deliveries` (one per event and endpoint, the signed
  body's JSON in `payload`). Both retry with `attempts`, `next_attempt_at`, `last_error`, then DEAD.
- `webhooks`: endpoints of an organization; `event_types` holds NotificationType names (empty: every
  type); the signing secret is encrypted at rest (adapters/secrets.py SecretBox: Fernet, key from the
  settings), the previous one kept until `previous_secret_expires_at` after a rotation.

Statuses are DeliveryStatus names for both delivery tables (PENDING → DELIVERED, or RETRYING … DEAD);
a row is due when its status is PENDING or RETRYING and `next_attempt_at` has passed (the partial
`*_due` indexes).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

from services.runtime.db import timestamp_column

SCHEMA = "notification"

metadata = sa.MetaData()

_id = UUID(as_uuid=False)
_UNSENT = "status IN ('PENDING', 'RETRYING')"

directory_users = sa.Table(
    "directory_users",
    metadata,
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("organization_id", sa.Text, nullable=False),
    sa.Column("organization_kind", sa.Text, nullable=False, server_default=""),
    sa.Column("email", sa.Text, nullable=False, server_default=""),
    sa.Column("display_name", sa.Text, nullable=False, server_default=""),
    sa.Column("roles", ARRAY(sa.Text), nullable=False, server_default="{}"),
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("deleted", sa.Boolean, nullable=False, server_default=sa.false()),
    timestamp_column("changed_at", nullable=False),  # the event's `at`: an older event changes nothing
    timestamp_column("updated_at", nullable=False, default_now=True),
    sa.Index("directory_users_org", "organization_id"),
)

submission_parties = sa.Table(
    "submission_parties",
    metadata,
    sa.Column("submission_id", sa.Text, primary_key=True),
    sa.Column("organization_id", sa.Text, nullable=False),  # pharma
    sa.Column("cro_organization_id", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False, server_default=""),
    sa.Column("created_by", sa.Text, nullable=False, server_default=""),
    sa.Column("status", sa.Text, nullable=False, server_default=""),
    timestamp_column("changed_at", nullable=True),
    timestamp_column("updated_at", nullable=False, default_now=True),
)

notifications = sa.Table(
    "notifications",
    metadata,
    sa.Column("id", _id, primary_key=True),
    # The list's order and WatchNotifications' `after_id` cursor: ids are random, this is not.
    sa.Column("seq", sa.BigInteger, sa.Identity(), nullable=False, unique=True),
    sa.Column("recipient_id", sa.Text, nullable=False),
    sa.Column("organization_id", sa.Text, nullable=False, server_default=""),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("body", sa.Text, nullable=False, server_default=""),
    sa.Column("link", sa.Text, nullable=False, server_default=""),
    sa.Column("subject_type", sa.Text, nullable=False, server_default=""),
    sa.Column("subject_id", sa.Text, nullable=False, server_default=""),
    sa.Column("submission_id", sa.Text, nullable=False, server_default=""),
    sa.Column("event_id", sa.Text, nullable=False),
    timestamp_column("occurred_at", nullable=True),
    sa.Column("data", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),  # the facts, for templates
    sa.Column("in_app", sa.Boolean, nullable=False, server_default=sa.true()),
    timestamp_column("read_at", nullable=True),
    timestamp_column("created_at", nullable=False, default_now=True),
    sa.UniqueConstraint("event_id", "recipient_id", name="notifications_event_recipient"),
    sa.Index("notifications_recipient_seq", "recipient_id", "seq"),
    sa.Index(
        "notifications_unread",
        "recipient_id",
        postgresql_where=sa.text("read_at IS NULL AND in_app"),
    ),
)

preferences = sa.Table(
    "preferences",
    metadata,
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("notification_type", sa.Text, primary_key=True),
    sa.Column("channel", sa.Text, primary_key=True),
    sa.Column("enabled", sa.Boolean, nullable=False),
    timestamp_column("updated_at", nullable=False, default_now=True),
)

user_settings = sa.Table(
    "user_settings",
    metadata,
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("email_digest", sa.Text, nullable=False, server_default="OFF"),
    timestamp_column("updated_at", nullable=False, default_now=True),
)

webhooks = sa.Table(
    "webhooks",
    metadata,
    sa.Column("id", _id, primary_key=True),
    sa.Column("organization_id", sa.Text, nullable=False),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("event_types", ARRAY(sa.Text), nullable=False, server_default="{}"),  # empty: every type
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("secret_encrypted", sa.Text, nullable=False),  # Fernet token of the secret
    sa.Column("secret_hint", sa.Text, nullable=False, server_default=""),
    sa.Column("previous_secret_encrypted", sa.Text, nullable=True),
    timestamp_column("previous_secret_expires_at", nullable=True),
    timestamp_column("secret_rotated_at", nullable=True),
    sa.Column("created_by", sa.Text, nullable=False, server_default=""),
    timestamp_column("created_at", nullable=False, default_now=True),
    timestamp_column("updated_at", nullable=False, default_now=True),
    sa.Index("webhooks_org_created", "organization_id", "created_at"),
)

webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", _id, primary_key=True),
    sa.Column("webhook_id", _id, sa.ForeignKey("webhooks.id", ondelete="CASCADE"), nullable=False),
    sa.Column("organization_id", sa.Text, nullable=False),
    sa.Column("event_id", sa.Text, nullable=False),
    sa.Column("event_type", sa.Text, nullable=False, server_default=""),  # NotificationType ("" for a test)
    sa.Column("payload", JSONB, nullable=False),  # the JSON body to sign and POST
    sa.Column("test", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("status", sa.Text, nullable=False, server_default="PENDING"),  # DeliveryStatus
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    timestamp_column("next_attempt_at", nullable=True),
    timestamp_column("last_attempt_at", nullable=True),
    sa.Column("last_status_code", sa.Integer, nullable=True),
    sa.Column("last_error", sa.Text, nullable=False, server_default=""),
    timestamp_column("delivered_at", nullable=True),
    timestamp_column("dead_at", nullable=True),
    timestamp_column("created_at", nullable=False, default_now=True),
    timestamp_column("updated_at", nullable=False, default_now=True),
    sa.UniqueConstraint("event_id", "webhook_id", name="webhook_deliveries_event_webhook"),
    sa.Index("webhook_deliveries_webhook_created", "webhook_id", "created_at"),
    sa.Index("webhook_deliveries_due", "next_attempt_at", postgresql_where=sa.text(_UNSENT)),
)

email_deliveries = sa.Table(
    "email_deliveries",
    metadata,
    sa.Column("id", _id, primary_key=True),
    sa.Column(
        "notification_id", _id, sa.ForeignKey("notifications.id", ondelete="CASCADE"), nullable=False, unique=True
    ),
    sa.Column("recipient_id", sa.Text, nullable=False),
    sa.Column("email", sa.Text, nullable=False),  # the recipient's address when it was queued
    sa.Column("notification_type", sa.Text, nullable=False),
    sa.Column("digest", sa.Text, nullable=False, server_default="OFF"),  # EmailDigest at queueing time
    sa.Column("status", sa.Text, nullable=False, server_default="PENDING"),  # DeliveryStatus
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    timestamp_column("next_attempt_at", nullable=True),
    timestamp_column("last_attempt_at", nullable=True),
    sa.Column("last_error", sa.Text, nullable=False, server_default=""),
    timestamp_column("delivered_at", nullable=True),
    timestamp_column("dead_at", nullable=True),
    timestamp_column("created_at", nullable=False, default_now=True),
    timestamp_column("updated_at", nullable=False, default_now=True),
    sa.Index("email_deliveries_due", "next_attempt_at", postgresql_where=sa.text(_UNSENT)),
    sa.Index("email_deliveries_recipient", "recipient_id", "digest", "status"),
)
