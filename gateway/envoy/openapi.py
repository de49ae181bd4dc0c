"""OpenAPI 3.0 document of the REST API, generated from the descriptor set's google.api.http rules.

The JSON shapes are the ones the gateway's transcoder produces: snake_case field names
(preserve_proto_field_names), enums as their value names, 64-bit integers as strings (proto3 JSON),
Timestamps as RFC 3339 strings, every field printed. Proto comments become descriptions.

`build()` is a pure function of the descriptor set; `python -m gateway.envoy.openapi --out FILE` writes it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from google.api import field_behavior_pb2
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from gateway.envoy import contract, protoset
from gateway.envoy.policy import load_policy

OPENAPI_PATH = "/api/v1/openapi.json"
ERROR_CODES = [
    "VALIDATION_ERROR",
    "AUTHENTICATION_ERROR",
    "AUTHORIZATION_ERROR",
    "RESOURCE_NOT_FOUND",
    "RESOURCE_CONFLICT",
    "RATE_LIMITED",
    "INTEGRATION_ERROR",
    "SERVICE_UNAVAILABLE",
    "INTERNAL_ERROR",
]
_ERROR_RESPONSES = {
    "400": "Invalid request (VALIDATION_ERROR)",
    # Public operations answer it too: login, refresh, MFA verification check the credentials
    # they carry in their body.
    "401": "Missing, invalid or expired credentials: token, API key, or those the call checks (AUTHENTICATION_ERROR)",
    "403": "Not allowed for the caller's roles or organization (AUTHORIZATION_ERROR)",
    "404": "No such resource or route (RESOURCE_NOT_FOUND)",
    "409": "Conflicts with the resource's current state (RESOURCE_CONFLICT)",
    "413": "Request body over the gateway's limit (VALIDATION_ERROR)",
    "429": "Rate limit exceeded (RATE_LIMITED); see Retry-After",
    "500": "Unexpected failure (INTERNAL_ERROR)",
    "502": "An external system (AI engine, e-signature, storage) failed (INTEGRATION_ERROR)",
    "503": "A service of the platform is briefly unavailable (SERVICE_UNAVAILABLE); see Retry-After",
    "504": "A service did not answer in time (INTEGRATION_ERROR)",
}
_SECURED_ONLY = {"403"}
_SUCCESS = {200: "OK", 201: "Created"}
# What GET <jwks_path> answers (a JWK Set, RFC 7517), though the RPC returns a google.api.HttpBody.
_JWK_SET = {
    "type": "object",
    "required": ["keys"],
    "description": "The identity service's public signing keys (RFC 7517 JWK Set).",
    "properties": {
        "keys": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["kty", "kid"],
                "properties": {
                    "kty": {"type": "string", "example": "OKP"},
                    "crv": {"type": "string", "example": "Ed25519"},
                    "x": {"type": "string", "description": "Public key, base64url"},
                    "kid": {"type": "string"},
                    "alg": {"type": "string", "example": "EdDSA"},
                    "use": {"type": "string", "example": "sig"},
                },
                "additionalProperties": True,
            },
        }
    },
}

_F = FieldDescriptor
_SCALARS: dict[int, dict[str, Any]] = {
    _F.TYPE_DOUBLE: {"type": "number", "format": "double"},
    _F.TYPE_FLOAT: {"type": "number", "format": "float"},
    _F.TYPE_INT32: {"type": "integer", "format": "int32"},
    _F.TYPE_SINT32: {"type": "integer", "format": "int32"},
    _F.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    _F.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0},
    _F.TYPE_FIXED32: {"type": "integer", "format": "int64", "minimum": 0},
    # proto3 JSON prints 64-bit integers as strings (JavaScript numbers cannot hold them).
    _F.TYPE_INT64: {"type": "string", "format": "int64"},
    _F.TYPE_SINT64: {"type": "string", "format": "int64"},
    _F.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    _F.TYPE_UINT64: {"type": "string", "format": "uint64"},
    _F.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    _F.TYPE_BOOL: {"type": "boolean"},
    _F.TYPE_STRING: {"type": "string"},
    _F.TYPE_BYTES: {"type": "string", "format": "byte"},
}
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "description": "Seconds with an `s` suffix, e.g. `1.5s`."},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.FieldMask": {"type": "string", "description": "Comma-separated field paths."},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "additionalProperties": True,
    },
    "google.protobuf.DoubleValue": {"type": "number", "format": "double", "nullable": True},
    "google.protobuf.FloatValue": {"type": "number", "format": "float", "nullable": True},
    "google.protobuf.Int64Value": {"type": "string", "format": "int64", "nullable": True},
    "google.protobuf.UInt64Value": {"type": "string", "format": "uint64", "nullable": True},
    "google.protobuf.Int32Value": {"type": "integer", "format": "int32", "nullable": True},
    "google.protobuf.UInt32Value": {"type": "integer", "format": "int64", "nullable": True},
    "google.protobuf.BoolValue": {"type": "boolean", "nullable": True},
    "google.protobuf.StringValue": {"type": "string", "nullable": True},
    "google.protobuf.BytesValue": {"type": "string", "format": "byte", "nullable": True},
}
HTTP_BODY = "google.api.HttpBody"
_BINARY = {"type": "string", "format": "binary"}


def _clean(comment: str | None) -> str:
    if not comment:
        return ""
    lines = [line.strip() for line in comment.strip("\n").splitlines()]
    return "\n".join(line for line in lines if not line.startswith("buf:lint:")).strip()


_Locations = dict[tuple[int, ...], str]


def _enum_comments(
    e: descriptor_pb2.EnumDescriptorProto, path: tuple[int, ...], scope: str, loc: _Locations, out: dict[str, str]
) -> None:
    name = f"{scope}.{e.name}"
    out[name] = _clean(loc.get(path))
    for i, v in enumerate(e.value):
        out[f"{name}.{v.name}"] = _clean(loc.get((*path, 2, i)))


def _message_comments(
    m: descriptor_pb2.DescriptorProto, path: tuple[int, ...], scope: str, loc: _Locations, out: dict[str, str]
) -> None:
    name = f"{scope}.{m.name}"
    out[name] = _clean(loc.get(path))
    for i, f in enumerate(m.field):
        out[f"{name}.{f.name}"] = _clean(loc.get((*path, 2, i)))
    for i, nested in enumerate(m.nested_type):
        _message_comments(nested, (*path, 3, i), name, loc, out)
    for i, e in enumerate(m.enum_type):
        _enum_comments(e, (*path, 4, i), name, loc, out)


def comments(fds: descriptor_pb2.FileDescriptorSet) -> dict[str, str]:
    """Leading comments by full name (messages, fields, enums, enum values, services, methods)."""
    out: dict[str, str] = {}
    for file in fds.file:
        # Source locations are addressed by field-number paths: 4 message, 5 enum, 6 service, ….
        loc = {tuple(x.path): x.leading_comments for x in file.source_code_info.location}
        for i, m in enumerate(file.message_type):
            _message_comments(m, (4, i), file.package, loc, out)
        for i, e in enumerate(file.enum_type):
            _enum_comments(e, (5, i), file.package, loc, out)
        for i, s in enumerate(file.service):
            out[f"{file.package}.{s.name}"] = _clean(loc.get((6, i)))
            for j, method in enumerate(s.method):
                out[f"{file.package}.{s.name}.{method.name}"] = _clean(loc.get((6, i, 2, j)))
    return out


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _declared(fds: descriptor_pb2.FileDescriptorSet) -> list[tuple[str, str, str]]:
    """(package, name within the package, full name) of every message and enum."""
    out: list[tuple[str, str, str]] = []

    def walk(package: str, scope: str, messages: Iterable[Any], enums: Iterable[Any]) -> None:
        for e in enums:
            out.append((package, f"{scope}{e.name}", f"{package}.{scope}{e.name}"))
        for m in messages:
            out.append((package, f"{scope}{m.name}", f"{package}.{scope}{m.name}"))
            walk(package, f"{scope}{m.name}.", m.nested_type, m.enum_type)

    for file in fds.file:
        walk(file.package, "", file.message_type, file.enum_type)
    return out


def component_names(fds: descriptor_pb2.FileDescriptorSet) -> dict[str, str]:
    """Readable component names by full proto name: `molbridge.identity.v1.Organization.Kind` is
    `OrganizationKind`; a name two packages declare gets its package's service word in front
    (`CroComparison`), so that code generators and $refs need no dots."""
    declared = _declared(fds)
    short = {full: "".join(part[:1].upper() + part[1:] for part in local.split(".")) for _, local, full in declared}
    taken: dict[str, int] = {}
    for name in short.values():
        taken[name] = taken.get(name, 0) + 1
    names = {}
    for package, _, full in declared:
        name = short[full]
        if taken[name] > 1:
            word = package.split(".")[1] if package.startswith("molbridge.") else package.split(".")[0]
            name = word.capitalize() + name
        names[full] = name
    return names


def _described(schema: dict[str, Any], description: str) -> dict[str, Any]:
    if not description:
        return schema
    if "$ref" in schema:  # OpenAPI 3.0 ignores siblings of $ref
        return {"allOf": [schema], "description": description}
    return {**schema, "description": description}


class _Schemas:
    """Component schemas, added as messages and enums are referenced."""

    def __init__(self, pool: descriptor_pool.DescriptorPool, docs: dict[str, str], names: dict[str, str]) -> None:
        self.pool = pool
        self.docs = docs
        self.names = names
        self.components: dict[str, Any] = {}

    def message_ref(self, desc: Descriptor) -> dict[str, Any]:
        if desc.full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[desc.full_name])
        if desc.full_name == HTTP_BODY:
            return dict(_BINARY)
        name = self.names[desc.full_name]
        if name not in self.components:
            self.components[name] = {}  # placeholder first: messages may be recursive
            self.components[name] = self.message_schema(desc)
        return _ref(name)

    def message_schema(self, desc: Descriptor, *, without: Iterable[str] = ()) -> dict[str, Any]:
        fields = [f for f in desc.fields if f.name not in set(without)]
        properties = {f.name: self.field(f) for f in fields}
        schema: dict[str, Any] = {"type": "object", "properties": properties}
        if required := [f.name for f in fields if field_behavior_pb2.REQUIRED in behaviors(f)]:
            schema["required"] = required
        schema = _described(schema, self.docs.get(desc.full_name, ""))
        return {**schema, "x-proto-name": desc.full_name}

    def enum_ref(self, desc: EnumDescriptor) -> dict[str, Any]:
        name = self.names[desc.full_name]
        if name not in self.components:
            values = "\n".join(
                f"- `{v.name}`: {self.docs.get(f'{desc.full_name}.{v.name}', '')}".rstrip(": ") for v in desc.values
            )
            text = "\n\n".join(t for t in (self.docs.get(desc.full_name, ""), values) if t)
            words = [v.name for v in desc.values]
            self.components[name] = {
                "type": "string",
                "enum": words,
                "description": text,
                # The first real word: the zero value (…_UNSPECIFIED) is no useful example.
                "example": words[1] if len(words) > 1 else words[0],
                "x-proto-name": desc.full_name,
            }
        return _ref(name)

    def value(self, f: FieldDescriptor) -> dict[str, Any]:
        if f.type == _F.TYPE_MESSAGE:
            return self.message_ref(_message(f))
        if f.type == _F.TYPE_ENUM:
            return self.enum_ref(_enum(f))
        return dict(_SCALARS[f.type])

    def field(self, f: FieldDescriptor) -> dict[str, Any]:
        doc = self.docs.get(f.full_name, "")
        if f.type == _F.TYPE_MESSAGE and _message(f).GetOptions().map_entry:
            value_field = _message(f).fields_by_name["value"]
            schema: dict[str, Any] = {"type": "object", "additionalProperties": self.value(value_field)}
        elif _is_repeated(f):
            schema = {"type": "array", "items": self.value(f)}
        else:
            schema = self.value(f)
            if example := _example(f):
                schema.setdefault("example", example)
        if field_behavior_pb2.OUTPUT_ONLY in behaviors(f):
            # The server sets it: request schemas leave it out (OpenAPI 3.0 readOnly).
            schema = {"allOf": [schema], "readOnly": True} if "$ref" in schema else {**schema, "readOnly": True}
        return _described(schema, doc)


def behaviors(f: FieldDescriptor) -> set[int]:
    """The field's google.api.field_behavior values (REQUIRED, OUTPUT_ONLY, …)."""
    return set(f.GetOptions().Extensions[field_behavior_pb2.field_behavior])


