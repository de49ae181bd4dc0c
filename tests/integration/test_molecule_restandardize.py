"""restandardize against a real PostgreSQL: records merged or keyed under the old rules (largest
organic fragment after disconnecting metals) are found, re-keyed and split."""

from __future__ import annotations

import dataclasses
import uuid

from molbridge.events.v1.audit_pb2 import AuditRecorded
from molbridge.events.v1.envelope_pb2 import EventEnvelope

from services.molecule import restandardize
from services.molecule.domain import chemistry
from services.molecule.domain.imports import StructureRow
from services.molecule.store.registration import register_structures
from services.molecule.store.uow import molecule_transactions
from tests.integration.molecule_imports import ImportWorld, world_fixture

world = world_fixture()

CISPLATIN = "N.N.Cl[Pt]Cl"
FERROCENE = "[cH-]1cccc1.[cH-]1cccc1.[Fe+2]"


def as_old_rules_stored(submitted: str, old_parent: str, row: int | None = None, **values: float) -> StructureRow:
    """A row as the old rules registered it: the submitted SMILES with another structure's parent."""
    registered = dataclasses.replace(chemistry.register(old_parent), original_smiles=submitted)
    return StructureRow(row, registered, "", {name: (v, None, "nM") for name, v in values.items()})


def current(smiles: str, row: int | None = None, **values: float) -> StructureRow:
    return StructureRow(row, chemistry.register(smiles), "", {name: (v, None, "nM") for name, v in values.items()})


async def test_wrongly_merged_and_keyed_records_are_reported_then_split_and_rekeyed(world: ImportWorld) -> None:
    org, job, library = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    transactions = molecule_transactions(world.engine)
    await world.execute(
        "INSERT INTO libraries (id, organization_id, owner_id, name) VALUES (:l, :o, 'user-1', 'metals')",
        l=library,
        o=org,
    )
    async with transactions() as uow:
        imported = await register_structures(
            uow.session,
            [
                as_old_rules_stored(CISPLATIN, "N", 1, ic50=1.0),  # cisplatin, stored as ammonia…
                current("N", 2, solubility=2.0),  # …and ammonia merged into it
                as_old_rules_stored("[Na+].[Cl-]", "Cl", 3),  # sodium chloride stored as HCl
                as_old_rules_stored(FERROCENE, "C1=CC=CC1", 4),  # ferrocene as cyclopentadiene
                current(FERROCENE, 5),  # and ferrocene registered rightly since: a collision
                current("CC(=O)Oc1ccccc1C(=O)O", 6),  # right all along
            ],
            organization_id=org,
            actor_id="user-1",
            job_id=job,
            library_id=library,
        )
    merged, sodium_chloride, old_ferrocene, ferrocene, aspirin = imported.molecule_ids

    report: list[str] = []
    await restandardize.run(world.database_url, dry_run=True, organization_id=org, out=report.append)
    assert report[-1] == "3 record(s) affected: 1 rekey, 1 split, 1 collision, 0 unregistrable"
    assert any(line.startswith(f"split: molecule {merged}") and "N.N.[Cl][Pt][Cl]" in line for line in report)
    assert any(line.startswith(f"collision: molecule {old_ferrocene}") and ferrocene in line for line in report)
    assert await world.scalar("SELECT count(*) FROM molecules WHERE organization_id = :o", o=org) == 5  # dry run

    corrections = await restandardize.find_corrections(transactions, org)
    done = await restandardize.apply(transactions, corrections)
    assert sorted((c.kind, c.molecule.id) for c in done) == sorted([("split", merged), ("rekey", sodium_chloride)])
    records = {
        str(r.id): tuple(r[1:])
        for r in await world.rows(
            "SELECT id, canonical_smiles, formula, smiles FROM molecules WHERE organization_id = :o", o=org
        )
    }
    [ammonia] = [i for i in records if i not in (merged, sodium_chloride, old_ferrocene, ferrocene, aspirin)]
    # The record keeps its first registration (cisplatin); ammonia is a record of its own.
    assert records[merged] == ("N.N.[Cl][Pt][Cl]", "H6Cl2N2Pt", CISPLATIN)
    assert records[ammonia] == ("N", "H3N", "N")
    assert records[sodium_chloride] == ("[Cl-].[Na+]", "ClNa", "[Na+].[Cl-]")
    assert records[old_ferrocene][0] == "C1=CCC=C1"  # the collision is left to a person
    # Records keep their registration numbers; the split-off record takes the next one.
    numbers = dict(
        await world.rows("SELECT id::text, registration_number FROM molecules WHERE organization_id = :o", o=org)
    )
    assert [numbers[i] for i in (merged, sodium_chloride, old_ferrocene, ferrocene, aspirin, ammonia)] == [
        f"MOL-{n:06d}" for n in range(1, 7)
    ]
    # Provenance, row values, CALCULATED values and library membership follow the registrations.
    provenance = await world.rows(
        "SELECT row_number, molecule_id::text FROM molecule_provenance WHERE job_id = :j ORDER BY row_number", j=job
    )
    assert [tuple(p) for p in provenance][:3] == [(1, merged), (2, ammonia), (3, sodium_chloride)]
    values = await world.rows(
        "SELECT molecule_id::text, name, value_num FROM molecule_properties "
        "WHERE molecule_id IN (:a, :b) AND (source = 'IMPORTED' OR name = 'molecular_weight') ORDER BY 1, 2",
        a=merged,
        b=ammonia,
    )
    assert sorted(tuple(v) for v in values) == sorted(
        [
            (merged, "ic50", 1.0),
            (merged, "molecular_weight", chemistry.register(CISPLATIN).molecular_weight),
            (ammonia, "molecular_weight", chemistry.register("N").molecular_weight),
            (ammonia, "solubility", 2.0),
        ]
    )
    assert (
        await world.scalar(
            "SELECT count(*) FROM library_molecules WHERE library_id = :l AND molecule_id = :a", l=library, a=ammonia
        )
        == 1
    )
    audits = [
        EventEnvelope.FromString(bytes(row.payload))
        for row in await world.rows("SELECT payload FROM outbox WHERE subject LIKE '%audit_recorded'")
    ]
    recorded = [AuditRecorded.FromString(e.payload.value) for e in audits if e.organization_id == org]
    assert sorted((a.action, a.target_id) for a in recorded) == sorted(
        [("molecule.split", merged), ("molecule.restandardized", sodium_chloride)]
    )
    assert {e.actor_id for e in audits if e.organization_id == org} == {restandardize.ACTOR}
    split = next(a for a in recorded if a.action == "molecule.split")
    assert dict(split.details) == {
        "from_inchi_key": chemistry.register("N").inchi_key,
        "to_inchi_key": chemistry.register(CISPLATIN).inchi_key,
        "moved_to": ammonia,
        "registrations_moved": "1",
    }
    # Done: only the collision remains.
    assert [c.kind for c in await restandardize.find_corrections(transactions, org)] == ["collision"]
