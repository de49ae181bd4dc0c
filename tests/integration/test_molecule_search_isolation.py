"""One organization's pathological substructure query cannot stall structure search (issue 8, item 1).

The attacker's organization holds large fused benzenoid sheets (~100-140 aromatic carbons) and asks for
another such sheet that does not fit in any of them: every candidate passes the fingerprint screen, and
RDKit's matcher backtracks for seconds to tens of seconds on each (measured: 6-19 s per candidate, about a
minute for the five), without any way to interrupt it. The matcher's worker processes are killed at the
budget instead, and the other organization is served meanwhile; served through gRPC in the process runtime,
a client that gives up frees its worker, and a wedged matcher makes health NOT_SERVING. Outcomes only: no
timings are asserted.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import rdkit
from grpc_health.v1 import health_pb2, health_pb2_grpc
from molbridge.molecule.v1 import search_service_pb2 as pb
from molbridge.molecule.v1 import search_service_pb2_grpc as pb_grpc
from rdkit import Chem

from services.molecule.bootstrap import MIGRATIONS
from services.molecule.domain import chemistry
from services.molecule.index.columnar import QueryIndex
from services.molecule.index.matcher import MatcherLimits, StructureMatcher
from services.molecule.index.query import parse_query
from services.molecule.index.search_index import SearchIndex
from services.molecule.index.search_sync import SearchIndexSync
from services.molecule.server.search import SearchServicer
from services.molecule.service.molecules import MoleculeService
from services.molecule.service.search import Budgets, SearchService
from services.molecule.store.tables import SCHEMA
from services.molecule.store.uow import MoleculeTransactions, molecule_transactions
from services.runtime.auth import Authenticator, Principal, TokenVerifier
from services.runtime.db import make_engine
from services.runtime.pagination import PageRequest
from services.runtime.process import Process, running
from services.runtime.settings import Settings
from stack.ports import free_port
from tests.integration.molecule_imports import scientist
from tests.integration.test_molecule_import_rpc import NoApiKeys, Tokens
from tests.integration.test_molecule_search import register
from tests.waiting import eventually_async as eventually

NCI = Path(rdkit.__file__).parent / "Data" / "NCI" / "first_5K.smi"
ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"


def benzenoid_sheet(columns: int, rows: int) -> str:
    """A graphene-like sheet: a brick-wall honeycomb of columns x rows carbons (columns even), written with
    one Kekulé structure (double bonds between columns 2k and 2k+1 of each row), as canonical SMILES."""
    sheet = Chem.RWMol()
    atom = {(i, j): sheet.AddAtom(Chem.Atom(6)) for j in range(rows) for i in range(columns)}
    for (i, j), a in atom.items():
        if i + 1 < columns:
            order = Chem.BondType.DOUBLE if i % 2 == 0 else Chem.BondType.SINGLE
            sheet.AddBond(a, atom[(i + 1, j)], order)
        if (i + j) % 2 == 0 and j + 1 < rows:
            sheet.AddBond(a, atom[(i, j + 1)], Chem.BondType.SINGLE)
    mol = sheet.GetMol()
    Chem.SanitizeMol(mol)
    return Chem.MolToSmiles(mol)


# 96 carbons that do not fit in any of the candidates (100-140 carbons, a different aspect ratio).
PATHOLOGICAL_QUERY = benzenoid_sheet(12, 8)
SHEETS = [benzenoid_sheet(10, rows) for rows in (10, 11, 12, 13, 14)]


@dataclass
class World:
    uow: MoleculeTransactions
    index: SearchIndex
    queries: QueryIndex
    matcher: StructureMatcher
    service: SearchService  # default budgets
    patient: SearchService  # a budget long enough to still be matching while the test looks
    hasty: SearchService  # half a second
    molecules: MoleculeService
    attacker: Principal
    bystander: Principal

    def search(self, budgets: Budgets, matcher: StructureMatcher | None = None) -> SearchService:
        return SearchService(self.uow, self.index, self.queries, matcher=matcher or self.matcher, budgets=budgets)


@pytest.fixture(scope="module")
async def world(postgres_server: Any) -> AsyncIterator[World]:
    url = postgres_server.create_database()
    MIGRATIONS.upgrade(url)
    engine = make_engine(url, SCHEMA)
    uow = molecule_transactions(engine)
    attacker, bystander = scientist(str(uuid.uuid4())), scientist(str(uuid.uuid4()))
    nci = [line.split()[0] for line in NCI.read_text().splitlines()[:80]]
    assert len(await register(engine, attacker.organization_id, [*SHEETS, *nci[:20]])) >= 20 + len(SHEETS)
    await register(engine, bystander.organization_id, [*nci[20:], ASPIRIN])
    index = SearchIndex()
    await SearchIndexSync(engine, index, "nats://unused").load_all()  # the load needs no bus
    queries = QueryIndex(engine)
    matcher = StructureMatcher(MatcherLimits(workers=2, per_organization=1))

    def service(budgets: Budgets) -> SearchService:
        return SearchService(uow, index, queries, matcher=matcher, budgets=budgets)

    try:
        yield World(
            uow,
            index,
            queries,
            matcher,
            service(Budgets()),
            service(Budgets(substructure_s=600.0)),
            service(Budgets(substructure_s=0.5)),
            MoleculeService(molecule_transactions(engine), queries),
            attacker,
            bystander,
        )
    finally:
        await matcher.close()
        await engine.dispose()
        postgres_server.drop_database(url.rsplit("/", 1)[1])



def process_exists(pid: int) -> bool:
    """True while the process exists, even as a zombie not yet reaped."""
    return Path(f"/proc/{pid}").exists()


def parent_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    raise AssertionError(f"no parent for {pid}")


def fully_staffed(matcher: StructureMatcher) -> Callable[[], bool]:
    return lambda: matcher.idle_workers == matcher.limits.workers and matcher.is_healthy()


def test_the_query_really_is_pathological() -> None:
    """Every sheet passes the fingerprint screen, so only RDKit's matcher can tell (and it takes long)."""
    query = chemistry.substructure_query(PATHOLOGICAL_QUERY, kind="smiles")
    assert query.GetNumAtoms() == 96 and all(a.GetIsAromatic() for a in query.GetAtoms() if a.GetDegree() > 1)
    screen = chemistry.unpack_fingerprint(chemistry.pattern_fingerprint(query))
    for sheet in SHEETS:
        candidate = chemistry.register(sheet)
        bits = chemistry.unpack_fingerprint(candidate.pattern_fp)
        assert (screen & bits) == screen and candidate.canonical_smiles


