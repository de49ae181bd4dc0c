"""Prediction batches against the real AI engine process (engine/, run from .venv-engine), over real
PostgreSQL and NATS: results stored exactly once, PREDICTED values and the desirability score on the
molecules, and the engine misbehaving — 500s, hanging past the client timeout, killed mid-job, coming
back — while the breaker opens and closes and the queued batches resume.

The engine runs with only its baseline model (Crippen logP, ExtraTrees solubility): it loads in
seconds; the admet-ai models are the engine's own tests' business.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import jwt
import pytest
import rdkit
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf import json_format
from molbridge.events.v1.molecule_pb2 import MoleculeStructure, PredictionRequested
from molbridge.molecule.v1 import molecule_service_pb2_grpc as molecule_grpc
from molbridge.prediction.v1 import prediction_service_pb2 as pb
from molbridge.prediction.v1 import prediction_service_pb2_grpc as pb_grpc

from bus import OutboxRelay, add_event, connect, ensure_streams
from bus.consumer import Consumer
from services.molecule.index.columnar import QueryIndex
from services.molecule.server.molecules import MoleculeServicer
from services.molecule.service.molecules import MoleculeService, NewMolecule
from services.molecule.service.predictions import PredictionConsumer
from services.molecule.store.tables import SCHEMA as MOLECULE_SCHEMA
from services.molecule.store.uow import molecule_transactions
from services.prediction import worker as prediction_worker
from services.prediction.engine_client import EngineClient, EngineSettings
from services.prediction.jobs import COMPLETED, PredictionService, enqueue, job_id_for_event
from services.prediction.server import PredictionServicer, RemoteMolecules
from services.prediction.store import SCHEMA as PREDICTION_SCHEMA
from services.runtime import migrations, server
from services.runtime.auth import AUDIENCE, ISSUER, Authenticator, Principal, TokenVerifier
from services.runtime.db import UnitOfWork, make_engine
from services.runtime.settings import REPO_ROOT, Settings
from stack.ports import free_port
from stack.processes import ManagedProcess, http_ready

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
    molecule_uow: UnitOfWork
    prediction_uow: UnitOfWork
    client: EngineClient
    batch_consumers: list[Consumer]

    async def scalar(self, uow: UnitOfWork, statement: str, **params: object) -> object:
        async with uow() as session:
            return await session.scalar(sa.text(statement), params)


@pytest.fixture
async def world(database_url: str, nats_server: object, ai_engine: Engine) -> AsyncIterator[World]:
    migrations.upgrade(
        database_url, MOLECULE_SCHEMA, Path(prediction_worker.__file__).parents[1] / "molecule" / "migrations"
    )
    migrations.upgrade(database_url, PREDICTION_SCHEMA, prediction_worker.MIGRATIONS)
    molecule_db = make_engine(database_url, MOLECULE_SCHEMA)
    prediction_db = make_engine(database_url, PREDICTION_SCHEMA)
    # Small numbers so the faults below open and close the breaker within seconds.
    client = EngineClient(
        EngineSettings(
            url=ai_engine.url, timeout=1.0, retries=1, backoff=0.05, breaker_threshold=3,
            breaker_reset=1.0, poll_interval=0.05,
        )
    )  # fmt: skip
    nats = await connect(nats_server.url)  # type: ignore[attr-defined]
    js = nats.jetstream()
    await ensure_streams(js)
    runners = prediction_worker.runners(js, prediction_db, client)
    molecule_uow = UnitOfWork(molecule_db)
    predictions = PredictionConsumer(molecule_transactions(molecule_db))
    runners += [predictions.consumer(js), OutboxRelay(molecule_db, MOLECULE_SCHEMA, js)]
    tasks = [asyncio.create_task(r.run()) for r in runners]
    batch_consumers = [r for r in runners if isinstance(r, Consumer) and r.durable == prediction_worker.BATCH_DURABLE]
    try:
        yield World(
            MoleculeService(molecule_transactions(molecule_db), QueryIndex(molecule_db)),
            molecule_uow,
            UnitOfWork(prediction_db),
            client,
            batch_consumers,
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
    job_id = str(uuid.uuid4())
    async with world.prediction_uow() as session:
        await enqueue(
            session,
            job_id=job_id,
            organization_id=who.organization_id,
            requested_by=who.subject,
            structures=[(m.id, m.canonical_smiles) for m in found],
            properties=PROPERTIES,
            model="",
            reason="test",
        )
    return job_id, who, ids


async def finished(world: World, job_id: str, timeout: float = 90.0) -> None:
    async def poll() -> None:
        while (
            await world.scalar(world.prediction_uow, "SELECT status FROM jobs WHERE id = :id", id=job_id) != COMPLETED
        ):
            await asyncio.sleep(0.1)

    await asyncio.wait_for(poll(), timeout)


async def stored_on_molecules(world: World, ids: list[str], expected: int, timeout: float = 30.0) -> None:
    async def poll() -> None:
        while (
            await world.scalar(
                world.molecule_uow,
                "SELECT count(*) FROM molecule_properties WHERE source = 'PREDICTED' AND molecule_id = ANY(:ids)",
                ids=[uuid.UUID(i) for i in ids],
            )
            != expected
        ):
            await asyncio.sleep(0.1)

    await asyncio.wait_for(poll(), timeout)


async def assert_exactly_once(world: World, job_id: str, ids: list[str]) -> None:
    counts = await world.scalar(
        world.prediction_uow,
        "SELECT json_build_array(count(*), count(DISTINCT (molecule_id, property)), min(confidence), "
        "max(confidence)) FROM results WHERE job_id = :id",
        id=job_id,
    )
    total, distinct, low, high = counts  # type: ignore[misc]
    assert total == distinct == len(ids) * PREDICTED
    assert 0 <= low <= high <= 1
    status = await world.scalar(
        world.prediction_uow, "SELECT json_build_array(total, completed, failed) FROM jobs WHERE id = :id", id=job_id
    )
    assert status == [len(ids), len(ids), 0]
    # Every predicted value plus one desirability score per molecule, as PREDICTED properties.
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
            world.prediction_uow, "SELECT count(*) FROM batches WHERE job_id = :id AND done_at IS NULL", id=job_id
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


def signer() -> tuple[Authenticator, Callable[[str, str], list[tuple[str, str]]]]:
    """An authenticator trusting a fresh key, and a function making `authorization` metadata with it."""
    key = Ed25519PrivateKey.generate()
    jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(key.public_key())) | {"kid": "test"}

    async def jwks() -> dict[str, Any]:
        return {"keys": [jwk]}

    class NoApiKeys:
        async def resolve_api_key(self, secret: str) -> Principal:
            raise AssertionError("no API keys here")

    def auth(subject: str, org: str) -> list[tuple[str, str]]:
        claims = {
            "sub": subject, "org": org, "org_kind": "PHARMA", "roles": ["pharma_scientist"], "iss": ISSUER,
            "aud": AUDIENCE, "iat": 1_700_000_000, "exp": 4_000_000_000,
        }  # fmt: skip
        return [("authorization", "Bearer " + jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": "test"}))]

    return Authenticator(TokenVerifier(jwks), NoApiKeys()), auth


async def test_the_grpc_api_queues_reports_and_lists_predictions(world: World) -> None:
    authenticator, auth = signer()
    molecule_port, prediction_port = free_port(), free_port()
    env = {
        "MOLBRIDGE_MOLECULE_ADDR": f"127.0.0.1:{molecule_port}",
        "MOLBRIDGE_PREDICTION_ADDR": f"127.0.0.1:{prediction_port}",
    }
    remote = RemoteMolecules(f"127.0.0.1:{molecule_port}")
    service = PredictionService(world.prediction_uow, world.client, remote)
    apps = [
        server.ServiceApp(
            settings=Settings.from_env("molecule", env),
            servicers=[(molecule_grpc.add_MoleculeServiceServicer_to_server, MoleculeServicer(world.molecules))],
            authenticator=authenticator,
        ),
        server.ServiceApp(
            settings=Settings.from_env("prediction", env),
            servicers=[(pb_grpc.add_PredictionServiceServicer_to_server, PredictionServicer(service))],
            authenticator=authenticator,
        ),
    ]
    started = [await server.start_server(app) for app in apps]
    org = str(uuid.uuid4())
    alice, mallory = auth("alice", org), auth("mallory", str(uuid.uuid4()))
    who = Principal("alice", org, "PHARMA", frozenset({"pharma_scientist"}))
    outcomes = await world.molecules.batch_create(
        who, [NewMolecule(s) for s in ("CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1")]
    )
    ids = [o.molecule_id for o in outcomes]
    try:
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
            assert len(found.data) == 6
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
    finally:
        for app, (grpc_server, health, tasks) in zip(apps, started, strict=True):
            await server.stop_server(app, grpc_server, health, tasks)
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
        molecules=[MoleculeStructure(molecule_id=m.id, smiles=m.canonical_smiles) for m in found],
    )
    async with world.molecule_uow() as session:  # as the CSV worker records it
        event_id = await add_event(
            session, source="molecule", payload=event, organization_id=who.organization_id, schema=MOLECULE_SCHEMA
        )
    job_id = job_id_for_event(event_id)

    async def created() -> None:
        while not await world.scalar(world.prediction_uow, "SELECT count(*) FROM jobs WHERE id = :id", id=job_id):
            await asyncio.sleep(0.1)

    await asyncio.wait_for(created(), 30)
    await finished(world, job_id)
    rows = await world.scalar(world.prediction_uow, "SELECT count(*) FROM results WHERE job_id = :id", id=job_id)
    assert rows == 3
    await stored_on_molecules(world, [m.id for m in found], 3 * 2)  # logp + desirability_score each


async def test_molecules_the_engine_cannot_read_are_counted_failed(world: World) -> None:
    job_id = str(uuid.uuid4())
    async with world.prediction_uow() as session:
        await enqueue(
            session,
            job_id=job_id,
            organization_id=str(uuid.uuid4()),
            requested_by="someone",
            structures=[(str(uuid.uuid4()), "C1CC(")],  # a structure the engine rejects
            properties=["logp"],
            model="",
            reason="test",
        )

    async def ended() -> object:
        while (
            status := await world.scalar(world.prediction_uow, "SELECT status FROM jobs WHERE id = :id", id=job_id)
        ) in (
            "queued",
            "processing",
        ):
            await asyncio.sleep(0.1)
        return status

    assert await asyncio.wait_for(ended(), 60) == "failed"
    counts = await world.scalar(
        world.prediction_uow, "SELECT json_build_array(total, completed, failed) FROM jobs WHERE id = :id", id=job_id
    )
    assert counts == [1, 0, 1]
