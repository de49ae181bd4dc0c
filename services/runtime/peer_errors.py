"""Another service's gRPC answer as this service's domain error, for the clients one service holds of another."""

from __future__ import annotations

import grpc

from services.runtime.errors import (
    AuthorizationError,
    DomainError,
    IntegrationError,
    UnavailableError,
    ValidationError,
)


def peer_error(error: grpc.aio.AioRpcError, service: str) -> DomainError:
    """The peer's refusal of the caller's request or of the caller passes on as it is (400/403); anything
    else means the peer could not answer: a retryable error naming it (503 with a retry hint when the
    peer is down or too slow, an integration error when it failed)."""
    if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
        return ValidationError(error.details() or f"the {service} service refused the request")
    if error.code() == grpc.StatusCode.PERMISSION_DENIED:
        return AuthorizationError(error.details() or f"the {service} service refused the caller")
    return peer_failure(error, service)


def peer_failure(error: grpc.aio.AioRpcError, service: str, what: str = "") -> DomainError:
    """The peer could not answer: 503 with a retry hint when it is down or too slow (a restart, a
    failover: the client should just retry), else an integration error. `what`: what it was asked for."""
    doing = f": cannot {what}" if what else ""
    if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return UnavailableError(f"The {service} service is unavailable{doing}; try again in a few seconds",
                                detail="PEER_UNAVAILABLE")
    return IntegrationError(f"The {service} service could not answer{doing} ({error.code().name}); try again")
