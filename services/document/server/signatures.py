"""SignatureService servicer: maps proto requests to the signature use cases (service/signatures.py) and
their answers back; no rules here."""

from __future__ import annotations

from typing import TypeAlias

import grpc
from google.api.httpbody_pb2 import HttpBody
from molbridge.document.v1 import document_service_pb2 as pb
from molbridge.document.v1 import document_service_pb2_grpc as pb_grpc

from services.document.domain.signatures import SignatureRequest, Signer, SignerSpec
from services.document.service.signatures import SignatureService, Verification
from services.runtime.auth import current_principal
from services.runtime.http_body import request_headers
from services.runtime.molecule_client import forwarded_credentials
from services.runtime.protomap import enum_number, timestamp

Context: TypeAlias = grpc.aio.ServicerContext

# Callable without a token: DocuSign authenticates its callbacks by their HMAC signature.
PUBLIC_METHODS = ("/molbridge.document.v1.SignatureService/ReceiveSignatureWebhook",)


def spec_pb(spec: SignerSpec) -> pb.SignerSpec:
    return pb.SignerSpec(
        user_id=spec.user_id, organization_id=spec.organization_id, role=spec.role, name=spec.name,
        email=spec.email, routing_order=spec.routing_order,
    )


def signer_pb(signer: Signer) -> pb.Signer:
    return pb.Signer(
        position=signer.position,
        routing_order=signer.routing_order,
        spec=spec_pb(signer.spec),
        status=enum_number(pb.Signer.Status, signer.status.value),
        signed_by=signer.signed_by,
        printed_name=signer.printed_name,
        meaning=signer.meaning,
        signed_at=timestamp(signer.signed_at),
        signed_sha256=signer.signed_sha256,
        decline_reason=signer.decline_reason,
    )


def request_pb(request: SignatureRequest) -> pb.SignatureRequest:
    return pb.SignatureRequest(
        id=request.id,
        document_id=request.document_id,
        provider=request.provider.value,
        status=enum_number(pb.SignatureRequest.Status, request.status.value),
        version=request.version,
        sha256=request.sha256,
        signed_version=request.signed_version,
        signers=[signer_pb(s) for s in request.signers],
        envelope_id=request.envelope_id,
        requested_by=request.requested_by,
        created_at=timestamp(request.created_at),
        finished_at=timestamp(request.finished_at),
    )


def verification_pb(verification: Verification) -> pb.SignatureVerification:
    check = verification.check
    return pb.SignatureVerification(
        version=verification.version,
        intact=check.intact,
        trusted=check.trusted,
        covers_whole_document=check.covers_whole_document,
        signer_certificate=check.signer_certificate,
        signed_at=timestamp(check.signed_at),
        summary=check.summary,
    )


def spec_of(message: pb.SignerSpec) -> SignerSpec:
    return SignerSpec(
        user_id=message.user_id.strip(), organization_id=message.organization_id.strip(), role=message.role.strip(),
        name=message.name.strip(), email=message.email.strip(), routing_order=message.routing_order,
    )


class SignatureServicer(pb_grpc.SignatureServiceServicer):
    SERVICE_FULL_NAME = "molbridge.document.v1.SignatureService"

    def __init__(self, service: SignatureService) -> None:
        self._service = service

    async def RequestSignature(
        self, request: pb.RequestSignatureRequest, context: Context
    ) -> pb.RequestSignatureResponse:
        created = await self._service.request(
            current_principal(), request.id, [spec_of(s) for s in request.signers], provider=request.provider,
            message=request.message, idempotency_key=request.request_id,
        )
        return pb.RequestSignatureResponse(data=request_pb(created))

    async def GetSignatureStatus(
        self, request: pb.GetSignatureStatusRequest, context: Context
    ) -> pb.GetSignatureStatusResponse:
        found = await self._service.status(current_principal(), request.id)
        return pb.GetSignatureStatusResponse(data=request_pb(found))

    async def Sign(self, request: pb.SignRequest, context: Context) -> pb.SignResponse:
        signed = await self._service.sign(
            current_principal(), request.id, password=request.password, mfa_code=request.mfa_code.strip(),
            meaning=request.meaning.strip(), credentials=forwarded_credentials(context.invocation_metadata()),
        )
        return pb.SignResponse(data=request_pb(signed))

    async def DeclineSignature(
        self, request: pb.DeclineSignatureRequest, context: Context
    ) -> pb.DeclineSignatureResponse:
        declined = await self._service.decline(current_principal(), request.id, request.reason)
        return pb.DeclineSignatureResponse(data=request_pb(declined))

    async def VoidSignature(self, request: pb.VoidSignatureRequest, context: Context) -> pb.VoidSignatureResponse:
        voided = await self._service.void(current_principal(), request.id, request.reason)
        return pb.VoidSignatureResponse(data=request_pb(voided))

    async def CreateSigningUrl(
        self, request: pb.CreateSigningUrlRequest, context: Context
    ) -> pb.CreateSigningUrlResponse:
        url = await self._service.signing_url(current_principal(), request.id, request.return_url.strip())
        return pb.CreateSigningUrlResponse(data=pb.SigningUrl(url=url))

    async def VerifySignedDocument(
        self, request: pb.VerifySignedDocumentRequest, context: Context
    ) -> pb.VerifySignedDocumentResponse:
        verification = await self._service.verify(current_principal(), request.id, request.version)
        return pb.VerifySignedDocumentResponse(data=verification_pb(verification))

    async def ReceiveSignatureWebhook(self, request: HttpBody, context: Context) -> pb.ReceiveSignatureWebhookResponse:
        headers = request_headers(context)
        applied = await self._service.receive_webhook(request.data, headers)
        return pb.ReceiveSignatureWebhookResponse(applied=applied)
