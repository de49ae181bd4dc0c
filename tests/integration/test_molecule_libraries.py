"""Libraries against a real PostgreSQL, with a real identity service (in-process gRPC) for users and grants.

One database and one identity service serve the module; every test makes its own users, molecules
and libraries, so tests do not depend on each other's data. Molecules are written straight into
molecule.molecules (registered by chemistry.register): registration is another module's job.
"""

from __future__ import annotations

import itertools
import struct
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import rdkit
import sqlalchemy as sa
from molbridge.events.v1.envelope_pb2 import EventEnvelope
from molbridge.events.v1.molecule_pb2 import MoleculesChanged
from molbridge.identity.v1 import identity_service_pb2_grpc as identity_grpc
from molbridge.molecule.v1 import library_service_pb2 as pb
from molbridge.molecule.v1 import library_service_pb2_grpc as pb_grpc

from bus import event_subject
from services.identity.bootstrap import MIGRATIONS as IDENTITY_MIGRATIONS
from services.identity.server import PUBLIC_METHODS, IdentityServicer
from services.identity.service import IdentityService
from services.identity.store import SCHEMA as IDENTITY_SCHEMA
from services.molecule.adapters.identity_organizations import IdentityOrganizationNames
from services.molecule.adapters.identity_users import IdentityUserDirectory
from services.molecule.bootstrap import build_parts
from services.molecule.domain import chemistry
from services.molecule.domain.library_rules import Level, LibraryFilter
from services.molecule.index.columnar import QueryIndex
from services.molecule.service.libraries import LibraryService
from services.molecule.service.molecules import MoleculeService, NewMolecule
from services.molecule.service.numbering import Numbering
from services.molecule.settings import MoleculeSettings
from services.molecule.store.tables import SCHEMA, molecule_properties, molecules
from services.molecule.store.uow import molecule_transactions
from services.runtime import migrations
from services.runtime.auth import Authenticator, Principal, TokenVerifier
from services.runtime.db import make_engine
from services.runtime.errors import (
    AuthorizationError,
    ConflictError,
    NotFoundError,
    PreconditionError,
    ValidationError,
)
from services.runtime.identity_client import RemoteIdentity, remote_authenticator
from services.runtime.pagination import PageRequest
from services.runtime.process import Process, running
from services.runtime.settings import REPO_ROOT, Settings
from stack.ports import free_port
from tests.integration.identity_world import started_identity

MOLECULE_MIGRATIONS = REPO_ROOT / "services" / "molecule" / "migrations"
PASSWORD = "Library-Tester-123!"
PAGE = PageRequest.of(1, 100)
_names = itertools.count()


def _corpus() -> Iterator[chemistry.Registered]:
    """Distinct registrable structures from RDKit's NCI sample, in file order."""
    seen: set[str] = set()
    path = Path(rdkit.__file__).parent / "Data" / "NCI" / "first_5K.smi"
    for line in path.read_text().splitlines():
        try:
            registered = chemistry.register(line.split()[0])
        except chemistry.InvalidStructure:
            continue
        if registered.inchi_key not in seen:
            seen.add(registered.inchi_key)
            yield registered


_structures = _corpus()


@dataclass(frozen=True)
class Actor:
    principal: Principal
    token: str

    @property
    def id(self) -> str:
        return self.principal.subject

    @property
    def credentials(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.token}")]


