"""The gRPC edge, through the real Envoy: the rendered gateway in front of a grpc.aio server that runs
the services' own MeshInterceptor (services/runtime/interceptors.py) with a few servicers of this test.

What a hostile or careless client sends must come back as the documented envelope (REST) or a
proper gRPC status (native gRPC), never a 500: header names gRPC refuses, undecodable bodies,
request ids that would poison the audit trail. The standard health Watch streams; the gateway's
JWKS refresh works, so a rotated signing key is trusted.
"""

from __future__ import annotations

import asyncio
import json
import re
import struct
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import jwt
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.api import httpbody_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from molbridge.health.v1 import health_service_pb2_grpc
from molbridge.identity.v1 import identity_service_pb2 as pb
from molbridge.identity.v1 import identity_service_pb2_grpc
from molbridge.molecule.v1 import import_service_pb2 as imports_pb
from molbridge.molecule.v1 import import_service_pb2_grpc

from gateway.envoy.policy import load_policy
from services.runtime.context import request_id_var
from services.runtime.errors import ValidationError
from services.runtime.interceptors import MeshInterceptor
from stack.ports import free_port
from tests.integration.test_gateway import (
    KID,
    SIGNING_KEY,
    Gateway,
    Health,
    _public_jwk,
    _running,
    _settings,
    _start_envoy,
    _wait_for_jwks,
    assert_envelope,
    bearer,
    error_info,
    token,
)

ROTATED_KID = "test-key-2"
ROTATED_KEY = Ed25519PrivateKey.generate()


class EdgeIdentity(identity_service_pb2_grpc.IdentityServiceServicer):
    def __init__(self) -> None:
        self.jwks_keys = [_public_jwk(SIGNING_KEY, KID)]

    async def GetJwks(self, request: pb.GetJwksRequest, context: grpc.aio.ServicerContext) -> httpbody_pb2.HttpBody:
        jwks = json.dumps({"keys": self.jwks_keys}).encode()
        return httpbody_pb2.HttpBody(content_type="application/json", data=jwks)

    async def Login(self, request: pb.LoginRequest, context: grpc.aio.ServicerContext) -> pb.LoginResponse:
        if request.email == "invalid":
            raise ValidationError("Not an email address", detail="EMAIL_INVALID", field_violations=[("email", "no @")])
        return pb.LoginResponse(data=pb.Session(access_token="a", user=pb.User(email=request.email)))

    async def GetMe(self, request: pb.GetMeRequest, context: grpc.aio.ServicerContext) -> pb.GetMeResponse:
        # The request id the service settled on, then one "key=value" per metadata entry received.
        seen = [f"request_id={request_id_var.get()}"]
        seen += [f"{k}={v}" for k, v in context.invocation_metadata() or () if isinstance(v, str)]
        return pb.GetMeResponse(data=pb.User(id="me", roles=seen))


class EdgeImports(import_service_pb2_grpc.ImportServiceServicer):
    async def StartImport(
        self, request: imports_pb.StartImportRequest, context: grpc.aio.ServicerContext
    ) -> imports_pb.StartImportResponse:
        mapping = ",".join(f"{k}={v}" for k, v in sorted(request.mapping.items()))
        return imports_pb.StartImportResponse(data=imports_pb.ImportJob(job_id=mapping))

    async def UploadCsv(self, requests: AsyncIterator[httpbody_pb2.HttpBody], context: Any) -> Any:
        size = 0
        async for chunk in requests:
            size += len(chunk.data)
        return imports_pb.UploadCsvResponse(data=imports_pb.StoredUpload(storage_key=str(size)))


