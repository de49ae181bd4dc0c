"""MoleculeService.batch_get (BatchGetMolecules, the prediction service's way to read SMILES)."""

from __future__ import annotations

import uuid

import pytest

from services.molecule.service.molecules import NewMolecule
from services.runtime.errors import ValidationError
from tests.integration import test_molecule_service as molecule_tests
from tests.integration.test_molecule_service import World, person

world = molecule_tests.world  # the same fixture: migrated schema, service and query index


async def test_batch_get_is_scoped_to_the_organization_and_reports_missing_ids(world: World) -> None:
    org_a, org_b = str(uuid.uuid4()), str(uuid.uuid4())
    alice, bob = person(org_a), person(org_b)
    ethanol = await world.service.create(alice, NewMolecule("CCO", "ethanol"))
    pyridine = await world.service.create(alice, NewMolecule("c1ccncc1", "pyridine"))
    theirs = await world.service.create(bob, NewMolecule("CCN"))
    unknown = str(uuid.uuid4())
    asked = [pyridine.id, theirs.id, "not-a-uuid", ethanol.id, unknown, pyridine.id.upper()]
    found, missing = await world.service.batch_get(alice, asked)
    assert [m.id for m in found] == [pyridine.id, ethanol.id]
    assert [m.canonical_smiles for m in found] == ["c1ccncc1", "CCO"]
    assert missing == [theirs.id, "not-a-uuid", unknown]
    assert await world.service.batch_get(alice, []) == ([], [])
    with pytest.raises(ValidationError):
        await world.service.batch_get(alice, [ethanol.id] * 1001)
