"""IdentityService servicer: maps protos to the service layer and back; no rules here."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TypeAlias

import grpc
from google.api.httpbody_pb2 import HttpBody
from molbridge.identity.v1 import identity_service_pb2 as pb
from molbridge.identity.v1 import identity_service_pb2_grpc as pb_grpc

from services.identity.domain import audit_csv
from services.identity.server.mapping import (
    anchor_pb,
    api_key_pb,
    audit_event_pb,
    kind_name,
    kind_pb,
    organization_pb,
    session_pb,
    signer_pb,
    user_pb,
    verification_pb,
)
from services.identity.service import IdentityService
from services.runtime.auth import current_principal
from services.runtime.pagination import PageRequest
from services.runtime.storage import attachment_disposition

Context: TypeAlias = grpc.aio.ServicerContext

# Reachable without a token (the gateway's allow-list says the same for REST and gRPC paths).
PUBLIC_METHODS = frozenset(
    f"/molbridge.identity.v1.IdentityService/{m}"
    for m in ("Login", "RefreshToken", "RequestPasswordReset", "ConfirmPasswordReset", "VerifyMfa", "GetJwks",
              "AuthenticateApiKey")
) | {"/molbridge.health.v1.HealthService/GetHealth"}

class IdentityServicer(pb_grpc.IdentityServiceServicer):
    SERVICE_FULL_NAME = "molbridge.identity.v1.IdentityService"

    def __init__(self, service: IdentityService) -> None:
        self._service = service

    async def Login(self, request: pb.LoginRequest, context: Context) -> pb.LoginResponse:
        return pb.LoginResponse(data=session_pb(await self._service.login(request.email, request.password)))

    async def Logout(self, request: pb.LogoutRequest, context: Context) -> pb.LogoutResponse:
        revoked = await self._service.logout(current_principal(), request.refresh_token)
        return pb.LogoutResponse(data=pb.LogoutResult(revoked_sessions=revoked))

    async def RefreshToken(self, request: pb.RefreshTokenRequest, context: Context) -> pb.RefreshTokenResponse:
        return pb.RefreshTokenResponse(data=session_pb(await self._service.refresh(request.refresh_token)))

    async def RequestPasswordReset(
        self, request: pb.RequestPasswordResetRequest, context: Context
    ) -> pb.RequestPasswordResetResponse:
        await self._service.request_password_reset(request.email)
        message = "If the address belongs to an account, a reset link is on its way."
        return pb.RequestPasswordResetResponse(data=pb.Acknowledgement(message=message))

    async def ConfirmPasswordReset(
        self, request: pb.ConfirmPasswordResetRequest, context: Context
    ) -> pb.ConfirmPasswordResetResponse:
        await self._service.confirm_password_reset(request.token, request.new_password)
        message = "Password changed; every session was signed out."
        return pb.ConfirmPasswordResetResponse(data=pb.Acknowledgement(message=message))

    async def VerifyMfa(self, request: pb.VerifyMfaRequest, context: Context) -> pb.VerifyMfaResponse:
        return pb.VerifyMfaResponse(data=session_pb(await self._service.verify_mfa(request.mfa_token, request.code)))

    async def EnrollMfa(self, request: pb.EnrollMfaRequest, context: Context) -> pb.EnrollMfaResponse:
        secret, uri = await self._service.enroll_mfa(current_principal())
        return pb.EnrollMfaResponse(data=pb.MfaEnrollment(secret=secret, otpauth_uri=uri))

    async def ConfirmMfa(self, request: pb.ConfirmMfaRequest, context: Context) -> pb.ConfirmMfaResponse:
        return pb.ConfirmMfaResponse(data=user_pb(await self._service.confirm_mfa(current_principal(), request.code)))

    async def GetJwks(self, request: pb.GetJwksRequest, context: Context) -> HttpBody:
        jwks = await self._service.jwks()
        return HttpBody(content_type="application/json", data=json.dumps(jwks).encode())

    async def CreateOrganization(
        self, request: pb.CreateOrganizationRequest, context: Context
    ) -> pb.CreateOrganizationResponse:
        kind = kind_name(request.kind)
        organization = await self._service.create_organization(
            current_principal(), request.name, kind, request.request_id
        )
        return pb.CreateOrganizationResponse(data=organization_pb(organization))

    async def ListOrganizations(
        self, request: pb.ListOrganizationsRequest, context: Context
    ) -> pb.ListOrganizationsResponse:
        page = PageRequest.of(request.page, request.page_size)
        items, total = await self._service.list_organizations(current_principal(), page)
        return pb.ListOrganizationsResponse(data=[organization_pb(o) for o in items], meta=page.meta(total))

    async def GetOrganization(self, request: pb.GetOrganizationRequest, context: Context) -> pb.GetOrganizationResponse:
        organization = await self._service.get_organization(current_principal(), request.id)
        return pb.GetOrganizationResponse(data=organization_pb(organization))

    async def ListUsers(self, request: pb.ListUsersRequest, context: Context) -> pb.ListUsersResponse:
        page = PageRequest.of(request.page, request.page_size)
        items, total = await self._service.list_users(
            current_principal(), page, request.organization_id, request.sort
        )
        return pb.ListUsersResponse(data=[user_pb(u) for u in items], meta=page.meta(total))

    async def CreateUser(self, request: pb.CreateUserRequest, context: Context) -> pb.CreateUserResponse:
        user = await self._service.create_user(
            current_principal(), email=request.email, full_name=request.full_name, password=request.password,
            roles=list(request.roles), organization_id=request.organization_id, request_id=request.request_id,
        )
        return pb.CreateUserResponse(data=user_pb(user))

    async def GetMe(self, request: pb.GetMeRequest, context: Context) -> pb.GetMeResponse:
        return pb.GetMeResponse(data=user_pb(await self._service.get_me(current_principal())))

    async def UpdateMe(self, request: pb.UpdateMeRequest, context: Context) -> pb.UpdateMeResponse:
        return pb.UpdateMeResponse(data=user_pb(await self._service.update_me(current_principal(), request.full_name)))

    async def ChangePassword(self, request: pb.ChangePasswordRequest, context: Context) -> pb.ChangePasswordResponse:
        await self._service.change_password(current_principal(), request.current_password, request.new_password)
        return pb.ChangePasswordResponse(data=pb.Acknowledgement(message="Password changed."))

    async def GetUser(self, request: pb.GetUserRequest, context: Context) -> pb.GetUserResponse:
        return pb.GetUserResponse(data=user_pb(await self._service.get_user(current_principal(), request.id)))

    async def UpdateUser(self, request: pb.UpdateUserRequest, context: Context) -> pb.UpdateUserResponse:
        user = await self._service.update_user(
            current_principal(), request.id, full_name=request.full_name, roles=list(request.roles),
            unlock=request.unlock,
        )
        return pb.UpdateUserResponse(data=user_pb(user))

    async def DeleteUser(self, request: pb.DeleteUserRequest, context: Context) -> pb.DeleteUserResponse:
        return pb.DeleteUserResponse(data=user_pb(await self._service.delete_user(current_principal(), request.id)))

    async def CreateApiKey(self, request: pb.CreateApiKeyRequest, context: Context) -> pb.CreateApiKeyResponse:
        created = await self._service.create_api_key(current_principal(), request.name, list(request.roles))
        return pb.CreateApiKeyResponse(
            data=pb.CreatedApiKey(api_key=api_key_pb(created.api_key), secret=created.secret)
        )

    async def ListApiKeys(self, request: pb.ListApiKeysRequest, context: Context) -> pb.ListApiKeysResponse:
        page = PageRequest.of(request.page, request.page_size)
        items, total = await self._service.list_api_keys(current_principal(), page)
        return pb.ListApiKeysResponse(data=[api_key_pb(k) for k in items], meta=page.meta(total))

    async def RevokeApiKey(self, request: pb.RevokeApiKeyRequest, context: Context) -> pb.RevokeApiKeyResponse:
        return pb.RevokeApiKeyResponse(
            data=api_key_pb(await self._service.revoke_api_key(current_principal(), request.id))
        )

    async def ListAuditEvents(
        self, request: pb.ListAuditEventsRequest, context: Context
    ) -> pb.ListAuditEventsResponse:
        page = PageRequest.of(request.page, request.page_size)
        items, total = await self._service.list_audit_events(
            current_principal(), page, organization_id=request.organization_id, **_audit_filters(request)
        )
        return pb.ListAuditEventsResponse(data=[audit_event_pb(e) for e in items], meta=page.meta(total))

    async def ExportAuditEvents(
        self, request: pb.ExportAuditEventsRequest, context: Context
    ) -> AsyncIterator[HttpBody]:
        """Server streaming: the first message carries the content type (the gateway sends it as the
        response's), the file name goes out as `content-disposition` before it."""
        export = await self._service.export_audit_events(
            current_principal(), organization_id=request.organization_id, **_audit_filters(request)
        )
        await context.send_initial_metadata((("content-disposition", attachment_disposition(export.filename)),))
        content_type = audit_csv.CONTENT_TYPE
        async for chunk in export.chunks:
            yield HttpBody(content_type=content_type, data=chunk.encode())
            content_type = ""

    async def VerifyAuditTrail(
        self, request: pb.VerifyAuditTrailRequest, context: Context
    ) -> pb.VerifyAuditTrailResponse:
        return pb.VerifyAuditTrailResponse(
            data=verification_pb(await self._service.verify_audit_trail(current_principal()))
        )

    async def GetAuditHistory(
        self, request: pb.GetAuditHistoryRequest, context: Context
    ) -> pb.GetAuditHistoryResponse:
        page = PageRequest.of(request.page, request.page_size)
        items, total = await self._service.audit_history(
            current_principal(), page, request.target_type, request.target_id
        )
        return pb.GetAuditHistoryResponse(data=[audit_event_pb(e) for e in items], meta=page.meta(total))

    async def AnchorAuditTrail(
        self, request: pb.AnchorAuditTrailRequest, context: Context
    ) -> pb.AnchorAuditTrailResponse:
        return pb.AnchorAuditTrailResponse(data=anchor_pb(await self._service.anchor_audit_trail(current_principal())))

    async def AuthenticateApiKey(
        self, request: pb.AuthenticateApiKeyRequest, context: Context
    ) -> pb.AuthenticateApiKeyResponse:
        principal = await self._service.resolve_api_key(request.secret)
        return pb.AuthenticateApiKeyResponse(
            key_id=principal.subject, organization_id=principal.organization_id, roles=sorted(principal.roles),
            organization_kind=kind_pb(principal.organization_kind),
        )

    async def ConfirmSignerIdentity(
        self, request: pb.ConfirmSignerIdentityRequest, context: Context
    ) -> pb.ConfirmSignerIdentityResponse:
        return signer_pb(await self._service.confirm_signer(current_principal(), request.password, request.mfa_code))


def _audit_filters(request: pb.ListAuditEventsRequest | pb.ExportAuditEventsRequest) -> dict[str, str]:
    return {
        "action": request.action, "target_type": request.target_type, "target_id": request.target_id,
        "actor_id": request.actor_id, "occurred_after": request.occurred_after,
        "occurred_before": request.occurred_before,
    }