_UUID_EXAMPLE = "3f0b9a62-5c1e-4d7a-9b8e-2a6c4f1d0e57"


def _example(f: FieldDescriptor) -> str | None:
    """An example for identifiers and timestamps, the values a reader cannot guess from the type."""
    if f.type == _F.TYPE_STRING and (f.name == "id" or f.name.endswith("_id")):
        return _UUID_EXAMPLE
    if f.type == _F.TYPE_MESSAGE and _message(f).full_name == "google.protobuf.Timestamp":
        return "2026-01-31T09:30:00Z"
    return None


def _message(f: FieldDescriptor) -> Descriptor:
    assert f.message_type is not None, f.full_name
    return f.message_type


def _enum(f: FieldDescriptor) -> EnumDescriptor:
    assert f.enum_type is not None, f.full_name
    return f.enum_type


def _is_repeated(f: FieldDescriptor) -> bool:
    return bool(f.is_repeated)


def _field_at(desc: Descriptor, dotted: str) -> FieldDescriptor:
    field = None
    for part in dotted.split("."):
        field = desc.fields_by_name[part]
        if field.type == _F.TYPE_MESSAGE:
            desc = _message(field)
    assert field is not None
    return field


_VARIABLE = re.compile(r"\{([^}=]+)(=[^}]*)?\}")


