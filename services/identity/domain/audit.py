"""The audit trail's entries and the hash chain that makes tampering evident."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class AuditEntry:
    id: str
    sequence: int
    occurred_at: datetime
    source: str
    action: str
    outcome: str
    actor_id: str
    organization_id: str
    target_type: str
    target_id: str
    client_address: str
    request_id: str
    details: dict[str, str]
    hash: bytes = b""


GENESIS_HASH = bytes(32)


def audit_hash(previous: bytes, entry: AuditEntry) -> bytes:
    """Chains each entry to the one before: changing or deleting any entry changes every later hash."""
    canonical = json.dumps(
        [entry.id, entry.sequence, entry.occurred_at.isoformat(), entry.source, entry.action, entry.outcome,
         entry.actor_id, entry.organization_id, entry.target_type, entry.target_id, entry.client_address,
         entry.request_id, sorted(entry.details.items())],
        separators=(",", ":"),
    )
    return hashlib.sha256(previous + canonical.encode()).digest()


def first_broken_link(entries: list[AuditEntry]) -> int | None:
    """The sequence of the first entry whose hash does not follow from its predecessors, or None."""
    previous = GENESIS_HASH
    for entry in entries:
        if audit_hash(previous, entry) != entry.hash:
            return entry.sequence
        previous = entry.hash
    return None
