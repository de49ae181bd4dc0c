"""MoleculeService and its query engine against a real PostgreSQL (and NATS for the bus follower).

The filter/sort test registers ~2,000 NCI structures through chemistry.register and
the molecule repository's register (the import path), adds PREDICTED / EXPERIMENTAL values, statuses,
flags and a library, and compares every answer of the service with a brute-force evaluation over the
rows read back from PostgreSQL (tests/molecule_oracle.py).
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
import rdkit
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf import json_format, struct_pb2
from molbridge.molecule.v1 import molecule_pb2
from molbridge.molecule.v1 import molecule_service_pb2 as pb
from molbridge.molecule.v1 import molecule_service_pb2_grpc as pb_grpc
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bus import OutboxRelay, connect, ensure_streams
from services.molecule.domain import chemistry
from services.molecule.domain.imports import StructureRow
from services.molecule.domain.vocabulary import STATUSES
from services.molecule.index.columnar import QueryIndex
from services.molecule.index.query import MoleculeQuery, RawFilter, parse_query
from services.molecule.index.query_sync import follow_changes
from services.molecule.server.molecules import MoleculeServicer
from services.molecule.service.molecules import MoleculeService, NewMolecule, PropertyInput
from services.molecule.store.tables import SCHEMA
from services.molecule.store.uow import molecule_transactions
from services.runtime import migrations
from services.runtime.auth import AUDIENCE, ISSUER, Authenticator, Principal, TokenVerifier
from services.runtime.db import make_engine
from services.runtime.errors import (
    AuthorizationError,
    NotFoundError,
    PreconditionError,
    ValidationError,
)
from services.runtime.pagination import PageRequest
from services.runtime.process import Process, running
from services.runtime.settings import Settings
from stack.ports import free_port
from tests import molecule_oracle as oracle

MIGRATIONS = Path(chemistry.__file__).parents[1] / "migrations"
NCI = Path(rdkit.__file__).parent / "Data" / "NCI" / "first_5K.smi"
SERIES = ["hit", "lead", "Lead-2", "backup", "007"]


def person(organization_id: str, *roles: str, kind: str = "PHARMA") -> Principal:
    return Principal(str(uuid.uuid4()), organization_id, kind, frozenset(roles or ("pharma_scientist",)))


@dataclass
class World:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    index: QueryIndex
    service: MoleculeService

    async def execute(self, statement: str, **params: Any) -> Any:
        async with self.sessions.begin() as session:
            return await session.execute(sa.text(statement), params)

    async def rows(self, statement: str, **params: Any) -> list[Any]:
        return list(await self.execute(statement, **params))


@pytest.fixture
async def world(database_url: str) -> AsyncIterator[World]:
    migrations.upgrade(database_url, SCHEMA, MIGRATIONS)
    engine = make_engine(database_url, SCHEMA)
    index = QueryIndex(engine)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    yield World(engine, sessions, index, MoleculeService(molecule_transactions(engine), index))
    await engine.dispose()


def nci_smiles(count: int) -> list[str]:
    smiles = [line.split()[0] for line in NCI.read_text().splitlines() if line.strip()]
    return smiles[:count]


async def register_nci(world: World, org: str, count: int, rng: random.Random) -> None:
    """Register NCI structures the way an import does, with IMPORTED values of every kind."""
    structures = await asyncio.to_thread(chemistry.register_many, nci_smiles(count))
    rows = []
    for i, structure in enumerate(structures):
        if isinstance(structure, chemistry.InvalidStructure):
            continue
        values: dict[str, tuple[float | None, str | None, str]] = {}
        if rng.random() < 0.5:
            values["ic50"] = (float(rng.randint(1, 100) * 10), None, "nM")
        if rng.random() < 0.25:
            values["logp"] = (round(rng.uniform(-2, 6), 2), None, "")
        if rng.random() < 0.4:
            values["custom_series"] = (None, rng.choice(SERIES), "")
        elif rng.random() < 0.2:
            values["custom_series"] = (float(rng.randint(0, 9)), None, "")
        if rng.random() < 0.3:
            values["custom_score"] = (round(rng.uniform(0, 100), 1), None, "")
        rows.append(
            StructureRow(i + 1, structure, f"NSC-{rng.randint(1, 400)}" if rng.random() < 0.8 else "", values)
        )
    for start in range(0, len(rows), 400):  # chunks: several created_at values, with ties inside each
        async with molecule_transactions(world.engine)() as uow:
            await uow.molecules.register(rows[start : start + 400], organization_id=org, actor_id="importer")


async def add_values(world: World, org: str, source: str, name: str, fraction: float, seed: float) -> None:
    """PREDICTED / EXPERIMENTAL values straight into the table (their writers come with later issues)."""
    await world.execute(
        """INSERT INTO molecule_properties (molecule_id, name, source, value_num, units)
           SELECT id, :name, :source, round((random() * 8 - 2)::numeric, 2), '' FROM molecules
           WHERE organization_id = :org
             AND (hashtext(id::text || :seed) % 1000 + 1000) % 1000 < :per_mille""",
        name=name,
        source=source,
        org=org,
        seed=str(seed),
        per_mille=int(fraction * 1000),
    )


async def oracle_rows(world: World, org: str) -> list[oracle.Row]:
    rows = {
        str(r.id): oracle.Row(
            id=str(r.id),
            status=r.status,
            created=r.created,
            updated=r.updated,
            name=r.name,
            inchi_key=r.inchi_key,
            formula=r.formula,
            registration_number=r.registration_number,
            smiles=r.smiles,
            canonical_smiles=r.canonical_smiles,
            values={("molecular_weight", "CALCULATED"): r.molecular_weight},
        )
        for r in await world.rows(
            """SELECT id, status, extract(epoch FROM created_at)::float8 AS created,
                      extract(epoch FROM updated_at)::float8 AS updated, name, inchi_key, formula,
                      registration_number, smiles,
                      canonical_smiles, molecular_weight FROM molecules WHERE organization_id = :org""",
            org=org,
        )
    }
    for p in await world.rows(
        "SELECT p.* FROM molecule_properties p JOIN molecules m ON m.id = p.molecule_id "
        "WHERE m.organization_id = :o",
        o=org,
    ):
        rows[str(p.molecule_id)].values[(p.name, p.source)] = (
            p.value_num if p.value_num is not None else p.value_text
        )
    for f in await world.rows("SELECT molecule_id, user_id, type FROM flags"):
        if str(f.molecule_id) in rows:
            rows[str(f.molecule_id)].flags.add((f.user_id, f.type))
    for m in await world.rows("SELECT library_id, molecule_id FROM library_molecules"):
        if str(m.molecule_id) in rows:
            rows[str(m.molecule_id)].libraries.add(str(m.library_id))
    return list(rows.values())


async def create_library(world: World, org: str, owner: Principal, molecule_ids: list[str]) -> str:
    library_id = str(uuid.uuid4())
    await world.execute(
        "INSERT INTO libraries (id, organization_id, owner_id, name, visibility) "
        "VALUES (:id, :org, :owner, :name, 'ORGANIZATION')",
        id=library_id,
        org=org,
        owner=owner.subject,
        name=f"lib-{library_id[:8]}",
    )
    await world.execute(
        "INSERT INTO library_molecules (library_id, molecule_id, added_by) "
        "SELECT :lib, unnest(CAST(:ids AS uuid[])), :u",
        lib=library_id,
        ids=molecule_ids,
        u=owner.subject,
    )
    return library_id


def queries_for(
    rng: random.Random, rows: list[oracle.Row], library_id: str
) -> list[tuple[MoleculeQuery, int, int]]:
    sample = rng.sample(rows, 40)
    makers = [
        lambda: RawFilter("logp", rng.choice(["gt", "gte", "lt", "lte"]), round(rng.uniform(-1, 5), 1)),
        lambda: RawFilter(
            "logp", "lt", 2, rng.choice(["CALCULATED", "IMPORTED", "PREDICTED", "EXPERIMENTAL"])
        ),
        lambda: RawFilter("tpsa", rng.choice(["gt", "lte"]), rng.uniform(0, 150)),
        lambda: RawFilter("molecular_weight", rng.choice(["gt", "lt"]), rng.uniform(100, 500)),
        lambda: RawFilter("num_rings", rng.choice(["eq", "neq", "gte"]), rng.randint(0, 4)),
        lambda: RawFilter("num_h_donors", "in", rng.sample(range(6), 2)),
        lambda: RawFilter("ic50", rng.choice(["lt", "eq", "gte"]), rng.randint(1, 100) * 10),
        lambda: RawFilter(
            "custom_series", rng.choice(["eq", "neq", "contains"]), rng.choice([*SERIES, "LEAD", "7"])
        ),
        lambda: RawFilter("custom_series", "in", ["hit", "007", 3]),
        lambda: RawFilter("custom_score", "gte", rng.uniform(0, 100)),
        lambda: RawFilter(
            "name", rng.choice(["contains", "eq"]), rng.choice(["NSC-1", "nsc-2", "", "NSC-17"])
        ),
        lambda: RawFilter("formula", rng.choice(["eq", "contains"]), rng.choice(sample).formula[:4]),
        lambda: RawFilter("inchi_key", "eq", rng.choice(sample).inchi_key),
        lambda: RawFilter("inchi_key", "in", [r.inchi_key for r in rng.sample(sample, 5)]),
        lambda: RawFilter("smiles", "contains", rng.choice(["Cl", "N(=O)", "c1ccccc1"])),
        lambda: RawFilter("canonical_smiles", rng.choice(["eq", "neq"]), rng.choice(sample).canonical_smiles),
    ]
    sorts = [
        "",
        *["name", "created_at", "updated_at", "molecular_weight", "logp", "tpsa"],
        *["num_rings", "ic50", "custom_series", "custom_score", "formula", "inchi_key", "solubility"],
    ]
    out = []
    for _ in range(80):
        query = parse_query(
            filters=[rng.choice(makers)() for _ in range(rng.randint(0, 3))],
            flags=rng.sample(["PRIORITY", "FAVORITE", "REVIEW"], rng.randint(1, 2))
            if rng.random() < 0.15
            else [],
            statuses=rng.sample(STATUSES, rng.randint(1, 2)) if rng.random() < 0.15 else [],
            library_id=library_id if rng.random() < 0.2 else "",
            sort_by=rng.choice(sorts),
            sort_desc=rng.random() < 0.5,
        )
        out.append((query, rng.choice([1, 1, 3, 20]), rng.choice([7, 50, 100])))
    return out


async def test_filter_and_sort_agree_with_brute_force_on_two_thousand_molecules(world: World) -> None:
    rng = random.Random(2024)
    org = str(uuid.uuid4())
    alice, bob = person(org), person(org, "pharma_admin")
    await register_nci(world, org, 2100, rng)
    await add_values(world, org, "PREDICTED", "logp", 0.3, 1)
    await add_values(world, org, "EXPERIMENTAL", "logp", 0.1, 2)
    await add_values(world, org, "PREDICTED", "solubility", 0.4, 3)
    ids = [str(r.id) for r in await world.rows("SELECT id FROM molecules WHERE organization_id = :o", o=org)]
    assert len(ids) > 1900
    for molecule_id in rng.sample(ids, 60):  # through the service: events, index refresh
        await world.service.delete(alice, molecule_id)
    for who in (alice, bob):
        for molecule_id in rng.sample(ids, 80):
            flag = rng.choice(["FAVORITE", "REVIEW", "PRIORITY"])
            await world.service.set_flag(who, molecule_id, flag, "HIGH" if flag == "PRIORITY" else "")
    await world.execute(
        "UPDATE molecules SET status = 'TESTING' WHERE id = ANY(CAST(:ids AS uuid[]))",
        ids=rng.sample(ids, 30),
    )
    library_id = await create_library(world, org, alice, rng.sample(ids, 500))
    await world.index.refresh(org, ids)  # what the SQL above changed (its writers would send events)
    rows = await oracle_rows(world, org)
    for query, page, size in queries_for(rng, rows, library_id):
        who = rng.choice([alice, bob])
        views, total = await world.service.list_molecules(who, query, PageRequest.of(page, size))
        assert ([v.id for v in views], total) == oracle.evaluate(rows, query, who.subject, page, size), query
    # a fresh replica (full load) answers the same
    replica = MoleculeService(molecule_transactions(world.engine), QueryIndex(world.engine))
    for query, page, size in queries_for(rng, rows, library_id)[:20]:
        views, total = await replica.list_molecules(alice, query, PageRequest.of(page, size))
        assert ([v.id for v in views], total) == oracle.evaluate(rows, query, alice.subject, page, size)


async def test_effective_value_follows_source_precedence(world: World) -> None:
    org = str(uuid.uuid4())
    alice = person(org)
    made = await world.service.create(alice, NewMolecule("CCO", "ethanol", [PropertyInput("logp", 1.0)]))
    logp = parse_query(filters=[RawFilter("logp", "eq", 1.0)])
    assert await ids_of(world, alice, logp) == [made.id]  # IMPORTED beats CALCULATED (-0.0014)
    await world.execute(
        "INSERT INTO molecule_properties (molecule_id, name, source, value_num) "
        "VALUES (:m, 'logp', 'PREDICTED', 3),"
        " (:m, 'logp', 'EXPERIMENTAL', 2)",
        m=made.id,
    )
    await world.index.refresh(org, [made.id])
    assert await ids_of(world, alice, logp) == []
    assert await ids_of(world, alice, parse_query(filters=[RawFilter("logp", "eq", 2)])) == [made.id]
    for source, value in (("CALCULATED", -0.0014), ("IMPORTED", 1), ("PREDICTED", 3), ("EXPERIMENTAL", 2)):
        query = parse_query(filters=[RawFilter("logp", "eq", value, source)])
        assert await ids_of(world, alice, query) == [made.id], source
    view = await world.service.get(alice, made.id)
    assert {(p.name, p.source) for p in view.properties if p.name == "logp"} == {
        ("logp", s) for s in ("CALCULATED", "IMPORTED", "PREDICTED", "EXPERIMENTAL")
    }


async def ids_of(world: World, who: Principal, query: MoleculeQuery) -> list[str]:
    views, _ = await world.service.list_molecules(who, query, PageRequest.of(1, 100))
    return [v.id for v in views]


async def test_archived_molecules_leave_lists_unless_asked_for(world: World) -> None:
    org = str(uuid.uuid4())
    alice = person(org)
    kept = await world.service.create(alice, NewMolecule("c1ccccc1", "benzene"))
    gone = await world.service.create(alice, NewMolecule("CCN", "ethylamine"))
    archived = await world.service.delete(alice, gone.id)
    assert archived.status == "ARCHIVED"
    assert (await world.service.delete(alice, gone.id)).status == "ARCHIVED"  # twice: no error
    assert await ids_of(world, alice, parse_query()) == [kept.id]
    assert await ids_of(world, alice, parse_query(statuses=["ARCHIVED"])) == [gone.id]
    assert (await world.service.get(alice, gone.id)).status == "ARCHIVED"  # still on record
    back = await world.service.update(alice, gone.id, status="AVAILABLE")
    assert back.status == "AVAILABLE" and len(await ids_of(world, alice, parse_query())) == 2


async def test_flags_are_per_user(world: World) -> None:
    org = str(uuid.uuid4())
    alice, bob = person(org), person(org)
    made = await world.service.create(alice, NewMolecule("CC(=O)Oc1ccccc1C(=O)O", "aspirin"))
    with pytest.raises(ValidationError) as no_level:
        await world.service.set_flag(alice, made.id, "PRIORITY")
    assert dict(no_level.value.field_violations)["level"].startswith("PRIORITY needs a level")
    with pytest.raises(ValidationError):
        await world.service.set_flag(alice, made.id, "FAVORITE", "HIGH")
    view = await world.service.set_flag(alice, made.id, "PRIORITY", "HIGH", "order more")
    assert [(f.type, f.level, f.notes, f.user_id) for f in view.flags] == [
        ("PRIORITY", "HIGH", "order more", alice.subject)
    ]
    assert (await world.service.get(bob, made.id)).flags == []
    priority = parse_query(flags=["PRIORITY"])
    assert await ids_of(world, alice, priority) == [made.id] and await ids_of(world, bob, priority) == []
    await world.service.set_flag(alice, made.id, "PRIORITY", "LOW")  # replaces
    assert [f.level for f in (await world.service.get(alice, made.id)).flags] == ["LOW"]
    assert (await world.service.delete_flag(alice, made.id, "PRIORITY")).flags == []
    await world.service.delete_flag(alice, made.id, "PRIORITY")  # not set: no error
    assert await ids_of(world, alice, priority) == []


async def test_another_organization_gets_404_everywhere(world: World) -> None:
    org_a, org_b = str(uuid.uuid4()), str(uuid.uuid4())
    alice, mallory = person(org_a), person(org_b, "pharma_admin")
    made = await world.service.create(alice, NewMolecule("CCOC(=O)C", "ethyl acetate"))
    library_id = await create_library(world, org_a, alice, [made.id])
    attempts = [
        world.service.get(mallory, made.id),
        world.service.update(mallory, made.id, name="mine now"),
        world.service.delete(mallory, made.id),
        world.service.image(mallory, made.id, "svg", 0, 0),
        world.service.set_flag(mallory, made.id, "FAVORITE"),
        world.service.delete_flag(mallory, made.id, "FAVORITE"),
        world.service.list_molecules(mallory, parse_query(library_id=library_id), PageRequest.of(1, 10)),
    ]
    for attempt in attempts:
        with pytest.raises(NotFoundError):
            await attempt
    assert await ids_of(world, mallory, parse_query()) == []
    # the same structure in organization B is B's own molecule
    theirs = await world.service.create(mallory, NewMolecule("CCOC(=O)C"))
    assert theirs.id != made.id and await ids_of(world, mallory, parse_query()) == [theirs.id]
    assert (await world.service.get(alice, made.id)).name == "ethyl acetate"


async def test_roles_decide_who_writes(world: World) -> None:
    org = str(uuid.uuid4())
    alice, auditor, cro = person(org), person(org, "auditor"), person(org, "cro_admin", kind="CRO")
    made = await world.service.create(alice, NewMolecule("CCCl"))
    for who in (auditor, cro):
        with pytest.raises(AuthorizationError):
            await world.service.create(who, NewMolecule("CCBr"))
        with pytest.raises(AuthorizationError):
            await world.service.set_flag(who, made.id, "FAVORITE")
        assert (await world.service.get(who, made.id)).id == made.id  # reading is for every member
    admin = person(org, "system_admin")
    assert (await world.service.update(admin, made.id, name="chloroethane")).name == "chloroethane"


async def test_create_merges_validates_and_is_idempotent(world: World) -> None:
    org = str(uuid.uuid4())
    alice = person(org)
    first = await world.service.create(
        alice, NewMolecule("[Na+].CC(=O)[O-]", "sodium acetate"), request_id="r1"
    )
    again = await world.service.create(alice, NewMolecule("[Na+].CC(=O)[O-]", "other"), request_id="r1")
    assert again.id == first.id and again.canonical_smiles == "CC(=O)O"
    merged = await world.service.create(
        alice, NewMolecule("CC(O)=O", "acetic acid", [PropertyInput("ic50", 5)])
    )
    assert merged.id == first.id and merged.name == "sodium acetate"
    assert ("ic50", 5.0, "nM", "IMPORTED") in {
        (p.name, p.value, p.units, p.source) for p in merged.properties
    }
    problems = {
        "molecule.smiles": NewMolecule("C1CC"),
        "molecule.properties[0].value": NewMolecule("CC", properties=[PropertyInput("logp", 99)]),
        "molecule.properties[0].name": NewMolecule("CC", properties=[PropertyInput("colour", 1)]),
        "molecule.properties[0].units": NewMolecule("CC", properties=[PropertyInput("ic50", 1, "uM")]),
        "molecule.properties[0].source": NewMolecule(
            "CC", properties=[PropertyInput("ic50", 1, source="PREDICTED")]
        ),
        "molecule.name": NewMolecule("CC", "x" * 501),
    }
    for field_name, new in problems.items():
        with pytest.raises(ValidationError) as error:
            await world.service.create(alice, new)
        assert field_name in dict(error.value.field_violations), field_name
    with pytest.raises(ValidationError) as ranged:
        await world.service.create(alice, NewMolecule("CC", properties=[PropertyInput("logp", 99)]))
    assert "logp" in ranged.value.message


async def test_batch_create_reports_each_molecule(world: World) -> None:
    org = str(uuid.uuid4())
    alice = person(org)
    batch = [
        NewMolecule("CCO", "ethanol"),
        NewMolecule("not a smiles"),
        NewMolecule("OCC", "again"),
        NewMolecule("CCN", properties=[PropertyInput("tpsa", -1)]),
        NewMolecule("c1ccncc1", "pyridine", [PropertyInput("custom_batch", "B7")]),
    ]
    outcomes = await world.service.batch_create(alice, batch, request_id="b1")
    assert [o.outcome for o in outcomes] == ["registered", "rejected", "merged", "rejected", "registered"]
    assert outcomes[0].molecule_id == outcomes[2].molecule_id and outcomes[1].molecule_id == ""
    assert outcomes[1].reason.startswith("smiles:") and "tpsa" in outcomes[3].reason
    assert await world.service.batch_create(alice, batch, request_id="b1") == outcomes
    assert len(await ids_of(world, alice, parse_query())) == 2
    with pytest.raises(ValidationError):
        await world.service.batch_create(alice, [])
    with pytest.raises(ValidationError):
        await world.service.batch_create(alice, [NewMolecule("C")] * 1001)


async def test_update_sets_imported_values_and_guards_status(world: World) -> None:
    org = str(uuid.uuid4())
    alice = person(org)
    made = await world.service.create(alice, NewMolecule("CCCCO", "butanol", [PropertyInput("ic50", 40)]))
    updated = await world.service.update(
        alice,
        made.id,
        name="1-butanol",
        values=[
            PropertyInput("ic50", None),
            PropertyInput("solubility", "12.5"),
            PropertyInput("custom_note", "ok"),
        ],
    )
    values = {(p.name, p.source): p.value for p in updated.properties if p.source == "IMPORTED"}
    assert values == {("solubility", "IMPORTED"): 12.5, ("custom_note", "IMPORTED"): "ok"}
    assert updated.name == "1-butanol" and updated.updated_at > made.updated_at
    assert await ids_of(world, alice, parse_query(filters=[RawFilter("solubility", "gt", 12)])) == [made.id]
    with pytest.raises(ValidationError) as ranged:
        await world.service.update(alice, made.id, values=[PropertyInput("solubility", 5000)])
    assert "solubility" in ranged.value.message and "properties[0].value" in dict(
        ranged.value.field_violations
    )
    with pytest.raises(ValidationError) as reserved:
        await world.service.update(alice, made.id, status="TESTING")
    assert reserved.value.detail == "STATUS_RESERVED"
    await world.execute("UPDATE molecules SET status = 'PENDING' WHERE id = :m", m=made.id)
    with pytest.raises(PreconditionError):
        await world.service.delete(alice, made.id)


async def test_pictures_are_svg_or_png_within_bounds(world: World) -> None:
    org = str(uuid.uuid4())
    alice = person(org)
    made = await world.service.create(alice, NewMolecule("c1ccccc1O", "phenol"))
    svg = await world.service.image(alice, made.id, "", 0, 0)
    assert svg.content_type == "image/svg+xml" and b"<svg" in svg.data and b"width='300px'" in svg.data
    png = await world.service.image(alice, made.id, "PNG", 120, 80)
    assert png.content_type == "image/png" and png.data.startswith(b"\x89PNG")
    for fmt, width, height, field_name in (
        ("gif", 0, 0, "format"),
        ("svg", 49, 100, "width"),
        ("svg", 100, 2001, "height"),
    ):
        with pytest.raises(ValidationError) as error:
            await world.service.image(alice, made.id, fmt, width, height)
        assert field_name in dict(error.value.field_violations)


async def test_another_replica_follows_changes_from_the_bus(world: World, nats_server: Any) -> None:
    org = str(uuid.uuid4())
    alice = person(org)
    made = await world.service.create(alice, NewMolecule("CC(C)O", "isopropanol"))
    replica = QueryIndex(world.engine)
    other = MoleculeService(molecule_transactions(world.engine), replica)
    nats = await connect(nats_server.url)
    js = nats.jetstream()
    await ensure_streams(js)
    relay = OutboxRelay(world.engine, SCHEMA, js, poll_interval=0.1)
    tasks = [asyncio.create_task(relay.run()), asyncio.create_task(follow_changes(replica, nats_server.url))]
    try:
        assert await ids_of_service(other, alice, parse_query()) == [made.id]
        await world.service.update(alice, made.id, name="propan-2-ol")  # on the first replica
        added = await world.service.create(alice, NewMolecule("CCCC", "butane"))
        named = parse_query(filters=[RawFilter("name", "eq", "propan-2-ol")])
        for _ in range(200):
            if (
                await ids_of_service(other, alice, named)
                and len(await ids_of_service(other, alice, parse_query())) == 2
            ):
                break
            await asyncio.sleep(0.05)
        assert await ids_of_service(other, alice, named) == [made.id]
        assert set(await ids_of_service(other, alice, parse_query())) == {made.id, added.id}
    finally:
        relay.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await nats.close()


async def ids_of_service(service: MoleculeService, who: Principal, query: MoleculeQuery) -> list[str]:
    views, _ = await service.list_molecules(who, query, PageRequest.of(1, 100))
    return [v.id for v in views]


async def test_servicer_speaks_the_issue_json(world: World) -> None:
    key = Ed25519PrivateKey.generate()
    jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(key.public_key()))
    jwk["kid"] = "test"

    async def jwks() -> dict[str, Any]:
        return {"keys": [jwk]}

    class NoApiKeys:
        async def resolve_api_key(self, secret: str) -> Principal:
            raise AssertionError("no API keys here")

    org = str(uuid.uuid4())
    token = jwt.encode(
        {
            "sub": "user-1",
            "org": org,
            "org_kind": "PHARMA",
            "roles": ["pharma_scientist"],
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": 1_700_000_000,
            "exp": 4_000_000_000,
        },
        key,
        algorithm="EdDSA",
        headers={"kid": "test"},
    )
    port = free_port()
    settings = Settings.from_env("molecule", {"MOLBRIDGE_MOLECULE_ADDR": f"127.0.0.1:{port}"})
    process = Process(
        servicers=[(pb_grpc.add_MoleculeServiceServicer_to_server, MoleculeServicer(world.service))],
        authenticator=Authenticator(TokenVerifier(jwks), NoApiKeys()),
    )
    async with running("molecule", process, settings):
        auth = [("authorization", f"Bearer {token}")]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.MoleculeServiceStub(channel)
            created = await stub.CreateMolecule(
                pb.CreateMoleculeRequest(
                    molecule=pb.NewMolecule(
                        smiles="CC(=O)Nc1ccc(O)cc1",
                        name="paracetamol",
                        properties=[
                            molecule_pb2.Property(name="ic50", value=struct_pb2.Value(number_value=250))
                        ],
                    )
                ),
                metadata=auth,
            )
            body = json_format.MessageToDict(created, preserving_proto_field_name=True)["data"]
            assert {
                "id",
                "registration_number",
                "name",
                "smiles",
                "canonical_smiles",
                "inchi_key",
                "formula",
                "molecular_weight",
                "status",
                "properties",
                "created_at",
                "updated_at",
            } <= set(body)
            assert body["status"] == "AVAILABLE" and body["formula"] == "C8H9NO2"
            assert {
                "name": "ic50",
                "value": 250.0,
                "units": "nM",
                "source": "IMPORTED",
            } in body["properties"]
            found = await stub.FilterMolecules(
                pb.FilterMoleculesRequest(
                    filters=[
                        pb.PropertyFilter(
                            property="ic50",
                            operator="lt",
                            value=struct_pb2.Value(string_value="300"),
                        )
                    ],
                    sort_by="molecular_weight",
                    page_size=10,
                ),
                metadata=auth,
            )
            assert [m.id for m in found.data] == [body["id"]] and found.meta.total == 1
            with pytest.raises(grpc.aio.AioRpcError) as unknown:
                await stub.FilterMolecules(
                    pb.FilterMoleculesRequest(filters=[pb.PropertyFilter(property="colour", operator="eq")]),
                    metadata=auth,
                )
            assert unknown.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            listed = await stub.ListMolecules(pb.ListMoleculesRequest(page_size=5), metadata=auth)
            assert listed.meta.total == 1 and listed.meta.page_size == 5
            flagged = await stub.SetFlag(
                pb.SetFlagRequest(
                    molecule_id=body["id"],
                    type=molecule_pb2.Flag.PRIORITY,
                    level=molecule_pb2.Flag.MEDIUM,
                ),
                metadata=auth,
            )
            assert flagged.data.flags[0].level == molecule_pb2.Flag.MEDIUM
            picture = await stub.GetMoleculeImage(
                pb.GetMoleculeImageRequest(id=body["id"], format="png"), metadata=auth
            )
            assert picture.content_type == "image/png"
            definitions = await stub.ListPropertyDefinitions(
                pb.ListPropertyDefinitionsRequest(), metadata=auth
            )
            ic50 = next(d for d in definitions.data if d.name == "ic50")
            assert (ic50.units, ic50.max_value, ic50.predictable) == ("nM", 1e6, True)
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await stub.GetMolecule(pb.GetMoleculeRequest(id=str(uuid.uuid4())), metadata=auth)
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
            archived = await stub.DeleteMolecule(pb.DeleteMoleculeRequest(id=body["id"]), metadata=auth)
            assert archived.data.status == molecule_pb2.Molecule.ARCHIVED