def _error_responses(secured: bool) -> dict[str, Any]:
    return {
        code: {"$ref": f"#/components/responses/Error{code}"}
        for code in _ERROR_RESPONSES
        if secured or code not in _SECURED_ONLY
    }


def _operation(
    method: protoset.Method,
    binding: protoset.Binding,
    index: int,
    pool: descriptor_pool.DescriptorPool,
    schemas: _Schemas,
    public: bool,
    success: int,
) -> tuple[str, dict[str, Any]]:
    request = pool.FindMessageTypeByName(method.input_type)
    response = pool.FindMessageTypeByName(method.output_type)
    path_vars = [m.group(1) for m in _VARIABLE.finditer(binding.path)]
    parameters: list[dict[str, Any]] = [
        {
            "name": var,
            "in": "path",
            "required": True,
            "schema": schemas.value(_field_at(request, var)),
            "description": schemas.docs.get(_field_at(request, var).full_name, ""),
        }
        for var in path_vars
    ]
    bound = {var.split(".")[0] for var in path_vars}
    op: dict[str, Any] = {}
    if binding.body != "*":
        # Fields outside the path and the body are query parameters (scalars, enums, lists of them).
        for f in request.fields:
            if f.name in bound or f.name == binding.body or f.type == _F.TYPE_MESSAGE:
                continue
            value = schemas.value(f)
            param = {
                "name": f.name,
                "in": "query",
                "required": field_behavior_pb2.REQUIRED in behaviors(f),
                "schema": {"type": "array", "items": value} if _is_repeated(f) else value,
            }
            if doc := schemas.docs.get(f.full_name):
                param["description"] = doc
            parameters.append(param)
    if binding.body == "*":
        if request.full_name == HTTP_BODY:
            content = {"*/*": {"schema": dict(_BINARY)}}
        elif bound:
            content = {"application/json": {"schema": schemas.message_schema(request, without=bound)}}
        else:
            content = {"application/json": {"schema": schemas.message_ref(request)}}
        op["requestBody"] = {"required": True, "content": content}
    elif binding.body:
        body_field = request.fields_by_name[binding.body]
        if body_field.type == _F.TYPE_MESSAGE and _message(body_field).full_name == HTTP_BODY:
            content = {"*/*": {"schema": dict(_BINARY)}}
        else:
            content = {"application/json": {"schema": schemas.field(body_field)}}
        op["requestBody"] = {"required": True, "content": content}

    out_desc = response
    out_schema: dict[str, Any]
    if binding.response_body:
        out_field = response.fields_by_name[binding.response_body]
        out_schema = schemas.field(out_field)
        out_desc = _message(out_field) if out_field.type == _F.TYPE_MESSAGE else response
    else:
        out_schema = schemas.message_ref(response)
    ok_content: dict[str, Any]
    if out_desc.full_name == HTTP_BODY:
        ok_content = {"*/*": {"schema": dict(_BINARY)}}
    elif method.server_streaming:
        # The body is text (`data: {…}` events), not one JSON value: the schema says so, and
        # x-event-schema names the message each event carries.
        ok_content = {
            "text/event-stream": {
                "schema": {
                    "type": "string",
                    "description": f"Server-sent events: each `data:` line holds one JSON `{out_desc.name}`.",
                    "x-event-schema": out_schema,
                }
            }
        }
    else:
        ok_content = {"application/json": {"schema": out_schema}}

    doc = schemas.docs.get(f"{method.service}.{method.name}", "")
    service_short = method.service.rsplit(".", 1)[1]
    op_id = f"{service_short}_{method.name}" + (f"_{index}" if index else "")
    op.update(
        {
            "operationId": op_id,
            "tags": [service_short],
            "summary": doc.split("\n")[0] if doc else method.name,
            "description": doc + f"\n\ngRPC: `{method.grpc_path}`",
            "responses": {
                str(success): {"description": _SUCCESS[success], "content": ok_content},
                **_error_responses(not public),
            },
        }
    )
    if parameters:
        op["parameters"] = parameters
    if public:
        op["security"] = []
    return _VARIABLE.sub(lambda m: "{" + m.group(1) + "}", binding.path), op


