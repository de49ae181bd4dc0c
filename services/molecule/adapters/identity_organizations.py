"""Organization names, asked of the identity service (which owns them): the default registration prefix."""

from __future__ import annotations

import logging
from typing import Protocol

import grpc
from molbridge.identity.v1 import identity_service_pb2 as identity_pb
from molbridge.identity.v1 import identity_service_pb2_grpc as identity_grpc

from services.molecule.adapters.identity_users import Credentials
from services.runtime import telemetry
from services.runtime.peer_errors import peer_failure

ORGANIZATION_LOOKUP_TIMEOUT_S = 5.0
log = logging.getLogger("molbridge.molecule.identity")


class OrganizationNames(Protocol):
    async def name_of(self, organization_id: str, credentials: Credentials) -> str:
        """The organization's name as the caller sees it; "" when the caller may not see it."""
        ...


class IdentityOrganizationNames:
    """OrganizationNames over identity's GetOrganization, called with the caller's own credentials."""

    def __init__(self, identity_addr: str) -> None:
        self._channel = telemetry.traced_channel(identity_addr)
        self._stub = identity_grpc.IdentityServiceStub(self._channel)

    async def name_of(self, organization_id: str, credentials: Credentials) -> str:
        try:
            reply = await self._stub.GetOrganization(
                identity_pb.GetOrganizationRequest(id=organization_id),
                metadata=tuple(credentials),
                timeout=ORGANIZATION_LOOKUP_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                # Not a silent fallback: the first number fixes the prefix for good.
                raise peer_failure(exc, "identity", "name the organization") from exc
            # The caller may not read its organization (e.g. a key without that right): the neutral default.
            log.warning("organization %s not named for its caller (%s)", organization_id, exc.code().name)
            return ""
        return str(reply.data.name)

    async def close(self) -> None:
        await self._channel.close()
