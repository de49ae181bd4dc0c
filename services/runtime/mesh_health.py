"""GET /api/v1/health: the mesh is healthy when every service it runs answers SERVING."""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from molbridge.health.v1 import health_service_pb2 as pb
from molbridge.health.v1 import health_service_pb2_grpc as pb_grpc

from services.runtime.errors import IntegrationError
from services.runtime.settings import GRPC_BALANCED, Settings, grpc_target

PROBE_TIMEOUT_S = 2.0


class HealthServicer(pb_grpc.HealthServiceServicer):
    SERVICE_FULL_NAME = "molbridge.health.v1.HealthService"

    def __init__(self, settings: Settings) -> None:
        # MOLBRIDGE_SERVICES names the services this deployment runs (the stack sets it).
        names = settings.mesh_services or settings.service_name
        self._targets = {name: settings.addr_of(name) for name in names.split(",") if name}
        self._channels = {name: grpc.aio.insecure_channel(grpc_target(addr), options=GRPC_BALANCED)
                          for name, addr in self._targets.items()}

    async def _probe(self, name: str) -> str:
        stub = health_pb2_grpc.HealthStub(self._channels[name])
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=PROBE_TIMEOUT_S)
        except grpc.aio.AioRpcError:
            return "UNKNOWN"
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

    async def GetHealth(self, request: pb.GetHealthRequest, context: grpc.aio.ServicerContext) -> pb.GetHealthResponse:
        names = list(self._channels)
        statuses = dict(zip(names, await asyncio.gather(*(self._probe(n) for n in names)), strict=True))
        if any(s != "SERVING" for s in statuses.values()):
            down = ", ".join(f"{n}={s}" for n, s in statuses.items() if s != "SERVING")
            raise IntegrationError(f"Not every service is serving: {down}", metadata=statuses)
        return pb.GetHealthResponse(data=pb.MeshHealth(status="ok", services=statuses))

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self._channels.values()))
