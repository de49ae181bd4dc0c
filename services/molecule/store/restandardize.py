"""The re-standardization's reads and writes: stored records with their registrations, and the moves a
correction makes (re-key a record, create a split-off record, move provenance, row values, libraries)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.molecule.domain import chemistry
from services.molecule.domain.properties import KNOWN_PROPERTIES
from services.molecule.domain.restandardization import ACTOR, Group, Registration, StoredMolecule
from services.molecule.domain.vocabulary import CALCULATED
from services.molecule.store.registration_numbers import allocate_numbers, lock_counter
from services.molecule.store.tables import molecule_properties, molecule_provenance, molecules


class RestandardizeStore:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def stored_molecules(
        self, organization_id: str | None = None, molecule_id: str | None = None, lock: bool = False
    ) -> list[StoredMolecule]:
        """Records with their registrations, earliest first."""
        query = sa.select(molecules.c.id, molecules.c.organization_id, molecules.c.inchi_key, molecules.c.smiles)
        query = query.select_from(molecules).order_by(molecules.c.id)
        if organization_id is not None:
            query = query.where(molecules.c.organization_id == organization_id)
        if molecule_id is not None:
            query = query.where(molecules.c.id == molecule_id)
        rows = (await self._session.execute(query.with_for_update() if lock else query)).all()
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
        for p in await self._session.execute(provenance):
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

    async def key_owners(self, organization_id: str) -> dict[str, str]:
        """The organization's InChIKeys and the molecule holding each."""
        found = await self._session.execute(
            sa.select(molecules.c.inchi_key, molecules.c.id).where(molecules.c.organization_id == organization_id)
        )
        return {key: str(molecule_id) for key, molecule_id in found}

    async def lock_numbering(self, organization_id: str) -> None:
        """A split may number a new record: the numbering lock before the record's, as registrations take them."""
        await lock_counter(self._session, organization_id)

    async def rekey(self, molecule_id: str, registered: chemistry.Registered) -> None:
        """The record's identity, structure, fingerprints and CALCULATED values become `registered`'s."""
        await self._session.execute(
            molecules.update().where(molecules.c.id == molecule_id).values(**_structure(registered))
        )
        await self._replace_calculated(molecule_id, registered)

    async def split_off_target(self, organization_id: str, group: Group) -> str:
        """The organization's molecule with the group's key: created now (a concurrent registration may
        have created it since the plan; then that one)."""
        first = group.registrations[0]
        proposed = str(uuid.uuid4())
        # A split-off record is a new molecule: it gets the next number (none if the key exists by now).
        # (Allocation takes the counter's lock, so no registration can insert the key after this check.)
        numbers = await allocate_numbers(self._session, organization_id, [group.inchi_key])
        if not numbers:
            existing = await self._session.execute(
                sa.select(molecules.c.id).where(
                    molecules.c.organization_id == organization_id, molecules.c.inchi_key == group.inchi_key
                )
            )
            return str(existing.scalar_one())
        await self._session.execute(
            insert(molecules).values(
                id=proposed,
                organization_id=organization_id,
                registration_number=numbers[group.inchi_key],
                smiles=first.original_smiles,
                created_by=first.registered_by or ACTOR,
                **_structure(group.registered),
            )
        )
        await self._replace_calculated(proposed, group.registered)
        return proposed

    async def move_registrations(self, source: str, target: str, registrations: Sequence[Registration]) -> None:
        """The registrations' provenance rows, and the values of their import rows, go to `target`;
        library memberships of `source` are copied to it."""
        provenance_ids = [r.provenance_id for r in registrations if r.provenance_id is not None]
        await self._session.execute(
            molecule_provenance.update().where(molecule_provenance.c.id.in_(provenance_ids)).values(molecule_id=target)
        )
        await self._move_row_values(source, target, registrations)
        await self._session.execute(
            sa.text(
                """INSERT INTO library_molecules (library_id, molecule_id, added_by, added_at)
                   SELECT library_id, :target, added_by, added_at FROM library_molecules
                   WHERE molecule_id = :source ON CONFLICT DO NOTHING"""
            ),
            {"target": target, "source": source},
        )

    async def _replace_calculated(self, molecule_id: str, registered: chemistry.Registered) -> None:
        await self._session.execute(
            molecule_properties.delete().where(
                molecule_properties.c.molecule_id == molecule_id, molecule_properties.c.source == CALCULATED
            )
        )
        await self._session.execute(
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

    async def _move_row_values(self, source: str, target: str, registrations: Sequence[Registration]) -> None:
        """IMPORTED (and other given) values whose provenance is one of these import rows follow them;
        on the target the later-written value wins, as in registration."""
        rows = [(r.job_id, r.row_number) for r in registrations if r.job_id is not None and r.row_number is not None]
        if not rows:
            return
        params = {"source": source, "target": target, "jobs": [j for j, _ in rows], "rows": [n for _, n in rows]}
        matching = """molecule_id = CAST(:source AS uuid) AND source <> 'CALCULATED'
                      AND (provenance->>'job_id', (provenance->>'row')::int) IN
                          (SELECT * FROM unnest(CAST(:jobs AS text[]), CAST(:rows AS int[])))"""
        await self._session.execute(
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
        await self._session.execute(sa.text(f"DELETE FROM molecule_properties WHERE {matching}"), params)


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
