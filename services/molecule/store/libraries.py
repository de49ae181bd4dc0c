"""Libraries in PostgreSQL: the repository the library use cases load and save through, and the
library read models (a library with its molecule count and the caller's level, its grants)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, UUID, distinct_on, insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.molecule.domain import library_rules
from services.molecule.domain.library_rules import Action, Details, Level, LibraryFacts, LibraryFilter
from services.molecule.domain.vocabulary import ARCHIVED, PRECEDENCE
from services.molecule.store.tables import libraries, library_grants, library_molecules, molecule_properties, molecules
from services.runtime.auth import Principal
from services.runtime.db import canonical_uuid, execute_unique
from services.runtime.errors import ConflictError, NotFoundError, ValidationError
from services.runtime.pagination import PageRequest

_ids_type = ARRAY(UUID(as_uuid=False))
# Sort keys of the SQL listing used when no query index is given (the index sorts by any property).
MOLECULE_SORT_KEYS: dict[str, Any] = {
    "added_at": library_molecules.c.added_at,
    "name": molecules.c.name,
    "created_at": molecules.c.created_at,
    "updated_at": molecules.c.updated_at,
    "molecular_weight": molecules.c.molecular_weight,
    "inchi_key": molecules.c.inchi_key,
    "formula": molecules.c.formula,
    "status": molecules.c.status,
}


@dataclass(frozen=True)
class Library:
    id: str
    name: str
    description: str
    category: str
    visibility: str
    owner_id: str
    organization_id: str
    molecule_count: int
    access_level: Level  # the caller's
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Grant:
    user_id: str
    level: Level


@dataclass(frozen=True)
class LibraryAccess:
    library_id: str
    level: Level  # the caller's
    visibility: str
    grants: list[Grant]  # one page of them: the owner first, then explicit grants by user id


@dataclass(frozen=True)
class LibraryRecord:
    """A library row with the caller's level, as the repository loads it."""

    row: Any
    level: Level

    @property
    def id(self) -> str:
        return str(self.row.id)

    @property
    def organization_id(self) -> str:
        return str(self.row.organization_id)

    @property
    def name(self) -> str:
        return str(self.row.name)

    @property
    def visibility(self) -> str:
        return str(self.row.visibility)

    @property
    def facts(self) -> LibraryFacts:
        return _facts(self.row)


def visible_clause(principal: Principal) -> sa.ColumnElement[bool]:
    """Libraries the caller may read (VIEWER or more): own, granted, or organization-visible."""
    granted = sa.exists().where(
        library_grants.c.library_id == libraries.c.id, library_grants.c.user_id == principal.subject
    )
    return sa.and_(
        libraries.c.organization_id == principal.organization_id,
        sa.or_(libraries.c.owner_id == principal.subject, libraries.c.visibility == "ORGANIZATION", granted),
    )


class LibraryRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    # ---- loading -------------------------------------------------------------------------------

    async def get(
        self, principal: Principal, library_id: str, action: Action, *, lock: bool = False
    ) -> LibraryRecord:
        """The library if the caller may do `action` with it (404 / 403 otherwise)."""
        record = await self._load(principal, library_id, lock=lock)
        library_rules.require(principal, record.facts, record.level, action)
        return record

    async def seen(self, principal: Principal, library_id: str) -> LibraryRecord:
        """The library if the caller may see its details (readers, and the organization's admins)."""
        record = await self._load(principal, library_id)
        if not library_rules.may_see(principal, record.facts, record.level):
            raise NotFoundError("Library not found")
        return record

    async def _load(self, principal: Principal, library_id: str, *, lock: bool = False) -> LibraryRecord:
        """The library with the caller's level, whoever may see it; 404 for an id that names none."""
        canonical = canonical_uuid(library_id)
        row = None
        if canonical is not None:
            query = _with_grant(sa.select(libraries), principal).where(libraries.c.id == canonical)
            row = (await self._session.execute(query.with_for_update(of=libraries) if lock else query)).first()
        if row is None:
            raise NotFoundError("Library not found")
        return LibraryRecord(row, _level(principal, row))

    # ---- saving --------------------------------------------------------------------------------

    async def add(self, principal: Principal, details: Details) -> str:
        library_id = str(uuid.uuid4())
        await execute_unique(
            self._session,
            libraries.insert().values(
                id=library_id, organization_id=principal.organization_id, owner_id=principal.subject,
                name=details.name, description=details.description, category=details.category,
                visibility=details.visibility,
            ),
            _name_taken(str(details.name)),
        )
        return library_id

    async def update(self, record: LibraryRecord, values: dict[str, Any]) -> None:
        await execute_unique(
            self._session,
            libraries.update().where(libraries.c.id == record.id).values(**values, updated_at=sa.func.now()),
            _name_taken(values.get("name") or record.name),
        )

    async def touch(self, library_id: str) -> None:
        await self._session.execute(
            libraries.update().where(libraries.c.id == library_id).values(updated_at=sa.func.now())
        )

    async def delete(self, record: LibraryRecord) -> list[str]:
        """Deletes the library and its grants; returns its former members (the molecules stay)."""
        members = await self._session.scalars(
            library_molecules.delete()
            .where(library_molecules.c.library_id == record.id)
            .returning(library_molecules.c.molecule_id)
        )
        former = [str(i) for i in members]
        await self._session.execute(libraries.delete().where(libraries.c.id == record.id))
        return former

    async def existing_molecules(self, organization_id: str, ids: list[str], *, include_archived: bool) -> set[str]:
        """Which of these ids are molecules of the organization."""
        if not ids:
            return set()
        query = sa.select(molecules.c.id).where(
            molecules.c.id == sa.any_(sa.literal(ids, _ids_type)), molecules.c.organization_id == organization_id
        )
        if not include_archived:
            query = query.where(molecules.c.status != ARCHIVED)
        return {str(i) for i in await self._session.scalars(query)}

    async def add_members(self, principal: Principal, record: LibraryRecord, molecule_ids: Sequence[str]) -> list[str]:
        """Adds molecules already known to be the library organization's; returns those new to it."""
        added = await self._session.scalars(
            insert(library_molecules)
            .from_select(
                ["library_id", "molecule_id", "added_by"],
                sa.select(
                    sa.literal(record.id, UUID(as_uuid=False)),
                    sa.func.unnest(sa.literal(list(molecule_ids), _ids_type)),
                    sa.literal(principal.subject),
                ),
            )
            .on_conflict_do_nothing()
            .returning(library_molecules.c.molecule_id)
        )
        return [str(i) for i in added]

    async def remove_members(self, record: LibraryRecord, molecule_ids: list[str]) -> list[str]:
        """Takes molecules out of the library; returns those that were members."""
        removed = await self._session.scalars(
            library_molecules.delete()
            .where(
                library_molecules.c.library_id == record.id,
                library_molecules.c.molecule_id == sa.any_(sa.literal(molecule_ids, _ids_type)),
            )
            .returning(library_molecules.c.molecule_id)
        )
        return [str(i) for i in removed]

    async def grant(self, record: LibraryRecord, user_id: str, level: Level) -> None:
        await self._session.execute(
            insert(library_grants)
            .values(library_id=record.id, user_id=user_id, level=level.name)
            .on_conflict_do_update(
                index_elements=[library_grants.c.library_id, library_grants.c.user_id], set_={"level": level.name}
            )
        )

    async def grant_level(self, record: LibraryRecord, user_id: str) -> Level:
        """The user's grant on the library (NONE without one)."""
        level = await self._session.scalar(
            sa.select(library_grants.c.level).where(
                library_grants.c.library_id == record.id, library_grants.c.user_id == user_id
            )
        )
        return Level[level] if level else Level.NONE

    async def revoke(self, record: LibraryRecord, user_id: str) -> None:
        await self._session.execute(
            library_grants.delete().where(library_grants.c.library_id == record.id, library_grants.c.user_id == user_id)
        )

    # ---- read models ---------------------------------------------------------------------------

    async def view(self, principal: Principal, library_id: str) -> Library:
        return (await self.views(principal, [(await self.seen(principal, library_id)).row]))[0]

    async def views(self, principal: Principal, rows: Sequence[Any]) -> list[Library]:
        """Library views with their molecule counts."""
        counts = await self._member_counts([str(r.id) for r in rows])
        return [
            Library(
                id=str(r.id), name=r.name, description=r.description, category=r.category, visibility=r.visibility,
                owner_id=r.owner_id, organization_id=str(r.organization_id), molecule_count=counts.get(str(r.id), 0),
                access_level=_level(principal, r), created_at=r.created_at, updated_at=r.updated_at,
            )
            for r in rows
        ]

    async def list_visible(
        self, principal: Principal, page: PageRequest, filters: LibraryFilter
    ) -> tuple[list[Library], int]:
        """What lists show: readable libraries, or every library of the organization for its admins."""
        if library_rules.is_organization_admin(principal):
            listable = libraries.c.organization_id == principal.organization_id
        else:
            listable = visible_clause(principal)
        return await self._page(principal, page, [listable, *_filter_conditions(filters)])

    async def list_owned(self, principal: Principal, page: PageRequest) -> tuple[list[Library], int]:
        conditions = [
            libraries.c.organization_id == principal.organization_id,
            libraries.c.owner_id == principal.subject,
        ]
        return await self._page(principal, page, conditions)

    async def _page(
        self, principal: Principal, page: PageRequest, conditions: Sequence[sa.ColumnElement[bool]]
    ) -> tuple[list[Library], int]:
        total = await self._session.scalar(sa.select(sa.func.count()).select_from(libraries).where(*conditions)) or 0
        rows = list(
            await self._session.execute(
                _with_grant(sa.select(libraries), principal)
                .where(*conditions)
                .order_by(sa.func.lower(libraries.c.name), libraries.c.id)
                .limit(page.page_size)
                .offset(page.offset)
            )
        )
        return await self.views(principal, rows), total

    async def member_count(self, library_id: str) -> int:
        return (await self._member_counts([library_id])).get(library_id, 0)

    async def _member_counts(self, library_ids: Sequence[str]) -> dict[str, int]:
        """Unarchived members per library, one grouped query for the lot."""
        query = (
            sa.select(library_molecules.c.library_id, sa.func.count())
            .where(library_molecules.c.library_id == sa.any_(sa.literal(list(library_ids), _ids_type)), _not_archived())
            .group_by(library_molecules.c.library_id)
        )
        return {str(library_id): count for library_id, count in await self._session.execute(query)}

    async def member_rows(
        self, record: LibraryRecord, page: PageRequest, *, sort_by: str, sort_desc: bool
    ) -> tuple[list[Any], int]:
        """One page of the library's unarchived molecule rows, sorted by a MOLECULE_SORT_KEYS column."""
        column = MOLECULE_SORT_KEYS.get(sort_by or "added_at")
        if column is None:
            raise ValidationError(
                "Unknown sort key", field_violations=[("sort_by", f"one of {', '.join(MOLECULE_SORT_KEYS)}")]
            )
        members = (
            sa.select(molecules)
            .join(library_molecules, library_molecules.c.molecule_id == molecules.c.id)
            .where(
                library_molecules.c.library_id == record.id,
                molecules.c.organization_id == record.organization_id,  # adds check it; reads too
                molecules.c.status != ARCHIVED,
            )
        )
        total = await self.member_count(record.id)
        order = column.desc() if sort_desc else column.asc()
        tie = molecules.c.id.desc() if sort_desc else molecules.c.id.asc()
        paged = members.order_by(order.nulls_last(), tie).limit(page.page_size).offset(page.offset)
        return list(await self._session.execute(paged)), total

    async def access(self, record: LibraryRecord, page: PageRequest) -> tuple[LibraryAccess, int]:
        """One page of the grants and their number. The owner (not a row of library_grants) takes place 0
        of the list; the explicit grants follow by user id, which is unique per library, so pages are stable."""
        on_first_page = page.offset == 0
        grants = [Grant(record.row.owner_id, Level.OWNER)] if on_first_page else []
        rows = await self._session.execute(
            sa.select(library_grants.c.user_id, library_grants.c.level)
            .where(library_grants.c.library_id == record.id)
            .order_by(library_grants.c.user_id)
            .limit(page.page_size - len(grants))
            .offset(max(page.offset - 1, 0))
        )
        grants.extend(Grant(user_id, Level[level]) for user_id, level in rows)
        explicit = await self._session.scalar(
            sa.select(sa.func.count()).select_from(library_grants).where(library_grants.c.library_id == record.id)
        )
        access = LibraryAccess(library_id=record.id, level=record.level, visibility=record.visibility, grants=grants)
        return access, 1 + (explicit or 0)

    async def effective_values(self, library_id: str, name: str) -> list[float]:
        """The numeric effective values of the library's unarchived members (the most trusted source's value;
        members whose effective value is text or absent are left out).

        A join rather than a per-member lookup, so PostgreSQL picks index probes for a small library and a
        hash join for a large one; the values come back as one array (500,000 rows cost more to transfer
        than to compute)."""
        rank = sa.case({source: i for i, source in enumerate(PRECEDENCE)}, value=molecule_properties.c.source)
        in_library = sa.and_(library_molecules.c.library_id == library_id, _not_archived())
        by_source = (
            sa.select(molecule_properties.c.value_num.label("value"))
            .join(library_molecules, library_molecules.c.molecule_id == molecule_properties.c.molecule_id)
            .where(in_library, molecule_properties.c.name == name)
            .order_by(molecule_properties.c.molecule_id, rank)
            .ext(distinct_on(molecule_properties.c.molecule_id))
        )
        if name == "molecular_weight":  # also a column of every molecule: the value when no row holds one
            without_row = ~sa.exists().where(
                molecule_properties.c.molecule_id == molecules.c.id, molecule_properties.c.name == name
            )
            column = (
                sa.select(molecules.c.molecular_weight.label("value"))
                .join(library_molecules, library_molecules.c.molecule_id == molecules.c.id)
                .where(library_molecules.c.library_id == library_id, molecules.c.status != ARCHIVED, without_row)
            )
            values = sa.union_all(by_source, column).subquery()
        else:
            values = by_source.subquery()
        collected = sa.select(sa.func.array_agg(values.c.value).filter(values.c.value.is_not(None)))
        return list(await self._session.scalar(collected) or [])