class World:
    def __init__(self, identity: IdentityService, libraries: LibraryService, engine, identity_addr: str) -> None:  # type: ignore[no-untyped-def]
        self.identity, self.libraries, self.engine, self.identity_addr = identity, libraries, engine, identity_addr
        self.verifier = TokenVerifier(identity.jwks)
        self.root: Actor
        self.directory: IdentityUserDirectory

    async def login(self, email: str, password: str) -> Actor:
        session = await self.identity.login(email, password)
        return Actor(await self.verifier.verify(session.access_token), session.access_token)

    async def organization(self, kind: str = "PHARMA") -> Actor:
        """A new organization; returns its admin."""
        name = f"Org {uuid.uuid4().hex[:8]}"
        organization = await self.identity.create_organization(self.root.principal, name, kind, "")
        return await self.user(organization.id, f"{kind.lower()}_admin")

    async def user(self, organization_id: str, role: str = "") -> Actor:
        email = f"u{uuid.uuid4().hex[:10]}@lib.test"
        await self.identity.create_user(
            self.root.principal, email=email, full_name="Library tester", password=PASSWORD,
            roles=[role] if role else [], organization_id=organization_id, request_id="",
        )
        return await self.login(email, PASSWORD)

    async def molecules(self, owner: Actor, count: int) -> list[str]:
        """`count` new molecules of the owner's organization, with their calculated properties."""
        ids = []
        async with self.engine.begin() as connection:
            for registered in itertools.islice(_structures, count):
                molecule_id = str(uuid.uuid4())
                await connection.execute(
                    molecules.insert().values(
                        id=molecule_id, organization_id=owner.principal.organization_id,
                        inchi_key=registered.inchi_key, registration_number=f"LIB-{molecule_id}",
                        name=f"mol-{len(ids)}", smiles=registered.original_smiles,
                        canonical_smiles=registered.canonical_smiles, formula=registered.formula,
                        molecular_weight=registered.molecular_weight, morgan_fp=registered.morgan_fp,
                        pattern_fp=registered.pattern_fp, created_by=owner.id,
                    )
                )
                await connection.execute(
                    molecule_properties.insert(),
                    [
                        {"molecule_id": molecule_id, "name": name, "source": "CALCULATED", "value_num": value}
                        for name, value in registered.calculated.items()
                    ],
                )
                ids.append(molecule_id)
        assert len(ids) == count
        return ids

    async def set_property(self, molecule_id: str, name: str, source: str, value: float) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(
                molecule_properties.insert().values(molecule_id=molecule_id, name=name, source=source, value_num=value)
            )

    async def archive(self, molecule_id: str) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(molecules.update().where(molecules.c.id == molecule_id).values(status="ARCHIVED"))

    async def changed_events(self) -> list[MoleculesChanged]:
        async with self.engine.connect() as connection:
            payloads = await connection.execute(
                sa.text("SELECT payload FROM molecule.outbox WHERE subject = :s ORDER BY created_at"),
                {"s": event_subject("molecule", MoleculesChanged)},
            )  # the audit events are there too
            events = []
            for payload in payloads.scalars():
                event = MoleculesChanged()
                assert EventEnvelope.FromString(payload).payload.Unpack(event)
                events.append(event)
            return events

    async def create(self, owner: Actor, name: str = "", **details: str) -> str:
        library = await self.libraries.create(
            owner.principal, name=name or f"Library {next(_names)}", description=details.get("description", ""),
            category=details.get("category", ""), visibility=details.get("visibility", ""), request_id="",
        )
        return library.id


@pytest.fixture(scope="module")
async def world(postgres_server, tmp_path_factory) -> AsyncIterator[World]:  # type: ignore[no-untyped-def]
    url = postgres_server.create_database()
    IDENTITY_MIGRATIONS.upgrade(url)
    migrations.upgrade(url, SCHEMA, MOLECULE_MIGRATIONS)
    identity_engine, engine = make_engine(url, IDENTITY_SCHEMA), make_engine(url, SCHEMA)
    identity = await started_identity(identity_engine, tmp_path_factory.mktemp("mail"), "root@lib.test", PASSWORD)
    port = free_port()
    settings = Settings.from_env("identity", {"MOLBRIDGE_IDENTITY_ADDR": f"127.0.0.1:{port}"})
    process = Process(
        servicers=[(identity_grpc.add_IdentityServiceServicer_to_server, IdentityServicer(identity))],
        authenticator=Authenticator(TokenVerifier(identity.jwks), identity),
        public_methods=PUBLIC_METHODS,
    )
    directory = IdentityUserDirectory(f"127.0.0.1:{port}")
    try:
        async with running("identity", process, settings):
            w = World(identity, LibraryService(molecule_transactions(engine), directory), engine, f"127.0.0.1:{port}")
            w.directory = directory
            w.root = await w.login("root@lib.test", PASSWORD)
            yield w
    finally:
        await directory.close()
        await identity_engine.dispose()
        await engine.dispose()
        postgres_server.drop_database(url.rsplit("/", 1)[1])


async def test_create_get_update_delete(world: World) -> None:
    admin = await world.organization()
    alice = await world.user(admin.principal.organization_id)
    created = await world.libraries.create(
        alice.principal, name="  Kinase hits ", description="round 1", category="LEAD_SERIES", visibility="",
        request_id="req-1",
    )
    assert (created.name, created.category, created.visibility, created.owner_id) == (
        "Kinase hits", "LEAD_SERIES", "PRIVATE", alice.id,
    )
    assert created.organization_id == alice.principal.organization_id
    assert created.access_level is Level.OWNER and created.molecule_count == 0
    again = await world.libraries.create(
        alice.principal, name="Kinase hits", description="", category="", visibility="", request_id="req-1"
    )
    assert again.id == created.id  # a retried create returns the first library

    updated = await world.libraries.update(
        alice.principal, created.id, name="Kinase hits v2", description="", category="", visibility="ORGANIZATION"
    )
    assert (updated.name, updated.description, updated.category, updated.visibility) == (
        "Kinase hits v2", "round 1", "LEAD_SERIES", "ORGANIZATION",
    )
    assert (await world.libraries.get(alice.principal, created.id)).name == "Kinase hits v2"
    with pytest.raises(ValidationError):
        await world.libraries.update(alice.principal, created.id, name="x" * 101, description="", category="",
                                     visibility="")
    deleted = await world.libraries.delete(alice.principal, created.id)
    assert deleted.id == created.id
    with pytest.raises(NotFoundError):
        await world.libraries.get(alice.principal, created.id)
    with pytest.raises(NotFoundError):
        await world.libraries.get(alice.principal, "not-a-uuid")


