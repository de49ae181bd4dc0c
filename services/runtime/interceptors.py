"""The one server interceptor every service runs: request id, span, authentication, error mapping.

Done in one wrapper rather than four so each RPC pays for one handler indirection, and the order
(request id → span → decode → auth → handler → errors) is visible in one place.

This is also the edge where domain errors (services/runtime/errors.py, free of gRPC) become gRPC
statuses with google.rpc details, sent through grpcio-status.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable, Collection
from typing import Any

import grpc
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from services.runtime import telemetry
from services.runtime.auth import Authenticator, principal_var
from services.runtime.context import client_address_var, request_id_var, safe_request_id
from services.runtime.db import database_unavailable
from services.runtime.errors import (
    AuthenticationError,
    AuthorizationError,
    ConflictError,
    DomainError,
    IntegrationError,
    InternalError,
    NotFoundError,
    PreconditionError,
    RateLimitedError,
    UnavailableError,
    ValidationError,
)

log = logging.getLogger("molbridge.rpc")

# Domain error class -> gRPC status code (the gateway maps the code, or ErrorInfo.reason, to HTTP).
# A subclass takes the code of its nearest listed ancestor.
GRPC_CODES: dict[type[DomainError], int] = {
    ValidationError: code_pb2.INVALID_ARGUMENT,
    AuthenticationError: code_pb2.UNAUTHENTICATED,
    AuthorizationError: code_pb2.PERMISSION_DENIED,
    NotFoundError: code_pb2.NOT_FOUND,
    ConflictError: code_pb2.ALREADY_EXISTS,
    PreconditionError: code_pb2.FAILED_PRECONDITION,
    RateLimitedError: code_pb2.RESOURCE_EXHAUSTED,
    IntegrationError: code_pb2.UNAVAILABLE,
    UnavailableError: code_pb2.UNAVAILABLE,
    InternalError: code_pb2.INTERNAL,
    DomainError: code_pb2.INTERNAL,
}


def grpc_code_of(error: DomainError) -> int:
    return next(GRPC_CODES[cls] for cls in type(error).__mro__ if cls in GRPC_CODES)


def status_of(error: DomainError, service_name: str) -> status_pb2.Status:
    info = error_details_pb2.ErrorInfo(reason=error.code, domain=f"{service_name}.molbridge")
    if error.detail:
        info.metadata["detail"] = error.detail
    info.metadata.update(error.metadata)
    status = status_pb2.Status(code=grpc_code_of(error), message=error.message)
    status.details.add().Pack(info)
    if error.field_violations:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                for f, d in error.field_violations
            ]
        )
        status.details.add().Pack(bad_request)
    if error.retry_after is not None:
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromMilliseconds(round(error.retry_after * 1000))
        status.details.add().Pack(retry)
    return status


async def abort_with(context: grpc.aio.ServicerContext, status: status_pb2.Status) -> None:
    await context.abort_with_status(rpc_status.to_status(status))


def _undecodable(error: Exception) -> ValidationError:
    # The transcoder turns a wrong-typed JSON value (an object inside a string map, …) into bytes
    # the message cannot parse; native clients can send anything: either way the request is bad.
    return ValidationError(
        "The request body could not be decoded as the expected message",
        detail="MALFORMED_REQUEST",
        metadata={"reason": type(error).__name__},
    )


class MeshInterceptor(grpc.aio.ServerInterceptor):
    def __init__(
        self, service_name: str, authenticator: Authenticator | None, public_methods: Collection[str]
    ) -> None:
        self._service_name = service_name
        self._authenticator = authenticator
        self._public_methods = frozenset(public_methods)

    def _is_public(self, method: str) -> bool:
        return method in self._public_methods or method.startswith(
            ("/grpc.health.v1.Health/", "/grpc.reflection.")
        )

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method  # type: ignore[attr-defined]
        raw_metadata = tuple(handler_call_details.invocation_metadata or ())  # type: ignore[attr-defined]
        metadata = {k: v for k, v in raw_metadata if isinstance(v, str)}
        public = self._is_public(method)
        deserialize = handler.request_deserializer or (lambda raw: raw)

        def decode(raw: bytes) -> Any:
            try:
                return deserialize(raw)
            except Exception as exc:
                raise _undecodable(exc) from exc

        async def decode_stream(raw_requests: AsyncIterable[bytes]) -> AsyncIterator[Any]:
            async for raw in raw_requests:
                yield decode(raw)

        def decoded(request: Any, streaming: bool) -> Any:
            return decode_stream(request) if streaming else decode(request)

        async def enter(context: grpc.aio.ServicerContext) -> None:
            request_id_var.set(safe_request_id(metadata.get("x-request-id")))
            forwarded = metadata.get("x-forwarded-for", "")
            client_address_var.set(forwarded.split(",")[-1].strip() if forwarded else context.peer())
            principal_var.set(None)
            if not public and self._authenticator is not None:
                principal_var.set(await self._authenticator.authenticate(metadata))

        async def fail(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
            if (unavailable := database_unavailable(exc)) is not None:
                log.warning("%s: %s (%s)", method, unavailable.message, type(exc).__name__)
                exc = unavailable
            if isinstance(exc, DomainError):
                if isinstance(exc, InternalError):
                    log.error("internal error in %s: %s", method, exc.message)
                await abort_with(context, status_of(exc, self._service_name))
            log.exception("unhandled error in %s", method, exc_info=exc)
            await abort_with(
                context,
                status_of(InternalError("Internal error; quote the request id when reporting it",
                                        metadata={"request_id": request_id_var.get()}), self._service_name),
            )

        def single_response(behavior: Callable[..., Any], streaming_request: bool) -> Callable[..., Any]:
            # Unary responses, and server streams written with `await context.write(…)` (the
            # standard grpc.health.v1 Watch): a coroutine either way.
            async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
                with telemetry.server_span(method, raw_metadata, context=context):
                    try:
                        await enter(context)
                        return await behavior(decoded(request, streaming_request), context)
                    except _PASS_THROUGH:
                        raise
                    except Exception as exc:
                        await fail(context, exc)

            return call

        def stream_response(behavior: Callable[..., Any], streaming_request: bool) -> Callable[..., Any]:
            async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                with telemetry.server_span(method, raw_metadata, context=context):
                    try:
                        await enter(context)
                        async for item in behavior(decoded(request, streaming_request), context):
                            yield item
                    except _PASS_THROUGH:
                        raise
                    except Exception as exc:
                        await fail(context, exc)

            return call

        return _rewrap(handler, single_response, stream_response)


# An abort already carries its status; cancellation must propagate untouched.
_PASS_THROUGH = (grpc.aio.AbortError, grpc.aio.UsageError, GeneratorExit)

_Wrapper = Callable[[Callable[..., Any], bool], Callable[..., Any]]


def _rewrap(
    handler: grpc.RpcMethodHandler, single_response: _Wrapper, stream_response: _Wrapper
) -> grpc.RpcMethodHandler:
    """The same kind of handler around the wrapped behavior. Requests arrive as raw bytes
    (request_deserializer=None) so the wrapper decodes them where a failure can become
    INVALID_ARGUMENT; grpc.aio itself would answer UNKNOWN."""
    serializer = handler.response_serializer
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            single_response(handler.unary_unary, False), response_serializer=serializer
        )
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            single_response(handler.stream_unary, True), response_serializer=serializer
        )
    if handler.unary_stream:
        wrap = stream_response if inspect.isasyncgenfunction(handler.unary_stream) else single_response
        return grpc.unary_stream_rpc_method_handler(wrap(handler.unary_stream, False), response_serializer=serializer)
    wrap = stream_response if inspect.isasyncgenfunction(handler.stream_stream) else single_response
    return grpc.stream_stream_rpc_method_handler(wrap(handler.stream_stream, True), response_serializer=serializer)
