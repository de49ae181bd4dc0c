"""Typed errors: every failed call raises a subclass of MolbridgeError, chosen from the google.rpc.Status
ErrorInfo reason the gateway sends (DOMAIN.md's error codes), else from the gRPC status code.

MolbridgeError is also a grpc.RpcError (code(), details(), trailing_metadata()), so code written against
plain grpc keeps working."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class MolbridgeError(grpc.RpcError):
    """A call the gateway refused, or that could not reach it.

    `reason` is the DOMAIN.md error code (e.g. "RESOURCE_NOT_FOUND") when the server sent an ErrorInfo,
    `metadata` its key/values, `field_violations` the BadRequest details, `retry_after` the seconds to
    wait (RetryInfo), when given."""

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode = grpc.StatusCode.UNKNOWN,
        reason: str = "",
        metadata: dict[str, str] | None = None,
        field_violations: tuple[FieldViolation, ...] = (),
        retry_after: float | None = None,
        call: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = code
        self.reason = reason
        self.metadata = metadata or {}
        self.field_violations = field_violations
        self.retry_after = retry_after
        self._call = call

    # The grpc.RpcError/grpc.Call surface, so `err.code()` and rpc_status.from_call(err) still work.
    def code(self) -> grpc.StatusCode:
        return self.status_code

    def details(self) -> str:
        return self.message

    def trailing_metadata(self) -> Any:
        return self._call.trailing_metadata() if self._call is not None else ()

    def __str__(self) -> str:
        tags = ", ".join([self.status_code.name, *([self.reason] if self.reason else [])])
        lines = [f"{self.message} ({tags})", *(f"  {v.field}: {v.description}" for v in self.field_violations)]
        return "\n".join(lines)


class ValidationError(MolbridgeError):
    """VALIDATION_ERROR (INVALID_ARGUMENT): see `field_violations`."""


class AuthenticationError(MolbridgeError):
    """AUTHENTICATION_ERROR (UNAUTHENTICATED): wrong credentials, or no valid session."""


class NotLoggedIn(AuthenticationError):
    """No session and no API key: call Client.login first."""


class SessionExpired(AuthenticationError):
    """The refresh token was refused (expired or revoked): log in again."""


class AuthorizationError(MolbridgeError):
    """AUTHORIZATION_ERROR (PERMISSION_DENIED): authenticated, but not allowed."""


class NotFoundError(MolbridgeError):
    """RESOURCE_NOT_FOUND (NOT_FOUND)."""


class ConflictError(MolbridgeError):
    """RESOURCE_CONFLICT (ALREADY_EXISTS, ABORTED, FAILED_PRECONDITION)."""


class RateLimited(MolbridgeError):
    """RATE_LIMITED (RESOURCE_EXHAUSTED): wait `retry_after` seconds when given."""


class Unavailable(MolbridgeError):
    """The gateway or a service behind it cannot answer now (SERVICE_UNAVAILABLE, UNAVAILABLE,
    DEADLINE_EXCEEDED): retry after `retry_after` seconds when given."""


class IntegrationError(Unavailable):
    """INTEGRATION_ERROR: an external system behind the mesh (e.g. the AI engine) failed."""


class Unimplemented(MolbridgeError):
    """The gateway does not offer this call (UNIMPLEMENTED): is its service deployed?"""


class InternalError(MolbridgeError):
    """INTERNAL_ERROR and any other server failure."""


BY_REASON: dict[str, type[MolbridgeError]] = {
    "VALIDATION_ERROR": ValidationError,
    "AUTHENTICATION_ERROR": AuthenticationError,
    "AUTHORIZATION_ERROR": AuthorizationError,
    "RESOURCE_NOT_FOUND": NotFoundError,
    "RESOURCE_CONFLICT": ConflictError,
    "RATE_LIMITED": RateLimited,
    "INTEGRATION_ERROR": IntegrationError,
    "SERVICE_UNAVAILABLE": Unavailable,
    "INTERNAL_ERROR": InternalError,
}

BY_CODE: dict[grpc.StatusCode, type[MolbridgeError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: ValidationError,
    grpc.StatusCode.OUT_OF_RANGE: ValidationError,
    grpc.StatusCode.UNAUTHENTICATED: AuthenticationError,
    grpc.StatusCode.PERMISSION_DENIED: AuthorizationError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: ConflictError,
    grpc.StatusCode.ABORTED: ConflictError,
    grpc.StatusCode.FAILED_PRECONDITION: ConflictError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: RateLimited,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: Unavailable,
    grpc.StatusCode.UNIMPLEMENTED: Unimplemented,
}


def from_rpc_error(err: grpc.RpcError) -> MolbridgeError:
    """The typed error for a failed call (already typed errors are returned as they are)."""
    if isinstance(err, MolbridgeError):
        return err
    code: grpc.StatusCode = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    message: str = (err.details() if hasattr(err, "details") else "") or code.name
    reason, metadata, violations, retry_after = "", {}, [], None
    try:
        status = rpc_status.from_call(err)  # type: ignore[arg-type]
    except (ValueError, AttributeError):  # details inconsistent with the code/message: use what we have
        status = None
    for detail in status.details if status is not None else []:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, metadata = info.reason, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            violations += [FieldViolation(v.field, v.description) for v in bad_request.field_violations]
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_after = retry.retry_delay.ToTimedelta().total_seconds()
    error_class = BY_REASON.get(reason) or BY_CODE.get(code, InternalError if reason else MolbridgeError)
    return error_class(
        message,
        code=code,
        reason=reason,
        metadata=metadata,
        field_violations=tuple(violations),
        retry_after=retry_after,
        call=err,
    )
