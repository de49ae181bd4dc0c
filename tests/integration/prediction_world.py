"""The prediction service for integration tests that read predictions: its PredictionServicer served over gRPC
(behind an authenticator trusting a fresh signing key, so a test mints the callers' tokens itself) and
predictions stored with the prediction store, one job per call (its own transaction: a later call's rows
are newer)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from molbridge.prediction.v1 import prediction_service_pb2_grpc as pb_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from services.prediction import bootstrap
from services.prediction.domain.jobs import MoleculeInput, Prediction, new_job
from services.prediction.engine_client import EngineClient, EngineSettings
from services.prediction.server import PredictionServicer
from services.prediction.store import transactions
from services.runtime.auth import AUDIENCE, ISSUER, Authenticator, Principal, TokenVerifier
from services.runtime.molecule_client import MoleculeClient
from services.runtime.process import Process, running
from services.runtime.settings import Settings
from stack.ports import free_port


class _NoApiKeys:
    async def resolve_api_key(self, secret: str) -> Principal:
        raise AssertionError("no API keys here")


class TokenSigner:
    """An authenticator trusting a fresh key, and the tokens it accepts."""

    def __init__(self) -> None:
        self._key = Ed25519PrivateKey.generate()
        jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(self._key.public_key())) | {"kid": "test"}

        async def jwks() -> dict[str, Any]:
            return {"keys": [jwk]}

        self.authenticator = Authenticator(TokenVerifier(jwks), _NoApiKeys())

    def token(self, principal: Principal) -> str:
        claims = {
            "sub": principal.subject, "org": principal.organization_id, "org_kind": principal.organization_kind,
            "roles": sorted(principal.roles), "iss": ISSUER, "aud": AUDIENCE, "iat": 1_700_000_000,
            "exp": 4_000_000_000,
        }  # fmt: skip
        return jwt.encode(claims, self._key, algorithm="EdDSA", headers={"kid": "test"})

    def credentials(self, principal: Principal) -> dict[str, str]:
        """The `authorization` header a caller sends (what a service forwards on its behalf)."""
        return {"authorization": f"Bearer {self.token(principal)}"}

    def metadata(self, principal: Principal) -> list[tuple[str, str]]:
        return list(self.credentials(principal).items())


@asynccontextmanager
async def served_predictions(database: AsyncEngine, signer: TokenSigner) -> AsyncIterator[str]:
    """PredictionService served on a free port (its address yielded). The engine and molecule clients point
    nowhere: reading predictions asks neither."""
    address = f"127.0.0.1:{free_port()}"
    engine = EngineClient(EngineSettings(url="http://127.0.0.1:9"))
    molecules = MoleculeClient("127.0.0.1:9")
    service = bootstrap.build_service(database, engine, molecules)
    process = Process(
        servicers=[(pb_grpc.add_PredictionServiceServicer_to_server, PredictionServicer(service))],
        authenticator=signer.authenticator,
    )
    try:
        async with running(
            "prediction", process, Settings.from_env("prediction", {"MOLBRIDGE_PREDICTION_ADDR": address})
        ):
            yield address
    finally:
        await molecules.close()
        await engine.close()


async def store_predictions(database: AsyncEngine, organization_id: str, predictions: Sequence[Prediction]) -> str:
    """One job of the organization holding these predictions (committed now); its id."""
    job = new_job(
        job_id=str(uuid.uuid4()),
        organization_id=organization_id,
        requested_by="tester",
        molecules=[MoleculeInput(m, "C", ()) for m in dict.fromkeys(p.molecule_id for p in predictions)],
        properties=sorted({p.property for p in predictions}),
        model="",
        reason="api",
    )
    async with transactions(database)() as uow:
        await uow.jobs.add(job)
        await uow.results.add(job, predictions)
    return job.id