def _with_grant(query: sa.Select[Any], principal: Principal) -> sa.Select[Any]:
    """Adds the caller's own grant level (or NULL) as column `granted`."""
    grant = library_grants.alias("caller_grant")
    return query.add_columns(grant.c.level.label("granted")).outerjoin(
        grant, sa.and_(grant.c.library_id == libraries.c.id, grant.c.user_id == principal.subject)
    )


def _facts(row: Any) -> LibraryFacts:
    return LibraryFacts(organization_id=str(row.organization_id), owner_id=row.owner_id, visibility=row.visibility)


def _level(principal: Principal, row: Any) -> Level:
    granted = Level[row.granted] if row.granted else Level.NONE
    return library_rules.access_level(principal, _facts(row), granted)


def _not_archived() -> sa.ColumnElement[bool]:
    """On library_molecules rows: the member is not archived (an anti-join on the small archived index)."""
    return ~sa.exists().where(molecules.c.id == library_molecules.c.molecule_id, molecules.c.status == ARCHIVED)


def _filter_conditions(filters: LibraryFilter) -> list[sa.ColumnElement[bool]]:
    """The SQL of a filter library_rules.check_filter accepted."""
    conditions: list[sa.ColumnElement[bool]] = []
    if filters.name_contains:
        pattern = filters.name_contains.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        conditions.append(libraries.c.name.ilike(f"%{pattern}%", escape="\\"))
    if filters.categories:
        conditions.append(libraries.c.category.in_(filters.categories))
    if filters.visibility:
        conditions.append(libraries.c.visibility == filters.visibility)
    if filters.owner_id:
        conditions.append(libraries.c.owner_id == (canonical_uuid(filters.owner_id) or filters.owner_id))
    return conditions


def _name_taken(name: str) -> ConflictError:
    return ConflictError(
        f"The owner already has a library named '{name}' (names are unique per owner, ignoring case)",
        detail="LIBRARY_NAME_TAKEN",
    )