async def test_a_pathological_query_stops_at_its_budget_and_its_worker_is_replaced(world: World) -> None:
    await world.matcher.start()
    await eventually(fully_staffed(world.matcher))
    before, pids = world.matcher.replaced, set(world.matcher.pids)
    outcome = await world.hasty.substructure(world.attacker, smiles=PATHOLOGICAL_QUERY, limit=10)
    assert outcome.truncated and outcome.hits == [] and outcome.total == 0
    await eventually(fully_staffed(world.matcher))
    assert world.matcher.replaced == before + 1
    killed = pids - set(world.matcher.pids)
    assert len(killed) == 1
    await eventually(lambda: not process_exists(next(iter(killed))))
    # the replacement matches as well as ever
    benzene = await world.service.substructure(world.attacker, smarts="c1ccccc1", limit=1000)
    assert not benzene.truncated and len(benzene.hits) == benzene.total >= len(SHEETS)


async def test_other_organizations_are_served_while_a_pathological_query_runs(world: World) -> None:
    await eventually(fully_staffed(world.matcher))
    before = world.matcher.replaced
    heavy = asyncio.create_task(world.patient.substructure(world.attacker, smiles=PATHOLOGICAL_QUERY))
    await eventually(lambda: len(world.matcher.busy_pids(world.attacker.organization_id)) == 1)
    [busy] = world.matcher.busy_pids(world.attacker.organization_id)
    aspirin = chemistry.register(ASPIRIN).inchi_key
    # While it matches: the attacker's next query waits for its organization's one worker and gives up at its
    # budget; the bystander's calls of every kind are answered, substructure search included.
    second, substructure, similar, exact, (listed, total) = await asyncio.gather(
        world.hasty.substructure(world.attacker, smarts="c1ccccc1"),
        world.service.substructure(world.bystander, smarts="c1ccccc1", limit=1000),
        world.service.similar(world.bystander, ASPIRIN, threshold=0.9),
        world.service.exact(world.bystander, smiles=ASPIRIN),
        world.molecules.list_molecules(world.bystander, parse_query(), PageRequest.of(1, 10)),
    )
    assert second.truncated and second.hits == [] and second.searched == 0
    assert substructure.hits and not substructure.truncated
    assert {h.molecule.organization_id for h in substructure.hits} == {world.bystander.organization_id}
    assert [h.molecule.inchi_key for h in similar.hits] == [aspirin]
    assert [m.inchi_key for m in exact] == [aspirin]
    assert len(listed) == 10 and total == 61
    assert not heavy.done() and world.matcher.busy_pids(world.attacker.organization_id) == [busy]
    # The client gives up: the worker it held is killed rather than left matching for nobody.
    heavy.cancel()
    with pytest.raises(asyncio.CancelledError):
        await heavy
    await eventually(lambda: not process_exists(busy))
    await eventually(fully_staffed(world.matcher))
    assert world.matcher.replaced == before + 1


