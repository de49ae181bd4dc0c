"""Re-standardize stored molecules with the current rules; report, and split, records they change.

`python -m services.molecule.restandardize [--dry-run] [--organization ID]` (DATABASE_URL as for
the service). Until the standardization rules of chemistry.py / fragment_parent.py changed,
metal-containing compounds were registered under their largest organic fragment: cisplatin as
ammonia, ferrocene as cyclopentadiene, NaCl as HCl — and merged with the real ammonia, etc. Every
registration keeps its submitted SMILES (molecule_provenance.original_smiles), so the right parent
of each can be computed again:

- unchanged: every registration of the record still gives the stored InChIKey;
- rekey: they all give one other key; the record's identity, structure, fingerprints and
  CALCULATED values are replaced (nothing else moves);
- split: they give several keys. The registrations that give the key of the record's earliest
  registration stay (the record is re-keyed if needed, so ids that other services hold keep
  pointing at the compound first registered under them); every other group moves to the
  organization's molecule with its key, created if there is none (structure and CALCULATED values
  from its earliest registration, no name). Moving a group moves its provenance rows and the
  IMPORTED values whose provenance names one of its import rows; library memberships are copied.
  Values without a row (API registrations, UpdateMolecule, predictions, experiments) and flags
  stay with the record;
- collision: the record's new key is already another record's: reported, never merged here;
- unregistrable: registrations whose SMILES no longer registers are reported (with any of the
  above) and stay where they are.

Without --dry-run each correction is its own transaction, planned again under a row lock, and
records MoleculesChanged (search and query indexes re-read the molecules) and an AuditRecorded
event (action molecule.restandardized or molecule.split, actor ACTOR). PREDICTED values of a
re-keyed record were computed for the old structure; they are counted in the report, not deleted.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

import sqlalchemy as sa
from molbridge.events.v1.audit_pb2 import AuditRecorded
from molbridge.events.v1.molecule_pb2 import MoleculesChanged
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from bus.outbox import add_event
from services.molecule.domain import chemistry
from services.molecule.domain.properties import KNOWN_PROPERTIES
from services.molecule.domain.vocabulary import CALCULATED
from services.molecule.store.registration_numbers import allocate_numbers, lock_counter
from services.molecule.store.tables import SCHEMA, molecule_properties, molecule_provenance, molecules
from services.runtime.db import UnitOfWork, make_engine

ACTOR = "system:restandardize"
_APPLIED = ("rekey", "split")
EVENT_SOURCE = "molecule"
Kind = Literal["rekey", "split", "collision", "unregistrable"]


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


# --- database -------------------------------------------------------------------------------------------


async def stored_molecules(
    session: AsyncSession, organization_id: str | None = None, molecule_id: str | None = None, lock: bool = False
) -> list[StoredMolecule]:
    """Records with their registrations, earliest first."""
    query = sa.select(molecules.c.id, molecules.c.organization_id, molecules.c.inchi_key, molecules.c.smiles)
    query = query.select_from(molecules).order_by(molecules.c.id)
    if organization_id is not None:
        query = query.where(molecules.c.organization_id == organization_id)
    if molecule_id is not None:
        query = query.where(molecules.c.id == molecule_id)
    rows = (await session.execute(query.with_for_update() if lock else query)).all()
    registrations: dict[str, list[Registration]] = {}
    provenance = sa.select(
        molecule_provenance.c.molecule_id,
        molecule_provenance.c.id,
        molecule_provenance.c.original_smiles,
        molecule_provenance.c.job_id,
        molecule_provenance.c.row_number,
        molecule_provenance.c.registered_by,
    ).order_by(molecule_provenance.c.id)
    if organization_id is not None or molecule_id is not None:
        provenance = provenance.where(molecule_provenance.c.molecule_id.in_([str(r.id) for r in rows]))
    for p in await session.execute(provenance):
        registrations.setdefault(str(p.molecule_id), []).append(
            Registration(p.id, p.original_smiles, p.job_id and str(p.job_id), p.row_number, p.registered_by)
        )
    return [
        StoredMolecule(
            str(r.id),
            str(r.organization_id),
            r.inchi_key,
            tuple(registrations.get(str(r.id)) or [Registration(None, r.smiles, None, None, "")]),
        )
        for r in rows
    ]


async def key_owners(session: AsyncSession, organization_id: str) -> dict[str, str]:
    found = await session.execute(
        sa.select(molecules.c.inchi_key, molecules.c.id).where(molecules.c.organization_id == organization_id)
    )
    return {key: str(molecule_id) for key, molecule_id in found}


async def find_corrections(
    uow: UnitOfWork, organization_id: str | None = None, register: Register = chemistry.register
) -> list[Correction]:
    """The dry run: every record the current rules would change."""
    async with uow() as session:
        records = await stored_molecules(session, organization_id)
        owners: dict[str, dict[str, str]] = {}
        for org in {r.organization_id for r in records}:
            owners[org] = await key_owners(session, org)
    once = functools.lru_cache(maxsize=100_000)(register)  # one SMILES is often registered many times
    found = (plan(record, owners[record.organization_id], once) for record in records)
    return [correction for correction in found if correction is not None]


async def apply(uow: UnitOfWork, corrections: Iterable[Correction]) -> list[Correction]:
    """Carry out the rekeys and splits (collisions are left alone), each in its own transaction and
    planned again under the record's lock; returns what was done."""
    done: list[Correction] = []
    for planned in corrections:
        if planned.kind not in _APPLIED:
            continue
        async with uow() as session:
            # A split may number a new record: the numbering lock before the record's, as registrations take them.
            await lock_counter(session, planned.molecule.organization_id)
            records = await stored_molecules(session, molecule_id=planned.molecule.id, lock=True)
            if not records:  # gone since the plan
                continue
            correction = plan(records[0], await key_owners(session, records[0].organization_id))
            if correction is None or correction.kind not in _APPLIED:
                continue
            await _carry_out(session, correction)
            done.append(correction)
    return done


