"""Structure search (SearchService, SearchIndexSync) on a real PostgreSQL and NATS.

Molecules of rdkit's NCI sample are registered the way an import does (chemistry.register_many, then the
molecule repository, recording MoleculesChanged) before the index starts; the index then loads them from PostgreSQL and
follows MoleculesChanged from the outbox. Every answer is compared with brute-force RDKit over the rows read
back from PostgreSQL: Tanimoto of the stored fingerprints (DataStructs) and HasSubstructMatch of the stored
canonical SMILES.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import rdkit
import sqlalchemy as sa
from google.protobuf import struct_pb2
from molbridge.molecule.v1 import molecule_pb2, molecule_service_pb2
from molbridge.molecule.v1 import search_service_pb2 as pb
from molbridge.molecule.v1 import search_service_pb2_grpc as pb_grpc
from rdkit import Chem, DataStructs
from sqlalchemy.ext.asyncio import AsyncEngine

from bus import OutboxRelay, connect, ensure_streams
from services.molecule.domain import chemistry
from services.molecule.domain.events import molecules_changed
from services.molecule.domain.imports import StructureRow
from services.molecule.index.columnar import QueryIndex
from services.molecule.index.matcher import StructureMatcher
from services.molecule.index.query import RawFilter, parse_query
from services.molecule.index.query_sync import follow_changes
from services.molecule.index.search_index import SearchIndex
from services.molecule.index.search_sync import SearchIndexSync
from services.molecule.server.search import SearchServicer
from services.molecule.service.molecules import MoleculeService
from services.molecule.service.search import WARMING_UP, Budgets, SearchOutcome, SearchService
from services.molecule.store.tables import SCHEMA
from services.molecule.store.uow import MoleculeTransactions, molecule_transactions
from services.runtime import migrations
from services.runtime.auth import Authenticator, Principal, TokenVerifier
from services.runtime.db import make_engine
from services.runtime.errors import IntegrationError, NotFoundError, ValidationError
from services.runtime.process import Process, running
from services.runtime.settings import Settings
from stack.ports import free_port
from tests.integration.molecule_imports import scientist
from tests.integration.test_molecule_import_rpc import NoApiKeys, Tokens, error_reason
from tests.waiting import eventually_async as eventually

MIGRATIONS = Path(chemistry.__file__).parents[1] / "migrations"
NCI = Path(rdkit.__file__).parent / "Data" / "NCI" / "first_5K.smi"
ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"
ASPIRIN_SODIUM = "CC(=O)Oc1ccccc1C(=O)[O-].[Na+]"
SUBSTRUCTURES = {
    "smarts": ["c1ccccc1", "C(=O)[OH]", "[#7;R]", "[Cl,Br]", "c1ccc2ccccc2c1", "[r5]"],
    "smiles": ["c1ccncc1", "C1CCCCC1", "OC(=O)C"],
}


@dataclass
class Stored:
    id: str
    smiles: str
    morgan: DataStructs.ExplicitBitVect
    mol: Chem.Mol
    molecular_weight: float


@dataclass
class World:
    engine: AsyncEngine
    uow: MoleculeTransactions
    queries: QueryIndex
    index: SearchIndex
    sync: SearchIndexSync
    matcher: StructureMatcher
    service: SearchService
    molecules: MoleculeService
    org: str
    other_org: str
    alice: Principal

    async def execute(self, statement: str, **params: Any) -> Any:
        async with self.uow() as uow:
            return await uow.session.execute(sa.text(statement), params)

    async def stored(self, org: str) -> list[Stored]:
        """The organization's live molecules as PostgreSQL has them: the oracle's data."""
        rows = await self.execute(
            "SELECT id::text, canonical_smiles, morgan_fp, molecular_weight FROM molecules "
            "WHERE organization_id = :org AND status <> 'ARCHIVED'",
            org=org,
        )
        return [
            Stored(r[0], r[1], chemistry.unpack_fingerprint(bytes(r[2])), Chem.MolFromSmiles(r[1]), r[3])
            for r in rows
        ]

    def search_as(self, budgets: Budgets) -> SearchService:
        return SearchService(
            self.uow, self.index, self.queries, matcher=self.matcher, is_ready=self.sync.is_ready, budgets=budgets
        )


def nci_smiles(start: int, count: int) -> list[str]:
    lines = [line.split()[0] for line in NCI.read_text().splitlines() if line.strip()]
    return lines[start : start + count]


async def register(engine: AsyncEngine, org: str, smiles: list[str]) -> list[str]:
    """Register valid structures the way an import does; returns the molecule ids (outbox events included)."""
    structures = await asyncio.to_thread(chemistry.register_many, smiles)
    rows = [
        StructureRow(i + 1, s, f"M{i}", {})
        for i, s in enumerate(structures)
        if not isinstance(s, chemistry.InvalidStructure)
    ]
    async with molecule_transactions(engine)() as uow:  # as an import chunk does
        result = await uow.molecules.register(rows, organization_id=org, actor_id="importer")
        for event in molecules_changed(org, result.molecule_ids):
            uow.record(event, organization_id=org, actor_id="importer")
    return result.molecule_ids



@pytest.fixture(scope="module")
async def world(postgres_server: Any, nats_server: Any) -> AsyncIterator[World]:
    url = postgres_server.create_database()
    migrations.upgrade(url, SCHEMA, MIGRATIONS)
    engine = make_engine(url, SCHEMA)
    uow = molecule_transactions(engine)
    org, other_org = str(uuid.uuid4()), str(uuid.uuid4())
    # Registered before the index starts: the load from PostgreSQL must find them.
    await register(engine, org, [*nci_smiles(0, 700), ASPIRIN])
    await register(engine, other_org, [*nci_smiles(700, 60), ASPIRIN])
    queries = QueryIndex(engine)
    index = SearchIndex()
    sync = SearchIndexSync(engine, index, nats_server.url)
    matcher = StructureMatcher()
    nats = await connect(nats_server.url)
    js = nats.jetstream()
    await ensure_streams(js)
    relay = OutboxRelay(engine, SCHEMA, js, poll_interval=0.05)
    tasks = [
        asyncio.create_task(relay.run()),
        asyncio.create_task(follow_changes(queries, nats_server.url)),
        asyncio.create_task(sync.run()),
    ]
    world = World(
        engine,
        uow,
        queries,
        index,
        sync,
        matcher,
        SearchService(uow, index, queries, matcher=matcher, is_ready=sync.is_ready),
        MoleculeService(molecule_transactions(engine), queries),
        org,
        other_org,
        scientist(org),
    )
    try:
        await asyncio.wait_for(sync.loaded.wait(), 60)
        yield world
    finally:
        relay.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await nats.close()
        await matcher.close()
        await engine.dispose()
        postgres_server.drop_database(url.rsplit("/", 1)[1])


def similar_oracle(stored: list[Stored], query: str, threshold: float, limit: int) -> list[tuple[str, float]]:
    fp = chemistry.unpack_fingerprint(chemistry.register(query).morgan_fp)
    sims = DataStructs.BulkTanimotoSimilarity(fp, [s.morgan for s in stored])
    hits = sorted(((-sim, s.id) for s, sim in zip(stored, sims, strict=True) if sim >= threshold))
    return [(i, -negative) for negative, i in hits[:limit]]


def assert_same_hits(outcome: SearchOutcome, expected: list[tuple[str, float]]) -> None:
    assert [h.molecule.id for h in outcome.hits] == [i for i, _ in expected]
    assert [h.similarity for h in outcome.hits] == pytest.approx([s for _, s in expected], abs=1e-9)


def substructure_oracle(stored: list[Stored], pattern: Chem.Mol) -> set[str]:
    return {s.id for s in stored if s.mol.HasSubstructMatch(pattern)}


async def test_the_index_is_loaded_from_postgresql_at_start(world: World) -> None:
    stored = await world.stored(world.org)
    assert world.index.size(world.org) == len(stored) > 600
    assert world.index.size(world.other_org) == len(await world.stored(world.other_org))
    assert world.sync.is_ready(world.org) and world.sync.is_ready(str(uuid.uuid4()))


async def test_similarity_agrees_with_brute_force(world: World) -> None:
    stored = await world.stored(world.org)
    queries = [s.smiles for s in stored[:: len(stored) // 6]]
    queries += [ASPIRIN, "c1ccccc1O", "CCN(CC)CCOC(=O)c1ccccc1"]
    for query in queries:
        for threshold, limit in ((0.7, 50), (0.4, 1000), (0.25, 7)):
            outcome = await world.service.similar(world.alice, query, threshold=threshold, limit=limit)
            expected = similar_oracle(stored, query, threshold, limit)
            assert_same_hits(outcome, expected)
            assert not outcome.truncated and outcome.total == len(expected) and outcome.limit == limit
    default = await world.service.similar(world.alice, stored[0].smiles)
    assert default.limit == 50 and default.hits[0].molecule.id == stored[0].id
    assert default.hits[0].similarity == 1.0
    assert all(h.similarity >= 0.7 for h in default.hits)


async def test_a_salt_form_finds_its_parent(world: World) -> None:
    aspirin = chemistry.register(ASPIRIN).inchi_key
    similar = await world.service.similar(world.alice, ASPIRIN_SODIUM, threshold=0.99)
    assert [(h.molecule.inchi_key, h.similarity) for h in similar.hits] == [(aspirin, 1.0)]
    for found in (
        await world.service.exact(world.alice, smiles=ASPIRIN_SODIUM),
        await world.service.exact(world.alice, inchi_key=aspirin),
        await world.service.exact(world.alice, inchi_key=aspirin.lower()),
    ):
        assert [(m.inchi_key, m.organization_id) for m in found] == [(aspirin, world.org)]
    assert await world.service.exact(world.alice, smiles="C1CCCCCCCCCCCCCCCCC1") == []


async def test_substructure_agrees_with_brute_force(world: World) -> None:
    stored = await world.stored(world.org)
    for kind, patterns in SUBSTRUCTURES.items():
        for text in patterns:
            pattern = chemistry.substructure_query(text, kind="smarts" if kind == "smarts" else "smiles")
            expected = substructure_oracle(stored, pattern)
            assert expected, text
            every = await world.service.substructure(world.alice, limit=1000, **{kind: text})
            assert {h.molecule.id for h in every.hits} == expected, text
            assert every.total == len(expected) and not every.truncated
            few = await world.service.substructure(world.alice, limit=3, **{kind: text})
            assert len(few.hits) == min(3, len(expected)) and {h.molecule.id for h in few.hits} <= expected
            assert few.truncated == (len(expected) > 3) and few.total <= len(expected)
    # smarts wins over smiles when both are given
    both = await world.service.substructure(world.alice, smarts="[Cl,Br]", smiles="c1ccncc1", limit=1000)
    assert {h.molecule.id for h in both.hits} == substructure_oracle(stored, Chem.MolFromSmarts("[Cl,Br]"))


async def test_filters_restrict_every_search(world: World) -> None:
    stored = await world.stored(world.org)
    light = [s for s in stored if s.molecular_weight < 250]
    query = parse_query(filters=[RawFilter("molecular_weight", "lt", 250)])
    for text in (stored[3].smiles, "c1ccccc1O"):
        outcome = await world.service.similar(world.alice, text, threshold=0.3, limit=1000, query=query)
        assert_same_hits(outcome, similar_oracle(light, text, 0.3, 1000))
    benzene = Chem.MolFromSmarts("c1ccccc1")
    outcome = await world.service.substructure(world.alice, smarts="c1ccccc1", limit=1000, query=query)
    assert {h.molecule.id for h in outcome.hits} == substructure_oracle(light, benzene)
    # a library the caller owns, and the caller's own flags
    members = [s.id for s in stored[:40]]
    library_id = str(uuid.uuid4())
    await world.execute(
        "INSERT INTO libraries (id, organization_id, owner_id, name) VALUES (:id, :org, :owner, 'search')",
        id=library_id,
        org=world.org,
        owner=world.alice.subject,
    )
    await world.execute(
        "INSERT INTO library_molecules (library_id, molecule_id, added_by) "
        "SELECT :lib, unnest(CAST(:ids AS uuid[])), 'test'",
        lib=library_id,
        ids=members,
    )
    await world.execute(
        "INSERT INTO flags (molecule_id, user_id, type) "
        "SELECT unnest(CAST(:ids AS uuid[])), :user, 'FAVORITE'",
        ids=members[:10],
        user=world.alice.subject,
    )
    await world.queries.refresh(world.org, members)  # read-your-writes, as the library service does
    in_library = parse_query(library_id=library_id)
    outcome = await world.service.substructure(world.alice, smarts="*", limit=1000, query=in_library)
    assert {h.molecule.id for h in outcome.hits} == set(members)
    favorites = parse_query(flags=["FAVORITE"])
    outcome = await world.service.similar(world.alice, stored[0].smiles, threshold=0.0001, query=favorites)
    assert {h.molecule.id for h in outcome.hits} <= set(members[:10]) and outcome.hits
    assert stored[0].id in {h.molecule.id for h in outcome.hits}
    assert await world.service.exact(world.alice, smiles=stored[0].smiles, query=favorites)
    assert not await world.service.exact(world.alice, smiles=stored[50].smiles, query=favorites)
    # another user of the organization has no flags; a private library is not theirs to search
    bob = scientist(world.org)
    assert not (await world.service.similar(bob, stored[0].smiles, threshold=0.0001, query=favorites)).hits
    with pytest.raises(NotFoundError):
        await world.service.similar(bob, stored[0].smiles, query=in_library)


async def test_another_organization_is_never_seen(world: World) -> None:
    aspirin = chemistry.register(ASPIRIN).inchi_key
    bob = scientist(world.other_org)
    for who, org in ((world.alice, world.org), (bob, world.other_org)):
        hits = (await world.service.similar(who, ASPIRIN, threshold=0.2, limit=1000)).hits
        assert hits and {h.molecule.organization_id for h in hits} == {org}
        hits = (await world.service.substructure(who, smarts="*", limit=1000)).hits
        assert len(hits) == len(await world.stored(org))
        assert {h.molecule.organization_id for h in hits} == {org}
        found = await world.service.exact(who, inchi_key=aspirin)
        assert [m.organization_id for m in found] == [org]
    stranger = scientist(str(uuid.uuid4()))
    assert not (await world.service.similar(stranger, ASPIRIN, threshold=0.1)).hits
    assert not (await world.service.substructure(stranger, smarts="*")).hits
    assert not await world.service.exact(stranger, inchi_key=aspirin)


async def test_changes_reach_the_index_through_the_bus(world: World) -> None:
    new = await register(world.engine, world.org, ["CCCCCCCCCCCCCCCCCCCCO", "OCCCCCCCCCCCCCCCCCCCCCCCCO"])
    assert len(new) == 2

    async def found() -> bool:
        outcome = await world.service.substructure(world.alice, smarts="[CH2]" * 8 + "O")
        return {h.molecule.id for h in outcome.hits} >= set(new)

    await eventually(found)
    # an archive: gone from the results at once (hits are re-read), and from the index once the event is in
    await world.molecules.delete(world.alice, new[0])
    outcome = await world.service.similar(world.alice, "CCCCCCCCCCCCCCCCCCCCO", threshold=0.99)
    assert new[0] not in {h.molecule.id for h in outcome.hits}

    async def removed() -> bool:
        result = await asyncio.to_thread(
            world.index.similar, world.org, chemistry.register("CCCCCCCCCCCCCCCCCCCCO").morgan_fp, 0.99
        )
        return new[0] not in {i for i, _ in result.hits}

    await eventually(removed)
    # and back again when reactivated
    await world.molecules.update(world.alice, new[0], status="AVAILABLE")

    async def back() -> bool:
        outcome = await world.service.similar(world.alice, "CCCCCCCCCCCCCCCCCCCCO", threshold=0.99)
        return new[0] in {h.molecule.id for h in outcome.hits}

    await eventually(back)
    # another organization's change does not leak into this one
    theirs = await register(world.engine, world.other_org, ["C" * 30 + "O"])

    async def theirs_found() -> bool:
        outcome = await world.service.similar(scientist(world.other_org), "C" * 30 + "O", threshold=0.99)
        return [h.molecule.id for h in outcome.hits] == theirs

    await eventually(theirs_found)
    mine = await world.service.similar(world.alice, "C" * 30 + "O", threshold=0.99)
    assert theirs[0] not in {h.molecule.id for h in mine.hits}


async def test_a_write_of_this_replica_is_searchable_at_once(world: World) -> None:
    new = await register(world.engine, world.org, ["OCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCO"])
    await world.sync.after_write(world.org, new)
    outcome = await world.service.exact(world.alice, smiles="OCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCO")
    assert [m.id for m in outcome] == new
    similar = await world.service.similar(world.alice, "OCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCO")
    # Long chains saturate Morgan fingerprints: other chains registered earlier may tie at 1.0 (ties go by id).
    assert (new[0], 1.0) in {(h.molecule.id, h.similarity) for h in similar.hits}


async def test_invalid_queries_name_the_problem(world: World) -> None:
    cases: list[tuple[Callable[[], Awaitable[Any]], str, str]] = [
        (lambda: world.service.similar(world.alice, "C1CC"), "smiles", "unclosed ring"),
        (lambda: world.service.similar(world.alice, "CC(C"), "smiles", "SMILES"),
        (lambda: world.service.similar(world.alice, ""), "smiles", "empty"),
        (lambda: world.service.similar(world.alice, "C" * 5000), "smiles", "too long"),
        (lambda: world.service.similar(world.alice, "CC", threshold=1.5), "threshold", "between 0 and 1"),
        (lambda: world.service.similar(world.alice, "CC", limit=1001), "limit", "1000"),
        (lambda: world.service.substructure(world.alice, smarts="[C"), "smarts", "SMARTS"),
        (lambda: world.service.substructure(world.alice, smiles="c1cc"), "smiles", "SMILES"),
        (lambda: world.service.substructure(world.alice), "smarts", "required"),
        (lambda: world.service.exact(world.alice), "smiles", "smiles or inchi_key"),
        (lambda: world.service.exact(world.alice, inchi_key="BSYNRYMUTXBXSQ"), "inchi_key", "InChIKey"),
        (lambda: world.service.exact(world.alice, smiles="CC", inchi_key="X"), "smiles", "not both"),
    ]
    for call, field_name, words in cases:
        with pytest.raises(ValidationError) as error:
            await call()
        violations = dict(error.value.field_violations)
        assert field_name in violations and words.lower() in violations[field_name].lower(), (
            field_name,
            violations,
        )


async def test_a_tiny_time_budget_truncates_and_says_so(world: World) -> None:
    hasty = world.search_as(Budgets(similarity_s=0.0, substructure_s=0.0))
    similar = await hasty.similar(world.alice, ASPIRIN, threshold=0.1)
    assert similar.truncated
    substructure = await hasty.substructure(world.alice, smarts="c1ccccc1")
    assert substructure.truncated and substructure.searched < len(await world.stored(world.org))


async def test_searches_wait_for_the_first_load(world: World) -> None:
    cold = SearchIndexSync(world.engine, SearchIndex(), "nats://127.0.0.1:1")  # never run: never loaded
    service = SearchService(
        world.uow, SearchIndex(), world.queries, matcher=world.matcher, is_ready=cold.is_ready
    )
    for call in (
        lambda: service.similar(world.alice, ASPIRIN),
        lambda: service.substructure(world.alice, smarts="c1ccccc1"),
    ):
        with pytest.raises(IntegrationError) as error:
            await call()
        assert error.value.detail == WARMING_UP
    assert [m.inchi_key for m in await service.exact(world.alice, smiles=ASPIRIN)] == [
        chemistry.register(ASPIRIN).inchi_key
    ]
    # a load of one organization makes that one ready
    await cold.load_all()
    assert cold.is_ready(world.org) and cold.stats.molecules_loaded == (
        len(await world.stored(world.org)) + len(await world.stored(world.other_org))
    )


async def test_the_servicer_speaks_the_contract(world: World) -> None:
    tokens = Tokens()
    port = free_port()
    settings = Settings.from_env("molecule", {"MOLBRIDGE_MOLECULE_ADDR": f"127.0.0.1:{port}"})
    process = Process(
        servicers=[(pb_grpc.add_SearchServiceServicer_to_server, SearchServicer(world.service))],
        authenticator=Authenticator(TokenVerifier(tokens.provide), NoApiKeys()),
    )
    async with running("molecule", process, settings):
        auth = tokens.metadata(world.alice)
        stored = await world.stored(world.org)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.SearchServiceStub(channel)
            similar = await stub.SearchSimilar(
                pb.SearchSimilarRequest(smiles=stored[0].smiles, threshold=0.3, limit=5), metadata=auth
            )
            assert similar.data[0].id == stored[0].id and similar.data[0].similarity == 1.0
            expected = similar_oracle(stored, stored[0].smiles, 0.3, 5)
            assert [m.id for m in similar.data] == [i for i, _ in expected]
            assert similar.meta.page == 1 and similar.meta.page_size == 5 and similar.meta.searched > 0
            heavy = molecule_service_pb2.PropertyFilter(
                property="molecular_weight",
                operator="gte",
                value=struct_pb2.Value(number_value=400),
            )
            substructure = await stub.SearchSubstructure(
                pb.SearchSubstructureRequest(
                    smarts="c1ccccc1",
                    limit=1000,
                    filters=[heavy],
                    status=[molecule_pb2.Molecule.AVAILABLE],
                ),
                metadata=auth,
            )
            benzene = Chem.MolFromSmarts("c1ccccc1")
            heavy_ones = [s for s in stored if s.molecular_weight >= 400]
            assert {m.id for m in substructure.data} == substructure_oracle(heavy_ones, benzene)
            assert substructure.meta.total == len(substructure.data) and not substructure.meta.truncated
            exact = await stub.SearchExact(pb.SearchExactRequest(smiles=ASPIRIN_SODIUM), metadata=auth)
            assert [m.canonical_smiles for m in exact.data] == [Chem.CanonSmiles(ASPIRIN)]
            with pytest.raises(grpc.aio.AioRpcError) as invalid:
                await stub.SearchSubstructure(pb.SearchSubstructureRequest(smarts="[C"), metadata=auth)
            assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "SMARTS" in (invalid.value.details() or "")
            assert error_reason(invalid.value) == "VALIDATION_ERROR"
            with pytest.raises(grpc.aio.AioRpcError) as unknown:
                await stub.SearchSimilar(
                    pb.SearchSimilarRequest(
                        smiles="CC",
                        filters=[molecule_service_pb2.PropertyFilter(property="colour", operator="eq")],
                    ),
                    metadata=auth,
                )
            assert unknown.value.code() == grpc.StatusCode.INVALID_ARGUMENT
