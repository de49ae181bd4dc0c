"""Identity's gRPC edge: the servicer (mapping only) and the proto ↔ domain helpers."""

from services.identity.server.servicer import PUBLIC_METHODS, IdentityServicer

__all__ = ["PUBLIC_METHODS", "IdentityServicer"]
