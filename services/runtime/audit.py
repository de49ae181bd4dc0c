"""The audit record every service writes through its outbox (identity's trail consumes them all)."""

from __future__ import annotations

from collections.abc import Mapping

from molbridge.events.v1.audit_pb2 import AuditRecorded

from services.runtime.context import client_address_var, request_id_var
from services.runtime.telemetry import current_trace_id


def audit_event(
    action: str, *, target_type: str, target_id: str, success: bool = True, details: Mapping[str, str] | None = None
) -> AuditRecorded:
    """An AuditRecorded for `action` on the target, carrying the request's id, client address and trace id
    (the current OpenTelemetry span's). A change with a before → after may put both in `details`."""
    return AuditRecorded(
        action=action,
        outcome=AuditRecorded.SUCCESS if success else AuditRecorded.FAILURE,
        target_type=target_type,
        target_id=target_id,
        client_address=client_address_var.get(),
        request_id=request_id_var.get(),
        details=dict(details or {}),
        trace_id=current_trace_id(),
    )


def changed_values(before: Mapping[str, str], after: Mapping[str, str]) -> dict[str, str]:
    """Audit details for a change: `<field>.before` and `<field>.after` for every field whose value differs."""
    details: dict[str, str] = {}
    for name, new in after.items():
        old = before.get(name, "")
        if old != new:
            details[f"{name}.before"], details[f"{name}.after"] = old, new
    return details
