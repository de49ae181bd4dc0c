"""The import job RPCs of ImportService over real gRPC (in-process server, real token checks):
proto mapping, the watch stream's final message, the error report as HttpBody, errors as statuses."""

from __future__ import annotations

import csv
import io
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.rpc import error_details_pb2, status_pb2
from molbridge.molecule.v1 import import_service_pb2 as pb
from molbridge.molecule.v1 import import_service_pb2_grpc as pb_grpc

from services.molecule.server.imports import ImportServicer
from services.molecule.worker.chunks import RowPool
from services.runtime.auth import AUDIENCE, ISSUER, Authenticator, Principal, TokenVerifier
from services.runtime.errors import AuthenticationError
from services.runtime.process import Process, running
from services.runtime.settings import Settings
from stack.ports import free_port
from tests.integration.molecule_imports import ImportWorld, csv_bytes, pipeline, scientist, world_fixture

KID = "test-key"


class NoApiKeys:
    async def resolve_api_key(self, secret: str) -> Principal:
        raise AuthenticationError("API keys are not used in these tests")


class Tokens:
    def __init__(self) -> None:
        self._key = Ed25519PrivateKey.generate()
        public = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(self._key.public_key()))
        self.jwks = {"keys": [public | {"kid": KID, "use": "sig", "alg": "EdDSA"}]}

    async def provide(self) -> dict[str, Any]:
        return self.jwks

    def metadata(self, who: Principal) -> tuple[tuple[str, str], ...]:
        now = int(time.time())
        claims = {
            "sub": who.subject,
            "org": who.organization_id,
            "org_kind": who.organization_kind,
            "roles": sorted(who.roles),
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + 600,
            "jti": uuid.uuid4().hex,
        }
        token = jwt.encode(claims, self._key, algorithm="EdDSA", headers={"kid": KID})
        return (("authorization", f"Bearer {token}"),)


@pytest.fixture(scope="module")
def row_pool() -> Any:
    pool = RowPool(2)
    yield pool
    pool.close()


world = world_fixture()


@pytest.fixture
async def rpc(world: ImportWorld, tmp_path: Path) -> AsyncIterator[tuple[pb_grpc.ImportServiceStub, Tokens]]:
    tokens = Tokens()
    settings = Settings(
        service_name="molecule",
        data_dir=tmp_path,
        database_url=world.database_url,
        nats_url=world.nats_url,
        otlp_endpoint=None,
        log_level="INFO",
        # The listen address is derived from the environment (a property), never a keyword.
        env={"MOLBRIDGE_MOLECULE_ADDR": f"127.0.0.1:{free_port()}"},
    )
    process = Process(
        servicers=[
            (pb_grpc.add_ImportServiceServicer_to_server, ImportServicer(world.uploads, world.jobs(2)))
        ],
        authenticator=Authenticator(TokenVerifier(tokens.provide), NoApiKeys()),
    )
    async with running("molecule", process, settings):
        channel = grpc.aio.insecure_channel(settings.listen_addr)
        try:
            yield pb_grpc.ImportServiceStub(channel), tokens
        finally:
            await channel.close()


def error_reason(error: grpc.aio.AioRpcError) -> str:
    details = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert isinstance(details, bytes)
    status = status_pb2.Status.FromString(details)
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return info.reason