async def test_names_are_unique_per_owner_ignoring_case_but_owners_may_share_a_name(world: World) -> None:
    admin = await world.organization()
    alice, bob = [await world.user(admin.principal.organization_id) for _ in range(2)]
    first = await world.create(alice, "Screening set")
    with pytest.raises(ConflictError):
        await world.create(alice, "Screening set")
    with pytest.raises(ConflictError):
        await world.create(alice, "screening SET")
    assert await world.create(bob, "Screening set")  # another owner, same name
    other = await world.create(alice, "Other set")
    with pytest.raises(ConflictError):  # renaming into a taken name
        await world.libraries.update(alice.principal, other, name="Screening Set", description="", category="",
                                     visibility="")
    assert (await world.libraries.get(alice.principal, first)).name == "Screening set"


async def test_auditors_may_not_create_libraries(world: World) -> None:
    auditor = await world.user(world.root.principal.organization_id, "auditor")
    with pytest.raises(AuthorizationError):
        await world.create(auditor)


async def test_levels_decide_who_reads_edits_shares_and_deletes(world: World) -> None:
    admin = await world.organization()
    org = admin.principal.organization_id
    owner, viewer, editor, outsider = [await world.user(org) for _ in range(4)]
    library_id = await world.create(owner)
    ids = await world.molecules(owner, 3)

    # Private: nobody else sees it — except the organization admin, who sees it without a level.
    for stranger in (viewer, editor, outsider):
        with pytest.raises(NotFoundError):
            await world.libraries.get(stranger.principal, library_id)
    seen_by_admin = await world.libraries.get(admin.principal, library_id)
    assert seen_by_admin.access_level is Level.NONE
    with pytest.raises(AuthorizationError):
        await world.libraries.list_molecules(admin.principal, library_id, PAGE, sort_by="", sort_desc=False)
    assert library_id in {x.id for x in (await world.libraries.list_visible(admin.principal, PAGE))[0]}
    assert library_id not in {x.id for x in (await world.libraries.list_visible(outsider.principal, PAGE))[0]}

    await world.libraries.set_access(owner.principal, library_id, viewer.id, Level.VIEWER, owner.credentials)
    await world.libraries.set_access(owner.principal, library_id, editor.id, Level.EDITOR, owner.credentials)
    assert (await world.libraries.get(viewer.principal, library_id)).access_level is Level.VIEWER

    with pytest.raises(AuthorizationError):
        await world.libraries.add_molecules(viewer.principal, library_id, ids[:1])
    with pytest.raises(AuthorizationError):
        await world.libraries.update(viewer.principal, library_id, name="", description="mine now", category="",
                                     visibility="")
    added = await world.libraries.add_molecules(editor.principal, library_id, ids)
    assert added.molecule_count == 3 and added.access_level is Level.EDITOR
    edited = await world.libraries.update(editor.principal, library_id, name="", description="curated",
                                          category="SCREENING", visibility="")
    assert (edited.description, edited.category) == ("curated", "SCREENING")
    with pytest.raises(AuthorizationError):  # visibility is sharing: owner only
        await world.libraries.update(editor.principal, library_id, name="", description="", category="",
                                     visibility="ORGANIZATION")
    with pytest.raises(AuthorizationError):
        await world.libraries.set_access(editor.principal, library_id, outsider.id, Level.VIEWER, editor.credentials)
    with pytest.raises(AuthorizationError):
        await world.libraries.delete(editor.principal, library_id)
    molecules_seen, total = await world.libraries.list_molecules(
        viewer.principal, library_id, PAGE, sort_by="", sort_desc=False
    )
    assert total == 3 and {m.id for m in molecules_seen} == set(ids)

    access, _ = await world.libraries.access(viewer.principal, library_id, PAGE)
    assert access.level is Level.VIEWER and access.visibility == "PRIVATE"
    assert [(g.user_id, g.level) for g in access.grants][0] == (owner.id, Level.OWNER)
    assert {(g.user_id, g.level) for g in access.grants[1:]} == {(viewer.id, Level.VIEWER), (editor.id, Level.EDITOR)}

    # Organization visibility makes every member a viewer; grants still raise the level.
    await world.libraries.update(owner.principal, library_id, name="", description="", category="",
                                 visibility="ORGANIZATION")
    assert (await world.libraries.get(outsider.principal, library_id)).access_level is Level.VIEWER
    assert (await world.libraries.get(editor.principal, library_id)).access_level is Level.EDITOR

    # Revoking takes the grant away; only the owner deletes.
    revoked, _ = await world.libraries.set_access(owner.principal, library_id, editor.id, Level.NONE)
    assert editor.id not in {g.user_id for g in revoked.grants}
    with pytest.raises(AuthorizationError):
        await world.libraries.add_molecules(editor.principal, library_id, ids[:1])
    await world.libraries.delete(owner.principal, library_id)