async def test_a_wedged_matcher_is_unhealthy_until_its_worker_is_gone_and_replaced(world: World) -> None:
    """A killed worker that cannot be reaped: its fork server (which reaps and starts workers) is stopped.
    The answer does not wait for it; the matcher reports the problem until the worker is replaced."""
    matcher = StructureMatcher(MatcherLimits(workers=1, per_organization=1), kill_grace_s=0.2)
    hasty = world.search(Budgets(substructure_s=0.5), matcher)
    await matcher.start()
    await eventually(fully_staffed(matcher))
    [worker] = matcher.pids
    fork_server = parent_of(worker)
    assert fork_server != os.getpid() and matcher.problem() is None
    try:
        os.kill(fork_server, signal.SIGSTOP)
        outcome = await hasty.substructure(world.attacker, smiles=PATHOLOGICAL_QUERY)
        assert outcome.truncated
        await eventually(lambda: not matcher.is_healthy())
        assert "killed and not exited or replaced" in (matcher.problem() or "")
        # meanwhile the organization's searches answer (truncated: there is no worker to match with)
        waiting = await hasty.substructure(world.bystander, smarts="c1ccccc1")
        assert waiting.truncated and waiting.searched == 0
    finally:
        os.kill(fork_server, signal.SIGCONT)
    await eventually(fully_staffed(matcher))
    assert matcher.replaced == 1 and worker not in matcher.pids
    healed = await hasty.substructure(world.bystander, smarts="c1ccccc1", limit=1000)
    assert healed.hits and not healed.truncated
    await matcher.close()


async def test_the_served_service_kills_for_a_client_that_left_and_reports_a_wedged_matcher(world: World) -> None:
    """Through gRPC, in the process runtime: a client that gives up (its deadline) frees the worker at once;
    a worker that cannot be reaped makes health NOT_SERVING until it is gone and replaced."""
    matcher = StructureMatcher(MatcherLimits(workers=1, per_organization=1), kill_grace_s=0.2)
    patient = world.search(Budgets(substructure_s=600.0), matcher)
    tokens, port = Tokens(), free_port()
    process = Process(
        servicers=[(pb_grpc.add_SearchServiceServicer_to_server, SearchServicer(patient))],
        authenticator=Authenticator(TokenVerifier(tokens.provide), NoApiKeys()),
        on_start=[matcher.start],
        on_stop=[matcher.close],
        liveness=[matcher.problem],
    )
    settings = Settings.from_env("molecule", {"MOLBRIDGE_MOLECULE_ADDR": f"127.0.0.1:{port}"})
    pathological = pb.SearchSubstructureRequest(smiles=PATHOLOGICAL_QUERY)
    async with running("molecule", process, settings), grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health, search = health_pb2_grpc.HealthStub(channel), pb_grpc.SearchServiceStub(channel)

        async def status() -> int:
            return (await health.Check(health_pb2.HealthCheckRequest(service=""))).status

        async def serving() -> bool:
            return await status() == health_pb2.HealthCheckResponse.SERVING

        async def not_serving() -> bool:
            return await status() == health_pb2.HealthCheckResponse.NOT_SERVING

        await eventually(serving)
        await eventually(fully_staffed(matcher))
        [worker] = matcher.pids
        with pytest.raises(grpc.aio.AioRpcError) as gave_up:
            await search.SearchSubstructure(pathological, metadata=tokens.metadata(world.attacker), timeout=1.0)
        assert gave_up.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await eventually(lambda: not process_exists(worker))
        await eventually(fully_staffed(matcher))
        assert matcher.replaced == 1 and await serving()
        [worker] = matcher.pids
        fork_server = parent_of(worker)
        try:
            os.kill(fork_server, signal.SIGSTOP)
            with pytest.raises(grpc.aio.AioRpcError):
                await search.SearchSubstructure(pathological, metadata=tokens.metadata(world.attacker), timeout=1.0)
            await eventually(not_serving)
        finally:
            os.kill(fork_server, signal.SIGCONT)
        await eventually(serving)
        await eventually(fully_staffed(matcher))
        assert matcher.replaced == 2
