"""What the gateway needs to know about the API, read from the descriptor set (`make gen`).

Both the Envoy renderer (routes, clusters, public methods) and the OpenAPI generator read the
descriptor set through this module, so they agree on which services exist and how REST maps to gRPC.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from google.api import annotations_pb2  # registers the google.api.http option so it parses
from google.protobuf import descriptor_pb2

ROOT_PACKAGE = "molbridge"
# molbridge.<service>.v<N>: the <service> part names the upstream that serves the package.
_PACKAGE = re.compile(rf"^{ROOT_PACKAGE}\.([a-z0-9_]+)\.v\d+\w*$")
_HTTP_VERBS = ("get", "put", "post", "delete", "patch")


@dataclass(frozen=True)
class Binding:
    """One REST route of a gRPC method (a google.api.http rule or one of its additional_bindings)."""

    verb: str  # lower-case HTTP method
    path: str  # the annotation's path template, e.g. /api/v1/users/{id}
    body: str  # "", "*" or a field name
    response_body: str


@dataclass(frozen=True)
class Method:
    service: str  # full service name, e.g. molbridge.identity.v1.IdentityService
    name: str
    upstream: str  # service part of the package, e.g. "identity"
    input_type: str  # full message names without the leading dot
    output_type: str
    client_streaming: bool
    server_streaming: bool
    bindings: tuple[Binding, ...]

    @property
    def grpc_path(self) -> str:
        return f"/{self.service}/{self.name}"


def load(path: Path) -> descriptor_pb2.FileDescriptorSet:
    return descriptor_pb2.FileDescriptorSet.FromString(Path(path).read_bytes())


def upstream_of_package(package: str) -> str | None:
    match = _PACKAGE.match(package)
    return match.group(1) if match else None


def _bindings(rule: object) -> tuple[Binding, ...]:
    out: list[Binding] = []
    for current in [rule, *getattr(rule, "additional_bindings", [])]:
        pattern = current.WhichOneof("pattern")  # type: ignore[attr-defined]
        if pattern in _HTTP_VERBS:
            verb, path = pattern, getattr(current, pattern)
        elif pattern == "custom":
            verb, path = current.custom.kind.lower(), current.custom.path  # type: ignore[attr-defined]
        else:
            continue
        out.append(Binding(verb, path, current.body, current.response_body))  # type: ignore[attr-defined]
    return tuple(out)


def methods(fds: descriptor_pb2.FileDescriptorSet) -> list[Method]:
    """Every method of every `molbridge.<service>.vN` service, in descriptor order."""
    found: list[Method] = []
    for file in fds.file:
        upstream = upstream_of_package(file.package)
        if upstream is None:
            continue
        for service in file.service:
            full = f"{file.package}.{service.name}"
            for method in service.method:
                rule = method.options.Extensions[annotations_pb2.http]
                found.append(
                    Method(
                        service=full,
                        name=method.name,
                        upstream=upstream,
                        input_type=method.input_type.lstrip("."),
                        output_type=method.output_type.lstrip("."),
                        client_streaming=method.client_streaming,
                        server_streaming=method.server_streaming,
                        bindings=_bindings(rule) if method.options.HasExtension(annotations_pb2.http) else (),
                    )
                )
    return found


def services(fds: descriptor_pb2.FileDescriptorSet) -> dict[str, str]:
    """Full service name -> upstream name, for every molbridge service."""
    return {m.service: m.upstream for m in methods(fds)}


def template_regex(template: str) -> str:
    """RE2 for a REST path pattern: `{x}` (or `{x=…}`) is one segment, a trailing `/**` any subtree."""
    subtree = template.endswith("/**")
    if subtree:
        template = template[: -len("/**")]
    parts = re.split(r"(\{[^}]*\})", template)
    regex = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
    return regex + ("(/.*)?" if subtree else "")


def concrete(template: str) -> str:
    """A path that a template matches (variables replaced by one placeholder segment)."""
    return re.sub(r"\{[^}]*\}", "_", template)


def matches(pattern: str, template: str) -> bool:
    """Whether a policy pattern covers an annotation's path template."""
    return re.fullmatch(template_regex(pattern), concrete(template)) is not None
