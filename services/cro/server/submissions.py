"""SubmissionService servicer: proto ↔ the submission use cases (service/submissions.py); no rules here.
The caller's credentials are forwarded to the molecule and document services."""

from __future__ import annotations

from typing import TypeAlias

import grpc
from molbridge.cro.v1 import cro_service_pb2 as pb
from molbridge.cro.v1 import cro_service_pb2_grpc as pb_grpc

from services.cro.domain.submissions import Quote, SubmissionMolecule
from services.cro.server.catalogue import credentials_of, dict_to_struct, struct_to_dict
from services.cro.service.submissions import (
    ActionInput,
    LineItemInput,
    ListFilters,
    SubmissionService,
    SubmissionView,
)
from services.runtime.auth import current_principal
from services.runtime.document_client import DocumentRequirements
from services.runtime.pagination import PageRequest
from services.runtime.protomap import enum_name, enum_number, timestamp

Context: TypeAlias = grpc.aio.ServicerContext


def quote_pb(quote: Quote, view: SubmissionView) -> pb.Quote:
    return pb.Quote(
        number=quote.number,
        price=str(quote.price),
        currency=quote.currency,
        turnaround_days=quote.turnaround_days,
        valid_until=quote.valid_until.isoformat(),
        line_items=[
            pb.QuoteLineItem(
                molecule=view.quote_molecule(item.molecule_id),
                assay=item.assay,
                replicates=item.replicates,
                unit_price=str(item.unit_price),
                amount=str(item.amount),
            )
            for item in quote.line_items
        ],
        over_budget=quote.over_budget,
        note=quote.note,
        provided_by=quote.provided_by,
        provided_at=timestamp(quote.provided_at),
    )


def submission_pb(view: SubmissionView) -> pb.Submission:
    s = view.submission
    quote = s.approved_quote or s.current_quote
    return pb.Submission(
        id=s.id,
        name=s.name,
        organization_id=s.organization_id,
        cro_service_id=s.service_id,
        cro_service_name=view.service_name,
        service_type=enum_number(pb.CroService.ServiceType, s.service_type),
        cro_organization_id=s.cro_organization_id,
        status=enum_number(pb.Submission.Status, s.status.value),
        molecules=[
            pb.SubmissionMolecule(
                molecule_id=m.molecule_id,
                sample_code=m.sample_code,
                registration_number=m.registration_number,
                smiles=m.smiles,
                formula=m.formula,
                molecular_weight=m.molecular_weight or 0.0,
                concentration=m.concentration,
                notes=m.notes,
            )
            for m in view.molecules
        ],
        specifications=dict_to_struct(s.specifications),
        budget=str(s.budget) if s.budget is not None else "",
        currency=s.currency,
        price=str(s.price) if s.price is not None else "",
        turnaround_days=s.turnaround_days or 0,
        estimated_completion=s.estimated_completion.isoformat() if s.estimated_completion else "",
        current_quote=quote_pb(quote, view) if quote else None,
        structures_revealed=s.structures_revealed,
        package_sha256=s.package_sha256,
        step_times=[pb.StepTime(status=status.value, at=timestamp(at)) for status, at in s.step_times.items()],
        permitted_actions=list(view.permitted_actions),
        created_by=s.created_by,
        created_at=timestamp(s.created_at),
        updated_at=timestamp(s.updated_at),
    )


