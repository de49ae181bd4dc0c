"""The library service's audit trail (real PostgreSQL, grants checked with a real identity service): created,
updated (before → after, visibility included), molecules added / removed (a digest), shared / unshared
(level before → after), deleted — exactly one AuditRecorded per change, none for a change that changes
nothing or is refused. And an organization's default registration prefix, taken from its name (identity)."""

from __future__ import annotations

import uuid

import pytest

from services.molecule.adapters.identity_organizations import IdentityOrganizationNames
from services.molecule.domain.library_rules import Level
from services.molecule.service.numbering import Numbering
from services.molecule.store.tables import SCHEMA
from services.molecule.store.uow import molecule_transactions
from services.runtime.errors import NotFoundError, ValidationError
from tests.integration.audit_outbox import Audited, audited
from tests.integration.test_molecule_libraries import Actor, World
from tests.integration.test_molecule_libraries import world as world  # the module's world, reused


async def trail(world: World, library_id: str) -> list[Audited]:
    return await audited(world.engine, SCHEMA, "molecule", library_id)


def by(who: Actor, entries: list[Audited]) -> bool:
    return all((e.actor_id, e.organization_id) == (who.id, who.principal.organization_id) for e in entries)


async def test_a_library_s_life_is_audited(world: World) -> None:
    admin = await world.organization()
    owner = await world.user(admin.principal.organization_id)
    colleague = await world.user(admin.principal.organization_id)
    library = await world.libraries.create(
        owner.principal, name="Kinase hits", description="round 1", category="", visibility="", request_id="r1"
    )
    await world.libraries.create(  # a retried request: the same library, recorded once
        owner.principal, name="Kinase hits", description="round 1", category="", visibility="", request_id="r1"
    )
    await world.libraries.update(
        owner.principal, library.id, name="Kinase leads", description="round 1", category="", visibility="ORGANIZATION"
    )
    ids = await world.molecules(owner, 3)
    await world.libraries.add_molecules(owner.principal, library.id, ids)
    await world.libraries.add_molecules(owner.principal, library.id, ids[:1])  # members already: no change
    await world.libraries.remove_molecules(owner.principal, library.id, ids[2:])
    for level in (Level.VIEWER, Level.VIEWER, Level.EDITOR, Level.NONE, Level.NONE):  # repeats change nothing
        await world.libraries.set_access(owner.principal, library.id, colleague.id, level, owner.credentials)
    await world.libraries.delete(owner.principal, library.id)

    entries = await trail(world, library.id)
    assert [e.action for e in entries] == [
        "library.created", "library.updated", "library.molecules_added", "library.molecules_removed",
        "library.shared", "library.shared", "library.unshared", "library.deleted",
    ]  # fmt: skip
    assert by(owner, entries) and {e.event.target_type for e in entries} == {"library"}
    created, updated, added, removed, viewer, editor, unshared, deleted = (e.details for e in entries)
    assert created == {"name": "Kinase hits", "description": "round 1", "category": "GENERAL", "visibility": "PRIVATE"}
    assert updated == {
        "name.before": "Kinase hits", "name.after": "Kinase leads",
        "visibility.before": "PRIVATE", "visibility.after": "ORGANIZATION",
    }  # fmt: skip
    assert (added["count"], sorted(added["ids"].split(","))) == ("3", sorted(ids)) and len(added["ids_sha256"]) == 64
    assert (removed["count"], removed["ids"]) == ("1", ids[2])
    assert viewer == {"user_id": colleague.id, "level.before": "NONE", "level.after": "VIEWER"}
    assert editor == {"user_id": colleague.id, "level.before": "VIEWER", "level.after": "EDITOR"}
    assert unshared == {"user_id": colleague.id, "level.before": "EDITOR", "level.after": "NONE"}
    assert deleted == {"name": "Kinase leads", "visibility": "ORGANIZATION", "molecules": "2"}


async def test_refused_library_changes_record_nothing(world: World) -> None:
    admin = await world.organization()
    owner = await world.user(admin.principal.organization_id)
    library = await world.libraries.create(
        owner.principal, name="Screening set", description="", category="", visibility="", request_id=""
    )
    with pytest.raises(ValidationError):
        await world.libraries.update(
            owner.principal, library.id, name="", description="", category="NO_SUCH", visibility=""
        )
    with pytest.raises(ValidationError):  # the owner always has OWNER access
        await world.libraries.set_access(owner.principal, library.id, owner.id, Level.VIEWER, owner.credentials)
    ids = await world.molecules(owner, 1)
    with pytest.raises(NotFoundError):  # a batch naming an unknown molecule is refused whole
        await world.libraries.add_molecules(owner.principal, library.id, [*ids, str(uuid.uuid4())])
    assert [e.action for e in await trail(world, library.id)] == ["library.created"]


async def test_an_organization_s_default_registration_prefix_is_audited_once(world: World) -> None:
    names = IdentityOrganizationNames(world.identity_addr)
    try:
        numbering = Numbering(molecule_transactions(world.engine), names)
        tag = uuid.uuid4().hex[:4]
        organization = await world.identity.create_organization(world.root.principal, f"Q{tag} Labs", "PHARMA", "")
        admin = await world.user(organization.id, "pharma_admin")
        assert await numbering.prefix(admin.principal, admin.credentials) == (f"Q{tag}".upper(), False)
        await numbering.prefix(admin.principal, admin.credentials)  # it has one now: nothing changes
    finally:
        await names.close()
    [entry] = await trail(world, organization.id)
    assert (entry.action, entry.event.target_type) == ("registration_prefix.set", "organization")
    assert by(admin, [entry])
    assert entry.details == {"prefix.before": "", "prefix.after": f"Q{tag}".upper(), "origin": "organization name"}
