"""Molbridge partner client: `Client` (gRPC to the gateway, login with refresh or API key), typed errors
and a page iterator. The generated messages and stubs are the `molbridge` package (molbridge.<area>.v1)."""

from molbridge_client._version import __version__
from molbridge_client.client import Client, ListResponse, ServerStream, default_target
from molbridge_client.errors import (
    AuthenticationError,
    AuthorizationError,
    ConflictError,
    FieldViolation,
    IntegrationError,
    InternalError,
    MolbridgeError,
    NotFoundError,
    NotLoggedIn,
    RateLimited,
    SessionExpired,
    Unavailable,
    Unimplemented,
    ValidationError,
)
from molbridge_client.tokens import MemoryTokenStore, Tokens, TokenStore

__all__ = [
    "AuthenticationError",
    "AuthorizationError",
    "Client",
    "ConflictError",
    "FieldViolation",
    "IntegrationError",
    "InternalError",
    "ListResponse",
    "MemoryTokenStore",
    "MolbridgeError",
    "NotFoundError",
    "NotLoggedIn",
    "RateLimited",
    "ServerStream",
    "SessionExpired",
    "TokenStore",
    "Tokens",
    "Unavailable",
    "Unimplemented",
    "ValidationError",
    "__version__",
    "default_target",
]
