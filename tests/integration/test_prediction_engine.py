"""Prediction batches against the real AI engine process (engine/, run from .venv-engine), over real
PostgreSQL and NATS: results stored exactly once, PREDICTED values and the desirability score on the
molecules (the score computed by the worker and carried in PredictionCompleted), requests checked
against the engine's model catalogue, and the engine misbehaving — 500s, hanging past the client
timeout, killed mid-job, coming back — while the breaker opens and closes and the queued batches resume.

The engine runs with only its baseline model (Crippen logP, ExtraTrees solubility): it loads in
seconds; the admet-ai models are the engine's own tests' business.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import rdkit
import sqlalchemy as sa
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2
from molbridge.events.v1.envelope_pb2 import EventEnvelope
from molbridge.events.v1.molecule_pb2 import MoleculeStructure, MoleculeValue, PredictionRequested
from molbridge.events.v1.prediction_pb2 import PredictionCompleted, PredictionJobFinished
from molbridge.molecule.v1 import molecule_service_pb2_grpc as molecule_grpc
from molbridge.molecule.v1.molecule_pb2 import Property
from molbridge.prediction.v1 import prediction_service_pb2 as pb
from molbridge.prediction.v1 import prediction_service_pb2_grpc as pb_grpc
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bus import OutboxRelay, add_event, connect, ensure_streams, event_subject, outbox_table, unpack
from bus.consumer import Consumer
from services.molecule.index.columnar import QueryIndex
from services.molecule.server.molecules import MoleculeServicer
from services.molecule.service.molecules import MoleculeService, NewMolecule
from services.molecule.service.predictions import PredictionConsumer
from services.molecule.store.tables import SCHEMA as MOLECULE_SCHEMA
from services.molecule.store.uow import molecule_transactions
from services.prediction import bootstrap
from services.prediction import worker as prediction_worker
from services.prediction.bootstrap import PredictionSettings
from services.prediction.domain.jobs import Job, MoleculeInput, Prediction, Status, job_id_for_event, new_job
from services.prediction.domain.score import SCORE_PROPERTY
from services.prediction.engine_client import EngineClient, EngineSettings
from services.prediction.server import PredictionServicer
from services.prediction.service.catalogue import ModelCatalogue
from services.prediction.service.predictions import queue_job
from services.prediction.store import SCHEMA as PREDICTION_SCHEMA
from services.prediction.store import PredictionUnitOfWork, transactions
from services.runtime import migrations
from services.runtime.auth import Authenticator, Principal
from services.runtime.db import make_engine
from services.runtime.errors import IntegrationError, NotFoundError, ValidationError
from services.runtime.molecule_client import MoleculeClient
from services.runtime.pagination import PageRequest
from services.runtime.process import Process, running
from services.runtime.settings import REPO_ROOT, Settings
from services.runtime.uow import Transactions
from stack.ports import free_port
from stack.processes import ManagedProcess, http_ready
from tests.integration.prediction_world import TokenSigner

ENGINE_PYTHON = REPO_ROOT / ".venv-engine" / "bin" / "python"
NCI = Path(rdkit.__file__).parent / "Data" / "NCI" / "first_5K.smi"
PROPERTIES = ["solubility", "logp", "ic50"]  # the baseline predicts the first two; ic50 is unsupported
PREDICTED = 2


class Engine:
    """The engine process with fault injection on a fixed port, so it can be killed and come back."""

    def __init__(self, log_dir: Path) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        port = self.url.rsplit(":", 1)[1]
        self.process = ManagedProcess(
            "engine",
            [str(ENGINE_PYTHON), "-m", "engine", "--port", port, "--models", "baseline", "--faults", "--workers", "2"],
            log_path=log_dir / "engine.log",
            cwd=REPO_ROOT,
            env={k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))},
            ready=http_ready(f"{self.url}/healthz"),
            ready_timeout=120,
        )

    def kill(self) -> None:
        """SIGKILL: no goodbye, every job in it lost."""
        pid = self.process.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        self.process.stop()

    async def faults(self, **settings: object) -> None:
        async with httpx.AsyncClient() as client:
            (await client.post(f"{self.url}/v1/_faults", json=settings)).raise_for_status()


@pytest.fixture
def ai_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = Engine(tmp_path)
    engine.process.start()
    try:
        yield engine
    finally:
        engine.process.stop()


@dataclass
class World:
    molecules: MoleculeService
    molecule_sessions: async_sessionmaker[AsyncSession]
    prediction_sessions: async_sessionmaker[AsyncSession]
    prediction_db: AsyncEngine
    predictions: Transactions[PredictionUnitOfWork]
    client: EngineClient
    batch_consumers: list[Consumer]

    async def scalar(self, sessions: async_sessionmaker[AsyncSession], statement: str, **params: object) -> object:
        async with sessions.begin() as session:
            return await session.scalar(sa.text(statement), params)

    async def announced(self, job_id: str) -> list[PredictionCompleted]:
        """The PredictionCompleted events the job's batches recorded (in the prediction outbox)."""
        outbox = outbox_table(PREDICTION_SCHEMA)
        async with self.prediction_sessions.begin() as session:
            payloads = await session.scalars(
                sa.select(outbox.c.payload).where(outbox.c.subject == event_subject("prediction", PredictionCompleted))
            )
            events = [unpack(EventEnvelope.FromString(p), PredictionCompleted) for p in payloads]
        return [e for e in events if e.job_id == job_id]

    async def job_ends(self, job_id: str) -> list[PredictionJobFinished]:
        """The PredictionJobFinished events the job recorded (notifications tell who asked)."""
        outbox = outbox_table(PREDICTION_SCHEMA)
        subject = event_subject("prediction", PredictionJobFinished)
        async with self.prediction_sessions.begin() as session:
            payloads = await session.scalars(sa.select(outbox.c.payload).where(outbox.c.subject == subject))
            events = [unpack(EventEnvelope.FromString(p), PredictionJobFinished) for p in payloads]
        return [e for e in events if e.job_id == job_id]