def _error_example(status: str, text: str) -> dict[str, Any]:
    """The envelope as the status's documented code answers it (the code is the word in parentheses)."""
    code = re.findall(r"\(([A-Z_]+)\)", text)[0]
    return {
        "error": {
            "code": code,
            "message": text.split(" (")[0] + ".",
            "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": code, "domain": "molbridge"}],
        }
    }


def _components(schemas: dict[str, Any]) -> dict[str, Any]:
    envelope = {
        "type": "object",
        "required": ["error"],
        "description": "Every error answered by the gateway, from a service or from the gateway itself.",
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "details"],
                "properties": {
                    "code": {"type": "string", "enum": ERROR_CODES},
                    "message": {"type": "string", "description": "Human-readable explanation."},
                    "details": {
                        "type": "array",
                        "description": "google.rpc error details as JSON: ErrorInfo (reason = code, "
                        "metadata.detail = finer reason), BadRequest (field_violations), RetryInfo, …",
                        "items": {
                            "type": "object",
                            "properties": {"@type": {"type": "string"}},
                            "additionalProperties": True,
                        },
                    },
                },
            }
        },
    }
    responses = {
        f"Error{code}": {
            "description": text,
            "content": {"application/json": {"schema": _ref("ErrorEnvelope"), "example": _error_example(code, text)}},
            **(
                {"headers": {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}}}
                if code in ("429", "503")
                else {}
            ),
        }
        for code, text in _ERROR_RESPONSES.items()
    }
    return {
        "schemas": {**dict(sorted(schemas.items())), "ErrorEnvelope": envelope},
        "responses": responses,
        "securitySchemes": {
            "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
        },
    }


