"""PredictionService servicer: maps proto requests to the use cases and their answers back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypeAlias

import grpc
from google.api.httpbody_pb2 import HttpBody
from molbridge.prediction.v1 import prediction_service_pb2 as pb
from molbridge.prediction.v1 import prediction_service_pb2_grpc as pb_grpc

from services.prediction.domain import results_csv
from services.prediction.domain.catalogue import Catalogue
from services.prediction.domain.jobs import JobStatus, Prediction
from services.prediction.service.predictions import PredictionService
from services.runtime.auth import current_principal
from services.runtime.molecule_client import forwarded_credentials
from services.runtime.pagination import PageRequest
from services.runtime.storage import attachment_disposition

Context: TypeAlias = grpc.aio.ServicerContext


def result_pb(r: Prediction) -> pb.PredictionResult:
    return pb.PredictionResult(
        molecule_id=r.molecule_id,
        property=r.property,
        value=r.value,
        units=r.units,
        confidence=r.confidence,
        model_name=r.model_name,
        model_version=r.model_version,
    )


def status_pb(s: JobStatus) -> pb.PredictionStatus:
    return pb.PredictionStatus(job_id=s.job_id, status=s.status, total=s.total, completed=s.completed, failed=s.failed)


def models_pb(catalogue: Catalogue) -> list[pb.Model]:
    return [
        pb.Model(
            name=m.name,
            version=m.version,
            properties=[pb.ModelProperty(name=p.name, units=p.units) for p in m.properties],
            description=m.description,
        )
        for m in catalogue.models
    ]


class PredictionServicer(pb_grpc.PredictionServiceServicer):
    SERVICE_FULL_NAME = "molbridge.prediction.v1.PredictionService"

    def __init__(self, service: PredictionService) -> None:
        self._service = service

    async def CreatePrediction(
        self, request: pb.CreatePredictionRequest, context: Context
    ) -> pb.CreatePredictionResponse:
        job = await self._service.create(
            current_principal(),
            list(request.molecule_ids),
            list(request.properties),
            request.model,
            forwarded_credentials(context.invocation_metadata()),
        )
        return pb.CreatePredictionResponse(data=pb.PredictionJob(job_id=job.job_id, status=job.status))

    async def GetPredictionStatus(
        self, request: pb.GetPredictionStatusRequest, context: Context
    ) -> pb.GetPredictionStatusResponse:
        return pb.GetPredictionStatusResponse(
            data=status_pb(await self._service.status(current_principal(), request.job_id))
        )

    async def GetPredictionResults(
        self, request: pb.GetPredictionResultsRequest, context: Context
    ) -> pb.GetPredictionResultsResponse:
        page = PageRequest.of(request.page, request.page_size)
        found, total = await self._service.results(current_principal(), request.job_id, page)
        return pb.GetPredictionResultsResponse(data=[result_pb(r) for r in found], meta=page.meta(total))

    async def DownloadPredictionResults(
        self, request: pb.DownloadPredictionResultsRequest, context: Context
    ) -> AsyncIterator[HttpBody]:
        """Server streaming: the first message carries the content type (the gateway sends it as the
        response's), the file name goes out as `content-disposition` before it."""
        download = await self._service.results_csv(current_principal(), request.job_id)
        await context.send_initial_metadata((("content-disposition", attachment_disposition(download.filename)),))
        content_type = results_csv.CONTENT_TYPE
        async for chunk in download.chunks:
            yield HttpBody(content_type=content_type, data=chunk.encode())
            content_type = ""

    async def ListModels(self, request: pb.ListModelsRequest, context: Context) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(data=models_pb(await self._service.models(current_principal())))

    async def ListMoleculePredictions(
        self, request: pb.ListMoleculePredictionsRequest, context: Context
    ) -> pb.ListMoleculePredictionsResponse:
        found = await self._service.molecule_predictions(current_principal(), request.molecule_id)
        return pb.ListMoleculePredictionsResponse(data=[result_pb(r) for r in found])

    async def BatchListPredictions(
        self, request: pb.BatchListPredictionsRequest, context: Context
    ) -> pb.BatchListPredictionsResponse:
        found = await self._service.batch_predictions(
            current_principal(), list(request.molecule_ids), list(request.properties), request.model_name
        )
        return pb.BatchListPredictionsResponse(data=[result_pb(r) for r in found])