@pytest.fixture
async def world(database_url: str, nats_server: object, ai_engine: Engine) -> AsyncIterator[World]:
    migrations.upgrade(
        database_url, MOLECULE_SCHEMA, Path(prediction_worker.__file__).parents[1] / "molecule" / "migrations"
    )
    bootstrap.MIGRATIONS.upgrade(database_url)
    molecule_db = make_engine(database_url, MOLECULE_SCHEMA)
    prediction_db = make_engine(database_url, PREDICTION_SCHEMA)
    # The worker as it runs in the mesh (typed settings, declared subscriptions, its outbox relay),
    # with small numbers so the faults below open and close the breaker within seconds.
    settings = PredictionSettings.from_env(
        "prediction-worker",
        {
            "DATABASE_URL": database_url, "NATS_URL": nats_server.url,  # type: ignore[attr-defined]
            "AI_ENGINE_URL": ai_engine.url, "MOLBRIDGE_ENGINE_TIMEOUT_S": "1", "MOLBRIDGE_ENGINE_RETRIES": "1",
            "MOLBRIDGE_ENGINE_BACKOFF_S": "0.05", "MOLBRIDGE_ENGINE_BREAKER_THRESHOLD": "3",
            "MOLBRIDGE_ENGINE_BREAKER_RESET_S": "1", "MOLBRIDGE_ENGINE_POLL_S": "0.05",
            "MOLBRIDGE_PREDICTION_WORKER_HEALTH_ADDR": "off",
        },
    )  # fmt: skip
    client = EngineClient(settings.engine())
    nats = await connect(nats_server.url)  # type: ignore[attr-defined]
    js = nats.jetstream()
    await ensure_streams(js)
    # The molecule side: stores what PredictionCompleted carries.
    runners = [
        PredictionConsumer(molecule_transactions(molecule_db)).consumer(js),
        OutboxRelay(molecule_db, MOLECULE_SCHEMA, js),
    ]
    tasks = [asyncio.create_task(r.run()) for r in runners]
    try:
        async with running("prediction-worker", bootstrap.worker_process(prediction_db, client), settings) as worker:
            yield World(
                MoleculeService(molecule_transactions(molecule_db), QueryIndex(molecule_db)),
                async_sessionmaker(molecule_db, expire_on_commit=False),
                async_sessionmaker(prediction_db, expire_on_commit=False),
                prediction_db,
                transactions(prediction_db),
                client,
                [c for c in worker.consumers if c.durable == prediction_worker.BATCH_DURABLE],
            )
    finally:
        for r in runners:
            r.stop()
        await asyncio.gather(*tasks)
        # Leave no work for the next test's workers (its jobs live in another database).
        await js.purge_stream("WORK")
        await nats.close()
        await client.close()
        await molecule_db.dispose()
        await prediction_db.dispose()