def build(
    fds: descriptor_pb2.FileDescriptorSet,
    *,
    public_paths: Iterable[str] = (),
    internal_methods: Iterable[str] = (),
    jwks_path: str | None = None,
    responses: Mapping[str, Any] | None = None,
    title: str = "Molbridge API",
    version: str = "v1",
) -> dict[str, Any]:
    """The OpenAPI document for every google.api.http binding of the molbridge services.

    public_paths: policy patterns (see policy.toml) of routes that need no credentials.
    internal_methods: gRPC paths never exposed by the gateway (left out).
    jwks_path: the REST path of the JWKS, documented as the JWK Set it answers.
    responses: policy.toml's `[responses]` (which POSTs create: 201 instead of 200).
    """
    rules = responses or {}
    pool = descriptor_pool.DescriptorPool()
    for file in fds.file:
        pool.AddSerializedFile(file.SerializeToString())
    docs = comments(fds)
    schemas = _Schemas(pool, docs, component_names(fds))
    public = list(public_paths)
    internal = set(internal_methods)
    paths: dict[str, dict[str, Any]] = {}
    tags: dict[str, str] = {}
    for method in protoset.methods(fds):
        if method.grpc_path in internal:
            continue
        for index, binding in enumerate(method.bindings):
            is_public = any(protoset.matches(p, binding.path) for p in public)
            success = contract.success_status(method, binding, rules)
            path, op = _operation(method, binding, index, pool, schemas, is_public, success)
            paths.setdefault(path, {})[binding.verb] = op
            tags[method.service.rsplit(".", 1)[1]] = docs.get(method.service, "")
    if jwks_path and "get" in paths.get(jwks_path, {}):
        ok = paths[jwks_path]["get"]["responses"]["200"]
        ok["content"] = {"application/json": {"schema": _ref("JwkSet")}}
        schemas.components["JwkSet"] = _JWK_SET
    paths[OPENAPI_PATH] = {
        "get": {
            "operationId": "Gateway_GetOpenApi",
            "tags": ["Gateway"],
            "summary": "This document.",
            "security": [],
            "responses": {"200": {"description": "OpenAPI 3.0 document", "content": {"application/json": {}}}},
        }
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": title,
            "version": version,
            "description": "REST API of the Molbridge gateway. Every REST route is also a gRPC method on "
            'the same port (h2c). Successes are `{"data": …}` (lists add `meta`), 201 for a POST that '
            "creates a resource, else 200; errors are "
            '`{"error": {"code", "message", "details"}}`. A request body field the method does not '
            "define is a 400 VALIDATION_ERROR naming it (detail UNKNOWN_FIELD).",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}, {"apiKey": []}],
        "tags": [{"name": name, "description": text} for name, text in sorted(tags.items())],
        "paths": dict(sorted(paths.items())),
        "components": _components(schemas.components),
    }


def build_from_policy(fds: descriptor_pb2.FileDescriptorSet, policy: Mapping[str, Any]) -> dict[str, Any]:
    """The document for the gateway as policy.toml configures it."""
    auth = policy["auth"]
    return build(
        fds,
        public_paths=auth["public_paths"],
        internal_methods=auth["internal_methods"],
        jwks_path=auth["jwks_path"],
        responses=policy.get("responses", {}),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the OpenAPI document generated from the descriptor set.")
    parser.add_argument("--descriptor", type=Path, default=Path("build/descriptor.pb"))
    parser.add_argument("--out", type=Path, help="file to write (default: stdout)")
    args = parser.parse_args(argv)
    doc = build_from_policy(protoset.load(args.descriptor), load_policy())
    text = json.dumps(doc, indent=2) + "\n"
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
