"""What the molecule service's audit events say (no I/O): digests of id lists, values as text, the event
of an import's end. The events themselves are services.runtime.audit's `audit_event`."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

from molbridge.events.v1.audit_pb2 import AuditRecorded
from molbridge.events.v1.molecule_pb2 import ImportFinished

from services.molecule.domain.imports import PropertyValue
from services.runtime.audit import audit_event

FEW_IDS = 10  # a digest lists the ids themselves up to this many


def ids_digest(ids: Iterable[str]) -> dict[str, str]:
    """A set of ids as audit details: their count, a SHA-256 over the sorted ids, and the ids when few."""
    ordered = sorted(set(ids))
    details = {
        "count": str(len(ordered)),
        "ids_sha256": hashlib.sha256(",".join(ordered).encode()).hexdigest(),
    }
    if len(ordered) <= FEW_IDS:
        details["ids"] = ",".join(ordered)
    return details


def value_text(value: PropertyValue | None) -> str:
    """A stored value as an audit detail: "12.5 nM", "soluble", "" for none."""
    if value is None:
        return ""
    number, text, units = value
    shown = text if text is not None else ("" if number is None else repr(number))
    return f"{shown} {units}".strip() if units else shown


def values_text(values: Mapping[str, PropertyValue | None], *, prefix: str = "value.") -> dict[str, str]:
    """Property values by `<prefix><name>`, as text (for `changed_values`)."""
    return {f"{prefix}{name}": value_text(value) for name, value in values.items()}


def import_ended(finished: ImportFinished, reason: str = "") -> AuditRecorded:
    """import.completed / import.failed / import.cancelled, with the job's counts (and why it failed)."""
    event = audit_event(
        f"import.{finished.status}",
        target_type="import",
        target_id=finished.job_id,
        success=finished.status != "failed",
        details={
            "status": finished.status,
            "registered": str(finished.registered),
            "merged": str(finished.merged),
            "rejected": str(finished.rejected),
        },
    )
    if reason:
        event.details["reason"] = reason
    return event
