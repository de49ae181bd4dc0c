"""Libraries: named sets of an organization's molecules, private or organization-wide, shared by grants.

The service layer of LibraryService. Who may do what is decided in library_rules (pure); here are
the queries and transactions. Every membership change (add, remove, deleting a library) records a
MoleculesChanged event in the outbox in the same transaction, because a molecule's `library_ids`
and any cached library filter (search) change with it.

Decisions:
- A library's molecule count, its molecule list and its distributions leave archived molecules out
  (archived means "deleted from lists"); removing an archived molecule from a library still works.
- Adding a molecule that is already a member, or removing one that is not, changes nothing and is
  no error: a retried request answers the same.
- A batch naming any molecule that is unknown, archived (for adds) or of another organization is
  refused whole with 404 naming up to 10 of them: half-applying a batch leaves the user to find
  out what happened.
- A grant is checked with the identity service (GetUser, with the caller's own credentials): the
  grantee must be an active user of the library's organization. Access checks would make a stray
  grant harmless anyway, but a typo'd id would otherwise be accepted and silently do nothing.
  Revoking needs no check, so a leaver's grants can always be cleaned up.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import grpc
import sqlalchemy as sa
from molbridge.events.v1.molecule_pb2 import MoleculesChanged
from molbridge.identity.v1 import identity_service_pb2 as identity_pb
from molbridge.identity.v1 import identity_service_pb2_grpc as identity_grpc
from sqlalchemy.dialects.postgresql import ARRAY, UUID, distinct_on, insert
from sqlalchemy.ext.asyncio import AsyncSession

from bus.outbox import add_event
from services.molecule.domain import distributions, library_rules, properties
from services.molecule.domain.library_rules import Action, Level, LibraryFacts
from services.molecule.index import queries
from services.molecule.index.queries import QueryIndex
from services.molecule.store.tables import (
    SCHEMA,
    flags,
    libraries,
    library_grants,
    library_molecules,
    molecule_properties,
    molecules,
)
from services.runtime import telemetry
from services.runtime.auth import Principal
from services.runtime.db import UnitOfWork, canonical_uuid, execute_unique
from services.runtime.errors import ConflictError, IntegrationError, NotFoundError, ValidationError
from services.runtime.idempotency import idempotent
from services.runtime.pagination import PageRequest

log = logging.getLogger("molbridge.molecule.libraries")

EVENT_SOURCE = "molecule"
ARCHIVED = "ARCHIVED"
# The effective value of a property is the one from the most trusted source (store.py).
SOURCE_PRIORITY = ("EXPERIMENTAL", "IMPORTED", "PREDICTED", "CALCULATED")
EVENT_CHUNK = library_rules.MAX_BATCH  # molecule ids per MoleculesChanged (bounds the message size)
GRANTEE_LOOKUP_TIMEOUT_S = 5.0

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

Credentials = Sequence[tuple[str, str]]


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
    grants: list[Grant]  # the owner first


@dataclass(frozen=True)
class LibraryFilter:
    name_contains: str = ""
    categories: tuple[str, ...] = ()
    visibility: str = ""
    owner_id: str = ""


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


class UserDirectory(Protocol):
    async def organization_of(self, user_id: str, credentials: Credentials) -> str | None:
        """The organization of an active user the caller can see; None when there is no such user."""
        ...


class IdentityUserDirectory:
    """UserDirectory over identity's GetUser, called with the caller's own credentials, so identity
    applies its own visibility rules (a user of another organization is "not found")."""

    def __init__(self, identity_addr: str) -> None:
        self._channel = telemetry.traced_channel(identity_addr)
        self._stub = identity_grpc.IdentityServiceStub(self._channel)

    async def organization_of(self, user_id: str, credentials: Credentials) -> str | None:
        try:
            reply = await self._stub.GetUser(
                identity_pb.GetUserRequest(id=user_id), metadata=tuple(credentials), timeout=GRANTEE_LOOKUP_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED):
                return None
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise IntegrationError("Identity service unreachable: cannot check the user; try again") from exc
            raise IntegrationError(f"Identity service could not check the user ({exc.code().name})") from exc
        return reply.data.organization_id if reply.data.active else None

    async def close(self) -> None:
        await self._channel.close()


# ---- queries other modules share ----------------------------------------------------------------


def visible_clause(principal: Principal) -> sa.ColumnElement[bool]:
    """Libraries the caller may read (VIEWER or more): own, granted, or organization-visible."""
    granted = sa.exists().where(
        library_grants.c.library_id == libraries.c.id, library_grants.c.user_id == principal.subject
    )
    return sa.and_(
        libraries.c.organization_id == principal.organization_id,
        sa.or_(libraries.c.owner_id == principal.subject, libraries.c.visibility == "ORGANIZATION", granted),
    )


def _listable_clause(principal: Principal) -> sa.ColumnElement[bool]:
    """What lists show: readable libraries, or every library of the organization for its admins."""
    if library_rules.is_organization_admin(principal):
        return libraries.c.organization_id == principal.organization_id
    return visible_clause(principal)


@dataclass(frozen=True)
class LibraryRecord:
    """A library row with the caller's level, as library_for returns it."""

    row: Any
    level: Level

    @property
    def id(self) -> str:
        return str(self.row.id)

    @property
    def organization_id(self) -> str:
        return str(self.row.organization_id)


