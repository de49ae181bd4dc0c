"""Login sessions (refresh-token families) and password-reset tokens; both are stored as SHA-256
digests of their secrets."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from services.identity.store.tables import password_resets, refresh_tokens


def digest(secret: str) -> bytes:
    # Refresh tokens, reset tokens and API keys carry 256 random bits: a fast hash suffices.
    return hashlib.sha256(secret.encode()).digest()


@dataclass(frozen=True)
class RefreshToken:
    id: str
    family_id: str  # one login and every token refreshed from it; the access tokens' `sid`
    user_id: str
    expires_at: datetime
    used_at: datetime | None
    revoked_at: datetime | None

    @property
    def spent(self) -> bool:
        return self.used_at is not None or self.revoked_at is not None


@dataclass(frozen=True)
class PasswordReset:
    token_hash: bytes
    user_id: str
    expires_at: datetime
    used_at: datetime | None


class SessionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, user_id: str, family_id: str, refresh_token: str, expires_at: datetime) -> None:
        await self._session.execute(
            refresh_tokens.insert().values(
                id=str(uuid.uuid4()), family_id=family_id, user_id=user_id, token_hash=digest(refresh_token),
                expires_at=expires_at,
            )
        )

    async def by_secret(self, refresh_token: str, *, lock: bool = False) -> RefreshToken | None:
        query = sa.select(refresh_tokens).where(refresh_tokens.c.token_hash == digest(refresh_token))
        row = (await self._session.execute(query.with_for_update() if lock else query)).first()
        if row is None:
            return None
        return RefreshToken(
            id=row.id, family_id=row.family_id, user_id=row.user_id, expires_at=row.expires_at,
            used_at=row.used_at, revoked_at=row.revoked_at,
        )

    async def mark_used(self, token_id: str, now: datetime) -> None:
        await self._session.execute(refresh_tokens.update().where(refresh_tokens.c.id == token_id).values(used_at=now))

    async def revoke_family(self, family_id: str, now: datetime) -> None:
        await self._session.execute(
            refresh_tokens.update()
            .where(refresh_tokens.c.family_id == family_id, refresh_tokens.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )

    async def revoke_all(self, user_id: str, now: datetime, *, family_of: str = "") -> int:
        """Ends a user's sessions — all, or only the family of the refresh token `family_of`;
        returns how many refresh tokens were revoked."""
        query = refresh_tokens.update().where(
            refresh_tokens.c.user_id == user_id, refresh_tokens.c.revoked_at.is_(None)
        )
        if family_of:
            family = sa.select(refresh_tokens.c.family_id).where(refresh_tokens.c.token_hash == digest(family_of))
            query = query.where(refresh_tokens.c.family_id.in_(family.scalar_subquery()))
        result = await self._session.execute(query.values(revoked_at=now))
        return result.rowcount or 0  # type: ignore[attr-defined]

    async def family_of(self, refresh_token: str) -> str:
        family = await self._session.scalar(
            sa.select(refresh_tokens.c.family_id).where(refresh_tokens.c.token_hash == digest(refresh_token))
        )
        return str(family) if family else ""


class PasswordResetRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, token: str, user_id: str, created_at: datetime, expires_at: datetime) -> None:
        await self._session.execute(
            password_resets.insert().values(
                token_hash=digest(token), user_id=user_id, created_at=created_at, expires_at=expires_at
            )
        )

    async def count_since(self, user_id: str, since: datetime) -> int:
        """Reset emails sent to a user since `since` (every stored reset token is one email)."""
        return await self._session.scalar(
            sa.select(sa.func.count())
            .select_from(password_resets)
            .where(password_resets.c.user_id == user_id, password_resets.c.created_at >= since)
        ) or 0

    async def by_secret(self, token: str, *, lock: bool = False) -> PasswordReset | None:
        query = sa.select(password_resets).where(password_resets.c.token_hash == digest(token))
        row = (await self._session.execute(query.with_for_update() if lock else query)).first()
        if row is None:
            return None
        return PasswordReset(token_hash=row.token_hash, user_id=row.user_id, expires_at=row.expires_at,
                             used_at=row.used_at)

    async def mark_used(self, reset: PasswordReset, now: datetime) -> None:
        await self._session.execute(
            password_resets.update().where(password_resets.c.token_hash == reset.token_hash).values(used_at=now)
        )
