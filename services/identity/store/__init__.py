"""Identity's storage: tables, repositories and the unit of work binding them (the only SQL)."""

from services.identity.store.tables import (
    SCHEMA,
    api_keys,
    audit_log,
    metadata,
    organizations,
    password_history,
    password_resets,
    refresh_tokens,
    signing_keys,
    users,
)
from services.identity.store.uow import EVENT_SOURCE, IdentityUnitOfWork, identity_transactions

__all__ = [
    "EVENT_SOURCE",
    "SCHEMA",
    "IdentityUnitOfWork",
    "api_keys",
    "audit_log",
    "identity_transactions",
    "metadata",
    "organizations",
    "password_history",
    "password_resets",
    "refresh_tokens",
    "signing_keys",
    "users",
]
