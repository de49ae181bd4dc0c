"""DocumentService servicer: maps proto requests to the use cases (service/documents.py) and their
answers back; no rules here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypeAlias

import grpc
from google.api.httpbody_pb2 import HttpBody
from molbridge.document.v1 import document_service_pb2 as pb
from molbridge.document.v1 import document_service_pb2_grpc as pb_grpc

from services.document.domain.documents import Document, Version
from services.document.domain.requirements import Requirements
from services.document.service.documents import DocumentService, GenerateRequest
from services.document.service.ports import MoleculeRow, TemplateInfo
from services.runtime.auth import current_principal
from services.runtime.http_body import request_headers, streamed_body
from services.runtime.pagination import PageRequest
from services.runtime.protomap import enum_name, enum_number, timestamp
from services.runtime.storage import attachment_disposition

Context: TypeAlias = grpc.aio.ServicerContext

PDF = "application/pdf"


def version_pb(version: Version) -> pb.DocumentVersion:
    return pb.DocumentVersion(
        version=version.version,
        filename=version.filename,
        content_type=version.content_type,
        size_bytes=version.size_bytes,
        sha256=version.sha256,
        origin=version.origin.value,
        signed=version.signed,
        created_by=version.created_by,
        created_at=timestamp(version.created_at),
    )


def document_pb(document: Document, *, with_versions: bool = False) -> pb.Document:
    return pb.Document(
        id=document.id,
        organization_id=document.organization_id,
        submission_id=document.submission_id,
        document_type=enum_number(pb.Document.Type, document.document_type.value),
        title=document.title,
        description=document.description,
        status=enum_number(pb.Document.Status, document.status.value),
        current_version=document.current_version,
        current=version_pb(document.current),
        versions=[version_pb(v) for v in reversed(document.versions)] if with_versions else [],
        expires_on=document.expires_on.isoformat() if document.expires_on else "",
        signature_required=document.signature_required,
        template=document.template,
        created_by=document.created_by,
        created_at=timestamp(document.created_at),
        updated_at=timestamp(document.updated_at),
    )


def requirements_pb(found: Requirements) -> pb.DocumentRequirements:
    return pb.DocumentRequirements(
        submission_id=found.submission_id,
        requirements=[
            pb.DocumentRequirement(
                document_type=enum_number(pb.Document.Type, r.document_type.value),
                signature_required=r.signature_required,
                document_id=r.document_id,
                present=r.present,
                signed_by_owner=r.signed_by_owner,
                signed_by_counterparty=r.signed_by_counterparty,
                satisfied=r.satisfied,
            )
            for r in found.requirements
        ],
        complete=found.complete,
    )


def template_pb(info: TemplateInfo) -> pb.DocumentTemplate:
    return pb.DocumentTemplate(
        name=info.name,
        title=info.title,
        document_type=enum_number(pb.Document.Type, info.document_type.value),
        fields=[pb.TemplateField(name=f.name, description=f.description, required=f.required) for f in info.fields],
    )


def molecule_row(molecule: pb.TemplateMolecule) -> MoleculeRow:
    return MoleculeRow(
        label=molecule.label,
        smiles=molecule.smiles,
        formula=molecule.formula,
        molecular_weight=molecule.molecular_weight,
        amount=molecule.amount,
        notes=molecule.notes,
    )


class DocumentServicer(pb_grpc.DocumentServiceServicer):
    SERVICE_FULL_NAME = "molbridge.document.v1.DocumentService"

    def __init__(self, service: DocumentService) -> None:
        self._service = service

    async def UploadDocument(
        self, request_iterator: AsyncIterator[HttpBody], context: Context
    ) -> pb.UploadDocumentResponse:
        content_type, chunks = await streamed_body(request_iterator)
        document = await self._service.upload(
            current_principal(), content_type, chunks, headers=request_headers(context)
        )
        return pb.UploadDocumentResponse(data=document_pb(document, with_versions=True))

    async def ListDocuments(self, request: pb.ListDocumentsRequest, context: Context) -> pb.ListDocumentsResponse:
        page = PageRequest.of(request.page, request.page_size)
        found, total = await self._service.list_documents(
            current_principal(),
            page,
            document_type=enum_name(pb.Document.Type, request.document_type),
            status=enum_name(pb.Document.Status, request.status),
            submission_id=request.submission_id,
            include_deleted=request.include_deleted,
        )
        return pb.ListDocumentsResponse(data=[document_pb(d) for d in found], meta=page.meta(total))

    async def GetDocument(self, request: pb.GetDocumentRequest, context: Context) -> pb.GetDocumentResponse:
        document = await self._service.get(current_principal(), request.id)
        return pb.GetDocumentResponse(data=document_pb(document, with_versions=True))

    async def UpdateDocument(self, request: pb.UpdateDocumentRequest, context: Context) -> pb.UpdateDocumentResponse:
        document = await self._service.update(
            current_principal(),
            request.id,
            title=request.title,
            description=request.description,
            expires_on=request.expires_on,
        )
        return pb.UpdateDocumentResponse(data=document_pb(document, with_versions=True))

    async def DeleteDocument(self, request: pb.DeleteDocumentRequest, context: Context) -> pb.DeleteDocumentResponse:
        document = await self._service.delete(current_principal(), request.id)
        return pb.DeleteDocumentResponse(data=document_pb(document, with_versions=True))

    async def DownloadDocument(self, request: pb.DownloadDocumentRequest, context: Context) -> AsyncIterator[HttpBody]:
        """Server streaming: the first message carries the content type (the gateway sends it as the
        response's), the file name goes out as `content-disposition` before it."""
        download = await self._service.download(current_principal(), request.id, request.version)
        await context.send_initial_metadata((("content-disposition", attachment_disposition(download.filename)),))
        content_type = download.content_type
        async for chunk in download.chunks:
            yield HttpBody(content_type=content_type, data=chunk)
            content_type = ""

    async def GetDocumentDownloadLink(
        self, request: pb.GetDocumentDownloadLinkRequest, context: Context
    ) -> pb.GetDocumentDownloadLinkResponse:
        link = await self._service.download_link(current_principal(), request.id, request.version)
        return pb.GetDocumentDownloadLinkResponse(
            data=pb.DownloadLink(url=link.url, expires_at=timestamp(link.expires_at))
        )

    async def ListDocumentTemplates(
        self, request: pb.ListDocumentTemplatesRequest, context: Context
    ) -> pb.ListDocumentTemplatesResponse:
        found = self._service.templates(current_principal())
        return pb.ListDocumentTemplatesResponse(data=[template_pb(t) for t in found])

    async def PreviewDocumentTemplate(self, request: pb.PreviewDocumentTemplateRequest, context: Context) -> HttpBody:
        pdf = await self._service.preview(current_principal(), request.name)
        await context.send_initial_metadata(
            (("content-disposition", attachment_disposition(f"{request.name}-preview.pdf")),)
        )
        return HttpBody(content_type=PDF, data=pdf)

    async def GenerateDocument(
        self, request: pb.GenerateDocumentRequest, context: Context
    ) -> pb.GenerateDocumentResponse:
        document = await self._service.generate(
            current_principal(),
            GenerateRequest(
                template=request.template,
                fields=dict(request.fields),
                molecules=[molecule_row(m) for m in request.molecules],
                submission_id=request.submission_id,
                title=request.title,
                expires_on=request.expires_on,
                document_id=request.document_id,
            ),
        )
        return pb.GenerateDocumentResponse(data=document_pb(document, with_versions=True))

    async def GetDocumentRequirements(
        self, request: pb.GetDocumentRequirementsRequest, context: Context
    ) -> pb.GetDocumentRequirementsResponse:
        found = await self._service.requirements(
            current_principal(),
            request.submission_id,
            request.service_type,
            include_service_agreement=request.include_service_agreement,
        )
        return pb.GetDocumentRequirementsResponse(data=requirements_pb(found))

    async def ShareSubmissionDocuments(
        self, request: pb.ShareSubmissionDocumentsRequest, context: Context
    ) -> pb.ShareSubmissionDocumentsResponse:
        count = await self._service.share_submission(
            current_principal(),
            request.submission_id,
            request.owner_organization_id,
            request.cro_organization_id,
            shared=request.shared,
        )
        return pb.ShareSubmissionDocumentsResponse(documents=count)
