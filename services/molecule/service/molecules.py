"""Molecules of the caller's organization: read, list and filter, register, update, archive, flag, draw.

The service layer of MoleculeService (services/molecule/server/molecules.py maps protos to it).
Every read and write is scoped to the caller's organization: another organization's molecule is
"not found", whatever the caller's role. Lists come from the query engine (queries.py); a page's rows
are then read from PostgreSQL. Every write records MoleculesChanged in the outbox (search indexes and
other replicas' query indexes re-read the molecule) and refreshes this replica's query index at once.

Decisions:
- Writers: pharma_scientist and up (pharma_admin implies it) and system_admin. Flags count as writes
  (an auditor or a CRO user cannot flag). Reading needs only a principal of the organization.
- Status: users move a molecule between AVAILABLE and ARCHIVED (delete = archive; archiving twice is
  no error). PENDING, TESTING and RESULTS are set by the submission workflow (400 if asked for here),
  and a molecule held by a submission (PENDING, TESTING) cannot be archived or reactivated (409).
- UpdateMolecule sets IMPORTED values only (a given source must be IMPORTED); a value of null
  removes the molecule's IMPORTED value for that property. Values are range-checked by
  properties.check_value / parse_value; a bad one is a 400 naming the property. Units may be omitted;
  for a known property they must be the catalogue's.
- A name cannot be cleared through UpdateMolecule (an empty proto string means "unchanged").
- Batch create: structure or value problems reject that molecule only (its outcome says why);
  a library the caller may not change rejects the whole request. With a request_id, the outcomes
  themselves are what a retry gets back.
- Pictures: the canonical SMILES of the parent, SVG by default, 50–2000 px each side (300 default).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from molbridge.events.v1.molecule_pb2 import MoleculesChanged
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from bus.outbox import add_event
from services.molecule.domain import chemistry, properties
from services.molecule.domain.imports import MAX_NAME_LENGTH, PropertyValue, StructureRow, stored_value
from services.molecule.domain.library_rules import Action
from services.molecule.domain.vocabulary import (
    ARCHIVED,
    EVENT_SOURCE,
    FLAG_TYPES,
    HELD_STATUSES,
    IMPORTED,
    STATUSES,
    USER_STATUSES,
    WRITER_ROLES,
)
from services.molecule.index.columnar import QueryIndex
from services.molecule.index.query import MoleculeQuery
from services.molecule.store.libraries import library_for
from services.molecule.store.molecule_views import MoleculeView, molecule_views, views_of
from services.molecule.store.registration import register_structures
from services.molecule.store.tables import SCHEMA, flags, molecule_properties, molecules
from services.runtime.auth import Principal
from services.runtime.db import UnitOfWork, canonical_uuid
from services.runtime.errors import (
    InternalError,
    NotFoundError,
    PreconditionError,
    ValidationError,
)
from services.runtime.idempotency import idempotent
from services.runtime.pagination import PageRequest

log = logging.getLogger("molbridge.molecule.molecules")

MAX_BATCH = 1000
MAX_NOTES_LENGTH = 2000
MAX_UNITS_LENGTH = 32
PRIORITY = "PRIORITY"
LEVELS = ("HIGH", "MEDIUM", "LOW")
DEFAULT_IMAGE_PX = 300
IMAGE_TYPES = {"svg": "image/svg+xml", "png": "image/png"}


@dataclass(frozen=True, slots=True)
class PropertyInput:
    name: str
    value: float | int | str | bool | None  # None: no value (UpdateMolecule: remove the IMPORTED value)
    units: str = ""
    source: str = ""


@dataclass(frozen=True, slots=True)
class NewMolecule:
    smiles: str
    name: str = ""
    properties: Sequence[PropertyInput] = ()


@dataclass(frozen=True, slots=True)
class Outcome:
    index: int
    outcome: str  # registered | merged | rejected
    molecule_id: str = ""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Image:
    content_type: str
    data: bytes


class _Rejected(Exception):
    def __init__(self, field_name: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field_name
        self.reason = reason


class MoleculeService:
    def __init__(self, uow: UnitOfWork, index: QueryIndex) -> None:
        self._uow = uow
        self._index = index

    # -- reads -------------------------------------------------------------------------------------------

    async def get(self, principal: Principal, molecule_id: str) -> MoleculeView:
        async with self._uow() as session:
            row = await _molecule_row(session, principal, molecule_id)
            return (await molecule_views(session, principal, [row]))[0]

    async def batch_get(self, principal: Principal, ids: Sequence[str]) -> tuple[list[MoleculeView], list[str]]:
        """Up to MAX_BATCH molecules of the caller's organization in request order (duplicates once), and
        the requested ids not found (malformed, unknown or another organization's)."""
        if len(ids) > MAX_BATCH:
            raise _validation("ids", f"at most {MAX_BATCH} ids per request")
        canonical = {given: canonical_uuid(given) for given in ids}
        wanted = list(dict.fromkeys(c for c in canonical.values() if c is not None))
        async with self._uow() as session:
            views = await views_of(session, principal, wanted) if wanted else []
        found = {view.id for view in views}
        return views, [given for given, c in canonical.items() if c not in found]

    async def list_molecules(
        self, principal: Principal, query: MoleculeQuery, page: PageRequest
    ) -> tuple[list[MoleculeView], int]:
        if query.library_id:
            async with self._uow() as session:
                await library_for(session, principal, query.library_id, Action.READ)
        # No connection is held meanwhile: the first query of an organization waits for its load.
        ids, total = await self._index.page(principal.organization_id, principal.subject, query, page)
        if not ids:
            return [], total
        async with self._uow() as session:
            found = await session.execute(
                sa.select(molecules).where(
                    molecules.c.id.in_(ids), molecules.c.organization_id == principal.organization_id
                )
            )
            by_id = {str(r.id): r for r in found}
            rows = [by_id[i] for i in ids if i in by_id]
            return await molecule_views(session, principal, rows), total

    def property_definitions(self) -> list[properties.PropertyDefinition]:
        return list(properties.KNOWN_PROPERTIES.values())

    async def image(self, principal: Principal, molecule_id: str, fmt: str, width: int, height: int) -> Image:
        kind = (fmt or "svg").strip().lower()
        width, height = width or DEFAULT_IMAGE_PX, height or DEFAULT_IMAGE_PX
        violations = []
        if kind not in IMAGE_TYPES:
            violations.append(("format", "svg or png"))
        low, high = chemistry.MIN_DEPICTION_PX, chemistry.MAX_DEPICTION_PX
        for name, size in (("width", width), ("height", height)):
            if not low <= size <= high:
                violations.append((name, f"{name} must be {low}–{high} px, got {size}"))
        if violations:
            raise ValidationError(f"Invalid picture request: {violations[0][1]}", field_violations=violations)
        async with self._uow() as session:
            row = await _molecule_row(session, principal, molecule_id)
        try:
            if kind == "png":
                data = await asyncio.to_thread(chemistry.depict_png, row.canonical_smiles, width, height)
            else:
                svg = await asyncio.to_thread(chemistry.depict_svg, row.canonical_smiles, width, height)
                data = svg.encode()
        except chemistry.InvalidStructure as error:  # a stored structure RDKit reads no longer
            raise InternalError(f"The structure cannot be drawn: {error.reason}") from error
        return Image(IMAGE_TYPES[kind], data)

    # -- registration ------------------------------------------------------------------------------------

    async def create(
        self, principal: Principal, new: NewMolecule, *, library_id: str = "", request_id: str = ""
    ) -> MoleculeView:
        _require_writer(principal)
        try:
            name, values = _checked_input(new)
        except _Rejected as problem:
            raise _validation(f"molecule.{problem.field}", problem.reason) from None
        try:
            registered = await asyncio.to_thread(chemistry.register, new.smiles)
        except chemistry.InvalidStructure as error:
            raise _validation("molecule.smiles", error.reason) from None
        row = StructureRow(None, registered, name, values, IMPORTED)
        async with self._uow() as session:
            library = await _writable_library(session, principal, library_id)

            async def register() -> str:
                result = await register_structures(
                    session,
                    [row],
                    organization_id=principal.organization_id,
                    actor_id=principal.subject,
                    library_id=library,
                )
                return result.outcomes[0].molecule_id

            molecule_id = await idempotent(session, _scope(principal, "create"), request_id, register)
        return await self._after_write(principal, molecule_id)

    async def batch_create(
        self, principal: Principal, news: Sequence[NewMolecule], *, library_id: str = "", request_id: str = ""
    ) -> list[Outcome]:
        _require_writer(principal)
        if not news:
            raise _validation("molecules", "at least one molecule")
        if len(news) > MAX_BATCH:
            raise _validation("molecules", f"at most {MAX_BATCH} molecules per request, got {len(news)}")
        structures = await asyncio.to_thread(chemistry.register_many, [n.smiles for n in news])
        outcomes: dict[int, Outcome] = {}
        rows: list[tuple[int, StructureRow]] = []
        for i, (new, structure) in enumerate(zip(news, structures, strict=True)):
            try:
                name, values = _checked_input(new)
                if isinstance(structure, chemistry.InvalidStructure):
                    raise _Rejected("smiles", structure.reason)
            except _Rejected as problem:
                outcomes[i] = Outcome(i, "rejected", reason=f"{problem.field}: {problem.reason}")
                continue
            rows.append((i, StructureRow(None, structure, name, values, IMPORTED)))
        async with self._uow() as session:
            library = await _writable_library(session, principal, library_id)

            async def register() -> str:
                if rows:
                    result = await register_structures(
                        session,
                        [row for _, row in rows],
                        organization_id=principal.organization_id,
                        actor_id=principal.subject,
                        library_id=library,
                    )
                    for (i, _), done in zip(rows, result.outcomes, strict=True):
                        outcomes[i] = Outcome(
                            i, "registered" if done.registered else "merged", done.molecule_id
                        )
                ordered = [outcomes[i] for i in range(len(news))]
                return json.dumps([[o.outcome, o.molecule_id, o.reason] for o in ordered])

            stored = await idempotent(session, _scope(principal, "batch"), request_id, register)
        result = [
            Outcome(i, outcome, molecule_id, reason)
            for i, (outcome, molecule_id, reason) in enumerate(json.loads(stored))
        ]
        await self._refresh(principal, [o.molecule_id for o in result if o.molecule_id])
        return result

    # -- changes -----------------------------------------------------------------------------------------

    async def update(
        self,
        principal: Principal,
        molecule_id: str,
        *,
        name: str = "",
        status: str = "",
        values: Sequence[PropertyInput] = (),
    ) -> MoleculeView:
        _require_writer(principal)
        new_name = name.strip()
        violations = []
        if len(new_name) > MAX_NAME_LENGTH:
            violations.append(("name", f"at most {MAX_NAME_LENGTH} characters"))
        if status and status not in STATUSES:
            violations.append(("status", f"one of {', '.join(STATUSES)}"))
        if violations:
            raise ValidationError(f"Invalid update: {violations[0][1]}", field_violations=violations)
        changes = _checked_values(values)
        async with self._uow() as session:
            row = await _molecule_row(session, principal, molecule_id, lock=True)
            updates: dict[str, Any] = {}
            if new_name and new_name != row.name:
                updates["name"] = new_name
            if status and status != row.status:
                _check_transition(row.status, status)
                updates["status"] = status
            await _write_values(session, str(row.id), principal, changes)
            if updates or changes:
                await session.execute(
                    molecules.update()
                    .where(molecules.c.id == row.id)
                    .values(**updates, updated_at=sa.func.now())
                )
                await _changed(session, principal, str(row.id), archived=updates.get("status") == ARCHIVED)
        return await self._after_write(principal, str(row.id))

    async def delete(self, principal: Principal, molecule_id: str) -> MoleculeView:
        """Archive (the record stays; lists leave it out)."""
        return await self.update(principal, molecule_id, status=ARCHIVED)

    async def set_flag(
        self, principal: Principal, molecule_id: str, flag_type: str, level: str = "", notes: str = ""
    ) -> MoleculeView:
        _require_writer(principal)
        violations = []
        if flag_type not in FLAG_TYPES:
            violations.append(("type", f"one of {', '.join(FLAG_TYPES)}"))
        elif flag_type == PRIORITY and level not in LEVELS:
            violations.append(("level", f"PRIORITY needs a level: {', '.join(LEVELS)}"))
        elif flag_type != PRIORITY and level:
            violations.append(("level", "only PRIORITY flags have a level"))
        if len(notes) > MAX_NOTES_LENGTH:
            violations.append(("notes", f"at most {MAX_NOTES_LENGTH} characters"))
        if violations:
            raise ValidationError(f"Invalid flag: {violations[0][1]}", field_violations=violations)
        async with self._uow() as session:
            row = await _molecule_row(session, principal, molecule_id)
            statement = insert(flags).values(
                molecule_id=row.id, user_id=principal.subject, type=flag_type, level=level, notes=notes
            )
            await session.execute(
                statement.on_conflict_do_update(
                    index_elements=[flags.c.molecule_id, flags.c.user_id, flags.c.type],
                    set_={"level": level, "notes": notes, "created_at": sa.func.now()},
                )
            )
            await _changed(session, principal, str(row.id))
        return await self._after_write(principal, str(row.id))

    async def delete_flag(self, principal: Principal, molecule_id: str, flag_type: str) -> MoleculeView:
        """Removing a flag that is not set changes nothing and is no error (a retry answers the same)."""
        _require_writer(principal)
        if flag_type not in FLAG_TYPES:
            raise _validation("type", f"one of {', '.join(FLAG_TYPES)}")
        async with self._uow() as session:
            row = await _molecule_row(session, principal, molecule_id)
            removed = await session.execute(
                flags.delete().where(
                    flags.c.molecule_id == row.id,
                    flags.c.user_id == principal.subject,
                    flags.c.type == flag_type,
                )
            )
            if removed.rowcount:  # type: ignore[attr-defined]
                await _changed(session, principal, str(row.id))
        return await self._after_write(principal, str(row.id))

    async def _after_write(self, principal: Principal, molecule_id: str) -> MoleculeView:
        await self._refresh(principal, [molecule_id])
        return await self.get(principal, molecule_id)

    async def _refresh(self, principal: Principal, molecule_ids: list[str]) -> None:
        """Read-your-writes on this replica; the committed MoleculesChanged refreshes every replica
        anyway, so a failure here costs freshness for a moment, never the write."""
        try:
            await self._index.refresh(principal.organization_id, molecule_ids)
        except Exception:
            log.warning("query index refresh after a molecule write failed", exc_info=True)


# -- helpers ---------------------------------------------------------------------------------------------


def _require_writer(principal: Principal) -> None:
    principal.require_any_role(*WRITER_ROLES)


def _validation(field_name: str, reason: str) -> ValidationError:
    return ValidationError(f"Invalid {field_name}: {reason}", field_violations=[(field_name, reason)])


def _scope(principal: Principal, action: str) -> str:
    return f"molecules.{action}:{principal.organization_id}:{principal.subject}"


async def _molecule_row(
    session: AsyncSession, principal: Principal, molecule_id: str, *, lock: bool = False
) -> Any:
    """The caller's organization's molecule, or 404 (another organization's is not found either)."""
    canonical = canonical_uuid(molecule_id)
    if canonical is None:
        raise NotFoundError("Molecule not found")
    query = sa.select(molecules).where(
        molecules.c.id == canonical, molecules.c.organization_id == principal.organization_id
    )
    row = (await session.execute(query.with_for_update() if lock else query)).first()
    if row is None:
        raise NotFoundError("Molecule not found")
    return row


async def _writable_library(session: AsyncSession, principal: Principal, library_id: str) -> str | None:
    if not library_id:
        return None
    return (await library_for(session, principal, library_id, Action.CHANGE_MOLECULES, lock=True)).id


def _check_transition(current: str, target: str) -> None:
    if target not in USER_STATUSES:
        raise ValidationError(
            f"Status {target} is set by the submission workflow, not by hand",
            detail="STATUS_RESERVED",
            field_violations=[("status", f"one of {', '.join(USER_STATUSES)}")],
        )
    if current in HELD_STATUSES:
        raise PreconditionError(
            f"The molecule is held by a submission (status {current}): its status cannot change by hand",
            detail="MOLECULE_IN_SUBMISSION",
        )


def _checked_input(new: NewMolecule) -> tuple[str, dict[str, PropertyValue]]:
    """A new molecule's name and IMPORTED values, or _Rejected naming the field."""
    name = new.name.strip()
    if len(name) > MAX_NAME_LENGTH:
        raise _Rejected("name", f"at most {MAX_NAME_LENGTH} characters")
    values: dict[str, PropertyValue] = {}
    for i, given in enumerate(new.properties):
        value = _checked_value(given, f"properties[{i}]")
        if value is None:
            raise _Rejected(f"properties[{i}].value", f"a value is required for {given.name}")
        if given.name.strip() in values:
            raise _Rejected(f"properties[{i}].name", f"{given.name.strip()} is given twice")
        values[given.name.strip()] = value
    return name, values


def _checked_values(given: Sequence[PropertyInput]) -> dict[str, PropertyValue | None]:
    """UpdateMolecule's values by name (None: remove); 400 naming the first bad one."""
    out: dict[str, PropertyValue | None] = {}
    for i, value in enumerate(given):
        try:
            checked = _checked_value(value, f"properties[{i}]")
            if value.name.strip() in out:
                raise _Rejected(f"properties[{i}].name", f"{value.name.strip()} is given twice")
        except _Rejected as problem:
            raise _validation(problem.field, problem.reason) from None
        out[value.name.strip()] = checked
    return out


def _checked_value(given: PropertyInput, at: str) -> PropertyValue | None:
    name = given.name.strip()
    definition = properties.definition(name)
    if definition is None:
        raise _Rejected(f"{at}.name", f"unknown property {name[:64]!r} (a known property or custom_<name>)")
    if given.source and given.source != IMPORTED:
        raise _Rejected(f"{at}.source", f"only IMPORTED values can be given here, not {given.source}")
    units = given.units.strip()
    if definition.custom:
        if len(units) > MAX_UNITS_LENGTH:
            raise _Rejected(f"{at}.units", f"at most {MAX_UNITS_LENGTH} characters")
    elif units and units != definition.units:
        raise _Rejected(f"{at}.units", f"{name} is stored in {definition.units or 'no units'}, not {units!r}")
    if given.value is None:
        return None
    if not isinstance(given.value, (int, float, str)):  # a JSON list or object (bool is an int)
        raise _Rejected(f"{at}.value", "a number, text or boolean, not a list or object")
    try:
        number, text, catalogue_units = stored_value(properties.check_value(name, given.value))
    except properties.PropertyValueError as error:
        raise _Rejected(f"{at}.value", error.reason) from None
    return number, text, units if definition.custom else catalogue_units


async def _write_values(
    session: AsyncSession, molecule_id: str, principal: Principal, values: dict[str, PropertyValue | None]
) -> None:
    removed = [name for name, value in values.items() if value is None]
    if removed:
        await session.execute(
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
        await session.execute(
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


async def _changed(
    session: AsyncSession, principal: Principal, molecule_id: str, *, archived: bool = False
) -> None:
    event = MoleculesChanged(organization_id=principal.organization_id)
    (event.archived_ids if archived else event.molecule_ids).append(molecule_id)
    await add_event(
        session,
        source=EVENT_SOURCE,
        payload=event,
        organization_id=principal.organization_id,
        actor_id=principal.subject,
        schema=SCHEMA,
    )
