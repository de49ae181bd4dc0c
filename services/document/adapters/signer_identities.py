"""ports.SignerIdentities over the identity service (RemoteIdentity.confirm_signer, gRPC)."""

from __future__ import annotations

from collections.abc import Mapping

from services.document.service.ports import ConfirmedSigner
from services.runtime.identity_client import RemoteIdentity


class IdentitySigners:
    def __init__(self, identity: RemoteIdentity) -> None:
        self._identity = identity

    async def confirm_signer(self, credentials: Mapping[str, str], password: str, mfa_code: str) -> ConfirmedSigner:
        confirmed = await self._identity.confirm_signer(credentials, password, mfa_code)
        return ConfirmedSigner(
            user_id=confirmed.user_id, printed_name=confirmed.printed_name, email=confirmed.email,
            organization_id=confirmed.organization_id, roles=confirmed.roles,
        )
