"""Another service's gRPC answer as this service's domain error, for the clients one service holds of another."""

from __future__ import annotations

import grpc

from services.runtime.errors import AuthorizationError, DomainError, IntegrationError, ValidationError


def peer_error(error: grpc.aio.AioRpcError, service: str) -> DomainError:
    """The peer's refusal of the caller's request or of the caller passes on as it is (400/403); anything
    else means the peer could not answer: a retryable integration error naming it."""
    if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
        return ValidationError(error.details() or f"the {service} service refused the request")
    if error.code() == grpc.StatusCode.PERMISSION_DENIED:
        return AuthorizationError(error.details() or f"the {service} service refused the caller")
    return IntegrationError(f"The {service} service could not be reached; try again")