async def test_lists_show_own_shared_and_organization_libraries(world: World) -> None:
    admin = await world.organization()
    org = admin.principal.organization_id
    alice, bob = await world.user(org), await world.user(org)
    private = await world.create(alice, "Alpha private")
    shared = await world.create(alice, "Beta shared", category="PROJECT")
    public = await world.create(alice, "Gamma public", visibility="ORGANIZATION", category="PROJECT")
    bobs = await world.create(bob, "Delta bob")
    await world.libraries.set_access(alice.principal, shared, bob.id, Level.VIEWER, alice.credentials)

    visible, total = await world.libraries.list_visible(bob.principal, PAGE)
    assert [x.id for x in visible] == [shared, bobs, public] and total == 3  # by name
    mine, total_mine = await world.libraries.list_mine(alice.principal, PageRequest.of(1, 2))
    assert total_mine == 3 and [x.id for x in mine] == [private, shared]
    filtered, _ = await world.libraries.list_visible(
        bob.principal, PAGE, LibraryFilter(name_contains="A", categories=("PROJECT",))
    )
    assert [x.id for x in filtered] == [shared, public]  # "Delta bob" has an a, not the category
    by_owner, _ = await world.libraries.list_visible(
        bob.principal, PAGE, LibraryFilter(owner_id=alice.id, visibility="ORGANIZATION")
    )
    assert [x.id for x in by_owner] == [public]
    wildcard, _ = await world.libraries.list_visible(bob.principal, PAGE, LibraryFilter(name_contains="%"))
    assert wildcard == []  # LIKE wildcards are literal
    with pytest.raises(ValidationError):
        await world.libraries.list_visible(bob.principal, PAGE, LibraryFilter(categories=("NOPE",)))
    everything, _ = await world.libraries.list_visible(admin.principal, PAGE)
    assert {private, shared, public, bobs} <= {x.id for x in everything}


async def test_grants_go_only_to_active_users_of_the_same_organization(world: World) -> None:
    admin = await world.organization()
    org = admin.principal.organization_id
    owner, colleague, leaver = await world.user(org), await world.user(org), await world.user(org)
    foreign = await world.organization()
    library_id = await world.create(owner)
    for user_id in (foreign.id, str(uuid.uuid4())):
        with pytest.raises(NotFoundError):
            await world.libraries.set_access(owner.principal, library_id, user_id, Level.VIEWER, owner.credentials)
    await world.libraries.set_access(owner.principal, library_id, leaver.id, Level.EDITOR, owner.credentials)
    await world.identity.delete_user(admin.principal, leaver.id)
    with pytest.raises(NotFoundError):  # inactive users get no new grants
        await world.libraries.set_access(owner.principal, library_id, leaver.id, Level.VIEWER, owner.credentials)
    access, total = await world.libraries.set_access(owner.principal, library_id, leaver.id, Level.NONE)
    assert [g.user_id for g in access.grants] == [owner.id] and total == 1  # a leaver's grant can always be revoked
    with pytest.raises(ValidationError):
        await world.libraries.set_access(owner.principal, library_id, colleague.id, Level.OWNER, owner.credentials)
    with pytest.raises(ValidationError):
        await world.libraries.set_access(owner.principal, library_id, owner.id, Level.VIEWER, owner.credentials)
    await world.libraries.set_access(owner.principal, library_id, colleague.id, Level.VIEWER, owner.credentials)
    upgraded, _ = await world.libraries.set_access(owner.principal, library_id, colleague.id, Level.EDITOR,
                                                   owner.credentials)
    assert [(g.user_id, g.level) for g in upgraded.grants[1:]] == [(colleague.id, Level.EDITOR)]


