"""The audit trail's entries and the hash chain that makes tampering evident."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from services.runtime.auth import ADMIN_ROLES, Principal
from services.runtime.errors import AuthorizationError, ValidationError


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
    trace_id: str = ""
    hash: bytes = b""


GENESIS_HASH = bytes(32)


def audit_hash(previous: bytes, entry: AuditEntry) -> bytes:
    """Chains each entry to the one before: changing or deleting any entry changes every later hash."""
    fields: list[object] = [
        entry.id, entry.sequence, entry.occurred_at.isoformat(), entry.source, entry.action, entry.outcome,
        entry.actor_id, entry.organization_id, entry.target_type, entry.target_id, entry.client_address,
        entry.request_id, sorted(entry.details.items()),
    ]
    if entry.trace_id:  # appended only when set: entries stored before trace ids keep their hashes
        fields.append(entry.trace_id)
    canonical = json.dumps(fields, separators=(",", ":"))
    return hashlib.sha256(previous + canonical.encode()).digest()


def first_broken_link(entries: Iterable[AuditEntry]) -> int | None:
    """The sequence of the first entry whose hash does not follow from its predecessors, or None."""
    found = verify_chain(entries).first_break
    return found.sequence if found else None


# -- who reads the trail ------------------------------------------------------------------------------


def audit_scope(principal: Principal, requested_organization: str = "") -> str | None:
    """The organization whose trail `principal` reads (None: every organization). Platform auditors
    and system admins read every organization (or the one they name); an organization's auditors
    and admins read their own only."""
    if principal.is_system_admin or (principal.organization_kind == "PLATFORM" and "auditor" in principal.roles):
        return requested_organization or None
    if "auditor" not in principal.roles and not principal.roles & ADMIN_ROLES:
        raise AuthorizationError(
            "Only auditors and administrators read the audit trail", detail="ROLE_REQUIRED"
        )
    if requested_organization and requested_organization != principal.organization_id:
        raise AuthorizationError("You can read your own organization's audit trail only")
    return principal.organization_id


def may_see(scope: str | None, organization_id: str) -> bool:
    """Whether a reader whose scope is `scope` (see audit_scope) sees an entry of `organization_id`."""
    return scope is None or scope == organization_id


# -- filters ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditFilter:
    """Which entries a reader asks for; empty fields do not filter. `organization_id` None = every one."""

    organization_id: str | None = None
    action_prefix: str = ""
    target_type: str = ""
    target_id: str = ""
    actor_id: str = ""
    occurred_after: datetime | None = None
    occurred_before: datetime | None = None


def audit_filter(
    scope: str | None,
    *,
    action: str = "",
    target_type: str = "",
    target_id: str = "",
    actor_id: str = "",
    occurred_after: str = "",
    occurred_before: str = "",
) -> AuditFilter:
    """The reader's filters checked together: instants are RFC 3339 with a time zone."""
    violations: list[tuple[str, str]] = []
    after = _instant(occurred_after, "occurred_after", violations)
    before = _instant(occurred_before, "occurred_before", violations)
    if after and before and after >= before:
        violations.append(("occurred_before", "must be later than occurred_after"))
    if violations:
        raise ValidationError("Invalid audit trail filters", field_violations=violations)
    return AuditFilter(
        organization_id=scope, action_prefix=action.strip(), target_type=target_type.strip(),
        target_id=target_id.strip(), actor_id=actor_id.strip(), occurred_after=after, occurred_before=before,
    )


def _instant(value: str, field_name: str, violations: list[tuple[str, str]]) -> datetime | None:
    value = value.strip()
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        violations.append((field_name, "an RFC 3339 instant with a time zone, e.g. 2026-01-31T00:00:00Z"))
        return None
    return parsed.astimezone(UTC)


# -- anchors and verification -------------------------------------------------------------------------


