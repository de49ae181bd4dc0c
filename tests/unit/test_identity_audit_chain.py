"""The audit trail's rules in plain Python: chain verification, anchors, who reads, filters, CSV."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from opentelemetry.sdk.trace import TracerProvider

from services.identity import domain
from services.identity.domain import Anchor, AuditEntry, BreakKind, audit_csv
from services.runtime.audit import audit_event
from services.runtime.auth import Principal
from services.runtime.errors import AuthorizationError, ValidationError

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def chain(length: int, *, trace: bool = False) -> list[AuditEntry]:
    entries, previous = [], domain.GENESIS_HASH
    for n in range(1, length + 1):
        entry = AuditEntry(
            id=f"id-{n}", sequence=n, occurred_at=T0 + timedelta(minutes=n), source="cro", action="submission.created",
            outcome="SUCCESS", actor_id="u1", organization_id=f"org-{n % 2}", target_type="submission",
            target_id=f"s-{n}", client_address="", request_id="", details={"n": str(n)},
            trace_id="ab" * 16 if trace else "",
        )
        entry = replace(entry, hash=domain.audit_hash(previous, entry))
        entries.append(entry)
        previous = entry.hash
    return entries


def rehash_from(entries: list[AuditEntry], start: int) -> list[AuditEntry]:
    """What someone with write access to the table does to hide an edit: recompute every later hash."""
    out, previous = [], domain.GENESIS_HASH
    for entry in entries:
        if entry.sequence >= start:
            entry = replace(entry, hash=domain.audit_hash(previous, entry))
        out.append(entry)
        previous = entry.hash
    return out


def anchor_at(entries: list[AuditEntry], sequence: int) -> Anchor:
    return Anchor(sequence, entries[sequence - 1].hash, T0)


def test_an_intact_chain_verifies_with_its_head_and_anchors() -> None:
    entries = chain(5, trace=True)
    result = domain.verify_chain(entries, [anchor_at(entries, 2), anchor_at(entries, 5)])
    assert result.ok and result.first_break is None
    assert (result.entries_checked, result.head_sequence, result.head_hash) == (5, 5, entries[-1].hash)
    assert result.anchors_checked == 2
    assert domain.verify_chain([]).head_hash == domain.GENESIS_HASH


def test_the_trace_id_is_covered_by_the_hash_but_older_entries_keep_theirs() -> None:
    plain, traced = chain(1)[0], chain(1, trace=True)[0]
    assert plain.hash != traced.hash
    assert domain.audit_hash(domain.GENESIS_HASH, replace(traced, trace_id="")) == plain.hash


def test_an_edited_entry_is_the_first_broken_link() -> None:
    entries = chain(6)
    entries[2] = replace(entries[2], details={"n": "tampered"})
    result = domain.verify_chain(entries)
    found = result.first_break
    assert found is not None and not result.ok
    assert (found.kind, found.sequence, found.entry_id) == (BreakKind.HASH_MISMATCH, 3, "id-3")
    assert found.stored_hash == entries[2].hash and found.expected_hash != found.stored_hash
    assert result.entries_checked == 6
    assert domain.first_broken_link(entries) == 3


def test_a_deleted_entry_is_a_missing_sequence() -> None:
    entries = chain(5)
    del entries[1]
    found = domain.verify_chain(entries).first_break
    assert found is not None and (found.kind, found.sequence, found.entry_id) == (BreakKind.MISSING_ENTRY, 2, "")


def test_a_rewritten_tail_passes_the_chain_but_not_its_anchor() -> None:
    entries = chain(8)
    entries[3] = replace(entries[3], action="submission.cancelled")
    forged = rehash_from(entries, 4)
    assert domain.verify_chain(forged).ok  # the hashes alone no longer tell
    original = chain(8)
    found = domain.verify_chain(forged, [anchor_at(original, 2), anchor_at(original, 6)]).first_break
    assert found is not None
    assert (found.kind, found.sequence) == (BreakKind.ANCHOR_MISMATCH, 6)
    assert (found.expected_hash, found.stored_hash) == (original[5].hash, forged[5].hash)


def test_a_removed_tail_leaves_its_anchor_beyond_the_head() -> None:
    entries = chain(5)
    result = domain.verify_chain(entries[:3], [anchor_at(entries, 5)])
    found = result.first_break
    assert found is not None and (found.kind, found.sequence) == (BreakKind.ANCHOR_BEYOND_HEAD, 5)
    assert result.anchors_checked == 1 and result.head_sequence == 3


def test_batches_fed_to_a_walk_give_the_same_answer_as_one_list() -> None:
    entries = chain(7)
    entries[5] = replace(entries[5], actor_id="mallory")
    walk = domain.ChainWalk()
    for start in range(0, 7, 3):
        for entry in entries[start:start + 3]:
            walk.add(entry)
    assert walk.finish() == domain.verify_chain(entries)


def test_anchors_survive_their_json_form() -> None:
    anchor = Anchor(42, bytes(range(32)), T0, previous_sequence=7)
    assert Anchor.from_json(anchor.to_json()) == anchor
    assert anchor.object_key == "audit-anchors/42.json"


def person(roles: set[str], kind: str = "PHARMA", org: str = "org-a") -> Principal:
    return Principal(subject="u1", organization_id=org, organization_kind=kind, roles=frozenset(roles))


def test_platform_auditors_and_system_admins_read_every_organization() -> None:
    assert domain.audit_scope(person({"auditor"}, "PLATFORM")) is None
    assert domain.audit_scope(person({"auditor"}, "PLATFORM"), "org-b") == "org-b"
    assert domain.audit_scope(person({"system_admin"}, "PLATFORM")) is None


@pytest.mark.parametrize(("roles", "kind"), [({"auditor"}, "PHARMA"), ({"pharma_admin"}, "PHARMA"),
                                             ({"auditor"}, "CRO"), ({"cro_admin"}, "CRO")])
def test_organization_auditors_and_admins_read_their_own_trail_only(roles: set[str], kind: str) -> None:
    assert domain.audit_scope(person(roles, kind)) == "org-a"
    assert domain.audit_scope(person(roles, kind), "org-a") == "org-a"
    with pytest.raises(AuthorizationError):
        domain.audit_scope(person(roles, kind), "org-b")


@pytest.mark.parametrize("roles", [{"pharma_scientist"}, {"cro_technician"}])
def test_working_roles_do_not_read_the_trail(roles: set[str]) -> None:
    with pytest.raises(AuthorizationError):
        domain.audit_scope(person(roles))


@pytest.mark.parametrize("kind", ["PHARMA", "CRO", "PLATFORM"])
def test_every_kind_of_organization_has_auditors_who_hold_no_other_role(kind: str) -> None:
    violations = domain.Violations()
    assert domain.check_roles(("auditor",), kind, violations) == ("auditor",)
    assert not violations.items
    other = domain.ROLES_BY_KIND[kind][0] if kind != "PLATFORM" else "system_admin"
    domain.check_roles(("auditor", other), kind, violations)
    assert [problem for _, problem in violations.items] == [
        "an auditor is read-only: 'auditor' cannot be combined with another role"
    ]


def test_filters_parse_rfc3339_instants_and_refuse_bad_ones() -> None:
    where = domain.audit_filter("org-a", action=" auth.", actor_id="u1", occurred_after="2026-03-01T00:00:00Z",
                                occurred_before="2026-03-02T01:00:00+01:00")
    assert where.organization_id == "org-a" and where.action_prefix == "auth." and where.actor_id == "u1"
    assert where.occurred_after == T0 and where.occurred_before == T0 + timedelta(days=1)
    with pytest.raises(ValidationError) as refused:
        domain.audit_filter(None, occurred_after="yesterday", occurred_before="2026-03-01T00:00:00")
    assert [name for name, _ in refused.value.field_violations] == ["occurred_after", "occurred_before"]
    with pytest.raises(ValidationError):
        domain.audit_filter(None, occurred_after="2026-03-02T00:00:00Z", occurred_before="2026-03-01T00:00:00Z")


def test_csv_export_neutralises_formulas_in_every_cell() -> None:
    entry = replace(chain(1)[0], action="=HYPERLINK(\"http://evil\")", target_id="+1+2", details={"note": "@SUM"})
    text = audit_csv.header() + audit_csv.rows([entry])
    lines = text.splitlines()
    assert lines[0].startswith("sequence,occurred_at,organization_id")
    assert "'=HYPERLINK" in lines[1] and ",'+1+2," in lines[1]
    assert lines[1].startswith("1,2026-03-01T00:01:00+00:00,org-1,cro,")


def test_audit_events_carry_the_current_trace_id() -> None:
    assert audit_event("user.created", target_type="user", target_id="u1").trace_id == ""
    with TracerProvider().get_tracer("test").start_as_current_span("call") as span:
        event = audit_event("user.created", target_type="user", target_id="u1")
    assert event.trace_id == f"{span.get_span_context().trace_id:032x}"
