"""The prediction service as another service sees it: a gRPC client of BatchListPredictions, called with the
caller's own credentials (so the prediction service scopes the predictions to the caller's organization)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc
from molbridge.prediction.v1 import prediction_service_pb2 as pb
from molbridge.prediction.v1 import prediction_service_pb2_grpc as pb_grpc

from services.runtime import telemetry
from services.runtime.peer_errors import peer_error

BATCH_LIST_LIMIT = 1000  # BatchListPredictions' limit of molecule ids per call
CALL_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class PredictedValue:
    """One model version's latest prediction of one molecule's property."""

    molecule_id: str
    property: str
    value: float
    units: str
    confidence: float
    model_name: str
    model_version: str


class PredictionClient:
    def __init__(self, address: str) -> None:
        self._channel = telemetry.traced_channel(address)
        self._stub = pb_grpc.PredictionServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def batch_list(
        self,
        credentials: Mapping[str, str],
        molecule_ids: Sequence[str],
        properties: Sequence[str] = (),
        model_name: str = "",
    ) -> list[PredictedValue]:
        """Every model version's latest prediction of the molecules (the caller's organization's only),
        asked in chunks of BATCH_LIST_LIMIT ids. A prediction service that cannot answer is an
        IntegrationError."""
        found: list[PredictedValue] = []
        metadata = tuple(credentials.items())
        ids = list(dict.fromkeys(molecule_ids))  # one id asked once: the answer is per id anyway
        for start in range(0, len(ids), BATCH_LIST_LIMIT):
            try:
                reply = await self._stub.BatchListPredictions(
                    pb.BatchListPredictionsRequest(
                        molecule_ids=ids[start : start + BATCH_LIST_LIMIT],
                        properties=list(properties),
                        model_name=model_name,
                    ),
                    metadata=metadata,
                    timeout=CALL_TIMEOUT_S,
                )
            except grpc.aio.AioRpcError as error:
                raise peer_error(error, "prediction") from error
            found += [
                PredictedValue(p.molecule_id, p.property, p.value, p.units, p.confidence, p.model_name, p.model_version)
                for p in reply.data
            ]
        return found
