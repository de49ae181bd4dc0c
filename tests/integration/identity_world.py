"""An identity service for integration tests: its signing key made, the first admin created, and a
password hasher cheap enough for tests (the real parameters are Argon2id's defaults)."""

from __future__ import annotations

from pathlib import Path

from argon2 import PasswordHasher
from sqlalchemy.ext.asyncio import AsyncEngine

from services.identity.service import IdentityService
from services.identity.store import identity_transactions
from services.identity.store.signing_keys import KeyRing
from services.runtime.email import FolderSender
from services.runtime.storage import ObjectStorage


async def started_identity(
    engine: AsyncEngine, mail_dir: Path, admin_email: str, admin_password: str, *, storage: ObjectStorage | None = None
) -> IdentityService:
    identity = IdentityService(
        identity_transactions(engine),
        KeyRing(""),
        FolderSender(mail_dir),
        public_url="http://gw.test",
        hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1),
        storage=storage,
    )
    await identity.ensure_signing_key()
    await identity.bootstrap_admin(admin_email, admin_password)
    return identity