@dataclass
class Edge:
    addr: str
    identity: EdgeIdentity
    health: health.aio.HealthServicer


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def edge() -> AsyncIterator[Edge]:
    server = grpc.aio.server(interceptors=[MeshInterceptor("edge", None, ())])
    identity = EdgeIdentity()
    identity_service_pb2_grpc.add_IdentityServiceServicer_to_server(identity, server)
    import_service_pb2_grpc.add_ImportServiceServicer_to_server(EdgeImports(), server)
    health_service_pb2_grpc.add_HealthServiceServicer_to_server(Health(), server)
    standard_health = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(standard_health, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield Edge(f"127.0.0.1:{port}", identity, standard_health)
    await server.stop(grace=None)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gateway(edge: Edge, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    """JWKS refreshed every second (so a key rotation shows quickly); generous rate limits."""
    tmp = tmp_path_factory.mktemp("edge-gateway")
    policy = load_policy()
    policy["auth"]["jwks_cache_seconds"] = 1
    upstreams = {"identity": edge.addr, "molecule": edge.addr}
    async with _running(tmp, _settings(tmp, upstreams, rate_limit_scale=100.0), policy) as gw:
        yield gw


@pytest_asyncio.fixture(loop_scope="session")
async def client(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
        yield client


def echoed(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 200, response.text
    return dict(role.split("=", 1) for role in response.json()["data"]["roles"])


def grpc_frame(message: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(message)) + message


# --- header names HTTP allows and gRPC metadata does not ----------------------------------------

BAD_HEADER_NAMES = ["a+b", "#", "%", "*x", "a^b", "a|b", "x~y", "!", "x-trace-bin", "x-empty-bin"]


@pytest.mark.parametrize("name", BAD_HEADER_NAMES)
async def test_rest_with_a_header_grpc_refuses_is_answered_normally(client: httpx.AsyncClient, name: str) -> None:
    value = "!!not base64" if name.endswith("-bin") else "v"
    public = await client.get("/api/v1/health", headers={name: value})
    assert public.status_code == 200, public.text
    # Without a token: the gateway's 401 envelope, not the gRPC layer's 500.
    assert_envelope(await client.get("/api/v1/users/me", headers={name: value}), 401, "AUTHENTICATION_ERROR")
    seen = echoed(await client.get("/api/v1/users/me", headers={name: value, "Mixed-Case": "ok", **bearer(token())}))
    assert name not in seen and seen["mixed-case"] == "ok"  # dropped; ordinary names pass


async def test_native_grpc_with_a_header_grpc_refuses_is_answered_normally(gateway: Gateway) -> None:
    # grpcio refuses to send such names itself: a raw HTTP/2 gRPC request does.
    request = grpc_frame(health_pb2.HealthCheckRequest().SerializeToString())
    headers = {"content-type": "application/grpc", "te": "trailers", **{name: "v" for name in BAD_HEADER_NAMES}}
    async with httpx.AsyncClient(base_url=gateway.url, http1=False, http2=True) as h2:
        response = await h2.post("/grpc.health.v1.Health/Check", content=request, headers=headers)
    assert response.status_code == 200 and response.headers["content-type"] == "application/grpc"
    answer = health_pb2.HealthCheckResponse.FromString(response.content[5:])
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


# --- request ids -------------------------------------------------------------------------------------


@pytest.mark.parametrize("request_id", [str(uuid.uuid4()), "client-42.retry_1"])
async def test_a_plain_request_id_is_kept(client: httpx.AsyncClient, request_id: str) -> None:
    response = await client.get("/api/v1/users/me", headers={"x-request-id": request_id, **bearer(token())})
    assert echoed(response)["request_id"] == request_id
    assert response.headers["x-request-id"] == request_id


@pytest.mark.parametrize("request_id", ["a" * 65, "../../etc/passwd", "<script>x</script>", "id with spaces", "é"])
async def test_an_unsafe_request_id_is_replaced(client: httpx.AsyncClient, request_id: str) -> None:
    headers = [(b"x-request-id", request_id.encode()), (b"authorization", f"Bearer {token()}".encode())]
    response = await client.get("/api/v1/users/me", headers=headers)
    seen = echoed(response)
    assert re.fullmatch(r"[A-Za-z0-9._-]{1,64}", seen["request_id"]) and seen["request_id"] != request_id
    assert seen["x-request-id"] == seen["request_id"] == response.headers["x-request-id"]


async def test_the_service_replaces_an_unsafe_request_id_of_a_direct_call(edge: Edge) -> None:
    async with grpc.aio.insecure_channel(edge.addr) as channel:
        stub = identity_service_pb2_grpc.IdentityServiceStub(channel)
        me = await stub.GetMe(pb.GetMeRequest(), metadata=(("x-request-id", "x" * 100),))
    seen = dict(role.split("=", 1) for role in me.data.roles)
    assert re.fullmatch(r"[0-9a-f]{32}", seen["request_id"])


# --- bodies that do not decode ------------------------------------------------------------------------

WRONG_MAPPINGS = [
    {"smiles": {"nested": "object"}},
    {"smiles": ["a", "list"]},
    {"smiles": 7},
    {"smiles": True},
    {"smiles": None},
    "not an object",
    ["smiles"],
    42,
]


@pytest.mark.parametrize("mapping", WRONG_MAPPINGS, ids=repr)
async def test_a_wrong_typed_map_value_is_400(client: httpx.AsyncClient, mapping: Any) -> None:
    path = "/api/v1/molecules/upload/csv/key-1/import"
    response = await client.post(path, json={"mapping": mapping}, headers=bearer(token()))
    if response.status_code == 201:  # StartImport creates an import job
        # The transcoder may coerce a scalar into the string the map expects: then it arrives as text.
        assert isinstance(mapping, dict) and not isinstance(next(iter(mapping.values())), dict | list)
        return
    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert error_info(error)["metadata"]["detail"] == "MALFORMED_REQUEST"


async def test_a_well_typed_map_arrives(client: httpx.AsyncClient) -> None:
    path = "/api/v1/molecules/upload/csv/key-1/import"
    response = await client.post(path, json={"mapping": {"SMILES": "smiles", "Name": "name"}}, headers=bearer(token()))
    assert response.status_code == 201, response.text  # StartImport creates an import job
    assert response.json()["data"]["job_id"] == "Name=name,SMILES=smiles"


WRONG_SCALARS = [
    {"email": {"an": "object"}},
    {"email": ["a", "list"]},
    {"email": "a@b.test", "password": {"x": None}},
    {"email": "a@b.test", "password": [1]},
]


@pytest.mark.parametrize("body", WRONG_SCALARS, ids=repr)
async def test_a_wrong_typed_scalar_is_400(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    error = assert_envelope(await client.post("/api/v1/auth/login", json=body), 400, "VALIDATION_ERROR")
    assert error_info(error)["metadata"]["detail"] == "MALFORMED_REQUEST"


GARBAGE = [b"\xff\xff\xff\xff", b"\x0a\x05ab", b"\x08", b"\x0a\x02\xc3\x28"]  # bad varint, short, truncated, bad UTF-8


@pytest.mark.parametrize("through_gateway", [True, False])
async def test_garbage_bytes_on_native_grpc_are_invalid_argument(
    gateway: Gateway, edge: Edge, through_gateway: bool
) -> None:
    target = gateway.grpc_target if through_gateway else edge.addr
    metadata = (("authorization", f"Bearer {token()}"),)
    async with grpc.aio.insecure_channel(target) as channel:
        login = channel.unary_unary("/molbridge.identity.v1.IdentityService/Login")
        upload = channel.stream_unary("/molbridge.molecule.v1.ImportService/UploadCsv")
        for garbage in GARBAGE:
            for call in (login(garbage), upload(iter([garbage]), metadata=metadata)):
                with pytest.raises(grpc.aio.AioRpcError) as failure:
                    await call
                assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (garbage, failure.value)
                status = await rpc_status.aio.from_call(call)
                assert status is not None
                info = error_details_pb2.ErrorInfo()
                assert status.details[0].Unpack(info)
                assert (info.reason, info.metadata["detail"]) == ("VALIDATION_ERROR", "MALFORMED_REQUEST")
        # A good stream still decodes message by message.
        assert (await upload(iter([httpbody_pb2.HttpBody(data=b"abc").SerializeToString()]), metadata=metadata))


# --- rich errors, both protocols ------------------------------------------------------------------------


async def test_domain_errors_carry_their_details(gateway: Gateway, client: httpx.AsyncClient) -> None:
    error = assert_envelope(
        await client.post("/api/v1/auth/login", json={"email": "invalid", "password": "x"}), 400, "VALIDATION_ERROR"
    )
    assert error_info(error)["metadata"]["detail"] == "EMAIL_INVALID"
    async with grpc.aio.insecure_channel(gateway.grpc_target) as channel:
        call = identity_service_pb2_grpc.IdentityServiceStub(channel).Login(pb.LoginRequest(email="invalid"))
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await call
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        status = await rpc_status.aio.from_call(call)
        assert status is not None
        bad_request = error_details_pb2.BadRequest()
        assert status.details[1].Unpack(bad_request) and bad_request.field_violations[0].field == "email"


# --- error bodies are valid UTF-8 -----------------------------------------------------------------------


async def test_error_bodies_are_valid_utf8(client: httpx.AsyncClient) -> None:
    bodies = [
        b'{"email": "\xff\xfe", "password": "x"}',  # not UTF-8 at all
        b'{"email": "\xed\xa0\x80", "password": "x"}',  # an encoded surrogate
        b'{"email": "\\ud800", "password": "x"}',  # a lone surrogate escape
        b'{"em\xc3\x28il": 1',  # malformed JSON around a bad sequence
    ]
    for body in bodies:
        response = await client.post("/api/v1/auth/login", content=body, headers={"content-type": "application/json"})
        assert response.status_code < 500, response.text
        if response.status_code >= 400:
            response.content.decode("utf-8")  # strict: raises on any invalid sequence
            assert_envelope(response, response.status_code, "VALIDATION_ERROR")


# --- the standard health Watch ---------------------------------------------------------------------------


@pytest.mark.parametrize("through_gateway", [True, False])
async def test_health_watch_streams_status_changes(gateway: Gateway, edge: Edge, through_gateway: bool) -> None:
    service = f"watched-{through_gateway}"
    await edge.health.set(service, health_pb2.HealthCheckResponse.SERVING)
    async with grpc.aio.insecure_channel(gateway.grpc_target if through_gateway else edge.addr) as channel:
        call = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=service))
        first = await call.read()
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        await edge.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        second = await call.read()
        assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING
        call.cancel()


# --- JWKS refresh and key rotation -----------------------------------------------------------------------


async def jwt_stats(gateway: Gateway) -> dict[str, int]:
    admin = re.search(r"port_value: (\d+)", gateway.config.read_text())
    assert admin is not None
    async with httpx.AsyncClient() as admin_client:
        text = (await admin_client.get(f"http://127.0.0.1:{admin.group(1)}/stats")).text
    stats = dict(line.split(": ", 1) for line in text.splitlines() if ".jwt_authn." in line)
    return {name.rsplit(".", 1)[1]: int(value) for name, value in stats.items() if value.isdigit()}


async def test_jwks_refresh_succeeds_and_trusts_a_rotated_key(gateway: Gateway, edge: Edge) -> None:
    new_kid_token = rotated_token()
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        assert (await client.get("/api/v1/users/me", headers=bearer(token()))).status_code == 200
        # Envoy's very first fetch may race the identity endpoint's first health check (retried 0.2 s
        # later); what matters here is that no refresh fails from now on.
        before = await jwt_stats(gateway)
        assert (await client.get("/api/v1/users/me", headers=bearer(new_kid_token))).status_code == 401
        edge.identity.jwks_keys.append(_public_jwk(ROTATED_KEY, ROTATED_KID))
        try:
            for _ in range(100):  # the cache lasts a second here; give the refresh a few rounds
                response = await client.get("/api/v1/users/me", headers=bearer(new_kid_token))
                if response.status_code == 200:
                    break
                await asyncio.sleep(0.1)
            assert response.status_code == 200, response.text
            # The old key still works beside the new one.
            assert (await client.get("/api/v1/users/me", headers=bearer(token()))).status_code == 200
        finally:
            edge.identity.jwks_keys.pop()
    stats = await jwt_stats(gateway)
    assert stats["jwks_fetch_success"] > before["jwks_fetch_success"], (before, stats)
    assert stats.get("jwks_fetch_failed", 0) == before.get("jwks_fetch_failed", 0), (before, stats)


def rotated_token() -> str:
    """A token signed with the key identity rotates to (its kid is not published yet)."""
    now = int(time.time())
    claims = {"sub": "rotated-user", "iss": "molbridge-identity", "aud": "molbridge", "iat": now, "exp": now + 900}
    return jwt.encode(claims, ROTATED_KEY, algorithm="EdDSA", headers={"kid": ROTATED_KID})


async def test_identity_starting_after_the_gateway_is_trusted_soon(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The gateway's first JWKS fetch fails (identity is not up yet): it keeps retrying, so tokens
    are accepted once identity answers, without waiting for the cache duration (a minute)."""
    tmp = tmp_path_factory.mktemp("late-identity")
    addr = f"127.0.0.1:{free_port()}"
    process, gateway = _start_envoy(tmp, _settings(tmp, {"identity": addr}))
    server = grpc.aio.server(interceptors=[MeshInterceptor("late", None, ())])
    try:
        async with httpx.AsyncClient(base_url=gateway.url) as client:
            refused = await client.get("/api/v1/users/me", headers=bearer(token()))
            assert_envelope(refused, 401, "AUTHENTICATION_ERROR")
        identity_service_pb2_grpc.add_IdentityServiceServicer_to_server(EdgeIdentity(), server)
        server.add_insecure_port(addr)
        await server.start()
        await _wait_for_jwks(gateway)  # polls for up to 10 s
        assert (await jwt_stats(gateway))["jwks_fetch_failed"] >= 1  # it did start before identity
    finally:
        process.stop()
        await server.stop(grace=None)