async def library_for(
    session: AsyncSession, principal: Principal, library_id: str, action: Action, *, lock: bool = False
) -> LibraryRecord:
    """The library if the caller may do `action` with it (404 / 403 otherwise). `lock` takes the row
    lock that serializes membership changes and deletion (an import adding to a library uses it too)."""
    record = await _load(session, principal, library_id, lock=lock)
    library_rules.require(principal, _facts(record.row), record.level, action)
    return record


async def _load(session: AsyncSession, principal: Principal, library_id: str, *, lock: bool = False) -> LibraryRecord:
    """The library with the caller's level, whoever may see it; 404 for an id that names none."""
    canonical = canonical_uuid(library_id)
    row = None
    if canonical is not None:
        query = _with_grant(sa.select(libraries), principal).where(libraries.c.id == canonical)
        row = (await session.execute(query.with_for_update(of=libraries) if lock else query)).first()
    if row is None:
        raise NotFoundError("Library not found")
    return LibraryRecord(row, _level(principal, row))


async def add_members(
    session: AsyncSession, principal: Principal, library: LibraryRecord, molecule_ids: Sequence[str]
) -> list[str]:
    """Adds molecules already known to be the library organization's; returns those that were new to it
    and records MoleculesChanged for them. The caller holds library_for(…, lock=True)."""
    added = list(
        await session.scalars(
            insert(library_molecules)
            .from_select(
                ["library_id", "molecule_id", "added_by"],
                sa.select(
                    sa.literal(library.id, UUID(as_uuid=False)),
                    sa.func.unnest(sa.literal(list(molecule_ids), _ids_type)),
                    sa.literal(principal.subject),
                ),
            )
            .on_conflict_do_nothing()
            .returning(library_molecules.c.molecule_id)
        )
    )
    await _membership_changed(session, principal, library, [str(i) for i in added])
    return [str(i) for i in added]


# ---- the service ---------------------------------------------------------------------------------


