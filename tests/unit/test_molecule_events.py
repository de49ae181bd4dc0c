"""The events molecule changes cause (domain/events.py)."""

from __future__ import annotations

import uuid

from services.molecule.domain.events import MOLECULES_PER_EVENT, molecule_changed, molecules_changed


def test_changed_molecules_are_told_in_bounded_events() -> None:
    org = str(uuid.uuid4())
    ids = [str(uuid.uuid4()) for _ in range(2 * MOLECULES_PER_EVENT + 1)]
    events = molecules_changed(org, ids)
    assert [len(e.molecule_ids) for e in events] == [MOLECULES_PER_EVENT, MOLECULES_PER_EVENT, 1]
    assert [i for e in events for i in e.molecule_ids] == ids
    assert {e.organization_id for e in events} == {org}
    assert molecules_changed(org, []) == []


def test_an_archived_molecule_is_named_apart() -> None:
    archived = molecule_changed("org", "m1", archived=True)
    assert list(archived.archived_ids) == ["m1"] and not archived.molecule_ids
    assert list(molecule_changed("org", "m2").molecule_ids) == ["m2"]