async def request(world: World, count: int) -> tuple[str, Principal, list[str]]:
    """Register `count` NCI molecules in a new organization and queue a prediction job for them."""
    who = Principal(str(uuid.uuid4()), str(uuid.uuid4()), "PHARMA", frozenset({"pharma_scientist"}))
    smiles = [line.split()[0] for line in NCI.read_text().splitlines()[: count * 2]]
    outcomes = await world.molecules.batch_create(who, [NewMolecule(s) for s in smiles])
    ids = list(dict.fromkeys(o.molecule_id for o in outcomes if o.molecule_id))[:count]
    found, missing = await world.molecules.batch_get(who, ids)
    assert len(ids) == count and not missing
    job = new_job(
        job_id=str(uuid.uuid4()),
        organization_id=who.organization_id,
        requested_by=who.subject,
        molecules=[MoleculeInput(m.id, m.canonical_smiles) for m in found],
        properties=PROPERTIES,
        model="",
        reason="test",
    )
    await queue_job(world.predictions, job)
    return job.id, who, ids


async def finished(world: World, job_id: str, timeout: float = 90.0) -> None:
    async def poll() -> None:
        while (
            await world.scalar(world.prediction_sessions, "SELECT status FROM jobs WHERE id = :id", id=job_id)
            != Status.COMPLETED
        ):
            await asyncio.sleep(0.1)

    await asyncio.wait_for(poll(), timeout)


async def stored_on_molecules(world: World, ids: list[str], expected: int, timeout: float = 30.0) -> None:
    async def poll() -> None:
        while (
            await world.scalar(
                world.molecule_sessions,
                "SELECT count(*) FROM molecule_properties WHERE source = 'PREDICTED' AND molecule_id = ANY(:ids)",
                ids=[uuid.UUID(i) for i in ids],
            )
            != expected
        ):
            await asyncio.sleep(0.1)

    await asyncio.wait_for(poll(), timeout)


async def assert_exactly_once(world: World, job_id: str, ids: list[str]) -> None:
    counts = await world.scalar(
        world.prediction_sessions,
        "SELECT json_build_array(count(*), count(DISTINCT (molecule_id, property)), min(confidence), "
        "max(confidence)) FROM results WHERE job_id = :id",
        id=job_id,
    )
    total, distinct, low, high = counts  # type: ignore[misc]
    assert total == distinct == len(ids) * PREDICTED
    assert 0 <= low <= high <= 1
    status = await world.scalar(
        world.prediction_sessions,
        "SELECT json_build_array(total, completed, failed) FROM jobs WHERE id = :id",
        id=job_id,
    )
    assert status == [len(ids), len(ids), 0]
    # Every predicted value plus one desirability score per molecule, announced once and stored on the
    # molecules as PREDICTED properties.
    announced = [(v.molecule_id, v.property) for e in await world.announced(job_id) for v in e.values]
    assert len(announced) == len(set(announced)) == len(ids) * (PREDICTED + 1)
    assert {m for m, p in announced if p == SCORE_PROPERTY} == set(ids)
    [ended] = await world.job_ends(job_id)  # the job's end, told once by its last batch
    assert (ended.status, ended.total, ended.completed, ended.failed) == ("COMPLETED", len(ids), len(ids), 0)
    await stored_on_molecules(world, ids, len(ids) * (PREDICTED + 1))


async def test_batches_are_predicted_and_stored_as_predicted_properties(world: World) -> None:
    job_id, who, ids = await request(world, 230)  # three batches: 100, 100, 30
    await finished(world, job_id)
    await assert_exactly_once(world, job_id, ids)
    [molecule], _ = await world.molecules.batch_get(who, ids[:1])
    predicted = {p.name: p for p in molecule.properties if p.source == "PREDICTED"}
    assert set(predicted) == {"solubility", "logp", "desirability_score"}
    assert predicted["solubility"].units == "mg/mL" and predicted["logp"].units == ""
    assert 0 <= float(predicted["desirability_score"].value) <= 1  # type: ignore[arg-type]
    assert world.client.breaker.opened == 0


