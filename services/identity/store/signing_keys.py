"""Ed25519 signing keys: creation, the published JWKS, signing, rotation.

Private keys are stored in the identity schema, PEM-encrypted with MOLBRIDGE_KEY_PASSPHRASE when
it is set (a deployment must set it; a local run without it stores them unencrypted and says so).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.identity.store.tables import signing_keys
from services.runtime.errors import InternalError
from services.runtime.uow import UnitOfWork


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: Ed25519PrivateKey


class KeyRing:
    def __init__(self, passphrase: str) -> None:
        self._passphrase = passphrase.encode() or None
        self._loaded: dict[str, SigningKey] = {}  # decrypting a PEM is slow; keys never change

    def _encryption(self) -> serialization.KeySerializationEncryption:
        if self._passphrase:
            return serialization.BestAvailableEncryption(self._passphrase)
        return serialization.NoEncryption()

    async def create(self, uow: UnitOfWork, activates_at: datetime) -> str:
        key = Ed25519PrivateKey.generate()
        kid = secrets.token_urlsafe(12)
        public_jwk: dict[str, Any] = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(key.public_key()))
        public_jwk.update(kid=kid, alg="EdDSA", use="sig")
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, self._encryption())
        await uow.session.execute(
            signing_keys.insert().values(kid=kid, private_pem=pem, public_jwk=public_jwk, activates_at=activates_at)
        )
        return kid

    async def ensure_active(self, uow: UnitOfWork, now: datetime) -> None:
        """First start: make a key usable at once."""
        await uow.session.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext("identity:keys"))))
        if await uow.session.scalar(sa.select(sa.func.count()).select_from(signing_keys).where(_usable(now))) == 0:
            await self.create(uow, activates_at=now)

    async def rotate(self, uow: UnitOfWork, now: datetime, publish_ahead: timedelta) -> str:
        """Publish a new key now, sign with it from `now + publish_ahead`; older keys stay published
        until every token they signed has expired (see `retire_expired`)."""
        return await self.create(uow, activates_at=now + publish_ahead)

    async def retire_expired(self, uow: UnitOfWork, now: datetime, token_ttl: timedelta) -> None:
        current = await self._current_kid(uow, now)
        newer = signing_keys.alias("newer")
        await uow.session.execute(
            signing_keys.update()
            .where(signing_keys.c.kid != current, signing_keys.c.retired_at.is_(None))
            .where(signing_keys.c.activates_at <= now)
            .where(
                # A key is retired once a newer key has been active for longer than a token lives.
                sa.exists().where(
                    newer.c.activates_at > signing_keys.c.activates_at,
                    newer.c.activates_at <= now - token_ttl,
                )
            )
            .values(retired_at=now)
        )

    async def _current_kid(self, uow: UnitOfWork, now: datetime) -> str | None:
        return await uow.session.scalar(
            sa.select(signing_keys.c.kid).where(_usable(now)).order_by(signing_keys.c.activates_at.desc()).limit(1)
        )

    async def signing_key(self, uow: UnitOfWork, now: datetime) -> SigningKey:
        row = (
            await uow.session.execute(
                sa.select(signing_keys.c.kid, signing_keys.c.private_pem)
                .where(_usable(now))
                .order_by(signing_keys.c.activates_at.desc())
                .limit(1)
            )
        ).first()
        if row is None:
            raise InternalError("No active signing key")
        if row.kid not in self._loaded:
            private_key = serialization.load_pem_private_key(row.private_pem, password=self._passphrase)
            assert isinstance(private_key, Ed25519PrivateKey)
            self._loaded[row.kid] = SigningKey(kid=row.kid, private_key=private_key)
        return self._loaded[row.kid]

    async def jwks(self, uow: UnitOfWork) -> dict[str, Any]:
        rows = await uow.session.scalars(
            sa.select(signing_keys.c.public_jwk)
            .where(signing_keys.c.retired_at.is_(None))
            .order_by(signing_keys.c.activates_at.desc())
        )
        return {"keys": list(rows)}


def _usable(now: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(signing_keys.c.retired_at.is_(None), signing_keys.c.activates_at <= now)


def sign(key: SigningKey, claims: dict[str, Any]) -> str:
    return jwt.encode(claims, key.private_key, algorithm="EdDSA", headers={"kid": key.kid})
