"""restandardization.plan: which correction a stored record needs under the current rules (no database)."""

from __future__ import annotations

from services.molecule.domain import chemistry
from services.molecule.domain.restandardization import Registration, StoredMolecule, plan

AMMONIA = chemistry.register("N").inchi_key
CISPLATIN = chemistry.register("N.N.Cl[Pt]Cl").inchi_key


def record(inchi_key: str, *smiles: str) -> StoredMolecule:
    return StoredMolecule(
        "m-1",
        "org-1",
        inchi_key,
        tuple(Registration(i, s, "job-1", i, "user-1") for i, s in enumerate(smiles, start=1)),
    )


def test_a_record_that_the_rules_still_give_needs_nothing() -> None:
    assert plan(record(AMMONIA, "N", "[NH3]"), {AMMONIA: "m-1"}) is None


def test_a_merged_record_splits_and_keeps_its_earliest_registration() -> None:
    correction = plan(record(AMMONIA, "N.N.Cl[Pt]Cl", "N", "N.N.[Cl-].[Cl-].[Pt+2]"), {AMMONIA: "m-1"})
    assert correction is not None and correction.kind == "split"
    assert correction.keeper.inchi_key == CISPLATIN
    assert [r.provenance_id for r in correction.keeper.registrations] == [1, 3]
    [ammonia] = correction.moved
    assert (ammonia.inchi_key, ammonia.existing_id, [r.provenance_id for r in ammonia.registrations]) == (
        AMMONIA,
        None,  # the record itself holds that key now; the split creates ammonia's own record
        [2],
    )
    assert "split: molecule m-1" in correction.describe()


def test_a_moved_group_goes_to_the_organizations_record_with_its_key() -> None:
    correction = plan(record(CISPLATIN, "N.N.Cl[Pt]Cl", "N"), {CISPLATIN: "m-1", AMMONIA: "m-2"})
    assert correction is not None and correction.kind == "split"
    assert correction.moved[0].existing_id == "m-2"


def test_rekey_collision_and_unregistrable() -> None:
    sodium_chloride = plan(record(chemistry.register("Cl").inchi_key, "[Na+].[Cl-]"), {})
    assert sodium_chloride is not None and sodium_chloride.kind == "rekey"
    assert sodium_chloride.keeper.registered.canonical_smiles == "[Cl-].[Na+]"
    collision = plan(record(AMMONIA, "N.N.Cl[Pt]Cl"), {AMMONIA: "m-1", CISPLATIN: "m-9"})
    assert collision is not None and collision.kind == "collision" and collision.keeper.existing_id == "m-9"
    broken = plan(record(AMMONIA, "N", "C1CC"), {AMMONIA: "m-1"})
    assert broken is not None and broken.kind == "unregistrable"
    assert broken.unregistrable[0][1] == "invalid SMILES: unclosed ring"
