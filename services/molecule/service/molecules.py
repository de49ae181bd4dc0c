"""Molecules of the caller's organization: read, list and filter, register, update, archive, flag, draw.

The use cases of MoleculeService (services/molecule/server/molecules.py maps protos to it).
Every read and write is scoped to the caller's organization: another organization's molecule is
"not found", whatever the caller's role. Lists come from the query engine (index/columnar.py); a page's rows
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
  domain/molecules.py with properties.check_value; a bad one is a 400 naming the property. Units may be omitted;
  for a known property they must be the catalogue's.
- A name cannot be cleared through UpdateMolecule (an empty proto string means "unchanged").
- Batch create: structure or value problems reject that molecule only (its outcome says why);
  a library the caller may not change rejects the whole request. With a request_id, the outcomes
  themselves are what a retry gets back.
- Registration numbers (<PREFIX>-000123) are issued at registration (store/registration_numbers.py);
  the prefix (service/numbering.py) defaults from the organization's name, asked of identity with the
  caller's credentials before the organization's first registration through the API.
- Pictures: the canonical SMILES of the parent, SVG by default, 50–2000 px each side (300 default).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Sequence
from typing import Any

from services.molecule.adapters.identity_users import Credentials
from services.molecule.domain import chemistry, properties
from services.molecule.domain.audit import ids_digest, values_text
from services.molecule.domain.events import molecule_changed, molecules_changed
from services.molecule.domain.imports import StructureRow
from services.molecule.domain.library_rules import Action
from services.molecule.domain.molecules import (
    IMAGE_TYPES,
    MAX_BATCH,
    Image,
    NewMolecule,
    Outcome,
    PropertyInput,
    Rejected,
    check_batch_size,
    check_flag,
    check_flag_type,
    check_image_request,
    check_transition,
    check_update,
    checked_input,
    checked_values,
    invalid,
)
from services.molecule.domain.vocabulary import ARCHIVED, IMPORTED, WRITER_ROLES
from services.molecule.index.columnar import QueryIndex
from services.molecule.index.query import MoleculeQuery
from services.molecule.service.numbering import Numbering
from services.molecule.store.molecule_views import MoleculeView
from services.molecule.store.registration import RegistrationResult
from services.molecule.store.uow import MoleculeTransactions, MoleculeUnitOfWork
from services.runtime.audit import audit_event, changed_values
from services.runtime.auth import Principal
from services.runtime.db import canonical_uuid
from services.runtime.errors import InternalError
from services.runtime.pagination import PageRequest

__all__ = ["Image", "MoleculeService", "NewMolecule", "Outcome", "PropertyInput"]

log = logging.getLogger("molbridge.molecule.molecules")


class MoleculeService:
    def __init__(self, uow: MoleculeTransactions, index: QueryIndex, numbering: Numbering | None = None) -> None:
        self._uow = uow
        self._index = index
        self._numbering = numbering or Numbering(uow, None)  # no organization names: DEFAULT_PREFIX

    # -- reads -------------------------------------------------------------------------------------------

    async def get(self, principal: Principal, molecule_id: str) -> MoleculeView:
        async with self._uow() as uow:
            row = await uow.molecules.get(principal, molecule_id)
            return (await uow.molecule_views.of_rows(principal, [row]))[0]

    async def get_by_number(self, principal: Principal, number: str) -> MoleculeView:
        """By registration number (any case) or alias; 404 when neither names a molecule."""
        async with self._uow() as uow:
            row = await uow.molecules.get_by_number(principal, number)
            return (await uow.molecule_views.of_rows(principal, [row]))[0]

    async def batch_get(self, principal: Principal, ids: Sequence[str]) -> tuple[list[MoleculeView], list[str]]:
        """Up to MAX_BATCH molecules of the caller's organization in request order (duplicates once), and
        the requested ids not found (malformed, unknown or another organization's)."""
        if len(ids) > MAX_BATCH:
            raise invalid("ids", f"at most {MAX_BATCH} ids per request")
        canonical = {given: canonical_uuid(given) for given in ids}
        wanted = list(dict.fromkeys(c for c in canonical.values() if c is not None))
        async with self._uow() as uow:
            views = await uow.molecule_views.of_ids(principal, wanted) if wanted else []
        found = {view.id for view in views}
        return views, [given for given, c in canonical.items() if c not in found]

    async def list_molecules(
        self, principal: Principal, query: MoleculeQuery, page: PageRequest
    ) -> tuple[list[MoleculeView], int]:
        if query.library_id:
            async with self._uow() as uow:
                await uow.libraries.get(principal, query.library_id, Action.READ)
        # No connection is held meanwhile: the first query of an organization waits for its load.
        ids, total = await self._index.page(principal.organization_id, principal.subject, query, page)
        if not ids:
            return [], total
        async with self._uow() as uow:
            rows = await uow.molecules.rows_in_order(principal, ids)
            return await uow.molecule_views.of_rows(principal, rows), total

    def property_definitions(self) -> list[properties.PropertyDefinition]:
        return list(properties.KNOWN_PROPERTIES.values())

    async def image(self, principal: Principal, molecule_id: str, fmt: str, width: int, height: int) -> Image:
        kind, width, height = check_image_request(fmt, width, height)
        async with self._uow() as uow:
            row = await uow.molecules.get(principal, molecule_id)
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
        self,
        principal: Principal,
        new: NewMolecule,
        *,
        library_id: str = "",
        request_id: str = "",
        credentials: Credentials = (),
    ) -> MoleculeView:
        _require_writer(principal)
        try:
            name, values = checked_input(new)
        except Rejected as problem:
            raise invalid(f"molecule.{problem.field}", problem.reason) from None
        try:
            registered = await asyncio.to_thread(chemistry.register, new.smiles)
        except chemistry.InvalidStructure as error:
            raise invalid("molecule.smiles", error.reason) from None
        row = StructureRow(None, registered, name, values, IMPORTED)
        await self._prepare_numbering(principal, credentials)
        async with self._uow() as uow:
            library = await _writable_library(uow, principal, library_id)

            async def register() -> str:
                result = await _register(uow, principal, [row], library)
                done = result.outcomes[0]
                details = {"outcome": "registered" if done.registered else "merged", "name": name,
                           "smiles": registered.canonical_smiles, "library_id": library or ""}
                uow.record(
                    audit_event("molecule.created", target_type="molecule", target_id=done.molecule_id,
                                details=details),
                    actor=principal,
                )
                return done.molecule_id

            molecule_id = await uow.once(_scope(principal, "create"), request_id, register)
        return await self._after_write(principal, molecule_id)

    async def batch_create(
        self,
        principal: Principal,
        news: Sequence[NewMolecule],
        *,
        library_id: str = "",
        request_id: str = "",
        credentials: Credentials = (),
    ) -> list[Outcome]:
        _require_writer(principal)
        check_batch_size(len(news))
        structures = await asyncio.to_thread(chemistry.register_many, [n.smiles for n in news])
        outcomes: dict[int, Outcome] = {}
        rows: list[tuple[int, StructureRow]] = []
        for i, (new, structure) in enumerate(zip(news, structures, strict=True)):
            try:
                name, values = checked_input(new)
                if isinstance(structure, chemistry.InvalidStructure):
                    raise Rejected("smiles", structure.reason)
            except Rejected as problem:
                outcomes[i] = Outcome(i, "rejected", reason=f"{problem.field}: {problem.reason}")
                continue
            rows.append((i, StructureRow(None, structure, name, values, IMPORTED)))
        if rows:
            await self._prepare_numbering(principal, credentials)
        async with self._uow() as uow:
            library = await _writable_library(uow, principal, library_id)

            async def register() -> str:
                if rows:
                    result = await _register(uow, principal, [row for _, row in rows], library)
                    for (i, _), done in zip(rows, result.outcomes, strict=True):
                        outcomes[i] = Outcome(
                            i, "registered" if done.registered else "merged", done.molecule_id
                        )
                    details = ids_digest(result.molecule_ids) | {
                        "registered": str(result.registered),
                        "merged": str(result.merged),
                        "rejected": str(len(news) - len(rows)),
                        "library_id": library or "",
                    }
                    uow.record(
                        audit_event("molecule.batch_created", target_type="molecule_batch",
                                    target_id=str(uuid.uuid4()), details=details),
                        actor=principal,
                    )
                ordered = [outcomes[i] for i in range(len(news))]
                return json.dumps([[o.outcome, o.molecule_id, o.reason] for o in ordered])

            stored = await uow.once(_scope(principal, "batch"), request_id, register)
        result = [
            Outcome(i, outcome, molecule_id, reason)
            for i, (outcome, molecule_id, reason) in enumerate(json.loads(stored))
        ]
        await self._refresh(principal, [o.molecule_id for o in result if o.molecule_id])
        return result

    async def _prepare_numbering(self, principal: Principal, credentials: Credentials) -> None:
        """The organization's default prefix from its name, before its first registration through the API."""
        await self._numbering.prepare(principal, credentials)

    async def registration_prefix(self, principal: Principal, credentials: Credentials) -> tuple[str, bool]:
        return await self._numbering.prefix(principal, credentials)

    async def set_registration_prefix(self, principal: Principal, prefix: str) -> tuple[str, bool]:
        return await self._numbering.set_prefix(principal, prefix)

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
        new_name = check_update(name, status)
        changes = checked_values(values)
        async with self._uow() as uow:
            row = await uow.molecules.get(principal, molecule_id, lock=True)
            updates: dict[str, Any] = {}
            if new_name and new_name != row.name:
                updates["name"] = new_name
            if status and status != row.status:
                check_transition(row.status, status)
                updates["status"] = status
            before_values = await uow.molecules.imported_values(str(row.id), list(changes))
            await uow.molecules.write_imported_values(str(row.id), principal, changes)
            if updates or changes:
                await uow.molecules.update(str(row.id), updates)
                archived = updates.get("status") == ARCHIVED
                _record_change(uow, principal, str(row.id), archived=archived)
                details = changed_values(
                    {"name": row.name or "", "status": row.status} | values_text(before_values),
                    {k: str(v) for k, v in updates.items()} | values_text(changes),
                )
                if details:
                    action = "molecule.deleted" if archived else "molecule.updated"
                    uow.record(
                        audit_event(action, target_type="molecule", target_id=str(row.id), details=details),
                        actor=principal,
                    )
        return await self._after_write(principal, str(row.id))

    async def delete(self, principal: Principal, molecule_id: str) -> MoleculeView:
        """Archive (the record stays; lists leave it out)."""
        return await self.update(principal, molecule_id, status=ARCHIVED)

    async def set_flag(
        self, principal: Principal, molecule_id: str, flag_type: str, level: str = "", notes: str = ""
    ) -> MoleculeView:
        _require_writer(principal)
        check_flag(flag_type, level, notes)
        async with self._uow() as uow:
            row = await uow.molecules.get(principal, molecule_id)
            await uow.molecules.set_flag(str(row.id), principal, flag_type, level, notes)
            _record_change(uow, principal, str(row.id))
            details = {"flag_type": flag_type, "level": level, "notes": notes}
            uow.record(
                audit_event("molecule.flag_set", target_type="molecule", target_id=str(row.id), details=details),
                actor=principal,
            )
        return await self._after_write(principal, str(row.id))

    async def delete_flag(self, principal: Principal, molecule_id: str, flag_type: str) -> MoleculeView:
        """Removing a flag that is not set changes nothing and is no error (a retry answers the same)."""
        _require_writer(principal)
        check_flag_type(flag_type)
        async with self._uow() as uow:
            row = await uow.molecules.get(principal, molecule_id)
            if await uow.molecules.delete_flag(str(row.id), principal, flag_type):
                _record_change(uow, principal, str(row.id))
                uow.record(
                    audit_event("molecule.flag_removed", target_type="molecule", target_id=str(row.id),
                                details={"flag_type": flag_type}),
                    actor=principal,
                )
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


def _require_writer(principal: Principal) -> None:
    principal.require_any_role(*WRITER_ROLES)


def _scope(principal: Principal, action: str) -> str:
    return f"molecules.{action}:{principal.organization_id}:{principal.subject}"


async def _writable_library(uow: MoleculeUnitOfWork, principal: Principal, library_id: str) -> str | None:
    if not library_id:
        return None
    return (await uow.libraries.get(principal, library_id, Action.CHANGE_MOLECULES, lock=True)).id


async def _register(
    uow: MoleculeUnitOfWork, principal: Principal, rows: list[StructureRow], library_id: str | None
) -> RegistrationResult:
    result = await uow.molecules.register(
        rows, organization_id=principal.organization_id, actor_id=principal.subject, library_id=library_id
    )
    for event in molecules_changed(principal.organization_id, result.molecule_ids):
        uow.record(event, actor=principal)
    return result


def _record_change(uow: MoleculeUnitOfWork, principal: Principal, molecule_id: str, *, archived: bool = False) -> None:
    uow.record(molecule_changed(principal.organization_id, molecule_id, archived=archived), actor=principal)
