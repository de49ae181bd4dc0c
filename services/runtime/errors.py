"""Domain errors: raised anywhere in the service layer, turned into google.rpc.Status at the edge.

Each class carries the DOMAIN.md error code (the ErrorInfo `reason` the gateway puts in the
envelope). Which gRPC status code a class becomes is decided at the edge
(services/runtime/interceptors.py): this module knows nothing of gRPC.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


class DomainError(Exception):
    code = "INTERNAL_ERROR"

    def __init__(
        self,
        message: str,
        *,
        detail: str = "",
        metadata: Mapping[str, str] | None = None,
        field_violations: Iterable[tuple[str, str]] = (),
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        # A finer, stable UPPER_SNAKE reason (e.g. ACCOUNT_LOCKED) for clients that branch on it.
        self.detail = detail
        self.metadata = dict(metadata or {})
        self.field_violations = list(field_violations)
        self.retry_after = retry_after  # seconds a caller should wait before trying again (RetryInfo)


class ValidationError(DomainError):
    code = "VALIDATION_ERROR"


class AuthenticationError(DomainError):
    code = "AUTHENTICATION_ERROR"


class AuthorizationError(DomainError):
    code = "AUTHORIZATION_ERROR"


class NotFoundError(DomainError):
    code = "RESOURCE_NOT_FOUND"


class ConflictError(DomainError):
    """The resource already exists (unique name, email, …)."""

    code = "RESOURCE_CONFLICT"


class PreconditionError(DomainError):
    """The resource is in a state that forbids the action (locked account, wrong workflow state)."""

    code = "RESOURCE_CONFLICT"


class RateLimitedError(DomainError):
    code = "RATE_LIMITED"


class IntegrationError(DomainError):
    """An external system (AI engine, DocuSign, S3, SMTP) failed."""

    code = "INTEGRATION_ERROR"


class UnavailableError(IntegrationError):
    """Part of the mesh itself (a service's database, a peer service) cannot answer now: the caller
    sends the request again after `retry_after` seconds. An IntegrationError, so whatever retries
    those (workers, the document service's sealing) retries this too."""

    code = "SERVICE_UNAVAILABLE"

    def __init__(self, message: str, *, detail: str = "", retry_after: float = 5.0) -> None:
        super().__init__(message, detail=detail, retry_after=retry_after)


class InternalError(DomainError):
    code = "INTERNAL_ERROR"