async def _carry_out(session: AsyncSession, correction: Correction) -> None:
    record, keeper = correction.molecule, correction.keeper
    touched = [record.id]
    if keeper.inchi_key != record.inchi_key:
        await session.execute(
            molecules.update().where(molecules.c.id == record.id).values(**_structure(keeper.registered))
        )
        await _replace_calculated(session, record.id, keeper.registered)
    for group in correction.moved:
        target = group.existing_id or await _new_molecule(session, record.organization_id, group)
        touched.append(target)
        provenance_ids = [r.provenance_id for r in group.registrations if r.provenance_id is not None]
        await session.execute(
            molecule_provenance.update().where(molecule_provenance.c.id.in_(provenance_ids)).values(molecule_id=target)
        )
        await _move_row_values(session, record.id, target, group.registrations)
        await session.execute(
            sa.text(
                """INSERT INTO library_molecules (library_id, molecule_id, added_by, added_at)
                   SELECT library_id, :target, added_by, added_at FROM library_molecules
                   WHERE molecule_id = :source ON CONFLICT DO NOTHING"""
            ),
            {"target": target, "source": record.id},
        )
    details = {
        "from_inchi_key": record.inchi_key,
        "to_inchi_key": keeper.inchi_key,
        "moved_to": ",".join(touched[1:]),
        "registrations_moved": str(sum(len(g.registrations) for g in correction.moved)),
    }
    audit = AuditRecorded(
        action=f"molecule.{'split' if correction.moved else 'restandardized'}",
        outcome=AuditRecorded.SUCCESS,
        target_type="molecule",
        target_id=record.id,
        details=details,
    )
    changed = MoleculesChanged(organization_id=record.organization_id, molecule_ids=touched)
    for payload in (audit, changed):
        await add_event(
            session,
            source=EVENT_SOURCE,
            payload=payload,
            organization_id=record.organization_id,
            actor_id=ACTOR,
            schema=SCHEMA,
        )


def _structure(registered: chemistry.Registered) -> dict[str, object]:
    return {
        "inchi_key": registered.inchi_key,
        "canonical_smiles": registered.canonical_smiles,
        "formula": registered.formula,
        "molecular_weight": registered.molecular_weight,
        "morgan_fp": registered.morgan_fp,
        "pattern_fp": registered.pattern_fp,
        "updated_at": sa.func.now(),
    }