class LibraryService:
    def __init__(self, uow: UnitOfWork, users: UserDirectory, index: QueryIndex | None = None) -> None:
        """`index`: the molecule query engine; a library's molecules are then listed (sorted by any
        property) through it, and it is refreshed after each membership change so this replica reads
        its own writes. Without it, a plain SQL listing with MOLECULE_SORT_KEYS serves."""
        self._uow = uow
        self._users = users
        self._index = index

    async def create(
        self, principal: Principal, *, name: str, description: str, category: str, visibility: str, request_id: str
    ) -> Library:
        library_rules.require_creator(principal)
        details = library_rules.check_new(name, description, category, visibility)
        async with self._uow() as session:

            async def create() -> str:
                library_id = str(uuid.uuid4())
                await execute_unique(
                    session,
                    libraries.insert().values(
                        id=library_id, organization_id=principal.organization_id, owner_id=principal.subject,
                        name=details.name, description=details.description, category=details.category,
                        visibility=details.visibility,
                    ),
                    _name_taken(str(details.name)),
                )
                return library_id

            library_id = await idempotent(session, f"{principal.subject}:CreateLibrary", request_id, create)
            return await self._view(session, principal, library_id)

    async def list_visible(
        self, principal: Principal, page: PageRequest, filters: LibraryFilter | None = None
    ) -> tuple[list[Library], int]:
        conditions = [_listable_clause(principal), *_filter_conditions(filters or LibraryFilter())]
        return await self._page(principal, page, conditions)

    async def list_mine(self, principal: Principal, page: PageRequest) -> tuple[list[Library], int]:
        conditions = [
            libraries.c.organization_id == principal.organization_id,
            libraries.c.owner_id == principal.subject,
        ]
        return await self._page(principal, page, conditions)

    async def get(self, principal: Principal, library_id: str) -> Library:
        async with self._uow() as session:
            record = await _seen(session, principal, library_id)
            return (await _libraries(session, principal, [record.row]))[0]

    async def update(
        self, principal: Principal, library_id: str, *, name: str, description: str, category: str, visibility: str
    ) -> Library:
        changes = library_rules.check_changes(name, description, category, visibility)
        async with self._uow() as session:
            record = await library_for(session, principal, library_id, Action.EDIT_DETAILS, lock=True)
            if changes.visibility is not None and changes.visibility != record.row.visibility:
                library_rules.require(principal, _facts(record.row), record.level, Action.CHANGE_VISIBILITY)
            values = {k: v for k, v in vars(changes).items() if v is not None}
            if values:
                await execute_unique(
                    session,
                    libraries.update()
                    .where(libraries.c.id == record.id)
                    .values(**values, updated_at=sa.func.now()),
                    _name_taken(changes.name or record.row.name),
                )
            return await self._view(session, principal, record.id)

    async def delete(self, principal: Principal, library_id: str) -> Library:
        """Deletes the library and its grants; its molecules stay."""
        async with self._uow() as session:
            record = await library_for(session, principal, library_id, Action.DELETE, lock=True)
            before = (await _libraries(session, principal, [record.row]))[0]
            members = await session.scalars(
                library_molecules.delete()
                .where(library_molecules.c.library_id == record.id)
                .returning(library_molecules.c.molecule_id)
            )
            former = [str(i) for i in members]
            await _membership_changed(session, principal, record, former, touch=False)
            await session.execute(libraries.delete().where(libraries.c.id == record.id))
        await self._refresh(before.organization_id, former)
        return before

    async def add_molecules(self, principal: Principal, library_id: str, molecule_ids: Sequence[str]) -> Library:
        async with self._uow() as session:
            record = await library_for(session, principal, library_id, Action.CHANGE_MOLECULES, lock=True)
            ids = await _known_molecules(session, record.organization_id, molecule_ids, include_archived=False)
            added = await add_members(session, principal, record, ids)
            library = await self._view(session, principal, record.id)
        await self._refresh(library.organization_id, added)
        return library

    async def remove_molecules(self, principal: Principal, library_id: str, molecule_ids: Sequence[str]) -> Library:
        """Takes molecules out of the library; the molecules themselves stay."""
        async with self._uow() as session:
            record = await library_for(session, principal, library_id, Action.CHANGE_MOLECULES, lock=True)
            ids = await _known_molecules(session, record.organization_id, molecule_ids, include_archived=True)
            removed = await session.scalars(
                library_molecules.delete()
                .where(
                    library_molecules.c.library_id == record.id,
                    library_molecules.c.molecule_id == sa.any_(sa.literal(ids, _ids_type)),
                )
                .returning(library_molecules.c.molecule_id)
            )
            taken_out = [str(i) for i in removed]
            await _membership_changed(session, principal, record, taken_out)
            library = await self._view(session, principal, record.id)
        await self._refresh(library.organization_id, taken_out)
        return library

    async def list_molecules(
        self, principal: Principal, library_id: str, page: PageRequest, *, sort_by: str, sort_desc: bool
    ) -> tuple[list[MoleculeView], int]:
        """One page of the library's (unarchived) molecules and their number."""
        if self._index is not None:
            async with self._uow() as session:
                record = await library_for(session, principal, library_id, Action.READ)
            query = queries.parse_query(library_id=record.id, sort_by=sort_by, sort_desc=sort_desc)
            ids, total = await self._index.page(record.organization_id, principal.subject, query, page)
            async with self._uow() as session:
                return await views_of(session, principal, ids), total
        column = MOLECULE_SORT_KEYS.get(sort_by or "added_at")
        if column is None:
            raise ValidationError(
                "Unknown sort key", field_violations=[("sort_by", f"one of {', '.join(MOLECULE_SORT_KEYS)}")]
            )
        async with self._uow() as session:
            record = await library_for(session, principal, library_id, Action.READ)
            members = (
                sa.select(molecules)
                .join(library_molecules, library_molecules.c.molecule_id == molecules.c.id)
                .where(
                    library_molecules.c.library_id == record.id,
                    molecules.c.organization_id == record.organization_id,  # adds check it; reads too
                    molecules.c.status != ARCHIVED,
                )
            )
            total = (await _member_counts(session, [record.id])).get(record.id, 0)
            order = column.desc() if sort_desc else column.asc()
            tie = molecules.c.id.desc() if sort_desc else molecules.c.id.asc()
            paged = members.order_by(order.nulls_last(), tie).limit(page.page_size).offset(page.offset)
            rows = list(await session.execute(paged))
            return await molecule_views(session, principal, rows), total

    async def access(self, principal: Principal, library_id: str) -> LibraryAccess:
        async with self._uow() as session:
            record = await _seen(session, principal, library_id)
            return await _access(session, record)

    async def set_access(
        self, principal: Principal, library_id: str, user_id: str, level: Level, credentials: Credentials = ()
    ) -> LibraryAccess:
        """Grants VIEWER or EDITOR to a user of the library's organization; NONE revokes."""
        async with self._uow() as session:
            record = await library_for(session, principal, library_id, Action.SHARE, lock=True)
            grantee = library_rules.check_grant(_facts(record.row), user_id, level)
            if level == Level.NONE:
                await session.execute(
                    library_grants.delete().where(
                        library_grants.c.library_id == record.id, library_grants.c.user_id == grantee
                    )
                )
            else:
                if await self._users.organization_of(grantee, credentials) != record.organization_id:
                    raise NotFoundError("User not found in your organization", detail="USER_NOT_FOUND")
                await session.execute(
                    insert(library_grants)
                    .values(library_id=record.id, user_id=grantee, level=level.name)
                    .on_conflict_do_update(
                        index_elements=[library_grants.c.library_id, library_grants.c.user_id],
                        set_={"level": level.name},
                    )
                )
            await session.execute(
                libraries.update().where(libraries.c.id == record.id).values(updated_at=sa.func.now())
            )
            return await _access(session, record)

    async def distribution(
        self, principal: Principal, library_id: str, property_name: str, bins: int
    ) -> distributions.Histogram:
        return (await self._histogram(principal, library_id, property_name, bins))[0]

    async def distribution_plot(
        self, principal: Principal, library_id: str, property_name: str, bins: int, *, width: int, height: int
    ) -> bytes:
        width, height = library_rules.check_plot_size(width, height)
        hist, library_name = await self._histogram(principal, library_id, property_name, bins)
        # Drawing is CPU work (a few hundred ms): off the event loop.
        return await asyncio.to_thread(distributions.render_png, hist, title=library_name, width=width, height=height)

    # ---- helpers ---------------------------------------------------------------------------------

    async def _refresh(self, organization_id: str, molecule_ids: list[str]) -> None:
        """Read-your-writes for this replica's query index; the committed MoleculesChanged event
        refreshes every replica anyway, so a failure here costs freshness, not correctness."""
        if self._index is None or not molecule_ids:
            return
        try:
            await self._index.refresh(organization_id, molecule_ids)
        except Exception:
            log.warning("query index refresh after a library change failed; the event will refresh it",
                        exc_info=True)

    async def _histogram(
        self, principal: Principal, library_id: str, property_name: str, bins: int
    ) -> tuple[distributions.Histogram, str]:
        """The histogram and the library's name."""
        bins = library_rules.check_bins(bins)
        definition = _numeric_property(property_name)
        async with self._uow() as session:
            record = await library_for(session, principal, library_id, Action.READ)
            values = await _effective_values(session, record.id, definition.name)
            members = (await _member_counts(session, [record.id])).get(record.id, 0)
        hist = distributions.histogram(
            values, bins=bins, missing=members - len(values), name=definition.name, units=definition.units
        )
        return hist, record.row.name

    async def _view(self, session: AsyncSession, principal: Principal, library_id: str) -> Library:
        return (await _libraries(session, principal, [await _seen_row(session, principal, library_id)]))[0]

    async def _page(
        self, principal: Principal, page: PageRequest, conditions: Sequence[sa.ColumnElement[bool]]
    ) -> tuple[list[Library], int]:
        async with self._uow() as session:
            total = await session.scalar(sa.select(sa.func.count()).select_from(libraries).where(*conditions)) or 0
            rows = list(
                await session.execute(
                    _with_grant(sa.select(libraries), principal)
                    .where(*conditions)
                    .order_by(sa.func.lower(libraries.c.name), libraries.c.id)
                    .limit(page.page_size)
                    .offset(page.offset)
                )
            )
            return await _libraries(session, principal, rows), total


