"""PredictionService servicer (proto ↔ jobs.py) and the molecule service client it reads SMILES with."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import grpc
from molbridge.molecule.v1 import molecule_service_pb2 as molecule_pb
from molbridge.molecule.v1 import molecule_service_pb2_grpc as molecule_grpc
from molbridge.prediction.v1 import prediction_service_pb2 as pb
from molbridge.prediction.v1 import prediction_service_pb2_grpc as pb_grpc

from services.prediction.jobs import JobStatus, PredictionService, Result
from services.runtime import telemetry
from services.runtime.auth import current_principal
from services.runtime.errors import IntegrationError, ValidationError

Context: TypeAlias = grpc.aio.ServicerContext
CREDENTIAL_HEADERS = ("authorization", "x-api-key")
MOLECULE_BATCH = 1000  # BatchGetMolecules' limit


class RemoteMolecules:
    """MoleculeDirectory over the molecule service's gRPC API, called with the caller's credentials."""

    def __init__(self, address: str) -> None:
        self._channel = telemetry.traced_channel(address)
        self._stub = molecule_grpc.MoleculeServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def structures(
        self, ids: Sequence[str], credentials: Mapping[str, str]
    ) -> tuple[list[tuple[str, str]], list[str]]:
        found: list[tuple[str, str]] = []
        missing: list[str] = []
        metadata = tuple(credentials.items())
        for start in range(0, len(ids), MOLECULE_BATCH):
            try:
                reply = await self._stub.BatchGetMolecules(
                    molecule_pb.BatchGetMoleculesRequest(ids=ids[start : start + MOLECULE_BATCH]),
                    metadata=metadata,
                    timeout=30,
                )
            except grpc.aio.AioRpcError as error:
                if error.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND):
                    raise ValidationError(error.details() or "invalid molecule ids") from error
                raise IntegrationError(
                    "The molecule service could not be reached; the prediction was not queued"
                ) from error
            found += [(m.id, m.canonical_smiles) for m in reply.data]
            missing += reply.not_found_ids
        return found, missing


def _credentials(context: Context) -> dict[str, str]:
    return {k: v for k, v in context.invocation_metadata() or () if k in CREDENTIAL_HEADERS and isinstance(v, str)}


def _result_pb(r: Result) -> pb.PredictionResult:
    return pb.PredictionResult(
        molecule_id=r.molecule_id,
        property=r.property,
        value=r.value,
        units=r.units,
        confidence=r.confidence,
        model_name=r.model_name,
        model_version=r.model_version,
    )


def _status_pb(s: JobStatus) -> pb.PredictionStatus:
    return pb.PredictionStatus(job_id=s.job_id, status=s.status, total=s.total, completed=s.completed, failed=s.failed)


def models_pb(payload: Any) -> list[pb.Model]:
    """The engine's /v1/models document ({"models": [...]} or a list) as Model messages."""
    items = payload.get("models", []) if isinstance(payload, Mapping) else payload or []
    out: list[pb.Model] = []
    for item in items:
        properties = [
            pb.ModelProperty(name=str(p.get("name") or p.get("property") or ""), units=str(p.get("units") or ""))
            if isinstance(p, Mapping)
            else pb.ModelProperty(name=str(p))
            for p in item.get("properties") or []
        ]
        out.append(
            pb.Model(
                name=str(item.get("name") or ""),
                version=str(item.get("version") or ""),
                properties=properties,
                description=str(item.get("description") or ""),
            )
        )
    return out


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
            _credentials(context),
        )
        return pb.CreatePredictionResponse(data=pb.PredictionJob(job_id=job.job_id, status=job.status))

    async def GetPredictionStatus(
        self, request: pb.GetPredictionStatusRequest, context: Context
    ) -> pb.GetPredictionStatusResponse:
        return pb.GetPredictionStatusResponse(
            data=_status_pb(await self._service.status(current_principal(), request.job_id))
        )

    async def GetPredictionResults(
        self, request: pb.GetPredictionResultsRequest, context: Context
    ) -> pb.GetPredictionResultsResponse:
        found = await self._service.results(current_principal(), request.job_id)
        return pb.GetPredictionResultsResponse(data=[_result_pb(r) for r in found])

    async def ListModels(self, request: pb.ListModelsRequest, context: Context) -> pb.ListModelsResponse:
        current_principal()  # any authenticated caller
        return pb.ListModelsResponse(data=models_pb(await self._service.models()))

    async def ListMoleculePredictions(
        self, request: pb.ListMoleculePredictionsRequest, context: Context
    ) -> pb.ListMoleculePredictionsResponse:
        found = await self._service.molecule_predictions(current_principal(), request.molecule_id)
        return pb.ListMoleculePredictionsResponse(data=[_result_pb(r) for r in found])


__all__ = ["PredictionServicer", "RemoteMolecules", "models_pb"]