async def test_import_rpcs_from_start_to_error_report(
    world: ImportWorld, rpc: tuple[pb_grpc.ImportServiceStub, Tokens], row_pool: RowPool
) -> None:
    stub, tokens = rpc
    who = scientist()
    me = tokens.metadata(who)
    upload = await world.upload(
        who, csv_bytes(["smiles", "name"], [["CCO", "a"], ["C1CC", "=b"], ["CCN", "c"]]), "assay.csv"
    )
    started = await stub.StartImport(
        pb.StartImportRequest(storage_key=upload.storage_key, mapping={"smiles": "smiles", "name": "name"}),
        metadata=me,
    )
    job = started.data
    assert job.status == "queued" and job.total_rows == 3 and job.mode == "keep_valid"
    assert job.filename == "assay.csv" and job.created_by == who.subject and not job.HasField("finished_at")

    async with pipeline(world, row_pool):
        events = [
            event async for event in stub.WatchImport(pb.WatchImportRequest(job_id=job.job_id), metadata=me)
        ]
    assert [event.final for event in events][-1] and sum(event.final for event in events) == 1
    last = events[-1].data
    assert last.status == "completed" and last.HasField("finished_at")
    assert (last.processed_rows, last.registered, last.merged, last.rejected) == (3, 2, 0, 1)
    assert last.rows_per_second > 0 and last.eta_seconds == 0

    listed = await stub.ListImports(pb.ListImportsRequest(page=1, page_size=10), metadata=me)
    assert [j.job_id for j in listed.data] == [job.job_id] and listed.meta.total == 1

    call = stub.GetImportErrors(pb.GetImportErrorsRequest(job_id=job.job_id), metadata=me)
    body = await call
    assert body.content_type == "text/csv; charset=utf-8"
    assert 'filename="assay-errors.csv"' in dict(await call.initial_metadata())["content-disposition"]
    lines = list(csv.reader(io.StringIO(body.data.decode("utf-8-sig"), newline="")))
    assert lines == [
        ["row", "smiles", "name", "reason"],
        ["2", "C1CC", "'=b", "invalid SMILES: unclosed ring"],
    ]

    link = await stub.GetImportErrorsLink(pb.GetImportErrorsLinkRequest(job_id=job.job_id), metadata=me)
    assert link.data.url.endswith(f"/api/v1/molecules/imports/{job.job_id}/errors")

    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.CancelImport(pb.CancelImportRequest(job_id=job.job_id), metadata=me)
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_a_watch_of_a_cancelled_job_ends_with_a_final_message(
    world: ImportWorld, rpc: tuple[pb_grpc.ImportServiceStub, Tokens]
) -> None:
    stub, tokens = rpc
    who = scientist()
    me = tokens.metadata(who)
    upload = await world.upload(who, csv_bytes(["smiles"], [["CCO"], ["CCN"], ["CCC"]]))
    job = (
        await stub.StartImport(
            pb.StartImportRequest(
                storage_key=upload.storage_key, mapping={"smiles": "smiles"}, mode="reject_all"
            ),
            metadata=me,
        )
    ).data
    stream = stub.WatchImport(pb.WatchImportRequest(job_id=job.job_id), metadata=me)
    first = await stream.read()
    assert first.data.status == "queued" and not first.final
    cancelled = await stub.CancelImport(pb.CancelImportRequest(job_id=job.job_id), metadata=me)
    assert cancelled.data.status == "cancelled"
    rest = []
    while (event := await stream.read()) is not grpc.aio.EOF:
        rest.append(event)
    assert rest[-1].final and rest[-1].data.status == "cancelled"
    assert not any(event.final for event in rest[:-1])


async def test_errors_are_statuses_with_the_domain_reason(
    world: ImportWorld, rpc: tuple[pb_grpc.ImportServiceStub, Tokens]
) -> None:
    stub, tokens = rpc
    who = scientist()
    upload = await world.upload(who, csv_bytes(["smiles"], [["CCO"]]))
    job = (
        await stub.StartImport(
            pb.StartImportRequest(storage_key=upload.storage_key, mapping={"smiles": "smiles"}),
            metadata=tokens.metadata(who),
        )
    ).data
    stranger = tokens.metadata(scientist())
    calls = [
        stub.GetImport(pb.GetImportRequest(job_id=job.job_id), metadata=stranger),
        stub.GetImportErrors(pb.GetImportErrorsRequest(job_id=job.job_id), metadata=stranger),
        stub.CancelImport(pb.CancelImportRequest(job_id=job.job_id), metadata=stranger),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await call
        assert (
            error.value.code() == grpc.StatusCode.NOT_FOUND
            and error_reason(error.value) == "RESOURCE_NOT_FOUND"
        )
    with pytest.raises(grpc.aio.AioRpcError) as error:
        async for _ in stub.WatchImport(pb.WatchImportRequest(job_id=job.job_id), metadata=stranger):
            pass
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.StartImport(
            pb.StartImportRequest(storage_key=upload.storage_key, mapping={"smiles": "ic50"}),
            metadata=tokens.metadata(who),
        )
    assert (
        error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        and error_reason(error.value) == "VALIDATION_ERROR"
    )
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.GetImport(pb.GetImportRequest(job_id=job.job_id))
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
