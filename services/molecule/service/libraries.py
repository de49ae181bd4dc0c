"""Libraries: named sets of an organization's molecules, private or organization-wide, shared by grants.

The use cases of LibraryService. Who may do what is decided in domain/library_rules (pure); the
SQL is in store/libraries. Every membership change (add, remove, deleting a library) records a
MoleculesChanged event in the same transaction, because a molecule's `library_ids` and any cached
library filter (search) change with it.

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
from collections.abc import Sequence

from services.molecule.adapters.identity_users import Credentials, UserDirectory
from services.molecule.domain import distributions, library_rules
from services.molecule.domain.audit import ids_digest
from services.molecule.domain.events import molecules_changed
from services.molecule.domain.library_rules import Action, Level, LibraryFilter
from services.molecule.index.columnar import QueryIndex
from services.molecule.index.query import parse_query
from services.molecule.store.libraries import Library, LibraryAccess, LibraryRecord
from services.molecule.store.molecule_views import MoleculeView
from services.molecule.store.uow import MoleculeTransactions, MoleculeUnitOfWork
from services.runtime.audit import audit_event, changed_values
from services.runtime.auth import Principal
from services.runtime.errors import NotFoundError
from services.runtime.pagination import PageRequest

log = logging.getLogger("molbridge.molecule.libraries")
# What SetLibraryAccess answers with: the grants a page at the default size shows.
FIRST_GRANTS_PAGE = PageRequest.of(1, 0)


class LibraryService:
    def __init__(self, uow: MoleculeTransactions, users: UserDirectory, index: QueryIndex | None = None) -> None:
        """`index`: the molecule query engine; a library's molecules are then listed (sorted by any
        property) through it, and it is refreshed after each membership change so this replica reads
        its own writes. Without it, a plain SQL listing (store.libraries.MOLECULE_SORT_KEYS) serves."""
        self._uow = uow
        self._users = users
        self._index = index

    async def create(
        self, principal: Principal, *, name: str, description: str, category: str, visibility: str, request_id: str
    ) -> Library:
        library_rules.require_creator(principal)
        details = library_rules.check_new(name, description, category, visibility)
        async with self._uow() as uow:

            async def add() -> str:
                library_id = await uow.libraries.add(principal, details)
                _audit(uow, principal, "library.created", library_id, _shown(details))
                return library_id

            library_id = await uow.once(f"{principal.subject}:CreateLibrary", request_id, add)
            return await uow.libraries.view(principal, library_id)

    async def list_visible(
        self, principal: Principal, page: PageRequest, filters: LibraryFilter | None = None
    ) -> tuple[list[Library], int]:
        filters = filters or LibraryFilter()
        library_rules.check_filter(filters)
        async with self._uow() as uow:
            return await uow.libraries.list_visible(principal, page, filters)

    async def list_mine(self, principal: Principal, page: PageRequest) -> tuple[list[Library], int]:
        async with self._uow() as uow:
            return await uow.libraries.list_owned(principal, page)

    async def get(self, principal: Principal, library_id: str) -> Library:
        async with self._uow() as uow:
            return await uow.libraries.view(principal, library_id)

    async def update(
        self, principal: Principal, library_id: str, *, name: str, description: str, category: str, visibility: str
    ) -> Library:
        changes = library_rules.check_changes(name, description, category, visibility)
        async with self._uow() as uow:
            record = await uow.libraries.get(principal, library_id, Action.EDIT_DETAILS, lock=True)
            if changes.visibility is not None and changes.visibility != record.visibility:
                library_rules.require(principal, record.facts, record.level, Action.CHANGE_VISIBILITY)
            values = {k: v for k, v in vars(changes).items() if v is not None}
            if values:
                await uow.libraries.update(record, values)
                details = changed_values({k: str(getattr(record.row, k) or "") for k in values}, values)
                if details:
                    _audit(uow, principal, "library.updated", record.id, details)
            return await uow.libraries.view(principal, record.id)

    async def delete(self, principal: Principal, library_id: str) -> Library:
        """Deletes the library and its grants; its molecules stay."""
        async with self._uow() as uow:
            record = await uow.libraries.get(principal, library_id, Action.DELETE, lock=True)
            before = (await uow.libraries.views(principal, [record.row]))[0]
            former = await uow.libraries.delete(record)
            _record_membership_change(uow, principal, record, former)
            details = {"name": record.name, "visibility": record.visibility, "molecules": str(len(former))}
            _audit(uow, principal, "library.deleted", record.id, details)
        await self._refresh(before.organization_id, former)
        return before

    async def add_molecules(self, principal: Principal, library_id: str, molecule_ids: Sequence[str]) -> Library:
        async with self._uow() as uow:
            record = await uow.libraries.get(principal, library_id, Action.CHANGE_MOLECULES, lock=True)
            ids = await _known_molecules(uow, record, molecule_ids, include_archived=False)
            added = await uow.libraries.add_members(principal, record, ids)
            await _membership_changed(uow, principal, record, added, "library.molecules_added")
            library = await uow.libraries.view(principal, record.id)
        await self._refresh(library.organization_id, added)
        return library

    async def remove_molecules(self, principal: Principal, library_id: str, molecule_ids: Sequence[str]) -> Library:
        """Takes molecules out of the library; the molecules themselves stay."""
        async with self._uow() as uow:
            record = await uow.libraries.get(principal, library_id, Action.CHANGE_MOLECULES, lock=True)
            ids = await _known_molecules(uow, record, molecule_ids, include_archived=True)
            taken_out = await uow.libraries.remove_members(record, ids)
            await _membership_changed(uow, principal, record, taken_out, "library.molecules_removed")
            library = await uow.libraries.view(principal, record.id)
        await self._refresh(library.organization_id, taken_out)
        return library

    async def list_molecules(
        self, principal: Principal, library_id: str, page: PageRequest, *, sort_by: str, sort_desc: bool
    ) -> tuple[list[MoleculeView], int]:
        """One page of the library's (unarchived) molecules and their number."""
        if self._index is not None:
            async with self._uow() as uow:
                record = await uow.libraries.get(principal, library_id, Action.READ)
            query = parse_query(library_id=record.id, sort_by=sort_by, sort_desc=sort_desc)
            ids, total = await self._index.page(record.organization_id, principal.subject, query, page)
            async with self._uow() as uow:
                return await uow.molecule_views.of_ids(principal, ids), total
        async with self._uow() as uow:
            record = await uow.libraries.get(principal, library_id, Action.READ)
            rows, total = await uow.libraries.member_rows(record, page, sort_by=sort_by, sort_desc=sort_desc)
            return await uow.molecule_views.of_rows(principal, rows), total

    async def access(self, principal: Principal, library_id: str, page: PageRequest) -> tuple[LibraryAccess, int]:
        """The caller's level and one page of the grants (the owner first), with the number of grants."""
        async with self._uow() as uow:
            return await uow.libraries.access(await uow.libraries.seen(principal, library_id), page)

    async def set_access(
        self, principal: Principal, library_id: str, user_id: str, level: Level, credentials: Credentials = ()
    ) -> tuple[LibraryAccess, int]:
        """Grants VIEWER or EDITOR to a user of the library's organization; NONE revokes. Answers with
        FIRST_GRANTS_PAGE of the access after the change, and the number of grants."""
        async with self._uow() as uow:
            record = await uow.libraries.get(principal, library_id, Action.SHARE, lock=True)
            grantee = library_rules.check_grant(record.facts, user_id, level)
            before = await uow.libraries.grant_level(record, grantee)
            if level == Level.NONE:
                await uow.libraries.revoke(record, grantee)
            else:
                if await self._users.organization_of(grantee, credentials) != record.organization_id:
                    raise NotFoundError("User not found in your organization", detail="USER_NOT_FOUND")
                await uow.libraries.grant(record, grantee, level)
            await uow.libraries.touch(record.id)
            if before != level:
                action = "library.unshared" if level == Level.NONE else "library.shared"
                details = {"user_id": grantee} | changed_values({"level": before.name}, {"level": level.name})
                _audit(uow, principal, action, record.id, details)
            return await uow.libraries.access(record, FIRST_GRANTS_PAGE)

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
        definition = library_rules.numeric_property(property_name)
        async with self._uow() as uow:
            record = await uow.libraries.get(principal, library_id, Action.READ)
            values = await uow.libraries.effective_values(record.id, definition.name)
            members = await uow.libraries.member_count(record.id)
        hist = distributions.histogram(
            values, bins=bins, missing=members - len(values), name=definition.name, units=definition.units
        )
        return hist, record.name


