"""Molecules in PostgreSQL: the repository the molecule use cases load and save through."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from molbridge.events.v1.prediction_pb2 import PredictedValue
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.molecule.domain.imports import PropertyValue, StructureRow
from services.molecule.domain.registration_numbers import normalize_number
from services.molecule.domain.vocabulary import EXPERIMENTAL, IMPORTED, PREDICTED
from services.molecule.store import registration_numbers
from services.molecule.store.molecule_views import VIEW_COLUMNS
from services.molecule.store.registration import RegistrationResult, register_structures
from services.molecule.store.tables import flags, molecule_aliases, molecule_properties, molecules
from services.runtime.auth import Principal
from services.runtime.db import canonical_uuid
from services.runtime.errors import NotFoundError


class MoleculeRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, principal: Principal, molecule_id: str, *, lock: bool = False) -> Any:
        """The caller's organization's molecule row, or 404 (another organization's is not found either)."""
        canonical = canonical_uuid(molecule_id)
        if canonical is None:
            raise NotFoundError("Molecule not found")
        query = sa.select(molecules).where(
            molecules.c.id == canonical, molecules.c.organization_id == principal.organization_id
        )
        row = (await self._session.execute(query.with_for_update() if lock else query)).first()
        if row is None:
            raise NotFoundError("Molecule not found")
        return row

    async def get_by_number(self, principal: Principal, number: str) -> Any:
        """The caller's organization's molecule with this registration number or alias, or 404."""
        organization = molecules.c.organization_id == principal.organization_id
        normalized = normalize_number(number)
        row = None
        if normalized is not None:
            row = (
                await self._session.execute(
                    sa.select(molecules).where(organization, molecules.c.registration_number == normalized)
                )
            ).first()
        if row is None and number.strip():
            row = (
                await self._session.execute(
                    sa.select(molecules)
                    .join(molecule_aliases, molecule_aliases.c.molecule_id == molecules.c.id)
                    .where(
                        organization,
                        molecule_aliases.c.organization_id == principal.organization_id,
                        molecule_aliases.c.alias == number.strip(),
                    )
                )
            ).first()
        if row is None:
            raise NotFoundError("No molecule has this registration number or alias")
        return row

    async def has_numbering(self, organization_id: str) -> bool:
        return await registration_numbers.has_counter(self._session, organization_id)

    async def start_numbering(self, organization_id: str, prefix: str) -> bool:
        """Gives the organization its first prefix, unless it has one; whether it did."""
        return await registration_numbers.start_counter(self._session, organization_id, prefix)

    async def registration_prefix(self, organization_id: str) -> tuple[str, bool]:
        """(prefix, whether numbers were issued) of the organization."""
        return await registration_numbers.current_prefix(self._session, organization_id)

    async def set_registration_prefix(self, organization_id: str, prefix: str) -> None:
        """409 (PreconditionError) once a number was issued."""
        await registration_numbers.set_prefix(self._session, organization_id, prefix)

    async def rows_in_order(self, principal: Principal, ids: Sequence[str]) -> list[Any]:
        """The caller's organization's molecule rows with these ids, in this order (missing ones left out)."""
        found = await self._session.execute(
            sa.select(*VIEW_COLUMNS).where(
                molecules.c.id.in_(ids), molecules.c.organization_id == principal.organization_id
            )
        )
        by_id = {str(r.id): r for r in found}
        return [by_id[i] for i in ids if i in by_id]

    async def register(
        self,
        rows: Sequence[StructureRow],
        *,
        organization_id: str,
        actor_id: str,
        job_id: str | None = None,
        library_id: str | None = None,
    ) -> RegistrationResult:
        """Registers new structures and merges known ones (store/registration.py); `job_id` marks an import."""
        return await register_structures(
            self._session, rows, organization_id=organization_id, actor_id=actor_id, job_id=job_id,
            library_id=library_id,
        )

    async def update(self, molecule_id: str, changes: dict[str, Any]) -> None:
        await self._session.execute(
            molecules.update().where(molecules.c.id == molecule_id).values(**changes, updated_at=sa.func.now())
        )

    async def imported_values(self, molecule_id: str, names: Sequence[str]) -> dict[str, PropertyValue]:
        """The molecule's IMPORTED values of these properties (those it has)."""
        if not names:
            return {}
        rows = await self._session.execute(
            sa.select(
                molecule_properties.c.name, molecule_properties.c.value_num, molecule_properties.c.value_text,
                molecule_properties.c.units,
            ).where(
                molecule_properties.c.molecule_id == molecule_id,
                molecule_properties.c.source == IMPORTED,
                molecule_properties.c.name.in_(list(names)),
            )
        )
        return {row.name: (row.value_num, row.value_text, row.units or "") for row in rows}

    async def write_imported_values(
        self, molecule_id: str, principal: Principal, values: dict[str, PropertyValue | None]
    ) -> None:
        """Sets the IMPORTED values (None removes one)."""
        removed = [name for name, value in values.items() if value is None]
        if removed:
            await self._session.execute(
                molecule_properties.delete().where(
                    molecule_properties.c.molecule_id == molecule_id,
                    molecule_properties.c.source == IMPORTED,
                    molecule_properties.c.name.in_(removed),
                )
            )
        rows = [
            {
                "molecule_id": molecule_id,
                "name": name,
                "source": IMPORTED,
                "value_num": value[0],
                "value_text": value[1],
                "units": value[2],
                "provenance": {"updated_by": principal.subject},
            }
            for name, value in sorted(values.items())
            if value is not None
        ]
        if rows:
            statement = insert(molecule_properties).values(rows)
            excluded = statement.excluded
            await self._session.execute(
                statement.on_conflict_do_update(
                    index_elements=[
                        molecule_properties.c.molecule_id,
                        molecule_properties.c.name,
                        molecule_properties.c.source,
                    ],
                    set_={
                        "value_num": excluded.value_num,
                        "value_text": excluded.value_text,
                        "units": excluded.units,
                        "provenance": excluded.provenance,
                        "updated_at": sa.func.now(),
                    },
                )
            )

    async def set_flag(self, molecule_id: str, principal: Principal, flag_type: str, level: str, notes: str) -> None:
        statement = insert(flags).values(
            molecule_id=molecule_id, user_id=principal.subject, type=flag_type, level=level, notes=notes
        )
        await self._session.execute(
            statement.on_conflict_do_update(
                index_elements=[flags.c.molecule_id, flags.c.user_id, flags.c.type],
                set_={"level": level, "notes": notes, "created_at": sa.func.now()},
            )
        )

    async def delete_flag(self, molecule_id: str, principal: Principal, flag_type: str) -> bool:
        """Whether a flag was removed."""
        removed = await self._session.execute(
            flags.delete().where(
                flags.c.molecule_id == molecule_id, flags.c.user_id == principal.subject, flags.c.type == flag_type
            )
        )
        return bool(removed.rowcount)  # type: ignore[attr-defined]

    async def lock_owned(self, organization_id: str, molecule_ids: Sequence[str]) -> set[str]:
        """Which of these molecules the organization has, locked (in id order, so writers never deadlock)."""
        return set(
            map(
                str,
                await self._session.scalars(
                    sa.select(molecules.c.id)
                    .where(molecules.c.id.in_(molecule_ids), molecules.c.organization_id == organization_id)
                    .order_by(molecules.c.id)
                    .with_for_update()
                ),
            )
        )

    async def lock_statuses(self, organization_id: str, molecule_ids: Sequence[str]) -> list[Any]:
        """(id, status, status_set_at) of the organization's molecules among these, locked in id order."""
        ids = sorted({c for c in map(canonical_uuid, molecule_ids) if c})
        if not ids:
            return []
        result = await self._session.execute(
            sa.select(molecules.c.id, molecules.c.status, molecules.c.status_set_at)
            .where(molecules.c.id.in_(ids), molecules.c.organization_id == organization_id)
            .order_by(molecules.c.id)
            .with_for_update()
        )
        return list(result)

    async def set_submission_status(
        self, molecule_ids: Sequence[str], status: str, submission_id: str, at: datetime
    ) -> None:
        """Sets the status a submission's transition gives, remembering which transition and when."""
        await self._session.execute(
            molecules.update()
            .where(molecules.c.id.in_(molecule_ids))
            .values(status=status, status_submission_id=submission_id, status_set_at=at, updated_at=sa.func.now())
        )

    async def write_predicted(self, job_id: str, values: Sequence[PredictedValue]) -> None:
        """Sets PREDICTED values (one per molecule and property: a later prediction replaces an earlier one)."""
        rows = [
            {
                "molecule_id": v.molecule_id,
                "name": v.property,
                "source": PREDICTED,
                "value_num": v.value,
                "value_text": None,
                "units": v.units,
                "provenance": {
                    "prediction_job_id": job_id,
                    "model": v.model_name,
                    "model_version": v.model_version,
                    "confidence": v.confidence,
                },
            }
            for v in values
        ]
        await self._upsert_properties(rows)

    async def experimental_accepted_at(self, molecule_ids: Sequence[str]) -> dict[tuple[str, str], datetime]:
        """When each stored EXPERIMENTAL value of these molecules was accepted, by (molecule id, property)."""
        accepted_at = molecule_properties.c.provenance["accepted_at"].astext
        result = await self._session.execute(
            sa.select(molecule_properties.c.molecule_id, molecule_properties.c.name, accepted_at).where(
                molecule_properties.c.molecule_id.in_(molecule_ids),
                molecule_properties.c.source == EXPERIMENTAL,
                accepted_at.is_not(None),
            )
        )
        return {(str(m), name): datetime.fromisoformat(at) for m, name, at in result}

    async def write_experimental(self, rows: Sequence[dict[str, Any]]) -> None:
        """Sets EXPERIMENTAL values: rows of molecule_id, name, value_num, value_text, units, provenance
        (one per molecule and property; it replaces the stored one)."""
        await self._upsert_properties([{**row, "source": EXPERIMENTAL} for row in rows])

    async def _upsert_properties(self, rows: Sequence[dict[str, Any]]) -> None:
        """Inserts or replaces (molecule, name, source) values, in key order (concurrent writers never deadlock)."""
        statement = insert(molecule_properties)
        await self._session.execute(
            statement.on_conflict_do_update(
                index_elements=["molecule_id", "name", "source"],
                set_={
                    "value_num": statement.excluded.value_num,
                    "value_text": statement.excluded.value_text,
                    "units": statement.excluded.units,
                    "provenance": statement.excluded.provenance,
                    "updated_at": sa.func.now(),
                },
            ),
            sorted(rows, key=lambda r: (str(r["molecule_id"]), str(r["name"]))),
        )