def _any_id(ids: Sequence[str]) -> sa.ColumnElement[bool]:
    return molecules.c.id == sa.any_(sa.literal(list(ids), _ids_type))


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


async def _seen_row(session: AsyncSession, principal: Principal, library_id: str) -> Any:
    return (await _seen(session, principal, library_id)).row


async def _seen(session: AsyncSession, principal: Principal, library_id: str) -> LibraryRecord:
    """The library if the caller may see its details (readers, and the organization's admins)."""
    record = await _load(session, principal, library_id)
    if not library_rules.may_see(principal, _facts(record.row), record.level):
        raise NotFoundError("Library not found")
    return record


def _not_archived() -> sa.ColumnElement[bool]:
    """On library_molecules rows: the member is not archived (an anti-join on the small archived index)."""
    return ~sa.exists().where(molecules.c.id == library_molecules.c.molecule_id, molecules.c.status == ARCHIVED)


async def _member_counts(session: AsyncSession, library_ids: Sequence[str]) -> dict[str, int]:
    """Unarchived members per library, one grouped query for the lot."""
    query = (
        sa.select(library_molecules.c.library_id, sa.func.count())
        .where(library_molecules.c.library_id == sa.any_(sa.literal(list(library_ids), _ids_type)), _not_archived())
        .group_by(library_molecules.c.library_id)
    )
    return {str(library_id): count for library_id, count in await session.execute(query)}


