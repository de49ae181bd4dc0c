"""ImportService servicer: maps protos to the upload (imports.py) and import job (import_jobs.py) service
layers and back; no rules here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypeAlias

import grpc
from google.api.httpbody_pb2 import HttpBody
from molbridge.molecule.v1 import import_service_pb2 as pb
from molbridge.molecule.v1 import import_service_pb2_grpc as pb_grpc

from services.molecule.domain.imports import ImportJob
from services.molecule.server.mapping import caller_credentials
from services.molecule.service.import_jobs import REPORT_CONTENT_TYPE, ImportJobService
from services.molecule.service.uploads import StoredUpload, UploadService
from services.runtime import csv_format
from services.runtime.auth import current_principal
from services.runtime.http_body import request_headers, streamed_body
from services.runtime.pagination import PageRequest
from services.runtime.protomap import timestamp
from services.runtime.storage import attachment_disposition

Context: TypeAlias = grpc.aio.ServicerContext

UPLOADS = "uploads"
IMPORT_JOBS = "import_jobs"


def stored_upload_pb(upload: StoredUpload) -> pb.StoredUpload:
    return pb.StoredUpload(
        storage_key=upload.storage_key, filename=upload.filename, size_bytes=upload.size_bytes
    )


def preview_pb(preview: csv_format.Preview) -> pb.CsvPreview:
    dialect = preview.dialect
    return pb.CsvPreview(
        headers=preview.headers,
        rows=[pb.PreviewRow(cells=cells) for cells in preview.rows],
        suggested_mapping=preview.suggested_mapping,
        encoding="utf-8-sig" if dialect.has_bom else dialect.encoding,
        delimiter=dialect.delimiter,
    )


def import_job_pb(job: ImportJob) -> pb.ImportJob:
    return pb.ImportJob(
        job_id=job.id,
        status=job.status.value.lower(),
        total_rows=job.total_rows,
        processed_rows=job.processed_rows,
        registered=job.registered,
        merged=job.merged,
        rejected=job.rejected,
        rows_per_second=job.throughput.rows_per_second,
        eta_seconds=job.throughput.eta_seconds,
        library_id=job.library_id or "",
        failure_reason=job.failure_reason,
        filename=job.filename,
        mode=job.mode.value,
        created_by=job.created_by,
        created_at=timestamp(job.created_at),
        finished_at=timestamp(job.finished_at),
    )


class ImportServicer(pb_grpc.ImportServiceServicer):
    SERVICE_FULL_NAME = "molbridge.molecule.v1.ImportService"

    def __init__(self, uploads: UploadService, jobs: ImportJobService) -> None:
        self._uploads = uploads
        self._jobs = jobs

    async def UploadCsv(
        self, request_iterator: AsyncIterator[HttpBody], context: Context
    ) -> pb.UploadCsvResponse:
        content_type, chunks = await streamed_body(request_iterator)
        upload = await self._uploads.upload(
            current_principal(),
            content_type,
            chunks,
            disposition=request_headers(context).get("content-disposition", ""),
        )
        return pb.UploadCsvResponse(data=stored_upload_pb(upload))

    async def PreviewCsv(self, request: pb.PreviewCsvRequest, context: Context) -> pb.PreviewCsvResponse:
        preview = await self._uploads.preview(current_principal(), request.storage_key, request.rows)
        return pb.PreviewCsvResponse(data=preview_pb(preview))

    async def StartImport(self, request: pb.StartImportRequest, context: Context) -> pb.StartImportResponse:
        job = await self._jobs.start_import(
            current_principal(),
            request.storage_key,
            dict(request.mapping),
            request.mode,
            request.library_id,
            list(request.predict),
            request.request_id,
            credentials=caller_credentials(context.invocation_metadata()),
        )
        return pb.StartImportResponse(data=import_job_pb(job))

    async def ListImports(self, request: pb.ListImportsRequest, context: Context) -> pb.ListImportsResponse:
        page = PageRequest.of(request.page, request.page_size)
        jobs, total = await self._jobs.list_imports(current_principal(), page)
        return pb.ListImportsResponse(data=[import_job_pb(job) for job in jobs], meta=page.meta(total))

    async def GetImport(self, request: pb.GetImportRequest, context: Context) -> pb.GetImportResponse:
        job = await self._jobs.get_import(current_principal(), request.job_id)
        return pb.GetImportResponse(data=import_job_pb(job))

    async def WatchImport(
        self, request: pb.WatchImportRequest, context: Context
    ) -> AsyncIterator[pb.WatchImportResponse]:
        """Server streaming; the last message has `final` set (browsers cannot see a stream's status)."""
        async for job, final in self._jobs.watch_import(current_principal(), request.job_id):
            yield pb.WatchImportResponse(data=import_job_pb(job), final=final)

    async def CancelImport(
        self, request: pb.CancelImportRequest, context: Context
    ) -> pb.CancelImportResponse:
        job = await self._jobs.cancel_import(current_principal(), request.job_id)
        return pb.CancelImportResponse(data=import_job_pb(job))

    async def GetImportErrors(self, request: pb.GetImportErrorsRequest, context: Context) -> HttpBody:
        report = await self._jobs.error_report_inline(current_principal(), request.job_id)
        # The file name, for native gRPC clients and for the gateway to pass on where it does.
        await context.send_initial_metadata((("content-disposition", attachment_disposition(report.filename)),))
        return HttpBody(content_type=REPORT_CONTENT_TYPE, data=report.data)

    async def GetImportErrorsLink(
        self, request: pb.GetImportErrorsLinkRequest, context: Context
    ) -> pb.GetImportErrorsLinkResponse:
        link = await self._jobs.error_report_link(current_principal(), request.job_id)
        return pb.GetImportErrorsLinkResponse(
            data=pb.DownloadLink(url=link.url, expires_at=timestamp(link.expires_at))
        )
