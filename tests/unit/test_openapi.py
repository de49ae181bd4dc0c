"""The OpenAPI generator on the real descriptor set (build/descriptor.pb, made by `make gen`)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pool

from gateway.envoy import openapi, protoset
from gateway.envoy.policy import load_policy

DESCRIPTOR = Path(__file__).resolve().parents[2] / "build" / "descriptor.pb"
PROTOS = Path(__file__).resolve().parents[2] / "protos"


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return openapi.build_from_policy(protoset.load(DESCRIPTOR), load_policy())


def schema(doc: dict[str, Any], ref_or_schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in ref_or_schema:
        return dict(doc["components"]["schemas"][ref_or_schema["$ref"].rsplit("/", 1)[1]])
    return ref_or_schema


def test_every_annotated_route_is_documented(doc: dict[str, Any]) -> None:
    expected = set()
    for method in protoset.methods(protoset.load(DESCRIPTOR)):
        for binding in method.bindings:
            expected.add((binding.verb, binding.path))
    documented = {(verb, path) for path, ops in doc["paths"].items() for verb in ops}
    assert expected <= documented
    assert doc["openapi"].startswith("3.0")
    assert len({op["operationId"] for ops in doc["paths"].values() for op in ops.values()}) == len(documented)


def test_internal_methods_are_left_out(doc: dict[str, Any]) -> None:
    ids = {op["operationId"] for ops in doc["paths"].values() for op in ops.values()}
    assert "IdentityService_AuthenticateApiKey" not in ids


def test_request_body_and_path_parameters(doc: dict[str, Any]) -> None:
    update = doc["paths"]["/api/v1/users/{id}"]["put"]
    assert update["parameters"] == [
        {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}, "description": "User id."}
    ]
    body = update["requestBody"]["content"]["application/json"]["schema"]
    assert "id" not in body["properties"]  # bound to the path
    assert body["properties"]["roles"]["type"] == "array"
    login = doc["paths"]["/api/v1/auth/login"]["post"]
    login_body = schema(doc, login["requestBody"]["content"]["application/json"]["schema"])
    assert set(login_body["properties"]) == {"email", "password"}


def test_get_fields_become_query_parameters(doc: dict[str, Any]) -> None:
    params = {p["name"]: p for p in doc["paths"]["/api/v1/users"]["get"]["parameters"]}
    assert {"page", "page_size", "organization_id", "sort"} <= set(params)
    assert all(p["in"] == "query" for p in params.values())
    assert params["page"]["schema"] == {"type": "integer", "format": "int32"}
    assert params["page"]["description"] == "Page number from 1."


def test_response_schemas_follow_the_transcoder(doc: dict[str, Any]) -> None:
    ok = doc["paths"]["/api/v1/users"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    listing = schema(doc, ok)
    assert set(listing["properties"]) == {"data", "meta"}
    user = schema(doc, listing["properties"]["data"]["items"])
    assert user["properties"]["created_at"] == {
        "type": "string",
        "format": "date-time",
        "example": "2026-01-31T09:30:00Z",
        "description": "When it was created.",
        "readOnly": True,
    }
    assert "full_name" in user["properties"]  # proto field names, as preserve_proto_field_names prints
    meta = schema(doc, listing["properties"]["meta"]["allOf"][0])
    assert meta["properties"]["total"]["type"] == "integer"  # int32: a JSON number, as DOMAIN.md shows


def test_enums_are_their_value_names(doc: dict[str, Any]) -> None:
    # The transcoder prints an enum as its value name: every enum schema lists exactly those names,
    # whatever the enum (top-level or nested in a message), with their comments.
    pool = descriptor_pool.DescriptorPool()
    for file in protoset.load(DESCRIPTOR).file:
        pool.AddSerializedFile(file.SerializeToString())
    schemas = doc["components"]["schemas"]
    enums = {s["x-proto-name"]: s for s in schemas.values() if "enum" in s and "x-proto-name" in s}
    assert enums
    for name, enum_schema in enums.items():
        values = pool.FindEnumTypeByName(name).values
        assert enum_schema["type"] == "string"
        assert enum_schema["enum"] == [v.name for v in values], name
        assert all(f"`{v.name}`" in enum_schema["description"] for v in values), name


def test_enum_values_are_the_domains_words(doc: dict[str, Any]) -> None:
    # DOMAIN.md "API contract at the gateway": "kind": "PHARMA", never "ORGANIZATION_KIND_PHARMA". Only
    # the zero value carries its enum's name (KIND_UNSPECIFIED), as buf's ENUM_ZERO_VALUE_SUFFIX wants.
    schemas = doc["components"]["schemas"]
    kinds = schemas["OrganizationKind"]["enum"]
    assert kinds == ["KIND_UNSPECIFIED", "PHARMA", "CRO", "PLATFORM"]
    assert schemas["OrganizationKind"]["example"] == "PHARMA"
    assert schemas["MoleculeStatus"]["enum"][:2] == ["STATUS_UNSPECIFIED", "AVAILABLE"]
    for enum_schema in schemas.values():
        if "enum" not in enum_schema or "x-proto-name" not in enum_schema:
            continue
        name = enum_schema["x-proto-name"]
        words = enum_schema["enum"]
        prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", name.rsplit(".", 1)[1]).upper() + "_"
        assert words[0] == prefix + "UNSPECIFIED", name
        assert not [w for w in words[1:] if w.startswith(prefix)], name


def compiled(tmp_path: Path, **protos: str) -> Any:
    """The descriptor set of these .proto files (name -> text), as `make gen` builds ours."""
    for name, text in protos.items():
        (tmp_path / f"{name}.proto").write_text(text)
    out = tmp_path / "test.pb"
    protoc = [sys.executable, "-m", "grpc_tools.protoc", "-I", str(tmp_path), "-I", str(PROTOS / "vendor")]
    subprocess.run([*protoc, "--include_imports", "--include_source_info", f"--descriptor_set_out={out}",
                    *(f"{name}.proto" for name in protos)], check=True)
    return protoset.load(out)


def test_a_nested_enum_with_bare_values_is_listed_as_is(tmp_path: Path) -> None:
    doc = openapi.build(compiled(tmp_path, enumtest=ENUM_PROTO))
    kind = doc["components"]["schemas"]["OrganizationKind"]
    assert kind["enum"] == ["KIND_UNSPECIFIED", "PHARMA", "CRO"]
    assert "- `CRO`: A contract research lab." in kind["description"]
    org = schema(doc, doc["paths"]["/api/v1/orgs"]["post"]["requestBody"]["content"]["application/json"]["schema"])
    assert org["properties"]["kind"] == {"$ref": "#/components/schemas/OrganizationKind"}


ENUM_PROTO = """
syntax = "proto3";
package molbridge.enumtest.v1;
import "google/api/annotations.proto";
service EnumTestService {
  rpc CreateOrganization(Organization) returns (Organization) {
    option (google.api.http) = {post: "/api/v1/orgs" body: "*"};
  }
}
message Organization {
  // What kind of organization.
  enum Kind {
    KIND_UNSPECIFIED = 0;
    // A pharmaceutical company.
    PHARMA = 1;
    // A contract research lab.
    CRO = 2;
  }
  Kind kind = 1;
}
"""


def test_creates_are_documented_as_201(doc: dict[str, Any]) -> None:
    for path in ["/api/v1/users", "/api/v1/molecules", "/api/v1/predictions", "/api/v1/molecules/upload/csv"]:
        responses = doc["paths"][path]["post"]["responses"]
        assert "201" in responses and "200" not in responses, path
        assert responses["201"]["description"] == "Created"
    for path, verb in [("/api/v1/auth/login", "post"), ("/api/v1/users/{id}", "put"), ("/api/v1/users", "get")]:
        responses = doc["paths"][path][verb]["responses"]
        assert "200" in responses and "201" not in responses, path
    assert "201 for a POST that creates" in doc["info"]["description"]


def test_comments_are_descriptions(doc: dict[str, Any]) -> None:
    me = doc["paths"]["/api/v1/users/me"]["get"]
    assert me["summary"] == "The calling user."
    assert "/molbridge.identity.v1.IdentityService/GetMe" in me["description"]
    jwks = doc["paths"]["/api/v1/auth/jwks"]["get"]
    assert "buf:lint" not in jwks["description"]


def test_jwks_is_documented_as_the_jwk_set_it_answers(doc: dict[str, Any]) -> None:
    ok = doc["paths"]["/api/v1/auth/jwks"]["get"]["responses"]["200"]["content"]
    assert set(ok) == {"application/json"}
    jwk_set = schema(doc, ok["application/json"]["schema"])
    assert jwk_set["required"] == ["keys"] and jwk_set["properties"]["keys"]["type"] == "array"


def test_server_streams_are_text_event_streams(doc: dict[str, Any]) -> None:
    watch = doc["paths"]["/api/v1/molecules/imports/{job_id}/watch"]["get"]["responses"]["200"]["content"]
    body = watch["text/event-stream"]["schema"]
    assert body["type"] == "string"  # the body is `data: {…}` lines, not one JSON value
    event = schema(doc, body["x-event-schema"])
    assert "data" in event["properties"]


def test_credential_checking_public_routes_document_401(doc: dict[str, Any]) -> None:
    for path in ["/api/v1/auth/login", "/api/v1/auth/refresh", "/api/v1/auth/mfa/verify"]:
        responses = doc["paths"][path]["post"]["responses"]
        assert "401" in responses and "403" not in responses, path
    assert "413" in doc["paths"]["/api/v1/users"]["post"]["responses"]


def test_security_schemes_and_public_routes(doc: dict[str, Any]) -> None:
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    assert schemes["apiKey"] == {"type": "apiKey", "in": "header", "name": "x-api-key"}
    assert doc["security"] == [{"bearerAuth": []}, {"apiKey": []}]
    assert doc["paths"]["/api/v1/auth/login"]["post"]["security"] == []
    assert doc["paths"]["/api/v1/health"]["get"]["security"] == []
    me = doc["paths"]["/api/v1/users/me"]["get"]
    assert "security" not in me and "401" in me["responses"]


def test_error_envelope(doc: dict[str, Any]) -> None:
    envelope = doc["components"]["schemas"]["ErrorEnvelope"]
    error = envelope["properties"]["error"]
    assert error["required"] == ["code", "message", "details"]
    assert "RATE_LIMITED" in error["properties"]["code"]["enum"]
    too_many = doc["components"]["responses"]["Error429"]
    assert "Retry-After" in too_many["headers"]
    assert too_many["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorEnvelope"}


def test_every_reference_resolves(doc: dict[str, Any]) -> None:
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    assert refs
    for ref in refs:
        section, name = ref.removeprefix("#/components/").split("/", 1)
        assert name in doc["components"][section], ref


FIELD_BEHAVIOR_PROTO = """
syntax = "proto3";
package molbridge.fbtest.v1;
import "google/api/annotations.proto";
import "google/api/field_behavior.proto";
import "google/protobuf/timestamp.proto";
service FbTestService {
  rpc CreateThing(Thing) returns (Thing) {
    option (google.api.http) = {post: "/api/v1/things" body: "*"};
  }
  rpc ListThings(ListThingsRequest) returns (Thing) {
    option (google.api.http) = {get: "/api/v1/things"};
  }
}
message Thing {
  string id = 1 [(google.api.field_behavior) = OUTPUT_ONLY];
  string name = 2 [(google.api.field_behavior) = REQUIRED];
  string note = 3;
  google.protobuf.Timestamp created_at = 4 [(google.api.field_behavior) = OUTPUT_ONLY];
  Owner owner = 5 [(google.api.field_behavior) = OUTPUT_ONLY];
}
message Owner { string name = 1; }
message ListThingsRequest {
  string owner_id = 1 [(google.api.field_behavior) = REQUIRED];
  int32 page = 2;
}
"""

OTHER_OWNER_PROTO = """
syntax = "proto3";
package molbridge.other.v1;
import "google/api/annotations.proto";
service OtherService {
  rpc GetOwner(Owner) returns (Owner) {
    option (google.api.http) = {post: "/api/v1/owners" body: "*"};
  }
}
message Owner { string email = 1; }
"""


def test_field_behavior_makes_required_and_read_only_fields(tmp_path: Path) -> None:
    doc = openapi.build(compiled(tmp_path, fbtest=FIELD_BEHAVIOR_PROTO))
    thing = doc["components"]["schemas"]["Thing"]
    assert thing["required"] == ["name"]
    props = thing["properties"]
    assert props["id"]["readOnly"] is True and props["created_at"]["readOnly"] is True
    assert "readOnly" not in props["name"] and "readOnly" not in props["note"]
    # A $ref cannot carry siblings in OpenAPI 3.0: the read-only message field wraps it.
    assert props["owner"] == {"allOf": [{"$ref": "#/components/schemas/Owner"}], "readOnly": True}
    params = {p["name"]: p for p in doc["paths"]["/api/v1/things"]["get"]["parameters"]}
    assert params["owner_id"]["required"] is True and params["page"]["required"] is False
    assert "required" not in doc["components"]["schemas"]["Owner"]


def test_our_protos_field_behavior_reaches_the_document(doc: dict[str, Any]) -> None:
    paths = doc["paths"]
    login = paths["/api/v1/auth/login"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert schema(doc, login)["required"] == ["email", "password"]
    user = doc["components"]["schemas"]["User"]
    assert user["properties"]["id"]["readOnly"] is True and "readOnly" not in user["properties"]["full_name"]
    library = doc["components"]["schemas"]["Library"]
    assert {n for n, p in library["properties"].items() if p.get("readOnly")} == {
        "id", "owner_id", "organization_id", "molecule_count", "access_level", "created_at", "updated_at"
    }
    create_submission = paths["/api/v1/submissions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert schema(doc, create_submission)["required"] == ["name", "cro_service_id"]
    # A body without its path parameter keeps the rest's required fields.
    act = paths["/api/v1/submissions/{id}/actions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert act["required"] == ["action"]
    params = {p["name"]: p["required"] for p in paths["/api/v1/libraries/{id}/distributions"]["get"]["parameters"]}
    assert params == {"id": True, "property": True, "bins": False}


def test_no_response_schema_requires_a_field(doc: dict[str, Any]) -> None:
    """proto3 JSON leaves default values out of a response: a REQUIRED field there could be absent."""
    reached: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/components/schemas/") and (name := ref.rsplit("/", 1)[1]) not in reached:
                reached.add(name)
                walk(doc["components"]["schemas"][name])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for operation in (op for item in doc["paths"].values() for op in item.values()):
        for code, response in operation["responses"].items():
            if code.startswith("2"):
                walk(response)
    generated = {n for n in reached if "x-proto-name" in doc["components"]["schemas"][n]}
    assert "User" in generated and "Library" in generated
    assert [n for n in sorted(generated) if "required" in doc["components"]["schemas"][n]] == []


def test_component_names_are_readable_and_unique(tmp_path: Path) -> None:
    doc = openapi.build(compiled(tmp_path, fbtest=FIELD_BEHAVIOR_PROTO, other=OTHER_OWNER_PROTO))
    schemas = doc["components"]["schemas"]
    # Two packages declare Owner: each gets its package's word, and keeps its proto name.
    assert schemas["FbtestOwner"]["x-proto-name"] == "molbridge.fbtest.v1.Owner"
    assert schemas["OtherOwner"]["x-proto-name"] == "molbridge.other.v1.Owner"
    assert "Owner" not in schemas and "Thing" in schemas


def test_no_component_name_is_a_dotted_proto_name(doc: dict[str, Any]) -> None:
    names = list(doc["components"]["schemas"])
    assert names and not [n for n in names if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", n)]
    assert doc["components"]["schemas"]["OrganizationKind"]["x-proto-name"] == "molbridge.identity.v1.Organization.Kind"


def test_identifiers_and_timestamps_have_examples(doc: dict[str, Any]) -> None:
    user = doc["components"]["schemas"]["User"]["properties"]
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", user["id"]["example"])
    assert user["organization_id"]["example"] == user["id"]["example"]
    assert user["created_at"]["example"].endswith("Z")


def test_documented_errors_are_the_envelope_with_their_code(doc: dict[str, Any]) -> None:
    codes = {"400": "VALIDATION_ERROR", "401": "AUTHENTICATION_ERROR", "403": "AUTHORIZATION_ERROR",
             "404": "RESOURCE_NOT_FOUND", "409": "RESOURCE_CONFLICT", "429": "RATE_LIMITED"}
    for status, code in codes.items():
        content = doc["components"]["responses"][f"Error{status}"]["content"]["application/json"]
        assert content["schema"] == {"$ref": "#/components/schemas/ErrorEnvelope"}
        example = content["example"]["error"]
        assert example["code"] == code and example["message"] and example["details"][0]["reason"] == code
    create = doc["paths"]["/api/v1/users"]["post"]["responses"]
    assert {"400", "401", "403", "404", "409", "429"} <= set(create)