async def _libraries(session: AsyncSession, principal: Principal, rows: Sequence[Any]) -> list[Library]:
    """Library views with their molecule counts."""
    counts = await _member_counts(session, [str(r.id) for r in rows])
    return [
        Library(
            id=str(r.id), name=r.name, description=r.description, category=r.category, visibility=r.visibility,
            owner_id=r.owner_id, organization_id=str(r.organization_id), molecule_count=counts.get(str(r.id), 0),
            access_level=_level(principal, r), created_at=r.created_at, updated_at=r.updated_at,
        )
        for r in rows
    ]


def _filter_conditions(filters: LibraryFilter) -> list[sa.ColumnElement[bool]]:
    conditions: list[sa.ColumnElement[bool]] = []
    violations: list[tuple[str, str]] = []
    if filters.name_contains:
        if len(filters.name_contains) > library_rules.MAX_NAME_LENGTH:
            violations.append(("name_contains", f"at most {library_rules.MAX_NAME_LENGTH} characters"))
        pattern = filters.name_contains.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        conditions.append(libraries.c.name.ilike(f"%{pattern}%", escape="\\"))
    if filters.categories:
        unknown = sorted(set(filters.categories) - set(library_rules.CATEGORIES))
        if unknown:
            violations.append(("categories", f"one of {', '.join(library_rules.CATEGORIES)}"))
        conditions.append(libraries.c.category.in_(filters.categories))
    if filters.visibility:
        if filters.visibility not in library_rules.VISIBILITIES:
            violations.append(("visibility", f"one of {', '.join(library_rules.VISIBILITIES)}"))
        conditions.append(libraries.c.visibility == filters.visibility)
    if filters.owner_id:
        conditions.append(libraries.c.owner_id == (canonical_uuid(filters.owner_id) or filters.owner_id))
    if violations:
        raise ValidationError("Invalid library filter", field_violations=violations)
    return conditions


