"""ResultService servicer: proto ↔ the result use cases (service/results.py); no rules here. The
predicted-vs-measured RPCs come from ComparisonRpcs (server/comparisons.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeAlias

import grpc
from google.api.httpbody_pb2 import HttpBody
from molbridge.cro.v1 import result_service_pb2 as pb
from molbridge.cro.v1 import result_service_pb2_grpc as pb_grpc

from services.cro.domain import results as rules
from services.cro.domain.result_versions import ResultVersion
from services.cro.server.comparisons import ComparisonRpcs
from services.cro.service.comparisons import ComparisonService
from services.cro.service.results import (
    REPORT_CONTENT_TYPE,
    ProcessInput,
    ResultService,
    ResultsPreview,
    ValueView,
)
from services.cro.store.results import StoredResultsFile
from services.runtime.auth import current_principal
from services.runtime.http_body import request_headers, streamed_body
from services.runtime.pagination import PageRequest
from services.runtime.protomap import enum_name, enum_number, timestamp
from services.runtime.storage import attachment_disposition

Context: TypeAlias = grpc.aio.ServicerContext

NOT_CREATED = (("x-molbridge-not-created", "1"),)


def stored_file_pb(stored: StoredResultsFile) -> pb.StoredResultsFile:
    return pb.StoredResultsFile(
        storage_key=stored.storage_key, filename=stored.filename, size_bytes=stored.size_bytes, sha256=stored.sha256
    )


def measurement_pb(m: rules.Measurement) -> pb.Measurement:
    return pb.Measurement(
        sample_code=m.sample_code, molecule_id=m.molecule_id, property=m.property, qualifier=m.qualifier.value,
        value=m.value, units=m.units, replicate=m.replicate, notes=m.notes, row_number=m.row_number,
        original=m.original,
    )


def row_error_pb(e: rules.RowError) -> pb.RowError:
    return pb.RowError(row_number=e.row_number, column=e.column, code=str(e.code), reason=e.reason, property=e.property)


def preview_pb(p: ResultsPreview) -> pb.ResultsPreview:
    return pb.ResultsPreview(
        headers=p.headers,
        rows=[pb.ResultsPreviewRow(cells=row) for row in p.rows],
        suggested_mapping=p.suggested_mapping,
        encoding=p.encoding,
        delimiter=p.delimiter,
        format=p.format,
        measurements=[measurement_pb(m) for m in p.measurements],
        errors=[row_error_pb(e) for e in p.errors],
        requested_properties=list(p.requested_properties),
    )


def qc_pb(qc: dict[str, Any]) -> pb.QcSummary:
    per_property = qc.get("per_property", {})
    return pb.QcSummary(
        rows=qc.get("rows", 0),
        rows_rejected=qc.get("rows_rejected", 0),
        values_accepted=qc.get("values_accepted", 0),
        errors=qc.get("errors", 0),
        per_property=[
            pb.PropertyQc(property=name, accepted=c["accepted"], rejected=c["rejected"], samples=c["samples"])
            for name, c in sorted(per_property.items())
        ],
        missing=[pb.MissingValue(sample_code=code, property=name) for code, name in qc.get("missing", [])],
        conflicting=qc.get("conflicting", 0),
        clean=qc.get("clean", False),
    )


def result_pb(v: ResultVersion) -> pb.Result:
    review = None
    if v.review_decision:
        review = pb.Review(
            decision=enum_number(pb.Review.Decision, v.review_decision), reason=v.review_reason,
            reviewed_by=v.reviewed_by, reviewed_at=timestamp(v.reviewed_at),
        )
    return pb.Result(
        id=v.id,
        submission_id=v.submission_id,
        submission_name=v.submission_name,
        version=v.version,
        status=enum_number(pb.Result.Status, v.status.value),
        current=v.current,
        superseded_by=v.superseded_by,
        format=v.format,
        mode=v.mode.value,
        filename=v.filename,
        file_sha256=v.file_sha256,
        content_sha256=v.content_sha256,
        total_rows=v.total_rows,
        processed_rows=v.processed_rows,
        values_accepted=v.values_accepted,
        rows_rejected=v.rows_rejected,
        error_count=v.error_count,
        qc=qc_pb(v.qc) if v.qc else None,
        qc_flag=enum_number(pb.QcSummary.Flag, v.qc_flag) if v.qc_flag else pb.QcSummary.FLAG_UNSPECIFIED,
        qc_note=v.qc_note,
        notes=v.notes,
        failure_reason=v.failure_reason,
        review=review,
        uploaded_by=v.uploaded_by,
        created_at=timestamp(v.created_at),
        finished_at=timestamp(v.finished_at),
        updated_at=timestamp(v.updated_at),
        withdrawn=v.withdrawn,
        organization_id=v.organization_id,
        cro_organization_id=v.cro_organization_id,
    )


def value_pb(v: ValueView) -> pb.ResultValue:
    a = v.aggregate
    return pb.ResultValue(
        sample_code=a.sample_code,
        molecule_id=a.molecule_id,
        registration_number=v.registration_number,
        property=a.property,
        units=a.units,
        qualifier=a.qualifier.value if a.qualifier else "",
        value=a.value,
        mean=a.mean,
        sd=a.sd,
        n=a.n,
        n_censored=a.n_censored,
        replicates=[measurement_pb(m) for m in v.replicates],
    )


class ResultServicer(ComparisonRpcs, pb_grpc.ResultServiceServicer):
    def __init__(self, results: ResultService, comparisons: ComparisonService) -> None:
        self._results = results
        self._comparisons = comparisons

    async def UploadResults(
        self, request_iterator: AsyncIterator[HttpBody], context: Context
    ) -> pb.UploadResultsResponse:
        content_type, chunks = await streamed_body(request_iterator)
        stored = await self._results.upload(
            current_principal(), content_type, chunks,
            disposition=request_headers(context).get("content-disposition", ""),
        )
        return pb.UploadResultsResponse(data=stored_file_pb(stored))

    async def PreviewResults(self, request: pb.PreviewResultsRequest, context: Context) -> pb.PreviewResultsResponse:
        preview = await self._results.preview(
            current_principal(), request.storage_key, rows=request.rows, submission_id=request.submission_id,
            mapping=dict(request.mapping),
        )
        return pb.PreviewResultsResponse(data=preview_pb(preview))

    async def ProcessResults(self, request: pb.ProcessResultsRequest, context: Context) -> pb.ProcessResultsResponse:
        version, created = await self._results.process(
            current_principal(),
            ProcessInput(
                storage_key=request.storage_key, submission_id=request.submission_id, mapping=dict(request.mapping),
                column_units=dict(request.column_units), mode=request.mode, notes=request.notes,
            ),
        )
        if not created:
            await context.send_initial_metadata(NOT_CREATED)
        return pb.ProcessResultsResponse(data=result_pb(version))

    async def ListResults(self, request: pb.ListResultsRequest, context: Context) -> pb.ListResultsResponse:
        page = PageRequest.of(request.page, request.page_size)
        versions, total = await self._results.list_results(
            current_principal(), page, submission_id=request.submission_id, statuses=list(request.status),
            current_only=request.current_only,
        )
        return pb.ListResultsResponse(data=[result_pb(v) for v in versions], meta=page.meta(total))

    async def GetResult(self, request: pb.GetResultRequest, context: Context) -> pb.GetResultResponse:
        return pb.GetResultResponse(data=result_pb(await self._results.get(current_principal(), request.id)))

    async def UpdateResult(self, request: pb.UpdateResultRequest, context: Context) -> pb.UpdateResultResponse:
        flag = enum_name(pb.QcSummary.Flag, request.qc_flag) if request.qc_flag else ""
        version = await self._results.update(
            current_principal(), request.id, notes=request.notes if request.HasField("notes") else None,
            qc_flag=flag, qc_note=request.qc_note,
        )
        return pb.UpdateResultResponse(data=result_pb(version))

    async def DeleteResult(self, request: pb.DeleteResultRequest, context: Context) -> pb.DeleteResultResponse:
        return pb.DeleteResultResponse(data=result_pb(await self._results.withdraw(current_principal(), request.id)))

    async def WatchResult(
        self, request: pb.WatchResultRequest, context: Context
    ) -> AsyncIterator[pb.WatchResultResponse]:
        """Server streaming; the last message has `final` set."""
        async for version, final in self._results.watch(current_principal(), request.id):
            yield pb.WatchResultResponse(data=result_pb(version), final=final)

    async def ListResultValues(
        self, request: pb.ListResultValuesRequest, context: Context
    ) -> pb.ListResultValuesResponse:
        page = PageRequest.of(request.page, request.page_size)
        values, total = await self._results.values(
            current_principal(), request.id, page, property_name=request.property, sample_code=request.sample_code
        )
        return pb.ListResultValuesResponse(data=[value_pb(v) for v in values], meta=page.meta(total))

    async def GetResultErrors(self, request: pb.GetResultErrorsRequest, context: Context) -> HttpBody:
        report = await self._results.error_report(current_principal(), request.id)
        await context.send_initial_metadata((("content-disposition", attachment_disposition(report.filename)),))
        return HttpBody(content_type=REPORT_CONTENT_TYPE, data=report.data)

    async def ReviewResult(self, request: pb.ReviewResultRequest, context: Context) -> pb.ReviewResultResponse:
        decision = enum_name(pb.Review.Decision, request.decision) if request.decision else ""
        version = await self._results.review(current_principal(), request.id, decision=decision, reason=request.reason)
        return pb.ReviewResultResponse(data=result_pb(version))

    async def ListMoleculeResults(
        self, request: pb.ListMoleculeResultsRequest, context: Context
    ) -> pb.ListMoleculeResultsResponse:
        page = PageRequest.of(request.page, request.page_size)
        found, total = await self._results.molecule_results(current_principal(), request.molecule_id, page)
        return pb.ListMoleculeResultsResponse(
            data=[
                pb.MoleculeResult(
                    result_id=item.version.id,
                    submission_id=item.version.submission_id,
                    submission_name=item.version.submission_name,
                    status=enum_number(pb.Result.Status, item.version.status.value),
                    decision=enum_number(pb.Review.Decision, item.version.review_decision)
                    if item.version.review_decision else pb.Review.DECISION_UNSPECIFIED,
                    value=value_pb(item.value),
                    created_at=timestamp(item.version.created_at),
                    reviewed_at=timestamp(item.version.reviewed_at),
                )
                for item in found
            ],
            meta=page.meta(total),
        )
