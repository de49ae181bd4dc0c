"""Domain errors: raised anywhere in the service layer, turned into google.rpc.Status at the edge.

Each class carries the DOMAIN.md error code (the ErrorInfo `reason` the gateway puts in the
envelope) and the gRPC status code that maps to the documented HTTP status.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import grpc


class DomainError(Exception):
    code = "INTERNAL_ERROR"
    grpc_status = grpc.StatusCode.INTERNAL

    def __init__(
        self,
        message: str,
        *,
        detail: str = "",
        metadata: Mapping[str, str] | None = None,
        field_violations: Iterable[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        # A finer, stable UPPER_SNAKE reason (e.g. ACCOUNT_LOCKED) for clients that branch on it.
        self.detail = detail
        self.metadata = dict(metadata or {})
        self.field_violations = list(field_violations)


class ValidationError(DomainError):
    code = "VALIDATION_ERROR"
    grpc_status = grpc.StatusCode.INVALID_ARGUMENT


class AuthenticationError(DomainError):
    code = "AUTHENTICATION_ERROR"
    grpc_status = grpc.StatusCode.UNAUTHENTICATED


class AuthorizationError(DomainError):
    code = "AUTHORIZATION_ERROR"
    grpc_status = grpc.StatusCode.PERMISSION_DENIED


class NotFoundError(DomainError):
    code = "RESOURCE_NOT_FOUND"
    grpc_status = grpc.StatusCode.NOT_FOUND


class ConflictError(DomainError):
    """The resource already exists (unique name, email, …)."""

    code = "RESOURCE_CONFLICT"
    grpc_status = grpc.StatusCode.ALREADY_EXISTS


class PreconditionError(DomainError):
    """The resource is in a state that forbids the action (locked account, wrong workflow state)."""

    code = "RESOURCE_CONFLICT"
    grpc_status = grpc.StatusCode.FAILED_PRECONDITION


class RateLimitedError(DomainError):
    code = "RATE_LIMITED"
    grpc_status = grpc.StatusCode.RESOURCE_EXHAUSTED


class IntegrationError(DomainError):
    """An external system (AI engine, DocuSign, S3, SMTP) failed."""

    code = "INTEGRATION_ERROR"
    grpc_status = grpc.StatusCode.UNAVAILABLE


class InternalError(DomainError):
    code = "INTERNAL_ERROR"
    grpc_status = grpc.StatusCode.INTERNAL
