"""gRPC server bootstrap shared by every service: interceptor, health, reflection, graceful stop."""

from __future__ import annotations

import asyncio
import importlib
import logging
import signal
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.runtime.auth import Authenticator
from services.runtime.interceptors import MeshInterceptor
from services.runtime.settings import Settings

log = logging.getLogger("molbridge.server")

MAX_MESSAGE_BYTES = 8 * 1024 * 1024
GRACE_SECONDS = 5.0


def all_molbridge_service_names() -> list[str]:
    """Every service in the generated `molbridge` protos: the reflection answer lists the whole API,
    whichever backend the gateway routes reflection to. The generated folders are namespace packages
    (no __init__.py), so they are found by file rather than by pkgutil."""
    import molbridge

    names: list[str] = []
    for root in molbridge.__path__:
        for path in sorted(Path(root).rglob("*_pb2.py")):
            module = ".".join(("molbridge", *path.relative_to(root).with_suffix("").parts))
            descriptor = importlib.import_module(module).DESCRIPTOR
            names.extend(s.full_name for s in descriptor.services_by_name.values())
    return sorted(names)


@dataclass
class ServiceApp:
    """What a service's composition root hands to `run`."""

    settings: Settings
    # (add_XServicer_to_server, servicer) pairs
    servicers: list[tuple[Callable[[Any, grpc.aio.Server], None], Any]]
    authenticator: Authenticator | None
    public_methods: Collection[str] = ()
    # Long-running coroutines (outbox relay, consumers) started with the server, cancelled at stop.
    background: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


async def start_server(app: ServiceApp) -> tuple[grpc.aio.Server, health.aio.HealthServicer, list[asyncio.Task]]:
    server = grpc.aio.server(
        interceptors=[MeshInterceptor(app.settings.service_name, app.authenticator, app.public_methods)],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ],
    )
    for add, servicer in app.servicers:
        add(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*all_molbridge_service_names(), health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    server.add_insecure_port(app.settings.listen_addr)
    await server.start()
    tasks = [asyncio.create_task(_supervised(job)) for job in app.background]
    await _set_serving(health_servicer, _service_names(app), health_pb2.HealthCheckResponse.SERVING)
    log.info("serving %s on %s", app.settings.service_name, app.settings.listen_addr)
    return server, health_servicer, tasks


async def stop_server(
    app: ServiceApp, server: grpc.aio.Server, health_servicer: health.aio.HealthServicer, tasks: list[asyncio.Task]
) -> None:
    # Tell load balancers first, then drain in-flight calls, then stop background work.
    await _set_serving(health_servicer, _service_names(app), health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.stop(GRACE_SECONDS)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for hook in app.on_stop:
        await hook()
    log.info("stopped %s", app.settings.service_name)


async def run(app: ServiceApp) -> None:
    """Serve until SIGINT/SIGTERM, then stop gracefully."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    server, health_servicer, tasks = await start_server(app)
    await stopping.wait()
    await stop_server(app, server, health_servicer, tasks)


def _service_names(app: ServiceApp) -> Iterable[str]:
    yield ""  # overall health
    for _, servicer in app.servicers:
        for base in type(servicer).__mro__:
            full_name = getattr(base, "SERVICE_FULL_NAME", None)
            if full_name:
                yield full_name
                break


async def _set_serving(servicer: health.aio.HealthServicer, names: Iterable[str], status: int) -> None:
    for name in names:
        await servicer.set(name, status)


async def _supervised(job: Callable[[], Awaitable[None]]) -> None:
    """Background work must not die silently: log and restart after a pause."""
    while True:
        try:
            await job()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background job %s failed; restarting in 1 s", getattr(job, "__qualname__", job))
            await asyncio.sleep(1)
