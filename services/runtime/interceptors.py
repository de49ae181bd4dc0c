"""The one server interceptor every service runs: request id, span, authentication, error mapping.

Done in one wrapper rather than four so each RPC pays for one handler indirection, and the order
(request id → span → auth → handler → errors) is visible in one place.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

from services.runtime import telemetry
from services.runtime.auth import Authenticator, principal_var
from services.runtime.context import client_address_var, request_id_var
from services.runtime.errors import DomainError, InternalError

log = logging.getLogger("molbridge.rpc")

STATUS_DETAILS_KEY = "grpc-status-details-bin"


def status_of(error: DomainError, service_name: str) -> status_pb2.Status:
    info = error_details_pb2.ErrorInfo(reason=error.code, domain=f"{service_name}.molbridge")
    if error.detail:
        info.metadata["detail"] = error.detail
    info.metadata.update(error.metadata)
    status = status_pb2.Status(code=error.grpc_status.value[0], message=error.message)
    status.details.add().Pack(info)
    if error.field_violations:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                for f, d in error.field_violations
            ]
        )
        status.details.add().Pack(bad_request)
    return status


async def abort_with(context: grpc.aio.ServicerContext, status: status_pb2.Status) -> None:
    await context.abort(
        grpc.StatusCode(_GRPC_CODES[status.code]),
        status.message,
        trailing_metadata=((STATUS_DETAILS_KEY, status.SerializeToString()),),
    )


_GRPC_CODES = {code.value[0]: code.value for code in grpc.StatusCode}


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

        async def enter(context: grpc.aio.ServicerContext) -> None:
            request_id_var.set(metadata.get("x-request-id") or uuid.uuid4().hex)
            forwarded = metadata.get("x-forwarded-for", "")
            client_address_var.set(forwarded.split(",")[-1].strip() if forwarded else context.peer())
            principal_var.set(None)
            if not public and self._authenticator is not None:
                principal_var.set(await self._authenticator.authenticate(metadata))

        async def fail(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
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

        def unary_response(behavior: Callable[..., Any]) -> Callable[..., Any]:
            async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
                with telemetry.server_span(method, raw_metadata, context=context):
                    try:
                        await enter(context)
                        return await behavior(request, context)
                    except _PASS_THROUGH:
                        raise
                    except Exception as exc:
                        await fail(context, exc)

            return call

        def stream_response(behavior: Callable[..., Any]) -> Callable[..., Any]:
            async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                with telemetry.server_span(method, raw_metadata, context=context):
                    try:
                        await enter(context)
                        async for item in behavior(request, context):
                            yield item
                    except _PASS_THROUGH:
                        raise
                    except Exception as exc:
                        await fail(context, exc)

            return call

        return _rewrap(handler, unary_response, stream_response)


# An abort already carries its status; cancellation must propagate untouched.
_PASS_THROUGH = (grpc.aio.AbortError, grpc.aio.UsageError, GeneratorExit)


def _rewrap(
    handler: grpc.RpcMethodHandler,
    unary_response: Callable[[Any], Any],
    stream_response: Callable[[Any], Any],
) -> grpc.RpcMethodHandler:
    codecs: Mapping[str, Any] = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary_response(handler.unary_unary), **codecs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary_response(handler.stream_unary), **codecs)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(stream_response(handler.unary_stream), **codecs)
    return grpc.stream_stream_rpc_method_handler(stream_response(handler.stream_stream), **codecs)

