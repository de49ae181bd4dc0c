"""Molecules as lists show them: every property value, the caller's flags, the libraries the caller can read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.ext.asyncio import AsyncSession

from services.molecule.store.libraries import visible_clause
from services.molecule.store.tables import flags, libraries, library_molecules, molecule_properties, molecules
from services.runtime.auth import Principal

IDS_TYPE = ARRAY(UUID(as_uuid=False))
# What a view shows: neither the fingerprints (512 bytes a row) nor the properties' provenance (JSON decoded
# per value) are read for a page of molecules.
VIEW_COLUMNS = tuple(c for c in molecules.c if c.name not in ("morgan_fp", "pattern_fp"))
_PROPERTY_COLUMNS = (molecule_properties.c.molecule_id, molecule_properties.c.name, molecule_properties.c.source,
                     molecule_properties.c.value_num, molecule_properties.c.value_text, molecule_properties.c.units)


@dataclass(frozen=True)
class PropertyValue:
    name: str
    value: float | str | None
    units: str
    source: str


@dataclass(frozen=True)
class FlagView:
    type: str
    level: str
    notes: str
    user_id: str
    created_at: datetime


@dataclass(frozen=True)
class MoleculeView:
    """One molecule as a list shows it (properties of every source, the caller's flags, visible libraries)."""

    id: str
    registration_number: str
    name: str
    smiles: str
    canonical_smiles: str
    inchi_key: str
    formula: str
    molecular_weight: float
    status: str
    organization_id: str
    created_by: str
    created_at: datetime
    updated_at: datetime
    properties: list[PropertyValue] = field(default_factory=list)
    flags: list[FlagView] = field(default_factory=list)
    library_ids: list[str] = field(default_factory=list)


def any_id(ids: Sequence[str]) -> sa.ColumnElement[bool]:
    return molecules.c.id == sa.any_(sa.literal(list(ids), IDS_TYPE))


async def views_of(session: AsyncSession, principal: Principal, ids: Sequence[str]) -> list[MoleculeView]:
    """The caller's organization's molecules with these ids, in this order (a query index page)."""
    found = await session.execute(
        sa.select(*VIEW_COLUMNS).where(any_id(ids), molecules.c.organization_id == principal.organization_id)
    )
    by_id = {str(r.id): r for r in found}
    return await molecule_views(session, principal, [by_id[i] for i in ids if i in by_id])


async def molecule_views(session: AsyncSession, principal: Principal, rows: Sequence[Any]) -> list[MoleculeView]:
    """Views of molecule rows: every property value, the caller's flags, the libraries the caller can read."""
    ids = [str(r.id) for r in rows]
    if not ids:
        return []
    any_of = sa.literal(ids, IDS_TYPE)
    props: dict[str, list[PropertyValue]] = {i: [] for i in ids}
    for p in await session.execute(
        sa.select(*_PROPERTY_COLUMNS)
        .where(molecule_properties.c.molecule_id == sa.any_(any_of))
        .order_by(molecule_properties.c.name, molecule_properties.c.source)
    ):
        value = p.value_num if p.value_num is not None else p.value_text
        props[str(p.molecule_id)].append(PropertyValue(p.name, value, p.units, p.source))
    user_flags: dict[str, list[FlagView]] = {i: [] for i in ids}
    for f in await session.execute(
        sa.select(flags).where(flags.c.molecule_id == sa.any_(any_of), flags.c.user_id == principal.subject)
    ):
        user_flags[str(f.molecule_id)].append(FlagView(f.type, f.level, f.notes, f.user_id, f.created_at))
    memberships: dict[str, list[str]] = {i: [] for i in ids}
    for molecule_id, library_id in await session.execute(
        sa.select(library_molecules.c.molecule_id, library_molecules.c.library_id)
        .join(libraries, libraries.c.id == library_molecules.c.library_id)
        .where(library_molecules.c.molecule_id == sa.any_(any_of), visible_clause(principal))
        .order_by(library_molecules.c.library_id)
    ):
        memberships[str(molecule_id)].append(str(library_id))
    return [
        MoleculeView(
            id=str(r.id), registration_number=r.registration_number, name=r.name, smiles=r.smiles,
            canonical_smiles=r.canonical_smiles, inchi_key=r.inchi_key,
            formula=r.formula, molecular_weight=r.molecular_weight, status=r.status,
            organization_id=str(r.organization_id), created_by=r.created_by, created_at=r.created_at,
            updated_at=r.updated_at, properties=props[str(r.id)], flags=user_flags[str(r.id)],
            library_ids=memberships[str(r.id)],
        )
        for r in rows
    ]


class MoleculeViews:
    """The read model on a unit of work's session."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def of_ids(self, principal: Principal, ids: Sequence[str]) -> list[MoleculeView]:
        return await views_of(self._session, principal, ids)

    async def of_rows(self, principal: Principal, rows: Sequence[Any]) -> list[MoleculeView]:
        return await molecule_views(self._session, principal, rows)