def _name_taken(name: str) -> ConflictError:
    return ConflictError(
        f"The owner already has a library named '{name}' (names are unique per owner, ignoring case)",
        detail="LIBRARY_NAME_TAKEN",
    )


async def _known_molecules(
    session: AsyncSession, organization_id: str, molecule_ids: Sequence[str], *, include_archived: bool
) -> list[str]:
    """The ids, checked to be molecules of the organization; otherwise 404 naming the bad ones."""
    ids, malformed = library_rules.check_batch(molecule_ids)
    query = sa.select(molecules.c.id).where(
        molecules.c.id == sa.any_(sa.literal(ids, _ids_type)), molecules.c.organization_id == organization_id
    )
    if not include_archived:
        query = query.where(molecules.c.status != ARCHIVED)
    found = {str(i) for i in await session.scalars(query)} if ids else set()
    bad = malformed + [i for i in ids if i not in found]
    if bad:
        raise library_rules.molecules_not_found(bad)
    return ids


async def _membership_changed(
    session: AsyncSession, principal: Principal, library: LibraryRecord, molecule_ids: list[str], *, touch: bool = True
) -> None:
    if not molecule_ids:
        return
    if touch:
        await session.execute(libraries.update().where(libraries.c.id == library.id).values(updated_at=sa.func.now()))
    for start in range(0, len(molecule_ids), EVENT_CHUNK):
        await add_event(
            session,
            source=EVENT_SOURCE,
            payload=MoleculesChanged(
                organization_id=library.organization_id, molecule_ids=molecule_ids[start : start + EVENT_CHUNK]
            ),
            organization_id=library.organization_id,
            actor_id=principal.subject,
            schema=SCHEMA,
        )


async def _access(session: AsyncSession, record: LibraryRecord) -> LibraryAccess:
    grants = [Grant(record.row.owner_id, Level.OWNER)]
    rows = await session.execute(
        sa.select(library_grants.c.user_id, library_grants.c.level)
        .where(library_grants.c.library_id == record.id)
        .order_by(library_grants.c.user_id)
    )
    grants.extend(Grant(user_id, Level[level]) for user_id, level in rows)
    return LibraryAccess(library_id=record.id, level=record.level, visibility=record.row.visibility, grants=grants)


