"""Re-standardization rules: which correction a stored record needs when its registrations' submitted
SMILES are registered again under the current rules (services.molecule.restandardize carries them out).
No I/O here."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from services.molecule.domain import chemistry

ACTOR = "system:restandardize"
Kind = Literal["rekey", "split", "collision", "unregistrable"]
APPLIED: tuple[Kind, ...] = ("rekey", "split")  # the kinds a run carries out (collisions are for a person)


@dataclass(frozen=True, slots=True)
class Registration:
    provenance_id: int | None  # None: the record's own first SMILES (a record without provenance rows)
    original_smiles: str
    job_id: str | None
    row_number: int | None
    registered_by: str


@dataclass(frozen=True, slots=True)
class StoredMolecule:
    id: str
    organization_id: str
    inchi_key: str
    registrations: tuple[Registration, ...]  # earliest first


@dataclass(frozen=True, slots=True)
class Group:
    """The registrations of a record that now give one parent."""

    registered: chemistry.Registered = field(repr=False)
    registrations: tuple[Registration, ...]
    existing_id: str | None  # another record of the organization with this key, if any

    @property
    def inchi_key(self) -> str:
        return self.registered.inchi_key


@dataclass(frozen=True, slots=True)
class Correction:
    molecule: StoredMolecule
    kind: Kind
    keeper: Group  # the record's own registrations (its earliest registration's group)
    moved: tuple[Group, ...]  # split: the groups that leave the record
    unregistrable: tuple[tuple[Registration, str], ...]  # registrations that no longer register, why

    def describe(self) -> str:
        m = self.molecule
        line = f"{self.kind}: molecule {m.id} (organization {m.organization_id}) {m.inchi_key}"
        line += f" -> {self.keeper.inchi_key} {self.keeper.registered.canonical_smiles}"
        if self.kind == "collision":
            line += f" (already molecule {self.keeper.existing_id}: not merged)"
        for group in self.moved:
            target = group.existing_id or "a new molecule"
            line += (
                f"\n    {len(group.registrations)} registration(s) -> {target}: {group.inchi_key}"
                f" {group.registered.canonical_smiles}"
            )
        for registration, reason in self.unregistrable:
            line += f"\n    no longer registers ({reason}): {registration.original_smiles}"
        return line


Register = Callable[[str], chemistry.Registered]


def plan(
    molecule: StoredMolecule, key_owners: Mapping[str, str], register: Register = chemistry.register
) -> Correction | None:
    """The correction one record needs under the current rules (None: none). `key_owners` maps the
    organization's InChIKeys to molecule ids."""
    groups: dict[str, list[Registration]] = {}
    parents: dict[str, chemistry.Registered] = {}
    unregistrable: list[tuple[Registration, str]] = []
    for registration in molecule.registrations:
        try:
            registered = register(registration.original_smiles)
        except chemistry.InvalidStructure as invalid:
            unregistrable.append((registration, invalid.reason))
            continue
        parents.setdefault(registered.inchi_key, registered)
        groups.setdefault(registered.inchi_key, []).append(registration)
    if not groups or (list(groups) == [molecule.inchi_key] and not unregistrable):
        return None
    keeper_key = next(iter(groups))  # registrations are earliest first, and so are the groups

    def group(key: str) -> Group:
        owner = key_owners.get(key)
        return Group(parents[key], tuple(groups[key]), owner if owner != molecule.id else None)

    keeper = group(keeper_key)
    moved = tuple(group(key) for key in groups if key != keeper_key)
    if keeper.existing_id is not None:
        kind: Kind = "collision"
    elif moved:
        kind = "split"
    elif keeper_key != molecule.inchi_key:
        kind = "rekey"
    else:  # the parent is right; some registrations are only to be reported
        kind = "unregistrable"
    return Correction(molecule, kind, keeper, moved, tuple(unregistrable))