async def _known_molecules(
    uow: MoleculeUnitOfWork, record: LibraryRecord, molecule_ids: Sequence[str], *, include_archived: bool
) -> list[str]:
    """The ids, checked to be molecules of the library's organization; otherwise 404 naming the bad ones."""
    ids, malformed = library_rules.check_batch(molecule_ids)
    found = await uow.libraries.existing_molecules(record.organization_id, ids, include_archived=include_archived)
    bad = malformed + [i for i in ids if i not in found]
    if bad:
        raise library_rules.molecules_not_found(bad)
    return ids


async def _membership_changed(
    uow: MoleculeUnitOfWork, principal: Principal, record: LibraryRecord, molecule_ids: list[str], action: str
) -> None:
    if molecule_ids:
        await uow.libraries.touch(record.id)
        _record_membership_change(uow, principal, record, molecule_ids)
        _audit(uow, principal, action, record.id, ids_digest(molecule_ids))


def _audit(
    uow: MoleculeUnitOfWork, principal: Principal, action: str, library_id: str, details: dict[str, str]
) -> None:
    uow.record(audit_event(action, target_type="library", target_id=library_id, details=details), actor=principal)


def _shown(details: library_rules.Details) -> dict[str, str]:
    return {k: v for k, v in vars(details).items() if v is not None}


def _record_membership_change(
    uow: MoleculeUnitOfWork, principal: Principal, record: LibraryRecord, molecule_ids: list[str]
) -> None:
    for event in molecules_changed(record.organization_id, molecule_ids):
        uow.record(event, organization_id=record.organization_id, actor=principal)
