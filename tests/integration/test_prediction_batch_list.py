"""BatchListPredictions over gRPC on real PostgreSQL: each model version's latest prediction of the caller's
organization's molecules, filtered by property and model; other organizations' and malformed ids have none;
more than 1000 ids is a 400; the runtime PredictionClient asks in chunks and forwards the caller's token."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from molbridge.prediction.v1 import prediction_service_pb2 as pb
from molbridge.prediction.v1 import prediction_service_pb2_grpc as pb_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from services.prediction.bootstrap import MIGRATIONS
from services.prediction.domain.jobs import Prediction
from services.prediction.store import SCHEMA
from services.runtime.auth import Principal
from services.runtime.db import make_engine
from services.runtime.errors import IntegrationError
from services.runtime.prediction_client import PredictedValue, PredictionClient
from stack.ports import free_port
from tests.integration.prediction_world import TokenSigner, served_predictions, store_predictions


def scientist(organization_id: str) -> Principal:
    return Principal(f"user-{uuid.uuid4().hex[:6]}", organization_id, "PHARMA", frozenset({"pharma_scientist"}))


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[AsyncEngine]:
    MIGRATIONS.upgrade(database_url)
    engine = make_engine(database_url, SCHEMA)
    try:
        yield engine
    finally:
        await engine.dispose()


async def test_latest_prediction_per_model_version_of_the_callers_molecules(database: AsyncEngine) -> None:
    org, other_org = str(uuid.uuid4()), str(uuid.uuid4())
    m1, m2, foreign = (str(uuid.uuid4()) for _ in range(3))
    await store_predictions(
        database,
        org,
        [
            Prediction(m1, "ic50", 100.0, "nM", 0.5, "chemprop", "1.0"),
            Prediction(m1, "logp", 1.0, "", 0.7, "chemprop", "1.0"),
            Prediction(m2, "ic50", 300.0, "nM", 0.4, "chemprop", "1.0"),
        ],
    )
    # Later: m1's ic50 again by 1.0 (replaces the first), by 2.0 (a version of its own), and by another model.
    await store_predictions(
        database,
        org,
        [
            Prediction(m1, "ic50", 120.0, "nM", 0.6, "chemprop", "1.0"),
        ],
    )
    await store_predictions(database, org, [Prediction(m1, "ic50", 90.0, "nM", 0.9, "chemprop", "2.0")])
    await store_predictions(database, org, [Prediction(m1, "ic50", 80.0, "nM", 0.3, "admet", "0.1")])
    await store_predictions(database, other_org, [Prediction(foreign, "ic50", 5.0, "nM", 0.5, "chemprop", "1.0")])

    signer = TokenSigner()
    alice = scientist(org)
    async with served_predictions(database, signer) as address:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pb_grpc.PredictionServiceStub(channel)

            async def ask(ids: list[str], properties: tuple[str, ...] = (), model: str = "") -> set[tuple]:
                reply = await stub.BatchListPredictions(
                    pb.BatchListPredictionsRequest(molecule_ids=ids, properties=properties, model_name=model),
                    metadata=signer.metadata(alice),
                )
                return {
                    (r.molecule_id, r.property, r.model_name, r.model_version, r.value, r.confidence, r.units)
                    for r in reply.data
                }

            everything = {
                (m1, "ic50", "chemprop", "1.0", 120.0, 0.6, "nM"),
                (m1, "ic50", "chemprop", "2.0", 90.0, 0.9, "nM"),
                (m1, "ic50", "admet", "0.1", 80.0, 0.3, "nM"),
                (m1, "logp", "chemprop", "1.0", 1.0, 0.7, ""),
                (m2, "ic50", "chemprop", "1.0", 300.0, 0.4, "nM"),
            }
            # Another organization's molecule and ids that are no UUIDs have no predictions (no error).
            assert await ask([m1, m2, foreign, "not-a-uuid", ""]) == everything
            assert await ask([m1, m2], ("logp",)) == {row for row in everything if row[1] == "logp"}
            assert await ask([m1, m2], (), "admet") == {row for row in everything if row[2] == "admet"}
            assert await ask([m2], ("ic50",), "chemprop") == {(m2, "ic50", "chemprop", "1.0", 300.0, 0.4, "nM")}
            assert await ask([foreign]) == set()
            assert await ask([]) == set()
            # The other organization sees its own molecule only.
            reply = await stub.BatchListPredictions(
                pb.BatchListPredictionsRequest(molecule_ids=[m1, foreign]),
                metadata=signer.metadata(scientist(other_org)),
            )
            assert [(r.molecule_id, r.value) for r in reply.data] == [(foreign, 5.0)]

            with pytest.raises(grpc.aio.AioRpcError) as too_many:
                await stub.BatchListPredictions(
                    pb.BatchListPredictionsRequest(molecule_ids=[str(uuid.uuid4()) for _ in range(1001)]),
                    metadata=signer.metadata(alice),
                )
            assert too_many.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "1000" in (too_many.value.details() or "")

            with pytest.raises(grpc.aio.AioRpcError) as anonymous:
                await stub.BatchListPredictions(pb.BatchListPredictionsRequest(molecule_ids=[m1]))
            assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED

        # The client chunks: 2500 ids (the two molecules last) are three calls, and the answers add up.
        client = PredictionClient(address)
        try:
            many = [str(uuid.uuid4()) for _ in range(2498)] + [m2, m1]
            found = await client.batch_list(signer.credentials(alice), many, ["ic50"], "chemprop")
            assert sorted(found, key=lambda p: (p.molecule_id, p.model_version)) == sorted(
                [
                    PredictedValue(m1, "ic50", 120.0, "nM", 0.6, "chemprop", "1.0"),
                    PredictedValue(m1, "ic50", 90.0, "nM", 0.9, "chemprop", "2.0"),
                    PredictedValue(m2, "ic50", 300.0, "nM", 0.4, "chemprop", "1.0"),
                ],
                key=lambda p: (p.molecule_id, p.model_version),
            )
            assert await client.batch_list(signer.credentials(alice), []) == []
        finally:
            await client.close()


async def test_the_client_reports_an_unreachable_service_as_an_integration_error() -> None:
    client = PredictionClient(f"127.0.0.1:{free_port()}")  # nothing listens there
    try:
        with pytest.raises(IntegrationError):
            await client.batch_list({"authorization": "Bearer x"}, [str(uuid.uuid4())])
    finally:
        await client.close()