async def test_grants_are_paged_owner_first_then_by_user_id(world: World) -> None:
    admin = await world.organization()
    org = admin.principal.organization_id
    owner = await world.user(org)
    grantees = [await world.user(org) for _ in range(4)]
    library_id = await world.create(owner)
    for grantee in grantees:
        await world.libraries.set_access(owner.principal, library_id, grantee.id, Level.VIEWER, owner.credentials)
    by_id = sorted(g.id for g in grantees)

    viewer = grantees[0].principal
    pages = [await world.libraries.access(viewer, library_id, PageRequest.of(n, 2)) for n in (1, 2, 3, 4)]
    assert [[g.user_id for g in access.grants] for access, _ in pages] == [
        [owner.id, by_id[0]], by_id[1:3], by_id[3:], [],
    ]
    assert {total for _, total in pages} == {5}  # the owner counts as one
    assert pages[0][0].grants[0].level is Level.OWNER and pages[1][0].level is Level.VIEWER
    alone, total = await world.libraries.access(owner.principal, library_id, PageRequest.of(1, 1))
    assert [g.user_id for g in alone.grants] == [owner.id] and total == 5
    second, _ = await world.libraries.access(owner.principal, library_id, PageRequest.of(2, 1))
    assert [g.user_id for g in second.grants] == [by_id[0]]
    everything, _ = await world.libraries.access(owner.principal, library_id, PAGE)
    assert [g.user_id for g in everything.grants] == [owner.id, *by_id]

    revoked, total = await world.libraries.set_access(owner.principal, library_id, by_id[0], Level.NONE)
    assert [g.user_id for g in revoked.grants] == [owner.id, *by_id[1:]] and total == 4


async def test_another_organizations_library_and_molecules_do_not_exist(world: World) -> None:
    admin_a, admin_b = await world.organization(), await world.organization()
    alice = await world.user(admin_a.principal.organization_id)
    mallory = await world.user(admin_b.principal.organization_id)
    library_id = await world.create(alice, visibility="ORGANIZATION")
    ours = await world.molecules(alice, 2)
    theirs = await world.molecules(mallory, 2)
    await world.libraries.add_molecules(alice.principal, library_id, ours)
    svc = world.libraries
    for stranger in (mallory, admin_b, world.root):  # the platform's system_admin included
        p = stranger.principal
        calls = [
            svc.get(p, library_id),
            svc.update(p, library_id, name="x", description="", category="", visibility=""),
            svc.delete(p, library_id),
            svc.add_molecules(p, library_id, theirs),
            svc.remove_molecules(p, library_id, ours),
            svc.list_molecules(p, library_id, PAGE, sort_by="", sort_desc=False),
            svc.access(p, library_id, PAGE),
            svc.set_access(p, library_id, stranger.id, Level.VIEWER, stranger.credentials),
            svc.distribution(p, library_id, "logp", 0),
            svc.distribution_plot(p, library_id, "logp", 0, width=0, height=0),
        ]
        for call in calls:
            with pytest.raises(NotFoundError):
                await call
        assert library_id not in {x.id for x in (await svc.list_visible(p, PAGE))[0]}
    with pytest.raises(NotFoundError) as foreign:  # another organization's molecule cannot be added
        await svc.add_molecules(alice.principal, library_id, [ours[0], *theirs, "junk"])
    assert foreign.value.detail == "MOLECULES_NOT_FOUND"
    assert all(bad in foreign.value.message for bad in (*theirs, "junk")) and ours[0] not in foreign.value.message
    assert (await svc.get(alice.principal, library_id)).molecule_count == 2  # the batch was refused whole


async def test_membership_changes_keep_molecules_and_emit_events(world: World) -> None:
    admin = await world.organization()
    alice = await world.user(admin.principal.organization_id)
    ids = await world.molecules(alice, 6)
    library_id = await world.create(alice)
    other_library = await world.create(alice)
    await world.libraries.add_molecules(alice.principal, other_library, ids[:1])

    added = await world.libraries.add_molecules(alice.principal, library_id, [*ids[:4], ids[0].upper(), ids[1]])
    assert added.molecule_count == 4
    again = await world.libraries.add_molecules(alice.principal, library_id, ids[:2])  # nothing new: no-op
    assert again.molecule_count == 4
    removed = await world.libraries.remove_molecules(alice.principal, library_id, [ids[0], ids[5]])  # 5: not a member
    assert removed.molecule_count == 3
    async with world.engine.connect() as connection:
        still_there = await connection.scalar(
            sa.select(sa.func.count()).select_from(molecules).where(molecules.c.id.in_(ids))
        )
    assert still_there == 6  # removing from a library never deletes a molecule
    listed, _ = await world.libraries.list_molecules(alice.principal, other_library, PAGE, sort_by="", sort_desc=False)
    assert listed[0].id == ids[0] and listed[0].library_ids == [other_library]  # still in its other library

    events = [e for e in await world.changed_events() if set(e.molecule_ids) <= set(ids)]
    assert [sorted(e.molecule_ids) for e in events] == [
        [ids[0]], sorted(ids[:4]), [ids[0]],  # add to other, add 4 (repeats count once), remove 1
    ]
    assert {e.organization_id for e in events} == {admin.principal.organization_id}

    # Archived molecules leave counts and lists, and can still be taken out.
    await world.archive(ids[1])
    assert (await world.libraries.get(alice.principal, library_id)).molecule_count == 2
    with pytest.raises(NotFoundError):
        await world.libraries.add_molecules(alice.principal, library_id, [ids[1]])
    await world.libraries.remove_molecules(alice.principal, library_id, [ids[1]])

    deleted = await world.libraries.delete(alice.principal, library_id)
    assert deleted.molecule_count == 2
    last = [e for e in await world.changed_events() if set(e.molecule_ids) <= set(ids)][-1]
    assert sorted(last.molecule_ids) == sorted(ids[2:4])  # deleting the library emptied it
    assert (await world.libraries.get(alice.principal, other_library)).molecule_count == 1


