"""Per-request context shared by interceptors, logs, spans and the service layer."""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar

# Set by the server interceptor for the duration of one RPC.
request_id_var: ContextVar[str] = ContextVar("request_id", default="")
client_address_var: ContextVar[str] = ContextVar("client_address", default="")

# A client's x-request-id ends up in logs and the audit trail: only short, plain ids are kept.
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def safe_request_id(candidate: str | None) -> str:
    """The client's request id when it is 1-64 characters of [A-Za-z0-9._-] (a UUID, a ULID, …),
    else a freshly generated one."""
    if candidate and _SAFE_REQUEST_ID.fullmatch(candidate):
        return candidate
    return uuid.uuid4().hex
