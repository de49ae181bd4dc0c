"""The gRPC edge of a server process: interceptor, health, reflection (started by services.runtime.process)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.runtime.auth import Authenticator
from services.runtime.interceptors import MeshInterceptor

MAX_MESSAGE_BYTES = 8 * 1024 * 1024


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


def make_grpc_server(
    name: str,
    servicers: Iterable[tuple[Callable[[Any, grpc.aio.Server], None], Any]],
    authenticator: Authenticator | None,
    public_methods: Collection[str] = (),
) -> tuple[grpc.aio.Server, health.aio.HealthServicer]:
    """A server with the mesh interceptor, the given servicers, health and reflection (not started)."""
    server = grpc.aio.server(
        interceptors=[MeshInterceptor(name, authenticator, public_methods)],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ],
    )
    for add, servicer in servicers:
        add(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*all_molbridge_service_names(), health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    return server, health_servicer


def service_names(servicers: Iterable[tuple[Any, Any]]) -> Iterable[str]:
    """The names health answers for: "" (overall) and each servicer's full service name."""
    yield ""  # overall health
    for _, servicer in servicers:
        for base in type(servicer).__mro__:
            full_name = getattr(base, "SERVICE_FULL_NAME", None)
            if full_name:
                yield full_name
                break