async def test_batches_are_bounded(world: World) -> None:
    admin = await world.organization()
    alice = await world.user(admin.principal.organization_id)
    library_id = await world.create(alice)
    with pytest.raises(ValidationError):
        await world.libraries.add_molecules(alice.principal, library_id, [str(uuid.uuid4())] * 10_001)
    with pytest.raises(ValidationError):
        await world.libraries.remove_molecules(alice.principal, library_id, [])
    with pytest.raises(NotFoundError) as unknown:
        await world.libraries.add_molecules(alice.principal, library_id, [str(uuid.uuid4()) for _ in range(10_000)])
    assert "and 9990 more" in unknown.value.message


async def test_molecules_of_a_library_page_and_sort(world: World) -> None:
    admin = await world.organization()
    alice = await world.user(admin.principal.organization_id)
    ids = await world.molecules(alice, 5)
    library_id = await world.create(alice)
    await world.libraries.add_molecules(alice.principal, library_id, ids)
    by_weight, total = await world.libraries.list_molecules(
        alice.principal, library_id, PAGE, sort_by="molecular_weight", sort_desc=True
    )
    weights = [m.molecular_weight for m in by_weight]
    assert total == 5 and weights == sorted(weights, reverse=True)
    first, total = await world.libraries.list_molecules(
        alice.principal, library_id, PageRequest.of(2, 2), sort_by="molecular_weight", sort_desc=True
    )
    assert total == 5 and [m.id for m in first] == [m.id for m in by_weight[2:4]]
    assert {p.name for p in by_weight[0].properties} >= {"logp", "tpsa"}
    with pytest.raises(ValidationError):
        await world.libraries.list_molecules(alice.principal, library_id, PAGE, sort_by="smell", sort_desc=False)


async def test_with_the_query_index_molecules_sort_by_properties_and_changes_show_at_once(world: World) -> None:
    admin = await world.organization()
    alice = await world.user(admin.principal.organization_id)
    ids = await world.molecules(alice, 8)
    indexed = LibraryService(molecule_transactions(world.engine), world.directory, QueryIndex(world.engine))
    library_id = await world.create(alice)
    await indexed.add_molecules(alice.principal, library_id, ids[:6])  # loads the organization's index
    await indexed.add_molecules(alice.principal, library_id, ids[6:])  # refreshes it
    await indexed.remove_molecules(alice.principal, library_id, ids[:1])
    listed, total = await indexed.list_molecules(alice.principal, library_id, PAGE, sort_by="tpsa", sort_desc=True)
    assert total == 7 and {m.id for m in listed} == set(ids[1:])
    tpsa = [next(p.value for p in m.properties if p.name == "tpsa") for m in listed]
    assert tpsa == sorted(tpsa, reverse=True)
    second, _ = await indexed.list_molecules(alice.principal, library_id, PageRequest.of(2, 3), sort_by="tpsa",
                                             sort_desc=True)
    assert [m.id for m in second] == [m.id for m in listed[3:6]]
    with pytest.raises(ValidationError):
        await indexed.list_molecules(alice.principal, library_id, PAGE, sort_by="smell", sort_desc=False)
    with pytest.raises(NotFoundError):
        await indexed.list_molecules(admin.principal, "not-a-library", PAGE, sort_by="", sort_desc=False)


