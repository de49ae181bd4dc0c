"""Registration (MoleculeRepository.register, store/registration.py) against a real PostgreSQL: identity,
merging, values, races."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from services.molecule.domain import chemistry
from services.molecule.domain.imports import StructureRow
from services.molecule.store.registration import RegistrationResult
from services.molecule.store.uow import molecule_transactions
from tests.integration.molecule_imports import ImportWorld, molsets_smiles, world_fixture

world = world_fixture()


def structure(smiles: str, row: int | None = None, name: str = "", **values: Any) -> StructureRow:
    registered = chemistry.register(smiles)
    assert isinstance(registered, chemistry.Registered)
    stored = {k: (v, None, "nM") if isinstance(v, float) else (None, v, "") for k, v in values.items()}
    return StructureRow(row, registered, name, stored)


async def register(
    world: ImportWorld, rows: list[StructureRow], org: str, **options: Any
) -> RegistrationResult:
    async with molecule_transactions(world.engine)() as uow:
        return await uow.molecules.register(rows, organization_id=org, actor_id="user-1", **options)


async def test_first_row_of_each_parent_registers_and_the_rest_merge(world: ImportWorld) -> None:
    org = str(uuid.uuid4())
    rows = [
        structure("CCO", name="ethanol"),
        structure("OCC"),
        structure("CC(=O)[O-].[Na+]"),
        structure("CC(=O)O"),
    ]
    result = await register(world, rows, org)
    assert [o.registered for o in result.outcomes] == [True, False, True, False]
    assert (result.registered, result.merged, len(result.molecule_ids)) == (2, 2, 2)
    assert result.outcomes[0].molecule_id == result.outcomes[1].molecule_id
    # API registrations: provenance without a job, one row per call.
    again = await register(world, [structure("C(O)C", name="ethyl alcohol")], org)
    assert again.registered == 0 and again.molecule_ids[0] == result.molecule_ids[0]
    assert await world.scalar("SELECT count(*) FROM molecule_provenance WHERE job_id IS NULL") == 5
    assert (
        await world.scalar("SELECT name FROM molecules WHERE id = :i", i=again.molecule_ids[0]) == "ethanol"
    )
    # The same structure in another organization is another molecule.
    elsewhere = await register(world, [structure("CCO")], str(uuid.uuid4()))
    assert elsewhere.registered == 1 and elsewhere.molecule_ids[0] != result.molecule_ids[0]


async def test_a_merge_names_an_unnamed_molecule_and_adds_values(world: ImportWorld) -> None:
    org = str(uuid.uuid4())
    [first] = (await register(world, [structure("c1ccccc1")], org)).molecule_ids
    await register(world, [structure("c1ccccc1", name="benzene", ic50=5.0, custom_tag="solvent")], org)
    row = (await world.rows("SELECT name, updated_at > created_at FROM molecules WHERE id = :i", i=first))[0]
    assert tuple(row) == ("benzene", True)
    values = await world.rows(
        "SELECT name, source, value_num, value_text FROM molecule_properties WHERE molecule_id = :i "
        "AND source <> 'CALCULATED' ORDER BY name",
        i=first,
    )
    assert [tuple(v) for v in values] == [
        ("custom_tag", "IMPORTED", None, "solvent"),
        ("ic50", "IMPORTED", 5.0, None),
    ]
    await register(world, [structure("c1ccccc1", name="other name", ic50=6.0)], org)  # a later write wins
    assert (
        await world.scalar(
            "SELECT value_num FROM molecule_properties WHERE molecule_id = :i AND name = 'ic50'", i=first
        )
        == 6.0
    )
    assert await world.scalar("SELECT name FROM molecules WHERE id = :i", i=first) == "benzene"


async def test_within_one_import_a_later_row_wins_whatever_the_commit_order(world: ImportWorld) -> None:
    org, job = str(uuid.uuid4()), str(uuid.uuid4())
    await world.execute(
        "INSERT INTO uploads (storage_key, organization_id, filename, size_bytes, created_by) "
        "VALUES ('k', :o, 'f.csv', 1, 'u')",
        o=org,
    )
    await world.execute(
        "INSERT INTO import_jobs (id, organization_id, storage_key, filename, mapping, dialect, mode,"
        " status, created_by) VALUES (:j, :o, 'k', 'f.csv', '{}', '{}', 'keep_valid', 'PROCESSING', 'u')",
        j=job,
        o=org,
    )
    await register(world, [structure("CCO", row=10, ic50=10.0)], org, job_id=job)  # the later chunk first
    await register(world, [structure("CCO", row=3, ic50=3.0)], org, job_id=job)
    [(value, provenance)] = await world.rows(
        "SELECT value_num, provenance FROM molecule_properties WHERE name = 'ic50'"
    )
    assert (value, provenance) == (10.0, {"job_id": job, "row": 10})
    # A redelivered row adds no provenance.
    await register(world, [structure("CCO", row=10, ic50=10.0)], org, job_id=job)
    assert await world.scalar("SELECT count(*) FROM molecule_provenance WHERE job_id = :j", j=job) == 2


async def test_concurrent_batches_with_shared_structures_count_each_molecule_once(world: ImportWorld) -> None:
    org = str(uuid.uuid4())
    smiles = molsets_smiles(600)
    registered = await asyncio.to_thread(chemistry.register_many, smiles)
    rows = [
        StructureRow(i, r, f"m{i}") for i, r in enumerate(registered) if isinstance(r, chemistry.Registered)
    ]
    distinct = len({row.registered.inchi_key for row in rows})
    # Three overlapping batches (reversed, so they meet in opposite orders) racing for the same keys.
    batches = [rows[:400], rows[200:][::-1], rows[100:500]]
    results = await asyncio.gather(*(register(world, batch, org) for batch in batches))
    assert sum(r.registered for r in results) == distinct
    assert sum(r.merged for r in results) == sum(map(len, batches)) - distinct
    assert await world.scalar("SELECT count(*) FROM molecules WHERE organization_id = :o", o=org) == distinct
    assert (
        await world.scalar("SELECT count(*) FROM molecule_properties WHERE source = 'CALCULATED'")
        == 11 * distinct
    )


async def test_imported_molecules_join_the_library_unless_it_was_deleted(world: ImportWorld) -> None:
    org = str(uuid.uuid4())
    library = str(uuid.uuid4())
    await world.execute(
        "INSERT INTO libraries (id, organization_id, owner_id, name) VALUES (:l, :o, 'u', 'Hits')",
        l=library,
        o=org,
    )
    await register(world, [structure("CCO"), structure("CCN"), structure("OCC")], org, library_id=library)
    assert await world.scalar("SELECT count(*) FROM library_molecules WHERE library_id = :l", l=library) == 2
    await world.execute("DELETE FROM libraries WHERE id = :l", l=library)
    result = await register(world, [structure("CCC")], org, library_id=library)
    assert result.registered == 1 and await world.scalar("SELECT count(*) FROM library_molecules") == 0


async def test_text_with_tabs_backslashes_and_newlines_is_stored_as_given(world: ImportWorld) -> None:
    org = str(uuid.uuid4())
    name = 'a\tb\\c\nd "e"'
    result = await register(world, [structure("F/C=C\\F", name=name, custom_note="x\\N\ty\r\nz")], org)
    molecule_id = result.molecule_ids[0]
    assert await world.scalar("SELECT name FROM molecules WHERE id = :i", i=molecule_id) == name
    assert await world.scalar("SELECT smiles FROM molecules WHERE id = :i", i=molecule_id) == "F/C=C\\F"
    assert (
        await world.scalar(
            "SELECT value_text FROM molecule_properties WHERE molecule_id = :i AND name = 'custom_note'",
            i=molecule_id,
        )
        == "x\\N\ty\r\nz"
    )


async def test_metal_complexes_and_inorganic_salts_are_not_merged_with_their_ligands(world: ImportWorld) -> None:
    org = str(uuid.uuid4())
    rows = [
        structure("N.N.Cl[Pt]Cl", name="cisplatin"),
        structure("N", name="ammonia"),
        structure("[cH-]1cccc1.[cH-]1cccc1.[Fe+2]", name="ferrocene"),
        structure("C1=CC=CC1", name="cyclopentadiene"),
        structure("[Na+].[Cl-]", name="sodium chloride"),
        structure("Cl", name="hydrogen chloride"),
        structure("N.N.[Cl-].[Cl-].[Pt+2]"),  # cisplatin drawn as ions: the same record
        structure("[NH4+].[Cl-]"),  # ammonium chloride is neither ammonia nor HCl
    ]
    result = await register(world, rows, org)
    assert [o.registered for o in result.outcomes] == [True] * 6 + [False, True]
    assert result.outcomes[6].molecule_id == result.outcomes[0].molecule_id
    stored = await world.rows(
        "SELECT name, formula, canonical_smiles FROM molecules WHERE organization_id = :o ORDER BY name", o=org
    )
    assert [tuple(row) for row in stored] == [
        ("", "H4ClN", "Cl.N"),
        ("ammonia", "H3N", "N"),
        ("cisplatin", "H6Cl2N2Pt", "N.N.[Cl][Pt][Cl]"),
        ("cyclopentadiene", "C5H6", "C1=CCC=C1"),
        ("ferrocene", "C10H10Fe", "[Fe+2].c1cc[cH-]c1.c1cc[cH-]c1"),
        ("hydrogen chloride", "HCl", "Cl"),
        ("sodium chloride", "ClNa", "[Cl-].[Na+]"),
    ]
