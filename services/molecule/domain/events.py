"""The events molecule changes cause (bus payloads; no I/O)."""

from __future__ import annotations

from collections.abc import Sequence

from molbridge.events.v1.molecule_pb2 import MoleculesChanged

from services.molecule.domain.library_rules import MAX_BATCH

MOLECULES_PER_EVENT = MAX_BATCH  # molecule ids per MoleculesChanged (bounds the message size)


def molecules_changed(organization_id: str, molecule_ids: Sequence[str]) -> list[MoleculesChanged]:
    """MoleculesChanged for these molecules, MOLECULES_PER_EVENT ids each: every replica's query and
    search index re-reads them."""
    size = MOLECULES_PER_EVENT
    return [
        MoleculesChanged(organization_id=organization_id, molecule_ids=molecule_ids[start : start + size])
        for start in range(0, len(molecule_ids), size)
    ]


def molecule_changed(organization_id: str, molecule_id: str, *, archived: bool = False) -> MoleculesChanged:
    """One molecule changed; an archived one is named in `archived_ids` (indexes drop it from lists)."""
    event = MoleculesChanged(organization_id=organization_id)
    (event.archived_ids if archived else event.molecule_ids).append(molecule_id)
    return event