async def test_distribution_uses_effective_values_and_equals_numpy(world: World) -> None:
    admin = await world.organization()
    alice = await world.user(admin.principal.organization_id)
    ids = await world.molecules(alice, 40)
    library_id = await world.create(alice, "Distribution set")
    await world.libraries.add_molecules(alice.principal, library_id, ids)
    async with world.engine.connect() as connection:
        calculated = dict(
            (str(k), v) for k, v in await connection.execute(
                sa.select(molecule_properties.c.molecule_id, molecule_properties.c.value_num).where(
                    molecule_properties.c.molecule_id.in_(ids), molecule_properties.c.name == "logp"
                )
            )
        )
    expected = dict(calculated)
    for i, molecule_id in enumerate(ids[:12]):  # more trusted sources win: EXPERIMENTAL > IMPORTED > PREDICTED
        await world.set_property(molecule_id, "logp", "PREDICTED", -5.0 + i)
        expected[molecule_id] = -5.0 + i
        if i % 2 == 0:
            await world.set_property(molecule_id, "logp", "IMPORTED", 7.5)
            expected[molecule_id] = 7.5
        if i % 4 == 0:
            await world.set_property(molecule_id, "logp", "EXPERIMENTAL", 9.25)
            expected[molecule_id] = 9.25
    await world.archive(ids[-1])  # archived molecules are not counted
    del expected[ids[-1]]
    values = np.array(list(expected.values()))

    hist = await world.libraries.distribution(alice.principal, library_id, "logp", 7)
    counts, edges = np.histogram(values, bins=7)
    assert hist.counts == counts.tolist() and hist.edges == pytest.approx(edges.tolist())
    assert (hist.with_value, hist.missing, hist.units) == (39, 0, "")
    assert hist.mean == pytest.approx(values.mean()) and hist.median == pytest.approx(np.median(values))
    assert len((await world.libraries.distribution(alice.principal, library_id, "logp", 0)).counts) == 20

    for molecule_id in ids[:5]:
        await world.set_property(molecule_id, "ic50", "IMPORTED", 120.0)
    ic50 = await world.libraries.distribution(alice.principal, library_id, "ic50", 3)
    assert (ic50.with_value, ic50.missing, ic50.units, ic50.mean) == (5, 34, "nM", 120.0)
    nothing = await world.libraries.distribution(alice.principal, library_id, "custom_assay", 3)
    assert (nothing.with_value, nothing.missing, nothing.edges) == (0, 39, [])
    mw = await world.libraries.distribution(alice.principal, library_id, "molecular_weight", 10)
    assert mw.with_value == 39 and mw.units == "g/mol"
    for bad_property, bad_bins in (("smell", 10), ("logp", 201), ("logp", -1)):
        with pytest.raises(ValidationError):
            await world.libraries.distribution(alice.principal, library_id, bad_property, bad_bins)

    png = await world.libraries.distribution_plot(alice.principal, library_id, "logp", 10, width=500, height=300)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (500, 300)
    with pytest.raises(ValidationError):
        await world.libraries.distribution_plot(alice.principal, library_id, "logp", 10, width=5000, height=300)


async def test_grpc_service_maps_requests_errors_and_forwards_credentials(world: World) -> None:
    admin = await world.organization()
    org = admin.principal.organization_id
    alice, bob = await world.user(org), await world.user(org)
    mallory = await world.user((await world.organization()).principal.organization_id)
    ids = await world.molecules(alice, 3)
    port = free_port()
    settings = MoleculeSettings.from_env(
        "molecule", {"MOLBRIDGE_MOLECULE_ADDR": f"127.0.0.1:{port}", "MOLBRIDGE_IDENTITY_ADDR": world.identity_addr}
    )
    part = build_parts(settings, world.engine)
    remote = RemoteIdentity(world.identity_addr)
    process = Process(
        servicers=part.servicers, authenticator=remote_authenticator(remote),
        on_stop=[*part.on_stop, remote.close],
    )
    async with running("molecule", process, settings), grpc.aio.insecure_channel(settings.listen_addr) as channel:
        stub = pb_grpc.LibraryServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as anonymous:
            await stub.ListLibraries(pb.ListLibrariesRequest())
        assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED

        created = (await stub.CreateLibrary(
            pb.CreateLibraryRequest(name="Over gRPC", category=pb.Library.REFERENCE),
            metadata=alice.credentials,
        )).data
        assert created.category == pb.Library.REFERENCE
        assert created.visibility == pb.Library.PRIVATE
        assert created.access_level == pb.LibraryAccess.OWNER
        await stub.AddMolecules(pb.AddMoleculesRequest(library_id=created.id, molecule_ids=ids[:2]),
                                metadata=alice.credentials)
        one = await stub.AddMolecule(pb.AddMoleculeRequest(library_id=created.id, molecule_id=ids[2]),
                                     metadata=alice.credentials)
        assert one.data.molecule_count == 3
        # Bob is checked with identity using Alice's own credentials, forwarded.
        shared = await stub.SetLibraryAccess(
            pb.SetLibraryAccessRequest(library_id=created.id, user_id=bob.id, level=pb.LibraryAccess.VIEWER),
            metadata=alice.credentials,
        )
        assert [(g.user_id, g.level) for g in shared.data.grants] == [
            (alice.id, pb.LibraryAccess.OWNER), (bob.id, pb.LibraryAccess.VIEWER),
        ]
        assert (shared.meta.page, shared.meta.page_size, shared.meta.total) == (1, 50, 2)
        second = await stub.GetLibraryAccess(
            pb.GetLibraryAccessRequest(library_id=created.id, page=2, page_size=1), metadata=bob.credentials
        )
        assert [g.user_id for g in second.data.grants] == [bob.id] and second.data.level == pb.LibraryAccess.VIEWER
        assert (second.meta.page, second.meta.page_size, second.meta.total) == (2, 1, 2)
        with pytest.raises(grpc.aio.AioRpcError) as too_big:
            await stub.GetLibraryAccess(
                pb.GetLibraryAccessRequest(library_id=created.id, page_size=101), metadata=bob.credentials
            )
        assert too_big.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        listed = await stub.ListLibraryMolecules(
            pb.ListLibraryMoleculesRequest(library_id=created.id, page_size=2, sort_by="name"),
            metadata=bob.credentials,
        )
        assert listed.meta.total == 3 and [m.name for m in listed.data] == sorted(m.name for m in listed.data)
        assert listed.data[0].status and listed.data[0].properties[0].source
        assert created.id in listed.data[0].library_ids
        hist = (await stub.GetDistribution(pb.GetDistributionRequest(id=created.id, property="tpsa", bins=4),
                                           metadata=bob.credentials)).data
        assert hist.with_value == 3 and len(hist.edges) == 5 and hist.units == "Å²"
        plot = await stub.GetDistributionPlot(
            pb.GetDistributionPlotRequest(id=created.id, property="tpsa", width=300, height=200),
            metadata=bob.credentials,
        )
        assert plot.content_type == "image/png" and struct.unpack(">II", plot.data[16:24]) == (300, 200)
        filtered = await stub.FilterLibraries(
            pb.FilterLibrariesRequest(categories=[pb.Library.REFERENCE]), metadata=bob.credentials
        )
        assert [x.id for x in filtered.data] == [created.id] and filtered.meta.total == 1

        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await stub.RemoveMolecule(pb.RemoveMoleculeRequest(library_id=created.id, molecule_id=ids[0]),
                                      metadata=bob.credentials)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError) as hidden:
            await stub.GetLibrary(pb.GetLibraryRequest(id=created.id), metadata=mallory.credentials)
        assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as invalid:
            await stub.CreateLibrary(pb.CreateLibraryRequest(name="x", category=99), metadata=alice.credentials)
        assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as taken:
            await stub.CreateLibrary(pb.CreateLibraryRequest(name="over grpc"), metadata=alice.credentials)
        assert taken.value.code() == grpc.StatusCode.ALREADY_EXISTS

        removed = await stub.RemoveMolecule(pb.RemoveMoleculeRequest(library_id=created.id, molecule_id=ids[0]),
                                            metadata=alice.credentials)
        assert removed.data.molecule_count == 2
        mine = await stub.ListMyLibraries(pb.ListMyLibrariesRequest(), metadata=alice.credentials)
        assert [x.id for x in mine.data] == [created.id]
        gone = await stub.DeleteLibrary(pb.DeleteLibraryRequest(id=created.id), metadata=alice.credentials)
        assert gone.data.molecule_count == 2


