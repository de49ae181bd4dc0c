"""Who is calling: principals, roles, and verification of access tokens and API keys.

Every service verifies tokens itself (locally, against the identity JWKS) instead of trusting
headers set upstream: a call that bypasses the gateway is checked just the same.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

import jwt

from services.runtime.errors import AuthenticationError, AuthorizationError
from services.runtime.revocation import Revocations

ISSUER = "molbridge-identity"
AUDIENCE = "molbridge"
API_KEY_PREFIX = "mbk_"

ROLES = frozenset(
    {"system_admin", "pharma_admin", "pharma_scientist", "cro_admin", "cro_technician", "auditor"}
)
# A role grants the roles it implies (DOMAIN.md: pharma_admin ⊃ pharma_scientist, cro_admin ⊃ cro_technician).
ROLE_IMPLIES: dict[str, frozenset[str]] = {
    "pharma_admin": frozenset({"pharma_scientist"}),
    "cro_admin": frozenset({"cro_technician"}),
}
ADMIN_ROLES = frozenset({"system_admin", "pharma_admin", "cro_admin"})


@dataclass(frozen=True)
class Principal:
    subject: str  # user id, or API key id
    organization_id: str
    organization_kind: str  # PHARMA | CRO | PLATFORM
    roles: frozenset[str]
    via: str = "token"  # "token" | "api_key"
    session_id: str = ""  # the login session an access token belongs to (its `sid` claim)

    @property
    def effective_roles(self) -> frozenset[str]:
        implied = (ROLE_IMPLIES.get(r, frozenset()) for r in self.roles)
        return self.roles.union(*implied)

    @property
    def is_system_admin(self) -> bool:
        return "system_admin" in self.roles

    def has_any_role(self, *roles: str) -> bool:
        return self.is_system_admin or bool(self.effective_roles.intersection(roles))

    def require_any_role(self, *roles: str) -> None:
        if not self.has_any_role(*roles):
            raise AuthorizationError(
                f"This action needs one of the roles: {', '.join(sorted(roles))}",
                detail="ROLE_REQUIRED",
            )

    def can_see_organization(self, organization_id: str) -> bool:
        return self.is_system_admin or organization_id == self.organization_id


principal_var: ContextVar[Principal | None] = ContextVar("principal", default=None)


def current_principal() -> Principal:
    principal = principal_var.get()
    if principal is None:
        raise AuthenticationError("Authentication required: send a bearer token or an API key")
    return principal


class ApiKeyResolver(Protocol):
    async def resolve_api_key(self, secret: str) -> Principal: ...


JwksProvider = Callable[[], Awaitable[Mapping[str, Any]]]


class TokenVerifier:
    """Verifies EdDSA access tokens against a JWKS, refetching it when an unknown `kid` appears."""

    REFETCH_INTERVAL_S = 5.0

    def __init__(self, jwks_provider: JwksProvider, revocations: Revocations | None = None) -> None:
        self._jwks_provider = jwks_provider
        self._revocations = revocations
        self._keys: dict[str, Any] = {}
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def _key(self, kid: str) -> Any:
        if kid not in self._keys and time.monotonic() - self._fetched_at > self.REFETCH_INTERVAL_S:
            async with self._lock:
                if kid not in self._keys:
                    jwks = await self._jwks_provider()
                    self._keys = {
                        k["kid"]: jwt.PyJWK.from_json(json.dumps(k)).key for k in jwks.get("keys", [])
                    }
                    self._fetched_at = time.monotonic()
        key = self._keys.get(kid)
        if key is None:
            raise AuthenticationError("Access token signed by an unknown key: log in again", detail="UNKNOWN_KEY")
        return key

    async def verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
            key = await self._key(str(header.get("kid", "")))
            claims = jwt.decode(
                token,
                key,
                algorithms=["EdDSA"],
                audience=AUDIENCE,
                issuer=ISSUER,
                leeway=10,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthenticationError(
                "Access token expired: refresh it or log in again", detail="TOKEN_EXPIRED"
            ) from exc
        except jwt.PyJWTError as exc:
            raise AuthenticationError("Invalid access token", detail="TOKEN_INVALID") from exc
        subject, session_id = str(claims["sub"]), str(claims.get("sid", ""))
        if self._revocations is not None and self._revocations.is_revoked(subject, session_id, issued_at(claims)):
            raise AuthenticationError("Access token revoked: log in again", detail="TOKEN_REVOKED")
        return Principal(
            subject=subject,
            organization_id=claims.get("org", ""),
            organization_kind=claims.get("org_kind", ""),
            roles=frozenset(claims.get("roles", [])),
            session_id=session_id,
        )


def issued_at(claims: Mapping[str, Any]) -> float:
    """When a token was issued, in epoch seconds: `iat_ms` (milliseconds) when present, so a token
    issued in the same second as a revocation but after it is told apart; else `iat`."""
    iat_ms = claims.get("iat_ms")
    if isinstance(iat_ms, int) and not isinstance(iat_ms, bool):
        return iat_ms / 1000
    return float(claims["iat"])


class Authenticator:
    """Turns request metadata into a Principal: `authorization: Bearer <jwt|api key>` or `x-api-key`."""

    def __init__(self, verifier: TokenVerifier, api_keys: ApiKeyResolver) -> None:
        self._verifier = verifier
        self._api_keys = api_keys

    async def authenticate(self, metadata: Mapping[str, str]) -> Principal:
        api_key = metadata.get("x-api-key", "")
        authorization = metadata.get("authorization", "")
        scheme, _, credential = authorization.partition(" ")
        if authorization and scheme.lower() != "bearer":
            raise AuthenticationError("Use 'authorization: Bearer <token>'")
        if credential.startswith(API_KEY_PREFIX):
            api_key = credential
        elif credential:
            return await self._verifier.verify(credential.strip())
        if api_key:
            return await self._api_keys.resolve_api_key(api_key.strip())
        raise AuthenticationError("Authentication required: send a bearer token or an API key")