async def test_500s_open_the_breaker_and_queued_batches_finish_once_it_closes(world: World, ai_engine: Engine) -> None:
    await ai_engine.faults(fail_next=8, status=500)  # more failures than threshold × attempts
    job_id, _, ids = await request(world, 150)
    await finished(world, job_id)
    await assert_exactly_once(world, job_id, ids)
    assert world.client.breaker.opened >= 1 and world.client.breaker.state == "closed"
    assert sum(c.nakked for c in world.batch_consumers) >= 1 and sum(c.terminated for c in world.batch_consumers) == 0


async def test_hangs_past_the_timeout_count_as_failures(world: World, ai_engine: Engine) -> None:
    await ai_engine.faults(hang_next=4, hang_seconds=3)  # the client gives up after 1 s
    job_id, _, ids = await request(world, 120)
    await finished(world, job_id)
    await assert_exactly_once(world, job_id, ids)
    assert world.client.breaker.opened >= 1


async def test_engine_killed_mid_job_comes_back_and_the_batches_resume(world: World, ai_engine: Engine) -> None:
    await ai_engine.faults(job_delay_seconds=0.5)  # each 50-molecule chunk of a job waits
    job_id, _, ids = await request(world, 200)

    async def engine_has_work() -> None:
        while not sum(c.nakked + c.acked for c in world.batch_consumers) and not await world.scalar(
            world.prediction_sessions, "SELECT count(*) FROM batches WHERE job_id = :id AND done_at IS NULL", id=job_id
        ):
            await asyncio.sleep(0.05)

    await asyncio.wait_for(engine_has_work(), 30)
    await asyncio.sleep(0.3)  # the batches' engine jobs are submitted and running (each takes ≥ 1 s)
    ai_engine.kill()
    await asyncio.sleep(1.5)  # workers see connection errors; the breaker opens
    ai_engine.process.start()  # a fresh engine: no faults, no memory of the lost jobs
    await finished(world, job_id)
    await assert_exactly_once(world, job_id, ids)
    assert world.client.breaker.opened >= 1 and world.client.breaker.state == "closed"


async def _drained(stream: Any) -> None:
    """Read a server stream to its end (its error, if any, raises here)."""
    async for _ in stream:
        pass