def _numeric_property(name: str) -> properties.PropertyDefinition:
    definition = properties.definition(name)
    if definition is None:
        raise ValidationError(
            f"Unknown property: {name[:64]!r}",
            field_violations=[("property", "a known property (GET /api/v1/molecules/properties) or custom_<name>")],
        )
    if definition.value_type not in (None, properties.ValueType.NUMERIC, properties.ValueType.INTEGER):
        raise ValidationError(
            f"{name} is not numeric", field_violations=[("property", "a distribution needs a numeric property")]
        )
    return definition


async def _effective_values(session: AsyncSession, library_id: str, name: str) -> list[float]:
    """The numeric effective values of the library's unarchived members (the most trusted source's value;
    members whose effective value is text or absent are left out).

    A join rather than a per-member lookup, so PostgreSQL picks index probes for a small library and a
    hash join for a large one; the values come back as one array (500,000 rows cost more to transfer
    than to compute)."""
    rank = sa.case({source: i for i, source in enumerate(SOURCE_PRIORITY)}, value=molecule_properties.c.source)
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
    return list(await session.scalar(collected) or [])


async def views_of(session: AsyncSession, principal: Principal, ids: Sequence[str]) -> list[MoleculeView]:
    """The caller's organization's molecules with these ids, in this order (a query index page)."""
    found = await session.execute(
        sa.select(molecules).where(_any_id(ids), molecules.c.organization_id == principal.organization_id)
    )
    by_id = {str(r.id): r for r in found}
    return await molecule_views(session, principal, [by_id[i] for i in ids if i in by_id])


async def molecule_views(session: AsyncSession, principal: Principal, rows: Sequence[Any]) -> list[MoleculeView]:
    """Views of molecule rows: every property value, the caller's flags, the libraries the caller can read."""
    ids = [str(r.id) for r in rows]
    if not ids:
        return []
    any_id = sa.literal(ids, _ids_type)
    props: dict[str, list[PropertyValue]] = {i: [] for i in ids}
    for p in await session.execute(
        sa.select(molecule_properties)
        .where(molecule_properties.c.molecule_id == sa.any_(any_id))
        .order_by(molecule_properties.c.name, molecule_properties.c.source)
    ):
        value = p.value_num if p.value_num is not None else p.value_text
        props[str(p.molecule_id)].append(PropertyValue(p.name, value, p.units, p.source))
    user_flags: dict[str, list[FlagView]] = {i: [] for i in ids}
    for f in await session.execute(
        sa.select(flags).where(flags.c.molecule_id == sa.any_(any_id), flags.c.user_id == principal.subject)
    ):
        user_flags[str(f.molecule_id)].append(FlagView(f.type, f.level, f.notes, f.user_id, f.created_at))
    memberships: dict[str, list[str]] = {i: [] for i in ids}
    for molecule_id, library_id in await session.execute(
        sa.select(library_molecules.c.molecule_id, library_molecules.c.library_id)
        .join(libraries, libraries.c.id == library_molecules.c.library_id)
        .where(library_molecules.c.molecule_id == sa.any_(any_id), visible_clause(principal))
        .order_by(library_molecules.c.library_id)
    ):
        memberships[str(molecule_id)].append(str(library_id))
    return [
        MoleculeView(
            id=str(r.id), name=r.name, smiles=r.smiles, canonical_smiles=r.canonical_smiles, inchi_key=r.inchi_key,
            formula=r.formula, molecular_weight=r.molecular_weight, status=r.status,
            organization_id=str(r.organization_id), created_by=r.created_by, created_at=r.created_at,
            updated_at=r.updated_at, properties=props[str(r.id)], flags=user_flags[str(r.id)],
            library_ids=memberships[str(r.id)],
        )
        for r in rows
    ]


_molecule_views = molecule_views  # the name molecules.py imports today; use molecule_views
