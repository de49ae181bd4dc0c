"""The Envoy gateway, for real: the rendered config in front of a small grpc.aio server of this test.

The server implements molbridge.health.v1.HealthService and a few IdentityService methods:
GetJwks (a test Ed25519 key), Login, GetMe (echoes the metadata it received), and CreateUser,
which fails with the gRPC code named in `email` and an ErrorInfo whose reason is `full_name`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib
import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import jwt
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.api import httpbody_pb2
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from molbridge.health.v1 import health_service_pb2, health_service_pb2_grpc
from molbridge.identity.v1 import identity_service_pb2 as pb
from molbridge.identity.v1 import identity_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from gateway.envoy.render import GatewaySettings, write_config
from stack.envoy import envoy_process
from stack.ports import free_port
from stack.processes import ManagedProcess, find_executable

REPO = Path(__file__).resolve().parents[2]
DESCRIPTOR = REPO / "build" / "descriptor.pb"
KID = "test-key-1"
ORIGIN = "http://localhost:3000"
EXTRA_ENVOY_ARGS: list[str] = []  # e.g. ["--component-log-level", "jwt:debug"] when debugging


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _public_jwk(key: Ed25519PrivateKey, kid: str) -> dict[str, str]:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": _b64url(raw), "kid": kid, "alg": "EdDSA", "use": "sig"}


SIGNING_KEY = Ed25519PrivateKey.generate()
OTHER_KEY = Ed25519PrivateKey.generate()  # not published: its tokens must be refused


def token(sub: str | None = None, *, key: Ed25519PrivateKey = SIGNING_KEY, **overrides: Any) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": sub or f"user-{uuid.uuid4()}",
        "org": "org-1",
        "org_kind": "PHARMA",
        "roles": ["pharma_scientist"],
        "iss": "molbridge-identity",
        "aud": "molbridge",
        "iat": now,
        "exp": now + 900,
        "jti": str(uuid.uuid4()),
    }
    claims.update(overrides)
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": KID})


def bearer(value: str) -> dict[str, str]:
    return {"authorization": f"Bearer {value}"}


# --- the upstream ---------------------------------------------------------------------------------


def _status(code_name: str, reason: str, message: str) -> status_pb2.Status:
    code = code_pb2.Code.Value(code_name)
    details: list[Any] = []
    if reason:
        details.append(
            error_details_pb2.ErrorInfo(reason=reason, domain="identity.molbridge", metadata={"detail": "TEST_DETAIL"})
        )
    if code == code_pb2.INVALID_ARGUMENT:
        violation = error_details_pb2.BadRequest.FieldViolation(field="password", description="too short")
        details.append(error_details_pb2.BadRequest(field_violations=[violation]))
    if code == code_pb2.RESOURCE_EXHAUSTED or reason == "SERVICE_UNAVAILABLE":
        details.append(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=7)))
    packed = []
    for detail in details:
        any_detail = any_pb2.Any()
        any_detail.Pack(detail)
        packed.append(any_detail)
    return status_pb2.Status(code=code, message=message, details=packed)


class Identity(identity_service_pb2_grpc.IdentityServiceServicer):
    def __init__(self, jwks: dict[str, Any]) -> None:
        self.jwks = jwks

    async def GetJwks(self, request: pb.GetJwksRequest, context: grpc.aio.ServicerContext) -> httpbody_pb2.HttpBody:
        return httpbody_pb2.HttpBody(content_type="application/json", data=json.dumps(self.jwks).encode())

    async def Login(self, request: pb.LoginRequest, context: grpc.aio.ServicerContext) -> pb.LoginResponse:
        user = pb.User(id="u-1", email=request.email, organization_id="org-1")
        session = pb.Session(access_token="access", refresh_token="refresh", token_type="bearer", user=user)
        return pb.LoginResponse(data=session)

    async def GetMe(self, request: pb.GetMeRequest, context: grpc.aio.ServicerContext) -> pb.GetMeResponse:
        # Echo what reached the service: one "key=value" role per metadata entry.
        seen = [f"{k}={v}" for k, v in context.invocation_metadata() or () if isinstance(v, str)]
        return pb.GetMeResponse(data=pb.User(id="me", roles=seen))

    async def ListOrganizations(
        self, request: pb.ListOrganizationsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListOrganizationsResponse:
        org = pb.Organization(id="org-1", name="Acme", kind=pb.Organization.PHARMA)
        meta = pb.ListOrganizationsResponse().meta
        meta.page, meta.page_size, meta.total = request.page or 1, request.page_size or 50, 1
        return pb.ListOrganizationsResponse(data=[org], meta=meta)

    async def CreateUser(
        self, request: pb.CreateUserRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateUserResponse:
        await context.abort_with_status(rpc_status.to_status(_status(request.email, request.full_name, "boom")))
        raise AssertionError("unreachable")

    async def AuthenticateApiKey(
        self, request: pb.AuthenticateApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.AuthenticateApiKeyResponse:
        return pb.AuthenticateApiKeyResponse(key_id="leaked")


class Health(health_service_pb2_grpc.HealthServiceServicer):
    async def GetHealth(
        self, request: health_service_pb2.GetHealthRequest, context: grpc.aio.ServicerContext
    ) -> health_service_pb2.GetHealthResponse:
        mesh = health_service_pb2.MeshHealth(status="ok", services={"identity": "SERVING"})
        return health_service_pb2.GetHealthResponse(data=mesh)


class TraceCollector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC receiver: what Envoy's tracer exports."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.aio.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self) -> list[tuple[str, Any]]:
        """(service.name, span) for every span received."""
        out = []
        for request in self.requests:
            for resource_spans in request.resource_spans:
                attrs = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope in resource_spans.scope_spans:
                    out += [(attrs.get("service.name", ""), span) for span in scope.spans]
        return out


@dataclass
class Upstream:
    addr: str
    traces: TraceCollector


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def upstream() -> AsyncIterator[Upstream]:
    server = grpc.aio.server()
    jwks = {"keys": [_public_jwk(SIGNING_KEY, KID)]}
    identity_service_pb2_grpc.add_IdentityServiceServicer_to_server(Identity(jwks), server)
    health_service_pb2_grpc.add_HealthServiceServicer_to_server(Health(), server)
    traces = TraceCollector()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(traces, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield Upstream(f"127.0.0.1:{port}", traces)
    await server.stop(grace=None)


# --- Envoy ----------------------------------------------------------------------------------------


@dataclass
class Gateway:
    url: str
    grpc_target: str
    access_log: Path
    config: Path


def _start_envoy(
    tmp: Path, settings: GatewaySettings, policy: dict[str, Any] | None = None
) -> tuple[ManagedProcess, Gateway]:
    config = write_config(settings, tmp / "envoy.yaml", policy)
    # Access log lines reach the file within a second (Envoy's default flush interval is 10 s).
    extra = list(EXTRA_ENVOY_ARGS)
    process = envoy_process(config, admin_port=settings.admin_port, log_path=tmp / "envoy.log", extra_args=extra)
    process.start()
    assert settings.access_log_path is not None
    gateway = Gateway(
        url=f"http://127.0.0.1:{settings.gateway_port}",
        grpc_target=f"127.0.0.1:{settings.gateway_port}",
        access_log=settings.access_log_path,
        config=config,
    )
    return process, gateway


async def _wait_for_jwks(gateway: Gateway) -> None:
    """jwt_authn fetches the JWKS asynchronously: wait until a token is accepted."""
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        for _ in range(200):
            response = await client.get("/api/v1/users/me", headers=bearer(token("warm-up")))
            if response.status_code == 200:
                return
            await asyncio.sleep(0.05)
    raise AssertionError(f"the gateway never accepted a token: {response.status_code} {response.text}")


@contextlib.asynccontextmanager
async def _running(
    tmp: Path, settings: GatewaySettings, policy: dict[str, Any] | None = None
) -> AsyncIterator[Gateway]:
    process, gateway = _start_envoy(tmp, settings, policy)
    try:
        await _wait_for_jwks(gateway)
        yield gateway
    finally:
        process.stop()


def _settings(tmp: Path, upstreams: dict[str, str], **overrides: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "gateway_port": free_port(),
        "admin_port": free_port(),
        "upstreams": upstreams,
        "descriptor_path": DESCRIPTOR,
        "otlp_endpoint": None,
        "access_log_path": tmp / "access.log",
        "openapi_path": tmp / "openapi.json",
        "cors_origins": (ORIGIN,),
        "rate_limit_scale": 1.0,
    }
    values.update(overrides)
    return GatewaySettings(**values)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gateway(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    """The default policy (DOMAIN.md rate limits), tracing to the upstream's OTLP receiver."""
    tmp = tmp_path_factory.mktemp("gateway")
    async with _running(tmp, _settings(tmp, {"identity": upstream.addr}, otlp_endpoint=upstream.addr)) as gw:
        yield gw


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def strict_gateway(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    """Limits scaled down to 1/20 (standard: burst 1), a health upstream that is down, no tracer."""
    tmp = tmp_path_factory.mktemp("strict-gateway")
    dead = f"127.0.0.1:{free_port()}"
    upstreams = {"identity": upstream.addr, "health": dead}
    # openapi_path=None: the document is inlined into the config instead of a file.
    async with _running(tmp, _settings(tmp, upstreams, rate_limit_scale=0.05, openapi_path=None)) as gw:
        yield gw


@pytest_asyncio.fixture(loop_scope="session")
async def client(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
        yield client


def client_from(gateway: Gateway, address: str) -> httpx.AsyncClient:
    """A client whose connections come from another loopback address (another client to the gateway)."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    return httpx.AsyncClient(base_url=gateway.url, transport=transport, timeout=10)


def assert_envelope(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["error"]["details"], list)
    return dict(body["error"])


def error_info(error: dict[str, Any]) -> dict[str, Any]:
    infos = [d for d in error["details"] if d.get("@type", "").endswith("google.rpc.ErrorInfo")]
    assert infos, error
    return dict(infos[0])


def echoed(response: httpx.Response) -> dict[str, str]:
    """The metadata GetMe saw, from its echo."""
    assert response.status_code == 200, response.text
    return dict(role.split("=", 1) for role in response.json()["data"]["roles"])


@pytest.mark.parametrize("traced", [False, True])
def test_rendered_configs_validate(tmp_path: Path, traced: bool) -> None:
    # Replicas: a comma list of addresses, or a DNS name (each address it resolves to).
    upstreams = {"identity": "127.0.0.1:50051,127.0.0.1:50151", "molecule": "localhost:50052"}
    settings = _settings(
        tmp_path,
        upstreams,
        otlp_endpoint="127.0.0.1:4317" if traced else None,
        access_log_path=tmp_path / "access.log" if traced else None,
        openapi_path=tmp_path / "openapi.json" if traced else None,  # None: inlined into the config
    )
    config = write_config(settings, tmp_path / "envoy.yaml")
    argv = [find_executable("envoy"), "--mode", "validate", "-c", str(config), "--disable-hot-restart"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


# --- success ----------------------------------------------------------------------------------------


async def test_success_passes_through_as_data(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/auth/login", json={"email": "a@b.test", "password": "pw"})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["user"]["email"] == "a@b.test"
    assert data["token_type"] == "bearer"
    assert data["mfa_required"] is False  # defaults are printed, in snake_case
    assert response.headers["x-request-id"]


async def test_list_has_meta_and_enums_as_names(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/organizations?page=2&page_size=10", headers=bearer(token()))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["data"][0]["kind"] == "PHARMA"
    assert body["meta"]["page"] == 2 and body["meta"]["page_size"] == 10


async def test_token_subject_reaches_the_service(client: httpx.AsyncClient) -> None:
    seen = echoed(await client.get("/api/v1/users/me", headers=bearer(token("user-42"))))
    assert seen["x-molbridge-sub"] == "user-42"
    assert seen["authorization"].startswith("Bearer ")  # forwarded: the service verifies it again


# --- errors from the service --------------------------------------------------------------------------

SERVICE_ERRORS = [
    # gRPC code, ErrorInfo reason, HTTP status, envelope code
    ("INVALID_ARGUMENT", "VALIDATION_ERROR", 400, "VALIDATION_ERROR"),
    ("UNAUTHENTICATED", "AUTHENTICATION_ERROR", 401, "AUTHENTICATION_ERROR"),
    ("PERMISSION_DENIED", "AUTHORIZATION_ERROR", 403, "AUTHORIZATION_ERROR"),
    ("NOT_FOUND", "RESOURCE_NOT_FOUND", 404, "RESOURCE_NOT_FOUND"),
    ("ALREADY_EXISTS", "RESOURCE_CONFLICT", 409, "RESOURCE_CONFLICT"),
    ("FAILED_PRECONDITION", "RESOURCE_CONFLICT", 409, "RESOURCE_CONFLICT"),
    ("ABORTED", "RESOURCE_CONFLICT", 409, "RESOURCE_CONFLICT"),
    ("RESOURCE_EXHAUSTED", "RATE_LIMITED", 429, "RATE_LIMITED"),
    ("UNAVAILABLE", "INTEGRATION_ERROR", 502, "INTEGRATION_ERROR"),
    ("UNAVAILABLE", "SERVICE_UNAVAILABLE", 503, "SERVICE_UNAVAILABLE"),  # the service's database is down
    ("INTERNAL", "INTERNAL_ERROR", 500, "INTERNAL_ERROR"),
    # Without ErrorInfo the gRPC code decides.
    ("INVALID_ARGUMENT", "", 400, "VALIDATION_ERROR"),
    ("FAILED_PRECONDITION", "", 409, "RESOURCE_CONFLICT"),
    ("UNAVAILABLE", "", 502, "INTEGRATION_ERROR"),
    ("NOT_FOUND", "", 404, "RESOURCE_NOT_FOUND"),
    ("UNKNOWN", "", 500, "INTERNAL_ERROR"),
    # The reason wins over the code.
    ("FAILED_PRECONDITION", "VALIDATION_ERROR", 400, "VALIDATION_ERROR"),
]


@pytest.mark.parametrize(("grpc_code", "reason", "status", "code"), SERVICE_ERRORS)
async def test_service_errors_use_the_envelope(
    client: httpx.AsyncClient, grpc_code: str, reason: str, status: int, code: str
) -> None:
    body = {"email": grpc_code, "full_name": reason}
    response = await client.post("/api/v1/users", json=body, headers=bearer(token()))
    error = assert_envelope(response, status, code)
    assert error["message"] == "boom"
    if reason:
        info = error_info(error)
        assert info["reason"] == reason and info["domain"] == "identity.molbridge"
        assert info["metadata"] == {"detail": "TEST_DETAIL"}
    if grpc_code == "INVALID_ARGUMENT":
        bad = [d for d in error["details"] if d["@type"].endswith("google.rpc.BadRequest")]
        violation = bad[0]["field_violations"][0]
        assert (violation["field"], violation["description"]) == ("password", "too short")
    if status in (429, 503):
        assert response.headers["retry-after"] == "7"  # from the service's RetryInfo
    else:
        assert "retry-after" not in response.headers


# --- errors from the gateway itself ---------------------------------------------------------------------


async def test_unknown_routes_are_404(client: httpx.AsyncClient) -> None:
    headers = bearer(token())
    for method, path in [("GET", "/api/v1/nothing-here"), ("PUT", "/api/v1/organizations/o-1"), ("GET", "/elsewhere")]:
        error = assert_envelope(await client.request(method, path, headers=headers), 404, "RESOURCE_NOT_FOUND")
        assert path in error["message"]


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/auth/login", content=b'{"email": ', headers={"content-type": "application/json"}
    )
    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert error_info(error)["metadata"]["detail"] == "MALFORMED_REQUEST"


async def test_body_over_the_limit_is_413_naming_it(client: httpx.AsyncClient) -> None:
    big = {"email": "a@b.test", "password": "x" * (2 * 1024 * 1024)}
    response = await client.post("/api/v1/auth/login", json=big)
    error = assert_envelope(response, 413, "VALIDATION_ERROR")
    assert "1048576 bytes" in error["message"]
    assert error_info(error)["metadata"]["limit_bytes"] == "1048576"


@pytest.mark.parametrize(
    ("credentials", "detail"),
    [
        ({}, "TOKEN_MISSING"),
        (bearer("not-a-jwt"), "TOKEN_INVALID"),
        (bearer(token(exp=int(time.time()) - 3600)), "TOKEN_EXPIRED"),
        (bearer(token(key=OTHER_KEY)), "TOKEN_INVALID"),
        (bearer(token(aud="someone-else")), "TOKEN_INVALID"),
        (bearer(token(iss="someone-else")), "TOKEN_INVALID"),
    ],
)
async def test_missing_or_bad_tokens_are_401(
    client: httpx.AsyncClient, credentials: dict[str, str], detail: str
) -> None:
    error = assert_envelope(await client.get("/api/v1/users/me", headers=credentials), 401, "AUTHENTICATION_ERROR")
    assert error_info(error)["metadata"]["detail"] == detail


async def test_public_routes_need_no_token(client: httpx.AsyncClient) -> None:
    health = await client.get("/api/v1/health")
    assert health.status_code == 200 and health.json()["data"]["status"] == "ok"
    jwks = await client.get("/api/v1/auth/jwks")
    assert jwks.status_code == 200 and jwks.json()["keys"][0]["kid"] == KID
    for path in ["/api/v1/auth/refresh", "/api/v1/auth/password-reset/request", "/api/v1/auth/mfa/verify"]:
        # Reaches the service (which does not implement it here): not a 401 from the gateway.
        response = await client.post(path, json={})
        assert response.status_code != 401, (path, response.text)


async def test_api_keys_skip_jwt_and_reach_the_service(client: httpx.AsyncClient) -> None:
    seen = echoed(await client.get("/api/v1/users/me", headers=bearer("mbk_secret1")))
    assert seen["x-api-key"] == "mbk_secret1"
    assert "authorization" not in seen  # moved, so no JWT check trips over it
    seen = echoed(await client.get("/api/v1/users/me", headers={"x-api-key": "mbk_secret2"}))
    assert seen["x-api-key"] == "mbk_secret2"
    # A token beside an API key cannot authenticate the request (its rate-limit bucket is the key's).
    both = {"x-api-key": "mbk_secret3", **bearer(token("someone"))}
    seen = echoed(await client.get("/api/v1/users/me", headers=both))
    assert seen["x-api-key"] == "mbk_secret3" and "authorization" not in seen and "x-molbridge-sub" not in seen


async def test_clients_cannot_forge_the_subject_header(client: httpx.AsyncClient) -> None:
    forged = {"x-api-key": "mbk_k", "x-molbridge-sub": "someone-else"}
    assert "x-molbridge-sub" not in echoed(await client.get("/api/v1/users/me", headers=forged))
    forged = {**bearer(token("real-user")), "x-molbridge-sub": "someone-else"}
    assert echoed(await client.get("/api/v1/users/me", headers=forged))["x-molbridge-sub"] == "real-user"


async def test_internal_method_is_unreachable(gateway: Gateway, client: httpx.AsyncClient) -> None:
    path = "/molbridge.identity.v1.IdentityService/AuthenticateApiKey"
    response = await client.post(path, json={"secret": "mbk_x"}, headers=bearer(token()))
    assert_envelope(response, 404, "RESOURCE_NOT_FOUND")
    async with grpc.aio.insecure_channel(gateway.grpc_target) as channel:
        stub = identity_service_pb2_grpc.IdentityServiceStub(channel)
        for metadata in [(("authorization", f"Bearer {token()}"),), ()]:
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await stub.AuthenticateApiKey(pb.AuthenticateApiKeyRequest(secret="mbk_x"), metadata=metadata)
            assert failure.value.code() == grpc.StatusCode.UNIMPLEMENTED


# --- native gRPC on the same port ------------------------------------------------------------------------


async def test_native_grpc_is_authenticated_like_rest(gateway: Gateway) -> None:
    async with grpc.aio.insecure_channel(gateway.grpc_target) as channel:
        stub = identity_service_pb2_grpc.IdentityServiceStub(channel)
        for metadata in [
            (),
            (("authorization", "Bearer garbage"),),
            (("authorization", f"Bearer {token(key=OTHER_KEY)}"),),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await stub.GetMe(pb.GetMeRequest(), metadata=metadata)
            assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED
        me = await stub.GetMe(pb.GetMeRequest(), metadata=(("authorization", f"Bearer {token('grpc-user')}"),))
        assert "x-molbridge-sub=grpc-user" in me.data.roles
        me = await stub.GetMe(pb.GetMeRequest(), metadata=(("authorization", "Bearer mbk_grpc"),))
        assert "x-api-key=mbk_grpc" in me.data.roles
        # Public methods need no token.
        login = await stub.Login(pb.LoginRequest(email="g@b.test"))
        assert login.data.user.email == "g@b.test"
        health = health_service_pb2_grpc.HealthServiceStub(channel)
        assert (await health.GetHealth(health_service_pb2.GetHealthRequest())).data.status == "ok"


async def test_native_grpc_errors_are_untouched(gateway: Gateway) -> None:
    async with grpc.aio.insecure_channel(gateway.grpc_target) as channel:
        stub = identity_service_pb2_grpc.IdentityServiceStub(channel)
        request = pb.CreateUserRequest(email="FAILED_PRECONDITION", full_name="RESOURCE_CONFLICT")
        call = stub.CreateUser(request, metadata=(("authorization", f"Bearer {token()}"),))
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await call
        assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert failure.value.details() == "boom"
        status = await rpc_status.aio.from_call(call)
        assert status is not None
        info = error_details_pb2.ErrorInfo()
        assert status.details[0].Unpack(info) and info.reason == "RESOURCE_CONFLICT"


# --- rate limits (strict gateway: 1/20 of DOMAIN.md's numbers) -------------------------------------------


async def _until_429(client: httpx.AsyncClient, method: str, path: str, **kwargs: Any) -> httpx.Response:
    for _ in range(10):
        response = await client.request(method, path, **kwargs)
        if response.status_code == 429:
            return response
        assert response.status_code == 200, response.text
    raise AssertionError(f"{path} was never rate limited")


async def test_rate_limit_is_per_user(strict_gateway: Gateway) -> None:
    async with httpx.AsyncClient(base_url=strict_gateway.url) as client:
        alice, bob = bearer(token("alice")), bearer(token("bob"))
        limited = await _until_429(client, "GET", "/api/v1/users/me", headers=alice)
        assert_envelope(limited, 429, "RATE_LIMITED")
        assert int(limited.headers["retry-after"]) > 0
        assert (await client.get("/api/v1/users/me", headers=bob)).status_code == 200
        # The same bucket counts native gRPC calls of the same user.
        async with grpc.aio.insecure_channel(strict_gateway.grpc_target) as channel:
            stub = identity_service_pb2_grpc.IdentityServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await stub.GetMe(pb.GetMeRequest(), metadata=(("authorization", alice["authorization"]),))
            assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_api_keys_cannot_mint_buckets(strict_gateway: Gateway) -> None:
    """An API key is verified only by the service: the gateway limits API-key calls per client
    address, so a fresh random key on every call gains nothing."""
    async with client_from(strict_gateway, "127.0.0.5") as busy, client_from(strict_gateway, "127.0.0.6") as calm:
        for _ in range(10):
            response = await busy.get("/api/v1/users/me", headers={"x-api-key": f"mbk_{uuid.uuid4().hex}"})
            if response.status_code == 429:
                break
            assert response.status_code == 200, response.text
        assert_envelope(response, 429, "RATE_LIMITED")
        assert (await busy.get("/api/v1/users/me", headers={"x-api-key": "mbk_another"})).status_code == 429
        # Another address has its own bucket; a verified token user at the busy address too.
        assert (await calm.get("/api/v1/users/me", headers={"x-api-key": "mbk_calm"})).status_code == 200
        assert (await busy.get("/api/v1/users/me", headers=bearer(token("carol")))).status_code == 200


async def test_one_address_is_limited_across_users(strict_gateway: Gateway) -> None:
    """Every authenticated call also counts against its address (address_rate_factor × the
    category): fresh users, even with valid tokens, cannot multiply one address's rate."""
    async with client_from(strict_gateway, "127.0.0.7") as client:
        for attempt in range(40):
            response = await client.get("/api/v1/users/me", headers=bearer(token(f"user-{attempt}")))
            if response.status_code == 429:
                break
            assert response.status_code == 200, response.text
        assert_envelope(response, 429, "RATE_LIMITED")
        assert attempt >= 2  # several users fit in one address's bucket


async def test_anonymous_rate_limit_is_per_address(strict_gateway: Gateway) -> None:
    login = {"json": {"email": "a@b.test", "password": "pw"}}
    async with client_from(strict_gateway, "127.0.0.2") as busy, client_from(strict_gateway, "127.0.0.3") as calm:
        # A client cannot reset its bucket by claiming another address.
        limited = await _until_429(busy, "POST", "/api/v1/auth/login", headers={"x-forwarded-for": "10.9.8.7"}, **login)
        assert_envelope(limited, 429, "RATE_LIMITED")
        assert "retry-after" in limited.headers
        assert (
            await busy.post("/api/v1/auth/login", headers={"x-forwarded-for": "10.1.1.1"}, **login)
        ).status_code == 429
        assert (await busy.post("/api/v1/auth/login", headers={"x-api-key": "mbk_new"}, **login)).status_code == 429
        assert (await calm.post("/api/v1/auth/login", **login)).status_code == 200


async def test_upstream_down_is_503_with_a_retry_hint(strict_gateway: Gateway) -> None:
    async with client_from(strict_gateway, "127.0.0.4") as client:
        response = await client.get("/api/v1/health")
        error = assert_envelope(response, 503, "SERVICE_UNAVAILABLE")
        assert error_info(error)["metadata"]["detail"] == "UPSTREAM_UNAVAILABLE"
        assert response.headers["retry-after"] == "5"


async def test_inlined_openapi_is_served(strict_gateway: Gateway) -> None:
    async with httpx.AsyncClient(base_url=strict_gateway.url) as client:
        spec = await client.get("/api/v1/openapi.json")
        assert spec.status_code == 200 and "/api/v1/users/me" in spec.json()["paths"]


async def test_traceparent_passes_through_without_a_tracer(strict_gateway: Gateway) -> None:
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with httpx.AsyncClient(base_url=strict_gateway.url) as client:
        headers = {**bearer(token()), "traceparent": traceparent}
        assert echoed(await client.get("/api/v1/users/me", headers=headers))["traceparent"] == traceparent


# --- a service added later: routed from the descriptor set alone -------------------------------------

UPLOAD_PROTO = """
syntax = "proto3";
package molbridge.uploadtest.v1;
import "google/api/annotations.proto";
import "google/api/httpbody.proto";
// A service the gateway code has never heard of.
service UploadTestService {
  // Streams a file in; answers how much arrived.
  rpc Upload(stream google.api.HttpBody) returns (UploadTestResponse) {
    option (google.api.http) = {post: "/api/v1/molecules/upload" body: "*"};
  }
}
// What arrived.
message UploadTestResponse {
  // Bytes received.
  int64 bytes = 1;
  // Messages received.
  int32 messages = 2;
  // Content type of the first message.
  string content_type = 3;
}
"""


def compile_test_package(tmp: Path, proto_path: str, text: str) -> tuple[Any, Any]:
    """Compile a test package (a new molbridge service) into tmp: its Python modules (pb2, pb2_grpc),
    returned, and tmp/all.pb, the descriptor set as `make gen` builds it plus the new package."""
    (tmp / proto_path).parent.mkdir(parents=True)
    (tmp / proto_path).write_text(text)
    protos = sorted(str(p.relative_to(REPO / "protos")) for p in (REPO / "protos" / "molbridge").rglob("*.proto"))
    protoc = [sys.executable, "-m", "grpc_tools.protoc"]
    protoc += ["-I", str(REPO / "protos"), "-I", str(REPO / "protos/vendor"), "-I", str(tmp)]
    subprocess.run([*protoc, "--python_out", str(tmp), "--grpc_python_out", str(tmp), proto_path], check=True)
    descriptor = [*protoc, "--include_imports", "--include_source_info", f"--descriptor_set_out={tmp}/all.pb"]
    rpc_protos = ["google/rpc/error_details.proto", "google/rpc/status.proto"]
    subprocess.run([*descriptor, *protos, *rpc_protos, proto_path], check=True)
    module = proto_path.removesuffix(".proto").replace("/", ".")
    sys.path.insert(0, str(tmp))
    try:
        return importlib.import_module(f"{module}_pb2"), importlib.import_module(f"{module}_pb2_grpc")
    finally:
        sys.path.remove(str(tmp))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def upload_gateway(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    """The real descriptor set plus one new package, molbridge.uploadtest.v1, and its own upstream."""
    tmp = tmp_path_factory.mktemp("upload-gateway")
    upload_pb2, upload_grpc = compile_test_package(tmp, "uploadtest/v1/upload.proto", UPLOAD_PROTO)

    class UploadTest(upload_grpc.UploadTestServiceServicer):  # type: ignore[name-defined,misc]
        async def Upload(self, requests: AsyncIterator[httpbody_pb2.HttpBody], context: Any) -> Any:
            size, count, content_type = 0, 0, ""
            async for chunk in requests:
                size, count = size + len(chunk.data), count + 1
                content_type = content_type or chunk.content_type
            return upload_pb2.UploadTestResponse(bytes=size, messages=count, content_type=content_type)

    server = grpc.aio.server()
    upload_grpc.add_UploadTestServiceServicer_to_server(UploadTest(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    upstreams = {"identity": upstream.addr, "uploadtest": f"127.0.0.1:{port}"}
    try:
        async with _running(tmp, _settings(tmp, upstreams, descriptor_path=tmp / "all.pb")) as gw:
            yield gw
    finally:
        await server.stop(grace=None)


async def test_a_new_service_streams_uploads_unbuffered(upload_gateway: Gateway) -> None:
    size = 5 * 1024 * 1024  # far above the 1 MiB limit for unary bodies: streams are not buffered
    async with httpx.AsyncClient(base_url=upload_gateway.url, timeout=30) as client:
        headers = {**bearer(token()), "content-type": "text/csv"}
        response = await client.post("/api/v1/molecules/upload", content=b"x" * size, headers=headers)
        assert response.status_code == 201, response.text  # an Upload… method stores a file: created
        data = response.json()
        assert data == {"bytes": str(size), "messages": data["messages"], "content_type": "text/csv"}
        assert data["messages"] > 1
        # Still behind jwt_authn and in the csv_upload rate-limit category (10 per minute).
        assert (await client.post("/api/v1/molecules/upload", content=b"x")).status_code == 401
        assert response.headers["x-ratelimit-limit"] == "10"
        spec = (await client.get("/api/v1/openapi.json")).json()
        assert "/api/v1/molecules/upload" in spec["paths"]


# --- browser, docs, observability ----------------------------------------------------------------------


async def test_cors_preflight_and_headers(client: httpx.AsyncClient) -> None:
    preflight = {
        "origin": ORIGIN,
        "access-control-request-method": "GET",
        "access-control-request-headers": "authorization",
    }
    response = await client.options("/api/v1/users/me", headers=preflight)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert response.headers["access-control-allow-credentials"] == "true"
    assert "authorization" in response.headers["access-control-allow-headers"]
    assert "x-api-key" in response.headers["access-control-allow-headers"]
    # A browser's raw document upload names and describes the file in headers (DocumentService.UploadDocument).
    for header in ("content-disposition", "x-document-type", "x-document-id", "x-expires-on"):
        assert header in response.headers["access-control-allow-headers"]
    other = await client.options("/api/v1/users/me", headers={**preflight, "origin": "http://evil.test"})
    assert "access-control-allow-origin" not in other.headers
    # Errors carry the CORS headers too, so the browser app can read the envelope.
    denied = await client.get("/api/v1/users/me", headers={"origin": ORIGIN})
    assert denied.status_code == 401 and denied.headers["access-control-allow-origin"] == ORIGIN


async def test_openapi_and_docs_are_served(client: httpx.AsyncClient) -> None:
    spec = await client.get("/api/v1/openapi.json")
    assert spec.status_code == 200 and spec.headers["content-type"] == "application/json"
    doc = spec.json()
    assert doc["openapi"].startswith("3.0")
    assert "post" in doc["paths"]["/api/v1/auth/login"]
    page = await client.get("/docs")
    assert page.status_code == 200 and "swagger-ui-bundle.js" in page.text
    bundle = await client.get("/docs/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and "SwaggerUIBundle" in bundle.text


async def test_access_log_and_traces(gateway: Gateway, upstream: Upstream, client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/users/me", headers=bearer(token("logged-user")))
    request_id = response.headers["x-request-id"]
    traceparent = echoed(response)["traceparent"]  # Envoy's tracer started the trace
    trace_id = traceparent.split("-")[1]
    entry: dict[str, Any] = {}
    for _ in range(100):
        lines = gateway.access_log.read_text().splitlines() if gateway.access_log.exists() else []
        found = [json.loads(line) for line in lines if request_id in line]
        if found:
            entry = found[0]
            break
        await asyncio.sleep(0.05)
    assert entry, "no access log line for the request"
    assert entry["status"] == 200 and entry["path"] == "/api/v1/users/me"
    assert entry["trace_id"] == trace_id and entry["subject"] == "logged-user"
    assert entry["upstream_cluster"] == "svc_identity"
    for _ in range(200):
        if any(service == "gateway" and span.trace_id.hex() == trace_id for service, span in upstream.traces.spans()):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("Envoy exported no span of the request's trace")