def field_violations(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    """The BadRequest field violations of a rich gRPC error."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)  # type: ignore[arg-type]
            for detail in status.details:
                bad = error_details_pb2.BadRequest()
                if detail.Unpack(bad):
                    return [(v.field, v.description) for v in bad.field_violations]
    return []


def signer() -> tuple[Authenticator, Callable[[str, str], list[tuple[str, str]]]]:
    """An authenticator trusting a fresh key, and a function making a pharma scientist's metadata with it."""
    tokens = TokenSigner()

    def auth(subject: str, org: str) -> list[tuple[str, str]]:
        return tokens.metadata(Principal(subject, org, "PHARMA", frozenset({"pharma_scientist"})))

    return tokens.authenticator, auth


async def test_the_grpc_api_queues_reports_and_lists_predictions(world: World) -> None:
    authenticator, auth = signer()
    molecule_port, prediction_port = free_port(), free_port()
    env = {
        "MOLBRIDGE_MOLECULE_ADDR": f"127.0.0.1:{molecule_port}",
        "MOLBRIDGE_PREDICTION_ADDR": f"127.0.0.1:{prediction_port}",
    }
    remote = MoleculeClient(f"127.0.0.1:{molecule_port}")
    service = bootstrap.build_service(world.prediction_db, world.client, remote)
    molecule_server = Process(
        servicers=[(molecule_grpc.add_MoleculeServiceServicer_to_server, MoleculeServicer(world.molecules))],
        authenticator=authenticator,
    )
    prediction_server = Process(
        servicers=[(pb_grpc.add_PredictionServiceServicer_to_server, PredictionServicer(service))],
        authenticator=authenticator,
    )
    try:
        async with (
            running("molecule", molecule_server, Settings.from_env("molecule", env)),
            running("prediction", prediction_server, Settings.from_env("prediction", env)),
        ):
            org = str(uuid.uuid4())
            alice, mallory = auth("alice", org), auth("mallory", str(uuid.uuid4()))
            who = Principal("alice", org, "PHARMA", frozenset({"pharma_scientist"}))
            outcomes = await world.molecules.batch_create(
                who, [NewMolecule(s) for s in ("CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1")]
            )
            ids = [o.molecule_id for o in outcomes]
            async with grpc.aio.insecure_channel(f"127.0.0.1:{prediction_port}") as channel:
                stub = pb_grpc.PredictionServiceStub(channel)
                created = await stub.CreatePrediction(
                    pb.CreatePredictionRequest(molecule_ids=ids, properties=["logp", "solubility"]), metadata=alice
                )
                assert created.data.status == "queued"
                job_id = created.data.job_id
                await finished(world, job_id)
                status = await stub.GetPredictionStatus(pb.GetPredictionStatusRequest(job_id=job_id), metadata=alice)
                assert json_format.MessageToDict(
                    status, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
                ) == {"data": {"job_id": job_id, "status": "completed", "total": 3, "completed": 3, "failed": 0}}
                found = await stub.GetPredictionResults(pb.GetPredictionResultsRequest(job_id=job_id), metadata=alice)
                assert len(found.data) == 6 and (found.meta.page, found.meta.page_size, found.meta.total) == (1, 50, 6)
                in_order = [(r.molecule_id, r.property) for r in found.data]
                assert in_order == sorted((i, p) for i in ids for p in ("logp", "solubility"))
                # Pages in (molecule, property) order, the same on every read; past the end is empty.
                pages = [
                    await stub.GetPredictionResults(
                        pb.GetPredictionResultsRequest(job_id=job_id, page=n, page_size=4), metadata=alice
                    )
                    for n in (1, 2, 3)
                ]
                assert [len(p.data) for p in pages] == [4, 2, 0] and {p.meta.total for p in pages} == {6}
                assert [(r.molecule_id, r.property) for p in pages for r in p.data] == in_order
                with pytest.raises(grpc.aio.AioRpcError) as too_big:
                    await stub.GetPredictionResults(
                        pb.GetPredictionResultsRequest(job_id=job_id, page_size=101), metadata=alice
                    )
                assert too_big.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert [f for f, _ in field_violations(too_big.value)] == ["page_size"]
                # The whole set as a CSV stream: the file name first, then the header and the rows.
                download = stub.DownloadPredictionResults(
                    pb.DownloadPredictionResultsRequest(job_id=job_id), metadata=alice
                )
                headers = dict(await download.initial_metadata())
                disposition = headers["content-disposition"]
                assert disposition.startswith(f'attachment; filename="prediction-{job_id}-results.csv"')
                bodies = [body async for body in download]
                assert bodies[0].content_type == "text/csv; charset=utf-8"
                lines = b"".join(b.data for b in bodies).decode().splitlines()
                assert lines[0] == "molecule_id,property,value,units,confidence,model_name,model_version"
                assert [tuple(line.split(",")[:2]) for line in lines[1:]] == in_order
                first_row = lines[1].split(",")
                assert float(first_row[2]) == found.data[0].value and first_row[5] == found.data[0].model_name
                # The download reads in keyset chunks: resuming after a chunk's last key gives the rest.
                async with world.predictions() as uow:
                    head = await uow.results.of_job_after(job_id, None, 4)
                    tail = await uow.results.of_job_after(job_id, (head[-1].molecule_id, head[-1].property), 4)
                assert [(r.molecule_id, r.property) for r in head + tail] == in_order
                first = json_format.MessageToDict(
                    found.data[0], preserving_proto_field_name=True, always_print_fields_with_no_presence=True
                )  # as the gateway prints it
                assert set(first) == {
                    "molecule_id",
                    "property",
                    "value",
                    "units",
                    "confidence",
                    "model_name",
                    "model_version",
                }
                mine = await stub.ListMoleculePredictions(
                    pb.ListMoleculePredictionsRequest(molecule_id=ids[0]), metadata=alice
                )
                assert sorted(r.property for r in mine.data) == ["logp", "solubility"]
                models = await stub.ListModels(pb.ListModelsRequest(), metadata=alice)
                assert "baseline" in {m.name for m in models.data}
                assert {"logp", "solubility"} <= {p.name for m in models.data for p in m.properties}
                # Another organization sees nothing of it and cannot predict alice's molecules.
                for call in (
                    stub.GetPredictionStatus(pb.GetPredictionStatusRequest(job_id=job_id), metadata=mallory),
                    stub.GetPredictionResults(pb.GetPredictionResultsRequest(job_id=job_id), metadata=mallory),
                    _drained(
                        stub.DownloadPredictionResults(
                            pb.DownloadPredictionResultsRequest(job_id=job_id), metadata=mallory
                        )
                    ),
                    stub.CreatePrediction(
                        pb.CreatePredictionRequest(molecule_ids=ids, properties=["logp"]), metadata=mallory
                    ),
                ):
                    with pytest.raises(grpc.aio.AioRpcError) as error:
                        await call
                    assert error.value.code() == grpc.StatusCode.NOT_FOUND
                assert not (await stub.ListMoleculePredictions(
                    pb.ListMoleculePredictionsRequest(molecule_id=ids[0]), metadata=mallory
                )).data  # fmt: skip
                with pytest.raises(grpc.aio.AioRpcError) as invalid:
                    await stub.CreatePrediction(
                        pb.CreatePredictionRequest(molecule_ids=ids, properties=["colour"]), metadata=alice
                    )
                assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                # The engine's catalogue decides, at request time: the baseline model predicts no ic50,
                # and there is no model "gpt-chem"; each answer names the field and what is accepted.
                unknown_property = pb.CreatePredictionRequest(molecule_ids=ids, properties=["ic50"])
                unknown_model = pb.CreatePredictionRequest(molecule_ids=ids, properties=["logp"], model="gpt-chem")
                for request, field, accepted in (
                    (unknown_property, "properties[0]", "logp, solubility"),
                    (unknown_model, "model", "baseline"),
                ):
                    with pytest.raises(grpc.aio.AioRpcError) as refused:
                        await stub.CreatePrediction(request, metadata=alice)
                    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                    [(violation_field, description)] = field_violations(refused.value)
                    assert violation_field == field and description.endswith(accepted), description
                # The worker's score is the one the molecule service shows.
                events = await world.announced(job_id)
                sent = {v.molecule_id: v.value for e in events for v in e.values if v.property == SCORE_PROPERTY}
                assert set(sent) == set(ids)
                await stored_on_molecules(world, ids, 3 * 3)
                shown, _ = await world.molecules.batch_get(who, ids)
                for molecule in shown:
                    [score] = [p for p in molecule.properties if p.name == SCORE_PROPERTY]
                    assert float(score.value) == pytest.approx(sent[molecule.id])  # type: ignore[arg-type]
    finally:
        await remote.close()


async def test_a_prediction_requested_event_runs_the_same_path_once(world: World) -> None:
    who = Principal("importer", str(uuid.uuid4()), "PHARMA", frozenset({"pharma_scientist"}))
    outcomes = await world.molecules.batch_create(who, [NewMolecule(s) for s in ("CCO", "CCN", "CCCl")])
    found, _ = await world.molecules.batch_get(who, [o.molecule_id for o in outcomes])
    event = PredictionRequested(
        organization_id=who.organization_id,
        requested_by=who.subject,
        molecule_ids=[m.id for m in found],
        properties=["logp"],
        reason="import:test",
        molecules=[
            MoleculeStructure(
                molecule_id=m.id,
                smiles=m.canonical_smiles,
                values=[
                    MoleculeValue(
                        name=p.name, source=Property.Source.Value(p.source), value=p.value
                    )
                    for p in m.properties
                    if isinstance(p.value, float | int)
                ],
            )
            for m in found
        ],
    )
    async with world.molecule_sessions.begin() as session:  # as the CSV worker records it
        event_id = await add_event(
            session, source="molecule", payload=event, organization_id=who.organization_id, schema=MOLECULE_SCHEMA
        )
    job_id = job_id_for_event(event_id)

    async def created() -> None:
        while not await world.scalar(world.prediction_sessions, "SELECT count(*) FROM jobs WHERE id = :id", id=job_id):
            await asyncio.sleep(0.1)

    await asyncio.wait_for(created(), 30)
    await finished(world, job_id)
    rows = await world.scalar(world.prediction_sessions, "SELECT count(*) FROM results WHERE job_id = :id", id=job_id)
    assert rows == 3
    await stored_on_molecules(world, [m.id for m in found], 3 * 2)  # logp + desirability_score each
    # The score starts from the values the event carried (the calculated ones): as the molecule shows it.
    sent = {
        v.molecule_id: v.value for e in await world.announced(job_id) for v in e.values if v.property == SCORE_PROPERTY
    }
    shown, _ = await world.molecules.batch_get(who, [m.id for m in found])
    assert {
        m.id: float(next(p.value for p in m.properties if p.name == SCORE_PROPERTY)) for m in shown
    } == pytest.approx(sent)  # type: ignore[arg-type]


async def test_molecules_the_engine_cannot_read_are_counted_failed(world: World) -> None:
    job = new_job(
        job_id=str(uuid.uuid4()),
        organization_id=str(uuid.uuid4()),
        requested_by="someone",
        molecules=[MoleculeInput(str(uuid.uuid4()), "C1CC(")],  # a structure the engine rejects
        properties=["logp"],
        model="",
        reason="test",
    )
    job_id = (await queue_job(world.predictions, job)).job_id

    async def ended() -> object:
        while (
            status := await world.scalar(world.prediction_sessions, "SELECT status FROM jobs WHERE id = :id", id=job_id)
        ) in (
            "queued",
            "processing",
        ):
            await asyncio.sleep(0.1)
        return status

    assert await asyncio.wait_for(ended(), 60) == "failed"
    counts = await world.scalar(
        world.prediction_sessions,
        "SELECT json_build_array(total, completed, failed) FROM jobs WHERE id = :id",
        id=job_id,
    )
    assert counts == [1, 0, 1]
    [end] = await world.job_ends(job_id)
    assert (end.status, end.requested_by, end.failed) == ("FAILED", "someone", 1)
    assert list(end.properties) == ["logp"]


async def test_requests_are_still_checked_while_the_engine_is_down(world: World, ai_engine: Engine) -> None:
    catalogue = ModelCatalogue(world.client)
    await catalogue.check(["logp", "solubility"], "baseline")
    ai_engine.kill()
    # The last catalogue seen answers: a good request passes, an unknown model is still refused.
    await catalogue.check(["logp"], "")
    with pytest.raises(ValidationError) as refused:
        await catalogue.check(["logp"], "gpt-chem")
    assert refused.value.field_violations == [("model", "unknown model 'gpt-chem'; one of: baseline")]
    ai_engine.process.start()


async def test_without_a_catalogue_a_request_cannot_be_checked() -> None:
    nowhere = EngineClient(EngineSettings(url=f"http://127.0.0.1:{free_port()}", retries=0, timeout=1.0))
    try:
        with pytest.raises(IntegrationError):
            await ModelCatalogue(nowhere).get()
    finally:
        await nowhere.close()


async def test_the_csv_download_reads_a_large_job_chunk_by_chunk(world: World) -> None:
    """2,500 stored values (more than two chunks' worth): every one in the file once, in order. The
    job is stored without queueing its batches, so the values are exactly the ones written here."""
    who = Principal("alice", str(uuid.uuid4()), "PHARMA", frozenset({"pharma_scientist"}))
    molecules = [MoleculeInput(str(uuid.uuid4()), "C") for _ in range(1250)]
    job = new_job(
        job_id=str(uuid.uuid4()),
        organization_id=who.organization_id,
        requested_by=who.subject,
        molecules=molecules,
        properties=["logp", "solubility"],
        model="",
        reason="test",
    )
    stored = [
        Prediction(m.id, name, -float(i), "=units", 0.5, "baseline", "1") for i, m in enumerate(molecules)
        for name in ("solubility", "logp")
    ]  # fmt: skip
    async with world.predictions() as uow:
        assert await uow.jobs.add(job)
        await uow.results.add(Job(job.id, job.organization_id, who.subject, job.properties, ""), stored)
    nowhere = MoleculeClient(f"127.0.0.1:{free_port()}")  # never asked: downloads need no molecules
    service = bootstrap.build_service(world.prediction_db, world.client, nowhere)
    try:
        download = await service.results_csv(who, job.id)
        chunks = [chunk async for chunk in download.chunks]
        _, total = await service.results(who, job.id, PageRequest.of(1, 1))
    finally:
        await nowhere.close()
    assert download.filename == f"prediction-{job.id}-results.csv" and total == 2500
    assert len(chunks) == 1 + 3  # the header, then chunks of at most 1,000 rows
    rows = [line.split(",") for chunk in chunks[1:] for line in chunk.splitlines()]
    assert [(r[0], r[1]) for r in rows] == sorted((p.molecule_id, p.property) for p in stored)
    assert {r[3] for r in rows} == {"'=units"}  # engine text is neutralised for spreadsheets
    with pytest.raises(NotFoundError):
        await service.results_csv(Principal("mallory", str(uuid.uuid4()), "PHARMA", frozenset()), job.id)
