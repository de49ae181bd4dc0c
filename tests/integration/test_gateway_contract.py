"""The REST contract the gateway adds to Envoy's transcoder, through the real Envoy.

A test package (molbridge.contracttest.v1, compiled here) has one route per kind of body: `body: "*"`,
`body: "*"` with a path parameter, `body: "widget"`, nested messages, lists and maps, a free-form
Struct and a streaming upload. Its server echoes what it received. Unknown fields must be a 400
VALIDATION_ERROR naming them (the transcoder would drop them silently); creates answer 201.
Reflection answers under grpc.reflection.v1 as well as v1alpha (a server built by
services.runtime.server, as every service's is).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest
import pytest_asyncio
from google.api import httpbody_pb2
from google.protobuf import descriptor_pb2, json_format
from grpc_reflection.v1alpha import reflection_pb2
from molbridge.identity.v1 import identity_service_pb2_grpc

from gateway.envoy.policy import load_policy
from services.runtime.server import make_grpc_server
from tests.integration.test_gateway import (
    KID,
    SIGNING_KEY,
    Gateway,
    Identity,
    _public_jwk,
    _running,
    _settings,
    assert_envelope,
    bearer,
    compile_test_package,
    error_info,
    token,
)

CONTRACT_PROTO = """
syntax = "proto3";
package molbridge.contracttest.v1;
import "google/api/annotations.proto";
import "google/api/httpbody.proto";
import "google/protobuf/struct.proto";