async def _new_molecule(session: AsyncSession, organization_id: str, group: Group) -> str:
    """The organization's molecule with the group's key: created now (a concurrent registration may
    have created it since the plan; then that one)."""
    first = group.registrations[0]
    proposed = str(uuid.uuid4())
    # A split-off record is a new molecule: it gets the next number (none if the key exists by now).
    # (Allocation takes the counter's lock, so no registration can insert the key after this check.)
    numbers = await allocate_numbers(session, organization_id, [group.inchi_key])
    if numbers:
        await session.execute(
            insert(molecules).values(
                id=proposed,
                organization_id=organization_id,
                registration_number=numbers[group.inchi_key],
                smiles=first.original_smiles,
                created_by=first.registered_by or ACTOR,
                **_structure(group.registered),
            )
        )
    else:
        existing = await session.execute(
            sa.select(molecules.c.id).where(
                molecules.c.organization_id == organization_id, molecules.c.inchi_key == group.inchi_key
            )
        )
        return str(existing.scalar_one())
    await _replace_calculated(session, proposed, group.registered)
    return proposed


async def _replace_calculated(session: AsyncSession, molecule_id: str, registered: chemistry.Registered) -> None:
    await session.execute(
        molecule_properties.delete().where(
            molecule_properties.c.molecule_id == molecule_id, molecule_properties.c.source == CALCULATED
        )
    )
    await session.execute(
        molecule_properties.insert(),
        [
            {
                "molecule_id": molecule_id,
                "name": name,
                "source": CALCULATED,
                "value_num": float(value),
                "units": KNOWN_PROPERTIES[name].units,
            }
            for name, value in registered.calculated.items()
        ],
    )


async def _move_row_values(
    session: AsyncSession, source: str, target: str, registrations: Sequence[Registration]
) -> None:
    """IMPORTED (and other given) values whose provenance is one of these import rows follow them;
    on the target the later-written value wins, as in registration."""
    rows = [(r.job_id, r.row_number) for r in registrations if r.job_id is not None and r.row_number is not None]
    if not rows:
        return
    params = {"source": source, "target": target, "jobs": [j for j, _ in rows], "rows": [n for _, n in rows]}
    matching = """molecule_id = CAST(:source AS uuid) AND source <> 'CALCULATED'
                  AND (provenance->>'job_id', (provenance->>'row')::int) IN
                      (SELECT * FROM unnest(CAST(:jobs AS text[]), CAST(:rows AS int[])))"""
    await session.execute(
        sa.text(
            f"""INSERT INTO molecule_properties AS p
                       (molecule_id, name, source, value_num, value_text, units, provenance, updated_at)
                SELECT CAST(:target AS uuid), name, source, value_num, value_text, units, provenance, updated_at
                FROM molecule_properties WHERE {matching}
                ON CONFLICT (molecule_id, name, source) DO UPDATE SET
                    value_num = excluded.value_num, value_text = excluded.value_text, units = excluded.units,
                    provenance = excluded.provenance, updated_at = excluded.updated_at
                WHERE excluded.updated_at > p.updated_at"""
        ),
        params,
    )
    await session.execute(sa.text(f"DELETE FROM molecule_properties WHERE {matching}"), params)


# --- command line ---------------------------------------------------------------------------------------


async def run(database_url: str, *, dry_run: bool, organization_id: str | None, out: Callable[[str], None]) -> int:
    engine = make_engine(database_url, SCHEMA)
    try:
        uow = UnitOfWork(engine)
        corrections = await find_corrections(uow, organization_id)
        for correction in corrections:
            out(correction.describe())
        counts = {kind: sum(c.kind == kind for c in corrections) for kind in get_args(Kind)}
        out(f"{len(corrections)} record(s) affected: " + ", ".join(f"{n} {kind}" for kind, n in counts.items()))
        if not dry_run:
            done = await apply(uow, corrections)
            out(f"corrected {len(done)} record(s); collisions left for a person to decide")
        return 0
    finally:
        await engine.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    from services.runtime.settings import Settings

    parser = argparse.ArgumentParser(prog="python -m services.molecule.restandardize", description=__doc__)
    parser.add_argument("--dry-run", action="store_true", help="report only; change nothing")
    parser.add_argument("--organization", help="only this organization's molecules")
    args = parser.parse_args(argv)
    settings = Settings.from_env("molecule")
    return asyncio.run(run(settings.database_url, dry_run=args.dry_run, organization_id=args.organization, out=print))


if __name__ == "__main__":
    sys.exit(main())
