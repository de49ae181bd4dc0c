"""Spans across a real gRPC hop (grpc.aio server with the runtime's interceptor, client through
`traced_channel`) and real PostgreSQL statements, read back from the JSON-lines file."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.ext.asyncio import create_async_engine

from cli.client import describe_rpc_error
from services.runtime.db import sqlalchemy_url
from services.runtime.errors import ValidationError
from services.runtime.interceptors import MeshInterceptor
from services.runtime.telemetry import (
    SpanRecord,
    configure_tracing,
    instrument_engine,
    read_span_records,
    server_span,
    shutdown_tracing,
    traced_channel,
    tracer,
    traces_dir,
)

SERVICE = "test.v1.EchoService"


async def say(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return b"echo:" + request


async def count(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    for i in range(3):
        yield str(i).encode()


async def join(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
    return b"+".join([r async for r in requests])


async def fail(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    raise ValidationError("email is invalid", field_violations=[("email", "must contain @")])


@pytest.fixture
def spans_file(tmp_path: Path) -> Any:
    configure_tracing("echo", tmp_path, None)

    def read() -> list[SpanRecord]:
        shutdown_tracing()  # flushes the batch
        return sorted(read_span_records(traces_dir(tmp_path)), key=lambda s: s.start_unix_nano)

    yield read
    shutdown_tracing()


@pytest.fixture
async def echo_target() -> AsyncIterator[str]:
    server = grpc.aio.server(interceptors=[MeshInterceptor("echo", None, [])])
    handlers = {
        "Say": grpc.unary_unary_rpc_method_handler(say),
        "Count": grpc.unary_stream_rpc_method_handler(count),
        "Join": grpc.stream_unary_rpc_method_handler(join),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
    }
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(grace=None)


async def test_client_and_server_spans_join_one_trace(spans_file: Any, echo_target: str) -> None:
    async with traced_channel(echo_target) as channel:
        with tracer().start_as_current_span("caller") as root:
            assert await channel.unary_unary(f"/{SERVICE}/Say")(b"hi") == b"echo:hi"
            assert [m async for m in channel.unary_stream(f"/{SERVICE}/Count")(b"")] == [b"0", b"1", b"2"]
            assert await channel.stream_unary(f"/{SERVICE}/Join")(iter([b"a", b"b"])) == b"a+b"
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await channel.unary_unary(f"/{SERVICE}/Fail")(b"")
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    spans = spans_file()
    trace_id = format(root.get_span_context().trace_id, "032x")
    assert {s.trace_id for s in spans} == {trace_id}
    by_kind: dict[tuple[str, str], SpanRecord] = {(s.kind, s.attributes.get("rpc.method", "")): s for s in spans}
    assert len(by_kind) == len(spans) == 9
    caller = by_kind[("INTERNAL", "")]
    for method in ("Say", "Count", "Join", "Fail"):
        client, server = by_kind[("CLIENT", method)], by_kind[("SERVER", method)]
        assert client.parent_span_id == caller.span_id
        assert server.parent_span_id == client.span_id
        assert client.name == server.name == f"{SERVICE}/{method}"
        assert client.attributes["server.address"] == "127.0.0.1"
        # The streaming call's span lasts until the last message arrived.
        assert client.start_unix_nano <= server.start_unix_nano <= server.end_unix_nano <= client.end_unix_nano
    assert by_kind[("CLIENT", "Count")].attributes["rpc.grpc.status_code"] == 0
    failed = by_kind[("CLIENT", "Fail")]
    assert (failed.status, failed.attributes["rpc.grpc.status_code"]) == ("ERROR", 3)
    # INVALID_ARGUMENT is the caller's fault: the server span is not an error.
    assert by_kind[("SERVER", "Fail")].status != "ERROR"


async def test_server_span_takes_the_status_an_abort_left_in_the_context(spans_file: Any) -> None:
    async def abort(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        with server_span(f"/{SERVICE}/Abort", context.invocation_metadata(), context=context):
            await context.abort(grpc.StatusCode.UNAVAILABLE if request else grpc.StatusCode.NOT_FOUND, "gone")
        raise AssertionError("abort returned")

    server = grpc.aio.server()
    handlers = {"Abort": grpc.unary_unary_rpc_method_handler(abort)}
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            for request in (b"server fault", b""):
                with pytest.raises(grpc.aio.AioRpcError):
                    await channel.unary_unary(f"/{SERVICE}/Abort")(request)
    finally:
        await server.stop(grace=None)

    unavailable, not_found = spans_file()
    assert (unavailable.status, unavailable.attributes["rpc.grpc.status_code"]) == ("ERROR", 14)
    assert (not_found.status, not_found.attributes["rpc.grpc.status_code"]) == ("UNSET", 5)


async def test_cli_describes_a_domain_error_from_its_status_details(echo_target: str) -> None:
    def call() -> grpc.RpcError:
        with grpc.insecure_channel(echo_target) as channel:
            try:
                channel.unary_unary(f"/{SERVICE}/Fail")(b"")
            except grpc.RpcError as err:
                return err
        raise AssertionError("the call succeeded")

    error = await asyncio.to_thread(call)
    assert describe_rpc_error(error, echo_target) == (
        "email is invalid (INVALID_ARGUMENT, VALIDATION_ERROR)\n  email: must contain @"
    )


async def test_database_statements_are_spans_without_parameters(spans_file: Any, database_url: str) -> None:
    engine = create_async_engine(sqlalchemy_url(database_url))
    instrument_engine(engine)
    instrument_engine(engine)  # idempotent: still one span per statement
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))  # no current span: not traced
            with tracer().start_as_current_span("request") as root:
                await conn.execute(text("SELECT :secret AS value"), {"secret": "Hunter2-Hunter2!"})
                with pytest.raises(ProgrammingError):
                    await conn.execute(text("SELECT * FROM no_such_table"))
    finally:
        await engine.dispose()

    request, ok, failed = spans_file()
    assert request.name == "request"
    database = database_url.rsplit("/", 1)[1]
    for span in (ok, failed):
        assert span.parent_span_id == format(root.get_span_context().span_id, "016x")
        assert (span.name, span.kind) == (f"SELECT {database}", "CLIENT")
        assert span.attributes["db.system"] == "postgresql"
        assert span.attributes["db.name"] == database
    assert ok.status == "UNSET"
    assert ok.attributes["db.statement"] == "SELECT %(secret)s AS value"
    assert "Hunter2" not in ok.to_json()
    assert (failed.status, failed.attributes["error.type"]) == ("ERROR", "UndefinedTable")