def requirements_pb(found: DocumentRequirements) -> pb.SubmissionDocumentRequirements:
    return pb.SubmissionDocumentRequirements(
        submission_id=found.submission_id,
        requirements=[
            pb.SubmissionDocumentRequirement(
                document_type=r.document_type,
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


def _molecules(items: list[pb.SubmissionMoleculeInput]) -> list[SubmissionMolecule]:
    return [SubmissionMolecule(m.molecule_id.strip(), m.concentration, m.notes) for m in items]


class SubmissionServicer(pb_grpc.SubmissionServiceServicer):
    SERVICE_FULL_NAME = "molbridge.cro.v1.SubmissionService"

    def __init__(self, service: SubmissionService) -> None:
        self._service = service

    async def ListSubmissions(self, request: pb.ListSubmissionsRequest, context: Context) -> pb.ListSubmissionsResponse:
        page = PageRequest.of(request.page, request.page_size)
        filters = ListFilters(
            status=enum_name(pb.Submission.Status, request.status),
            cro_organization_id=request.cro_organization_id,
            cro_service_id=request.cro_service_id,
            created_from=request.created_from,
            created_to=request.created_to,
            molecule_id=request.molecule_id,
        )
        found, total = await self._service.list_submissions(current_principal(), filters, page)
        return pb.ListSubmissionsResponse(data=[submission_pb(v) for v in found], meta=page.meta(total))

    async def CreateSubmission(
        self, request: pb.CreateSubmissionRequest, context: Context
    ) -> pb.CreateSubmissionResponse:
        view = await self._service.create(
            current_principal(),
            credentials_of(context),
            name=request.name,
            service_id=request.cro_service_id,
            molecules=_molecules(list(request.molecules)),
            specifications=struct_to_dict(request.specifications),
            budget=request.budget,
            request_id=request.request_id,
        )
        return pb.CreateSubmissionResponse(data=submission_pb(view))

    async def GetSubmission(self, request: pb.GetSubmissionRequest, context: Context) -> pb.GetSubmissionResponse:
        return pb.GetSubmissionResponse(data=submission_pb(await self._service.get(current_principal(), request.id)))

    async def UpdateSubmission(
        self, request: pb.UpdateSubmissionRequest, context: Context
    ) -> pb.UpdateSubmissionResponse:
        view = await self._service.update(
            current_principal(),
            credentials_of(context),
            request.id,
            name=request.name,
            molecules=_molecules(list(request.molecules)) if request.replace_molecules else None,
            specifications=struct_to_dict(request.specifications) if request.HasField("specifications") else None,
            budget=request.budget,
        )
        return pb.UpdateSubmissionResponse(data=submission_pb(view))

    async def ActOnSubmission(
        self, request: pb.ActOnSubmissionRequest, context: Context
    ) -> pb.ActOnSubmissionResponse:
        action = ActionInput(
            action=request.action,
            reason=request.reason,
            text=request.text,
            price=request.price,
            currency=request.currency,
            turnaround_days=request.turnaround_days,
            valid_until=request.valid_until,
            line_items=[
                LineItemInput(i.molecule, i.assay, i.replicates, i.unit_price) for i in request.line_items
            ],
            note=request.note,
            request_id=request.request_id,
        )
        view = await self._service.act(current_principal(), credentials_of(context), request.id, action)
        return pb.ActOnSubmissionResponse(data=submission_pb(view))

    async def GetSubmissionDocumentRequirements(
        self, request: pb.GetSubmissionDocumentRequirementsRequest, context: Context
    ) -> pb.GetSubmissionDocumentRequirementsResponse:
        found = await self._service.document_requirements(current_principal(), credentials_of(context), request.id)
        return pb.GetSubmissionDocumentRequirementsResponse(data=requirements_pb(found))

    async def GetSubmissionStatusCounts(
        self, request: pb.GetSubmissionStatusCountsRequest, context: Context
    ) -> pb.GetSubmissionStatusCountsResponse:
        counts = await self._service.status_counts(current_principal())
        return pb.GetSubmissionStatusCountsResponse(
            data=[pb.StatusCount(status=status, count=count) for status, count in counts.items()]
        )

    async def ListQuotes(self, request: pb.ListQuotesRequest, context: Context) -> pb.ListQuotesResponse:
        view, quotes = await self._service.quotes(current_principal(), request.id)
        return pb.ListQuotesResponse(data=[quote_pb(q, view) for q in quotes])

    async def GetSubmissionPackage(
        self, request: pb.GetSubmissionPackageRequest, context: Context
    ) -> pb.GetSubmissionPackageResponse:
        stored, manifest = await self._service.package(current_principal(), request.id)
        return pb.GetSubmissionPackageResponse(
            data=pb.SubmissionPackage(
                sha256=stored.sha256, manifest=dict_to_struct(manifest), built_at=timestamp(stored.built_at)
            )
        )

    async def SetStructuresRevealed(
        self, request: pb.SetStructuresRevealedRequest, context: Context
    ) -> pb.SetStructuresRevealedResponse:
        view = await self._service.set_structures_revealed(
            current_principal(), credentials_of(context), request.id, revealed=request.revealed
        )
        return pb.SetStructuresRevealedResponse(data=submission_pb(view))
