"""Who a library may be shared with, asked of the identity service."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import grpc
from molbridge.identity.v1 import identity_service_pb2 as identity_pb
from molbridge.identity.v1 import identity_service_pb2_grpc as identity_grpc

from services.runtime import telemetry
from services.runtime.peer_errors import peer_failure

GRANTEE_LOOKUP_TIMEOUT_S = 5.0

Credentials = Sequence[tuple[str, str]]


class UserDirectory(Protocol):
    async def organization_of(self, user_id: str, credentials: Credentials) -> str | None:
        """The organization of an active user the caller can see; None when there is no such user."""
        ...


class IdentityUserDirectory:
    """UserDirectory over identity's GetUser, called with the caller's own credentials, so identity
    applies its own visibility rules (a user of another organization is "not found")."""

    def __init__(self, identity_addr: str) -> None:
        self._channel = telemetry.traced_channel(identity_addr)
        self._stub = identity_grpc.IdentityServiceStub(self._channel)

    async def organization_of(self, user_id: str, credentials: Credentials) -> str | None:
        try:
            reply = await self._stub.GetUser(
                identity_pb.GetUserRequest(id=user_id), metadata=tuple(credentials), timeout=GRANTEE_LOOKUP_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED):
                return None
            raise peer_failure(exc, "identity", "check the user") from exc
        return reply.data.organization_id if reply.data.active else None

    async def close(self) -> None:
        await self._channel.close()
