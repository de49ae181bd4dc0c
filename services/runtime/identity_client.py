"""How a service other than identity authenticates callers: the identity JWKS and API-key lookups
over gRPC, cached so a request costs no round trip in the common case; and re-authenticates a signer
(21 CFR 11.200) with the caller's own credentials."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2
from molbridge.identity.v1 import identity_service_pb2 as pb
from molbridge.identity.v1 import identity_service_pb2_grpc as pb_grpc

from services.runtime import telemetry
from services.runtime.auth import Authenticator, Principal, TokenVerifier
from services.runtime.errors import (
    AuthenticationError,
    AuthorizationError,
    DomainError,
    ValidationError,
)
from services.runtime.peer_errors import peer_failure
from services.runtime.revocation import Revocations

# A cached verification lives this long, or until the next revocation event (which drops them all).
API_KEY_CACHE_SECONDS = 30.0
API_KEY_CACHE_SIZE = 10_000
SIGNER_NOT_CONFIRMED = (
    "The password or MFA code was wrong: the signature was not applied. Repeated failures lock the account"
)


@dataclass(frozen=True)
class SignerIdentity:
    """The caller, confirmed by identity for one electronic signature (what the signature prints)."""

    user_id: str
    printed_name: str
    email: str
    organization_id: str
    roles: frozenset[str]


class RemoteIdentity:
    def __init__(self, identity_addr: str, revocations: Revocations | None = None) -> None:
        self._channel = telemetry.traced_channel(identity_addr)
        self._stub = pb_grpc.IdentityServiceStub(self._channel)
        # Fed by runtime.revocation's feed (see revocation_feed); token checks and the key cache use it.
        self.revocations = revocations or Revocations()
        self._keys: dict[bytes, tuple[float, int, Principal | None]] = {}  # expiry, generation, principal

    async def jwks(self) -> dict[str, Any]:
        try:
            body = await self._stub.GetJwks(pb.GetJwksRequest(), timeout=5)
        except grpc.aio.AioRpcError as exc:
            raise peer_failure(exc, "identity", "verify tokens") from exc
        return dict(json.loads(body.data))

    async def resolve_api_key(self, secret: str) -> Principal:
        digest = hashlib.sha256(secret.encode()).digest()
        cached = self._keys.get(digest)
        # An entry counts only while no revocation has arrived since the lookup began.
        if cached is not None and cached[0] > time.monotonic() and cached[1] == self.revocations.generation:
            principal = cached[2]
        else:
            generation = self.revocations.generation
            principal = await self._lookup(secret)
            if len(self._keys) >= API_KEY_CACHE_SIZE:
                self._keys.clear()
            self._keys[digest] = (time.monotonic() + API_KEY_CACHE_SECONDS, generation, principal)
        if principal is None:
            raise AuthenticationError("Invalid or revoked API key", detail="API_KEY_INVALID")
        return principal

    async def _lookup(self, secret: str) -> Principal | None:
        try:
            reply = await self._stub.AuthenticateApiKey(pb.AuthenticateApiKeyRequest(secret=secret), timeout=5)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                return None
            raise peer_failure(exc, "identity", "verify the API key") from exc
        return Principal(
            subject=reply.key_id,
            organization_id=reply.organization_id,
            organization_kind=pb.Organization.Kind.Name(reply.organization_kind),
            roles=frozenset(reply.roles),
            via="api_key",
        )

    async def confirm_signer(self, credentials: Mapping[str, str], password: str, mfa_code: str) -> SignerIdentity:
        """Checks the caller's password (and MFA code) again. `credentials` is the caller's authorization
        metadata, forwarded: identity confirms the person the token names, and only them."""
        request = pb.ConfirmSignerIdentityRequest(password=password, mfa_code=mfa_code)
        try:
            reply = await self._stub.ConfirmSignerIdentity(request, metadata=tuple(credentials.items()), timeout=10)
        except grpc.aio.AioRpcError as exc:
            raise signer_error(exc) from exc
        return SignerIdentity(
            user_id=reply.user_id, printed_name=reply.printed_name, email=reply.email,
            organization_id=reply.organization_id, roles=frozenset(reply.roles),
        )

    async def organization_name(self, credentials: Mapping[str, str], organization_id: str) -> str:
        """The organization's name as the caller may read it (GetOrganization with the caller's own
        credentials); "" when identity does not answer or the caller may not read it: a name is cosmetic."""
        try:
            reply = await self._stub.GetOrganization(
                pb.GetOrganizationRequest(id=organization_id), metadata=tuple(credentials.items()), timeout=5
            )
        except grpc.aio.AioRpcError:
            return ""
        return str(reply.data.name)

    async def close(self) -> None:
        await self._channel.close()


def remote_authenticator(identity: RemoteIdentity) -> Authenticator:
    return Authenticator(TokenVerifier(identity.jwks, identity.revocations), identity)


def signer_error(exc: grpc.aio.AioRpcError) -> DomainError:
    """Identity's refusal as our own error; its detail says why (wrong password, locked, expired token)."""
    detail = error_detail(exc)
    message = exc.details() or ""
    if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
        if detail == "SIGNER_NOT_CONFIRMED":
            message = SIGNER_NOT_CONFIRMED
        return AuthenticationError(message or "Not signed in: sign in again", detail=detail)
    if exc.code() == grpc.StatusCode.PERMISSION_DENIED:
        return AuthorizationError(message or "Electronic signatures need a person", detail=detail)
    if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
        return ValidationError(message or "Enter your password to sign", detail=detail)
    return peer_failure(exc, "identity", "confirm the signer")


def error_detail(exc: grpc.aio.AioRpcError) -> str:
    """The ErrorInfo `detail` our interceptors attach (services/runtime/interceptors.status_of), or ""."""
    for key, value in exc.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            for any_detail in status_pb2.Status.FromString(value).details:
                info = error_details_pb2.ErrorInfo()
                if any_detail.Unpack(info):
                    return info.metadata.get("detail", "")
    return ""