@dataclass(frozen=True)
class Anchor:
    """The head of the chain at some moment, kept outside the database: a tail rewritten with fresh
    hashes still disagrees with it."""

    sequence: int
    hash: bytes
    anchored_at: datetime
    previous_sequence: int = 0  # the anchor written before this one (0: none)

    @property
    def object_key(self) -> str:
        return anchor_key(self.sequence)

    def to_json(self) -> bytes:
        return json.dumps({
            "sequence": self.sequence, "hash": self.hash.hex(), "anchored_at": self.anchored_at.isoformat(),
            "previous_sequence": self.previous_sequence,
        }).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Anchor:
        document = json.loads(data)
        return cls(
            sequence=int(document["sequence"]), hash=bytes.fromhex(document["hash"]),
            anchored_at=datetime.fromisoformat(document["anchored_at"]),
            previous_sequence=int(document.get("previous_sequence", 0)),
        )


ANCHOR_PREFIX = "audit-anchors"
LATEST_ANCHOR_KEY = f"{ANCHOR_PREFIX}/latest.json"


def anchor_key(sequence: int) -> str:
    return f"{ANCHOR_PREFIX}/{sequence}.json"


class BreakKind(StrEnum):
    HASH_MISMATCH = "HASH_MISMATCH"
    MISSING_ENTRY = "MISSING_ENTRY"
    ANCHOR_MISMATCH = "ANCHOR_MISMATCH"
    ANCHOR_BEYOND_HEAD = "ANCHOR_BEYOND_HEAD"


@dataclass(frozen=True)
class ChainBreak:
    kind: BreakKind
    sequence: int
    entry_id: str = ""  # empty for a missing entry
    organization_id: str = ""
    expected_hash: bytes = b""
    stored_hash: bytes = b""


@dataclass(frozen=True)
class Verification:
    entries_checked: int
    head_sequence: int
    head_hash: bytes
    anchors_checked: int
    first_break: ChainBreak | None

    @property
    def ok(self) -> bool:
        return self.first_break is None


class ChainWalk:
    """Verifies the chain fed in sequence order, a batch at a time (never the whole trail in memory):
    every hash recomputed, every sequence present, every anchor equal to the chain at its sequence."""

    def __init__(self, anchors: Iterable[Anchor] = ()) -> None:
        self._anchors = {anchor.sequence: anchor for anchor in anchors}
        self._previous_hash = GENESIS_HASH
        self._sequence = 0
        self._checked = 0
        self._anchors_checked = 0
        self._first_break: ChainBreak | None = None

    def add(self, entry: AuditEntry) -> None:
        if entry.sequence != self._sequence + 1:
            self._note(ChainBreak(BreakKind.MISSING_ENTRY, self._sequence + 1))
        else:
            expected = audit_hash(self._previous_hash, entry)
            if expected != entry.hash:
                self._note(ChainBreak(
                    BreakKind.HASH_MISMATCH, entry.sequence, entry.id, entry.organization_id, expected, entry.hash
                ))
        anchor = self._anchors.pop(entry.sequence, None)
        if anchor is not None:
            self._anchors_checked += 1
            if anchor.hash != entry.hash:
                self._note(ChainBreak(
                    BreakKind.ANCHOR_MISMATCH, entry.sequence, entry.id, entry.organization_id, anchor.hash,
                    entry.hash,
                ))
        # Later links are checked against what is stored: only the first break is reported anyway.
        self._previous_hash, self._sequence = entry.hash, entry.sequence
        self._checked += 1

    def finish(self) -> Verification:
        """The outcome once every entry was added; anchors never met name sequences that are gone."""
        for anchor in sorted(self._anchors.values(), key=lambda a: a.sequence):
            self._anchors_checked += 1
            kind = BreakKind.ANCHOR_BEYOND_HEAD if anchor.sequence > self._sequence else BreakKind.MISSING_ENTRY
            self._note(ChainBreak(kind, anchor.sequence, expected_hash=anchor.hash))
        self._anchors.clear()
        return Verification(
            entries_checked=self._checked,
            head_sequence=self._sequence,
            head_hash=self._previous_hash,
            anchors_checked=self._anchors_checked,
            first_break=self._first_break,
        )

    def _note(self, found: ChainBreak) -> None:
        if self._first_break is None:
            self._first_break = found


def verify_chain(entries: Iterable[AuditEntry], anchors: Iterable[Anchor] = ()) -> Verification:
    walk = ChainWalk(anchors)
    for entry in entries:
        walk.add(entry)
    return walk.finish()
