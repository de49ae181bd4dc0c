"""Registration numbers and aliases against a real PostgreSQL: sequential per organization, unique under
concurrent batches, never reused or burned, kept by merges; lookup by number and alias; the 0002
backfill of molecules registered before numbers existed. (The prefix rules, which ask identity for the
organization's name, are tested in test_molecule_libraries.py, whose world runs identity.)"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from services.molecule.domain import chemistry
from services.molecule.domain.imports import StructureRow
from services.molecule.index.columnar import QueryIndex
from services.molecule.index.query import RawFilter, parse_query
from services.molecule.service.molecules import MoleculeService, NewMolecule
from services.molecule.store.registration import RegistrationResult
from services.molecule.store.tables import SCHEMA
from services.molecule.store.uow import molecule_transactions
from services.runtime.db import make_engine
from services.runtime.errors import NotFoundError, PreconditionError
from services.runtime.migrations import MigrationSpec
from services.runtime.pagination import PageRequest
from services.runtime.settings import REPO_ROOT
from tests.integration.molecule_imports import ImportWorld, molsets_smiles, scientist, world_fixture

world = world_fixture()


def structure(smiles: str, row: int | None = None, name: str = "") -> StructureRow:
    registered = chemistry.register(smiles)
    assert isinstance(registered, chemistry.Registered)
    return StructureRow(row, registered, name)


async def register(world: ImportWorld, rows: list[StructureRow], org: str, **options: Any) -> RegistrationResult:
    async with molecule_transactions(world.engine)() as uow:
        return await uow.molecules.register(rows, organization_id=org, actor_id="user-1", **options)


async def numbers_of(world: ImportWorld, ids: list[str]) -> list[str]:
    found = dict(await world.rows("SELECT id::text, registration_number FROM molecules WHERE id = ANY(:ids)", ids=ids))
    return [found[i] for i in ids]


async def next_value(world: ImportWorld, org: str) -> int:
    return int(await world.scalar("SELECT next_value FROM registration_counters WHERE organization_id = :o", o=org))


def service(world: ImportWorld) -> MoleculeService:
    return MoleculeService(molecule_transactions(world.engine), QueryIndex(world.engine))


async def test_numbers_follow_the_rows_and_merges_keep_theirs(world: ImportWorld) -> None:
    org = str(uuid.uuid4())
    first = await register(world, [structure("CCO"), structure("OCC"), structure("c1ccccc1"), structure("CCN")], org)
    assert await numbers_of(world, first.molecule_ids) == ["MOL-000001", "MOL-000002", "MOL-000003"]
    # A merge keeps its number; only the new structure takes the next one.
    second = await register(world, [structure("C(O)C"), structure("CCCl")], org)
    assert await numbers_of(world, second.molecule_ids) == ["MOL-000001", "MOL-000004"]
    assert await next_value(world, org) == 5
    # Another organization counts on its own.
    elsewhere = await register(world, [structure("CCO")], str(uuid.uuid4()))
    assert await numbers_of(world, elsewhere.molecule_ids) == ["MOL-000001"]


async def test_an_archived_molecule_keeps_its_number_and_nothing_is_reused(world: ImportWorld) -> None:
    who = scientist()
    org = who.organization_id
    [ethanol, benzene] = (await register(world, [structure("CCO"), structure("c1ccccc1")], org)).molecule_ids
    archived = await service(world).delete(who, benzene)
    assert (archived.status, archived.registration_number) == ("ARCHIVED", "MOL-000002")
    later = await register(world, [structure("CCN")], org)
    assert await numbers_of(world, later.molecule_ids) == ["MOL-000003"]
    assert (await service(world).get(who, ethanol)).registration_number == "MOL-000001"


async def test_a_rolled_back_registration_burns_no_number(world: ImportWorld) -> None:
    org = str(uuid.uuid4())
    await register(world, [structure("CCO")], org)

    class Abandoned(Exception):
        pass

    with pytest.raises(Abandoned):
        async with molecule_transactions(world.engine)() as uow:
            await uow.molecules.register([structure("CCN"), structure("CCCl")], organization_id=org, actor_id="u")
            raise Abandoned
    assert await next_value(world, org) == 2
    again = await register(world, [structure("CCCl")], org)
    assert await numbers_of(world, again.molecule_ids) == ["MOL-000002"]


async def test_concurrent_batches_get_distinct_numbers_without_gaps(world: ImportWorld) -> None:
    org = str(uuid.uuid4())
    registered = await asyncio.to_thread(chemistry.register_many, molsets_smiles(600))
    rows = [StructureRow(i, r, "") for i, r in enumerate(registered) if isinstance(r, chemistry.Registered)]
    distinct = len({row.registered.inchi_key for row in rows})
    # Overlapping batches racing for the same keys, meeting in opposite orders.
    batches = [rows[:400], rows[200:][::-1], rows[100:500], rows[450:]]
    await asyncio.gather(*(register(world, batch, org) for batch in batches))
    numbers = [
        n for (n,) in await world.rows("SELECT registration_number FROM molecules WHERE organization_id = :o", o=org)
    ]
    assert sorted(numbers) == [f"MOL-{i:06d}" for i in range(1, distinct + 1)]
    assert await next_value(world, org) == distinct + 1


async def test_without_organization_names_the_prefix_is_the_neutral_default_until_changed(
    world: ImportWorld,
) -> None:
    admin = scientist(None, "pharma_admin")
    molecules = service(world)
    assert await molecules.registration_prefix(admin, []) == ("MOL", False)
    assert await molecules.set_registration_prefix(admin, "cro7") == ("CRO7", False)
    created = await molecules.create(admin, NewMolecule("CCO"))
    assert created.registration_number == "CRO7-000001"
    with pytest.raises(PreconditionError):
        await molecules.set_registration_prefix(admin, "MOL")
    assert await molecules.registration_prefix(admin, []) == ("CRO7", True)


async def test_lookup_by_number_or_imported_alias_and_filter_and_sort(world: ImportWorld) -> None:
    who = scientist()
    org = who.organization_id
    job = str(uuid.uuid4())
    rows = [
        structure("CCO", row=1, name="CPD-17"),
        structure("c1ccccc1", row=2, name="cmpd 2"),
        structure("OCC", row=3, name="ethanol"),  # merged: a second alias of the same molecule
        structure("CCN", row=4, name="CPD-17"),  # taken by row 1
    ]
    [ethanol, benzene, amine] = (await register(world, rows, org, job_id=job)).molecule_ids
    molecules = service(world)
    assert (await molecules.get_by_number(who, " mol-000002")).id == benzene
    assert (await molecules.get_by_number(who, "CPD-17")).id == ethanol
    assert (await molecules.get_by_number(who, "ethanol")).id == ethanol
    assert (await molecules.get_by_number(who, "cmpd 2")).registration_number == "MOL-000002"
    for unknown in ("MOL-000009", "cpd-17", "", "   "):
        with pytest.raises(NotFoundError):
            await molecules.get_by_number(who, unknown)
    with pytest.raises(NotFoundError):  # another organization's number is not found
        await molecules.get_by_number(scientist(), "MOL-000001")
    # API registrations keep no alias.
    await register(world, [structure("CCCl", name="chloroethane")], org)
    with pytest.raises(NotFoundError):
        await molecules.get_by_number(who, "chloroethane")
    # The columnar index filters and sorts by number.
    query = parse_query(filters=[RawFilter("registration_number", "eq", "MOL-000003")])
    found, total = await molecules.list_molecules(who, query, PageRequest(1, 10))
    assert (total, [v.id for v in found]) == (1, [amine])
    newest_number_first = parse_query(sort_by="registration_number", sort_desc=True)
    found, _ = await molecules.list_molecules(who, newest_number_first, PageRequest(1, 10))
    assert [v.registration_number for v in found] == ["MOL-000004", "MOL-000003", "MOL-000002", "MOL-000001"]


async def test_api_registrations_and_import_chunks_into_one_library_do_not_deadlock(world: ImportWorld) -> None:
    """API creates lock the library row, then the counter; chunks take the same locks in the same order."""
    who = scientist()
    org, library = who.organization_id, str(uuid.uuid4())
    await world.execute(
        "INSERT INTO libraries (id, organization_id, owner_id, name) VALUES (:l, :o, :u, 'shared')",
        l=library,
        o=org,
        u=who.subject,
    )
    smiles = molsets_smiles(120)
    registered = await asyncio.to_thread(chemistry.register_many, smiles[:80])
    rows = [StructureRow(i, r, "") for i, r in enumerate(registered) if isinstance(r, chemistry.Registered)]
    molecules = service(world)
    chunks = [
        register(world, rows[i : i + 20], org, job_id=str(uuid.uuid4()), library_id=library) for i in (0, 20, 40, 60)
    ]
    creates = [molecules.create(who, NewMolecule(s), library_id=library) for s in smiles[80:100]]
    await asyncio.gather(*chunks, *creates)
    count = await world.scalar("SELECT count(*) FROM molecules WHERE organization_id = :o", o=org)
    numbers = await world.rows("SELECT registration_number FROM molecules WHERE organization_id = :o", o=org)
    assert sorted(n for (n,) in numbers) == [f"MOL-{i:06d}" for i in range(1, count + 1)]
    assert await world.scalar("SELECT count(*) FROM library_molecules WHERE library_id = :l", l=library) == count


async def test_the_migration_numbers_existing_molecules_in_registration_order(database_url: str) -> None:
    spec = MigrationSpec(SCHEMA, REPO_ROOT / "services" / "molecule" / "migrations")
    await asyncio.to_thread(command.upgrade, spec.config(database_url), "0001")
    engine = make_engine(database_url, SCHEMA)
    acme, other = str(uuid.uuid4()), str(uuid.uuid4())
    inserted: dict[str, tuple[str, str]] = {}
    try:
        async with engine.begin() as connection:
            # created_at out of insertion order; two at the same instant (then ordered by id).
            for org, smiles, age in [(acme, "CCO", 30), (acme, "CCN", 50), (other, "CCO", 5), (acme, "CCCl", 10)]:
                registered = chemistry.register(smiles)
                assert isinstance(registered, chemistry.Registered)
                molecule_id = str(uuid.uuid4())
                inserted[molecule_id] = (org, smiles)
                await connection.execute(
                    sa.text(
                        """INSERT INTO molecules (id, organization_id, inchi_key, smiles, canonical_smiles, formula,
                                                  molecular_weight, morgan_fp, pattern_fp, created_by, created_at)
                           VALUES (:id, :org, :key, :smiles, :smiles, 'X', 1, '\\x00', '\\x00', 'u',
                                   now() - make_interval(mins => :age))"""
                    ),
                    {"id": molecule_id, "org": org, "key": registered.inchi_key, "smiles": smiles, "age": age},
                )
        await asyncio.to_thread(spec.upgrade, database_url)
        async with engine.connect() as connection:
            numbered = {
                (str(org), smiles): number
                for org, smiles, number in await connection.execute(
                    sa.text("SELECT organization_id, smiles, registration_number FROM molecules")
                )
            }
            counters = {
                str(org): (prefix, value, locked)
                for org, prefix, value, locked in await connection.execute(
                    sa.text("SELECT organization_id, prefix, next_value, locked FROM registration_counters")
                )
            }
        assert numbered == {
            (acme, "CCN"): "MOL-000001",
            (acme, "CCO"): "MOL-000002",
            (acme, "CCCl"): "MOL-000003",
            (other, "CCO"): "MOL-000001",
        }
        assert counters == {acme: ("MOL", 4, True), other: ("MOL", 2, True)}
    finally:
        await engine.dispose()
