"""The gRPC edge of a server process: interceptor, health, reflection (started by services.runtime.process)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

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
    enable_reflection([*all_molbridge_service_names(), health.SERVICE_NAME], server)
    return server, health_servicer


REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


def _register_reflection_v1_descriptor() -> None:
    """grpc.reflection.v1's proto in the default pool, so reflection can describe itself too. Its
    messages are v1alpha's under another package (the two protos differ in nothing else)."""
    pool = descriptor_pool.Default()
    try:
        pool.FindServiceByName(REFLECTION_V1)
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    old_package = proto.package
    proto.name, proto.package = "grpc/reflection/v1/reflection.proto", REFLECTION_V1.rsplit(".", 1)[0]
    for message in proto.message_type:
        for f in message.field:
            if f.HasField("type_name"):  # assigning "" would mark a scalar as typed
                f.type_name = f.type_name.replace(f".{old_package}.", f".{proto.package}.")
    for method in proto.service[0].method:
        method.input_type = method.input_type.replace(f".{old_package}.", f".{proto.package}.")
        method.output_type = method.output_type.replace(f".{old_package}.", f".{proto.package}.")
    pool.Add(proto)


def enable_reflection(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    """Server reflection under both names clients ask for: grpc.reflection.v1 (grpcurl >= 1.8.8
    asks it first) and v1alpha. grpcio-reflection implements v1alpha only; the wire format is the
    same, so the v1 method is v1alpha's servicer behind v1's name."""
    _register_reflection_v1_descriptor()
    names = [*service_names, reflection.SERVICE_NAME, REFLECTION_V1]
    servicer = reflection.aio.ReflectionServicer(names)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    info = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(REFLECTION_V1, {"ServerReflectionInfo": info}),)
    )


def service_names(servicers: Iterable[tuple[Any, Any]]) -> Iterable[str]:
    """The names health answers for: "" (overall) and each servicer's full service name."""
    yield ""  # overall health
    for _, servicer in servicers:
        for base in type(servicer).__mro__:
            full_name = getattr(base, "SERVICE_FULL_NAME", None)
            if full_name:
                yield full_name
                break