service ContractTestService {
  rpc CreateWidget(CreateWidgetRequest) returns (Echo) {
    option (google.api.http) = {post: "/api/v1/widgets" body: "*"};
  }
  rpc RenameWidget(RenameWidgetRequest) returns (Echo) {
    option (google.api.http) = {put: "/api/v1/widgets/{id}" body: "*"};
  }
  rpc ReplaceWidget(ReplaceWidgetRequest) returns (Echo) {
    option (google.api.http) = {post: "/api/v1/widgets/{id}:replace" body: "widget"};
  }
  rpc TouchWidgets(TouchWidgetsRequest) returns (Echo) {
    option (google.api.http) = {put: "/api/v1/widgets/touched" body: "*"};
  }
  rpc UploadBlob(stream google.api.HttpBody) returns (Echo) {
    option (google.api.http) = {post: "/api/v1/widgets/blobs" body: "*"};
  }
}
message Part { string label = 1; }
message Widget {
  string name = 1;
  Part part = 2;
  repeated Part parts = 3;
  map<string, Part> parts_by_name = 4;
  google.protobuf.Struct extra = 5;
  int32 size_hint = 6;
}
message CreateWidgetRequest { Widget widget = 1; string note = 2; }
message RenameWidgetRequest { string id = 1; string name = 2; }
message ReplaceWidgetRequest { string id = 1; Widget widget = 2; string note = 3; }
message TouchWidgetsRequest { repeated string ids = 1; }
message Echo { string received = 1; int64 bytes = 2; }
"""


@dataclass
class Contract:
    gateway: Gateway
    upstream_addr: str


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def contract(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Contract]:
    tmp = tmp_path_factory.mktemp("contract-gateway")
    pb2, pb2_grpc = compile_test_package(tmp, "contracttest/v1/contract.proto", CONTRACT_PROTO)

    class Widgets(pb2_grpc.ContractTestServiceServicer):  # type: ignore[misc,name-defined]
        async def _echo(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
            if getattr(request, "note", "") == "fail":
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "note says fail")
            return pb2.Echo(received=json_format.MessageToJson(request, preserving_proto_field_name=True))

        CreateWidget = RenameWidget = ReplaceWidget = TouchWidgets = _echo

        async def UploadBlob(self, requests: AsyncIterator[httpbody_pb2.HttpBody], context: Any) -> Any:
            data = b"".join([chunk.data async for chunk in requests])
            return pb2.Echo(received=data.decode(), bytes=len(data))

    # The identity upstream is a server as services.runtime builds it (health, reflection), here
    # with the test's fake IdentityService (its JWKS) and the test package.
    jwks = {"keys": [_public_jwk(SIGNING_KEY, KID)]}
    server, _ = make_grpc_server(
        "contracttest",
        [
            (identity_service_pb2_grpc.add_IdentityServiceServicer_to_server, Identity(jwks)),
            (pb2_grpc.add_ContractTestServiceServicer_to_server, Widgets()),
        ],
        authenticator=None,
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    addr = f"127.0.0.1:{port}"
    upstreams = {"identity": addr, "contracttest": addr}
    try:
        settings = _settings(tmp, upstreams, descriptor_path=tmp / "all.pb", rate_limit_scale=100.0)
        async with _running(tmp, settings, load_policy()) as gw:
            yield Contract(gw, addr)
    finally:
        await server.stop(grace=None)


@pytest_asyncio.fixture(loop_scope="session")
async def client(contract: Contract) -> AsyncIterator[httpx.AsyncClient]:
    headers = bearer(token("contract-user"))
    async with httpx.AsyncClient(base_url=contract.gateway.url, headers=headers, timeout=10) as client:
        yield client


def received(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    return dict(json.loads(response.json()["received"]))


def unknown_fields(response: httpx.Response) -> list[str]:
    """The fields a 400 UNKNOWN_FIELD names, checked against each other place that names them."""
    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    info = error_info(error)
    assert info["metadata"]["detail"] == "UNKNOWN_FIELD", error
    [bad_request] = [d for d in error["details"] if d["@type"].endswith("google.rpc.BadRequest")]
    fields = [v["field"] for v in bad_request["field_violations"]]
    assert info["metadata"]["fields"] == ", ".join(fields)
    assert all(field in error["message"] for field in fields)
    return fields


# --- body "*" ---------------------------------------------------------------------------------------


async def test_body_star_accepts_known_fields_and_creates(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/widgets", json={"widget": {"name": "w"}, "note": "n"})
    assert received(response, 201) == {"widget": {"name": "w"}, "note": "n"}


async def test_body_star_refuses_an_unknown_field(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/widgets", json={"widget": {"name": "w"}, "nte": "n", "colour": 1})
    assert unknown_fields(response) == ["colour", "nte"]


async def test_json_camel_case_names_are_known_too(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/widgets", json={"widget": {"sizeHint": 3, "partsByName": {}}})
    assert received(response, 201) == {"widget": {"size_hint": 3}}


async def test_malformed_json_stays_the_transcoders_400(client: httpx.AsyncClient) -> None:
    headers = {"content-type": "application/json"}
    response = await client.post("/api/v1/widgets", content=b'{"widget": ', headers=headers)
    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert error_info(error)["metadata"]["detail"] == "MALFORMED_REQUEST"


async def test_a_failed_create_keeps_its_error_status(client: httpx.AsyncClient) -> None:
    assert_envelope(await client.post("/api/v1/widgets", json={"note": "fail"}), 400, "VALIDATION_ERROR")


# --- nested messages, lists, maps, free-form values ---------------------------------------------------


async def test_nested_unknown_fields_are_named_by_path(client: httpx.AsyncClient) -> None:
    widget = {
        "part": {"lable": "x"},
        "parts": [{"label": "fine"}, {"colour": "red"}],
        "parts_by_name": {"k": {"label": "fine", "bad": 1}},
        "extra": {"anything": {"goes": [1, 2]}},  # google.protobuf.Struct: free-form
    }
    response = await client.post("/api/v1/widgets", json={"widget": widget})
    assert unknown_fields(response) == ["widget.part.lable", "widget.parts[1].colour", "widget.parts_by_name.k.bad"]


async def test_nested_known_fields_arrive(client: httpx.AsyncClient) -> None:
    widget = {"part": {"label": "a"}, "parts": [{"label": "b"}], "extra": {"free": {"form": True}}}
    assert received(await client.post("/api/v1/widgets", json={"widget": widget}), 201) == {"widget": widget}


# --- path parameters --------------------------------------------------------------------------------


async def test_path_bound_fields_are_not_body_fields(client: httpx.AsyncClient) -> None:
    assert received(await client.put("/api/v1/widgets/w1", json={"name": "x"}), 200) == {"id": "w1", "name": "x"}
    assert unknown_fields(await client.put("/api/v1/widgets/w1", json={"id": "w2", "name": "x"})) == ["id"]


async def test_a_literal_route_wins_over_a_path_parameter(client: httpx.AsyncClient) -> None:
    # PUT /widgets/touched is TouchWidgets (ids), not RenameWidget with id "touched" (name).
    assert received(await client.put("/api/v1/widgets/touched", json={"ids": ["a"]}), 200) == {"ids": ["a"]}
    assert unknown_fields(await client.put("/api/v1/widgets/touched", json={"name": "x"})) == ["name"]


# --- body "field" ----------------------------------------------------------------------------------


async def test_body_field_is_checked_against_the_fields_message(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/widgets/w1:replace", json={"name": "x", "part": {"label": "y"}})
    assert received(response, 200) == {"id": "w1", "widget": {"name": "x", "part": {"label": "y"}}}  # not a create
    response = await client.post("/api/v1/widgets/w1:replace", json={"name": "x", "note": "n", "part": {"x": 1}})
    assert unknown_fields(response) == ["note", "part.x"]


# --- uploads ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["application/json", "text/csv"])
async def test_uploads_are_never_read_and_create(client: httpx.AsyncClient, content_type: str) -> None:
    body = b'{"not_a_field": 1}'
    response = await client.post("/api/v1/widgets/blobs", content=body, headers={"content-type": content_type})
    assert response.status_code == 201, response.text
    assert response.json() == {"received": body.decode(), "bytes": str(len(body))}


# --- the real API ------------------------------------------------------------------------------------


async def test_a_misspelt_field_of_the_real_api_is_refused(client: httpx.AsyncClient) -> None:
    user = {"email": "new@example.test", "full_name": "New", "role": "cro_admin"}  # `roles`, not `role`
    assert unknown_fields(await client.post("/api/v1/users", json=user)) == ["role"]


async def test_native_grpc_is_not_checked_or_renumbered(contract: Contract) -> None:
    async with grpc.aio.insecure_channel(contract.gateway.grpc_target) as channel:
        call = channel.unary_unary(
            "/molbridge.contracttest.v1.ContractTestService/CreateWidget",
            request_serializer=lambda raw: raw,
            response_deserializer=lambda raw: raw,
        )
        answer = await call(b"", metadata=(("authorization", f"Bearer {token()}"),))
        assert isinstance(answer, bytes)


# --- reflection v1 and v1alpha -------------------------------------------------------------------------


async def reflect(channel: grpc.aio.Channel, version: str, request: reflection_pb2.ServerReflectionRequest) -> Any:
    # grpc.reflection.v1 and v1alpha have the same messages: v1alpha's classes speak both.
    call = channel.stream_stream(
        f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    answers = [answer async for answer in call(iter([request]), timeout=10)]
    assert len(answers) == 1
    return answers[0]


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
async def test_reflection_answers_through_the_gateway_without_a_token(contract: Contract, version: str) -> None:
    async with grpc.aio.insecure_channel(contract.gateway.grpc_target) as channel:
        listed = await reflect(channel, version, reflection_pb2.ServerReflectionRequest(list_services=""))
        names = {s.name for s in listed.list_services_response.service}
        assert {
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
            "molbridge.identity.v1.IdentityService",
            "molbridge.molecule.v1.MoleculeService",
        } <= names
        symbol = "molbridge.identity.v1.IdentityService"
        found = await reflect(channel, version, reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol))
        services = {s.name for f in files_of(found) if f.package == "molbridge.identity.v1" for s in f.service}
        assert "IdentityService" in services
        itself = "grpc.reflection.v1.ServerReflection"
        found = await reflect(channel, version, reflection_pb2.ServerReflectionRequest(file_containing_symbol=itself))
        [file] = files_of(found)
        assert file.package == "grpc.reflection.v1" and file.service[0].name == "ServerReflection"


def files_of(answer: reflection_pb2.ServerReflectionResponse) -> list[descriptor_pb2.FileDescriptorProto]:
    return [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in answer.file_descriptor_response.file_descriptor_proto
    ]