async def test_an_organization_numbers_with_a_prefix_from_its_name_until_its_admin_changes_it(world: World) -> None:
    """Registration prefixes (service/numbering.py) with the organization's name asked of identity."""
    names = IdentityOrganizationNames(world.identity_addr)
    try:
        numbering = Numbering(molecule_transactions(world.engine), names)
        service = MoleculeService(molecule_transactions(world.engine), QueryIndex(world.engine), numbering)
        tag = uuid.uuid4().hex[:4]
        zeta = await world.identity.create_organization(world.root.principal, f"Zeta{tag} Labs", "PHARMA", "")
        admin = await world.user(zeta.id, "pharma_admin")
        scientist = await world.user(zeta.id, "pharma_scientist")
        assert await numbering.prefix(admin.principal, admin.credentials) == (f"ZETA{tag}".upper(), False)
        with pytest.raises(AuthorizationError):
            await numbering.set_prefix(scientist.principal, "ZT")
        with pytest.raises(ValidationError):
            await numbering.set_prefix(admin.principal, "Z-T")
        assert await numbering.set_prefix(admin.principal, "acme") == ("ACME", False)
        created = await service.create(
            scientist.principal, NewMolecule("CCO", "ethanol", []), credentials=scientist.credentials
        )
        assert created.registration_number == "ACME-000001"
        assert await numbering.prefix(scientist.principal, scientist.credentials) == ("ACME", True)
        with pytest.raises(PreconditionError):
            await numbering.set_prefix(admin.principal, "ACMEX")
        # An organization's first registration through the API takes its name's prefix.
        beta = await world.identity.create_organization(world.root.principal, f"Beta{tag} Pharma", "PHARMA", "")
        chemist = await world.user(beta.id, "pharma_scientist")
        [outcome] = await service.batch_create(
            chemist.principal, [NewMolecule("c1ccccc1", "benzene", [])], credentials=chemist.credentials
        )
        assert (await service.get(chemist.principal, outcome.molecule_id)).registration_number == (
            f"BETA{tag}-000001".upper()
        )
    finally:
        await names.close()
