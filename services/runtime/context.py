"""Per-request context shared by interceptors, logs, spans and the service layer."""

from __future__ import annotations

from contextvars import ContextVar

# Set by the server interceptor for the duration of one RPC.
request_id_var: ContextVar[str] = ContextVar("request_id", default="")
client_address_var: ContextVar[str] = ContextVar("client_address", default="")
