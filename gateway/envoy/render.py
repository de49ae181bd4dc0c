"""Render the Envoy gateway config from envoy.yaml.tmpl, policy.toml and the descriptor set.

Routing needs no code per service: every `molbridge.<service>.vN` package found in the descriptor
set goes to the upstream named <service> (policy `hosted_by` for packages that live in another
service's process). Usage: `python -m gateway.envoy.render --out build/envoy.yaml`.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2

from gateway.envoy import contract, openapi, protoset
from gateway.envoy.policy import load_policy

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "envoy.yaml.tmpl"
ENVELOPE_LUA = HERE / "envelope.lua"
CONTRACT_LUA = HERE / "contract.lua"
JSON_LUA = HERE / "json.lua"
DOCS_HTML = HERE / "docs.html"

DEFAULT_CORS_ORIGINS = ("http://localhost:3000", "http://127.0.0.1:3000")
API_KEY_HEADER = "x-api-key"
META_NAMESPACE = "molbridge.gateway"  # route metadata and the Lua filter's dynamic metadata
OPENAPI_PATH = openapi.OPENAPI_PATH
DOCS_PATH = "/docs"
# Error codes of DOMAIN.md and their HTTP status; the envelope filter uses the same table.
CODE_STATUS = {
    "VALIDATION_ERROR": 400,
    "AUTHENTICATION_ERROR": 401,
    "AUTHORIZATION_ERROR": 403,
    "RESOURCE_NOT_FOUND": 404,
    "RESOURCE_CONFLICT": 409,
    "RATE_LIMITED": 429,
    "INTEGRATION_ERROR": 502,
    "SERVICE_UNAVAILABLE": 503,  # part of the mesh (a service, its database) is down: retry (Retry-After)
    "INTERNAL_ERROR": 500,
}
# gRPC status number -> DOMAIN.md code, for upstream errors that carry no ErrorInfo.
GRPC_CODE = {
    1: "INTERNAL_ERROR",  # CANCELLED
    2: "INTERNAL_ERROR",  # UNKNOWN
    3: "VALIDATION_ERROR",  # INVALID_ARGUMENT
    4: "INTEGRATION_ERROR",  # DEADLINE_EXCEEDED
    5: "RESOURCE_NOT_FOUND",
    6: "RESOURCE_CONFLICT",  # ALREADY_EXISTS
    7: "AUTHORIZATION_ERROR",  # PERMISSION_DENIED
    8: "RATE_LIMITED",  # RESOURCE_EXHAUSTED
    9: "RESOURCE_CONFLICT",  # FAILED_PRECONDITION
    10: "RESOURCE_CONFLICT",  # ABORTED
    11: "VALIDATION_ERROR",  # OUT_OF_RANGE
    12: "RESOURCE_NOT_FOUND",  # UNIMPLEMENTED: no such method
    13: "INTERNAL_ERROR",
    14: "INTEGRATION_ERROR",  # UNAVAILABLE
    15: "INTERNAL_ERROR",  # DATA_LOSS
    16: "AUTHENTICATION_ERROR",  # UNAUTHENTICATED
}


def _env_cors_origins(env: Mapping[str, str] = os.environ) -> tuple[str, ...]:
    origins = tuple(o.strip() for o in env.get("MOLBRIDGE_CORS_ORIGINS", "").split(",") if o.strip())
    return origins or DEFAULT_CORS_ORIGINS


def _env_rate_limit_scale(env: Mapping[str, str] = os.environ) -> float:
    return float(env.get("MOLBRIDGE_RATE_LIMIT_SCALE", "1"))


@dataclass(frozen=True)
class GatewaySettings:
    gateway_port: int
    admin_port: int
    upstreams: dict[str, str]  # service name ("identity", …) -> "host:port" of its gRPC server
    descriptor_path: Path  # build/descriptor.pb (made by `make gen`)
    otlp_endpoint: str | None  # "host:port" OTLP/gRPC collector for Envoy's tracer; None = no tracing
    access_log_path: Path | None  # JSON access log file; None = stdout
    openapi_path: Path | None  # where to write the generated openapi.json (served by Envoy)
    # Browser origins allowed by CORS (credentials allowed, so never "*"); env MOLBRIDGE_CORS_ORIGINS.
    cors_origins: tuple[str, ...] = field(default_factory=_env_cors_origins)
    # Multiplies every rate and burst of policy.toml (tests lower it); env MOLBRIDGE_RATE_LIMIT_SCALE.
    rate_limit_scale: float = field(default_factory=_env_rate_limit_scale)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> GatewaySettings:
        from services.runtime.settings import REPO_ROOT, SERVICE_PORTS, service_addr

        data_dir = Path(env.get("MOLBRIDGE_DATA_DIR", str(REPO_ROOT / ".data"))).resolve()
        otlp = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or (
            f"127.0.0.1:{env.get('MOLBRIDGE_TRACE_RECEIVER_PORT', '4319')}"
        )
        return cls(
            gateway_port=int(env.get("GATEWAY_PORT", "8080")),
            admin_port=int(env.get("GATEWAY_ADMIN_PORT", "9901")),
            upstreams={name: service_addr(name, env) for name in SERVICE_PORTS},
            descriptor_path=REPO_ROOT / "build" / "descriptor.pb",
            otlp_endpoint=re.sub(r"^\w+://", "", otlp).rstrip("/"),
            access_log_path=data_dir / "logs" / "gateway-access.log",
            openapi_path=data_dir / "gateway" / "openapi.json",
            cors_origins=_env_cors_origins(env),
            rate_limit_scale=_env_rate_limit_scale(env),
        )


# --- small builders ------------------------------------------------------------------------------


def _split_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


# Every service cluster is health-checked over grpc.health.v1: a replica that stops answering, or
# answers NOT_SERVING (draining after SIGTERM, a wedged consumer), gets no new requests after about
# two intervals; one that comes back gets them again after one good answer.
SERVICE_HEALTH_CHECK: dict[str, Any] = {
    "timeout": "1s",
    "interval": "1s",
    "unhealthy_threshold": 2,
    "healthy_threshold": 1,
    "no_traffic_interval": "5s",
    "grpc_health_check": {},
}


def _cluster(name: str, addr: str, *, http2: bool = True, health_check: bool = False) -> dict[str, Any]:
    """A cluster of every address of `addr` (one, or a comma list of replicas); a host name is a
    STRICT_DNS cluster (each address it resolves to is an endpoint)."""
    endpoints = []
    kind = "STATIC"
    for one in (part.strip() for part in addr.split(",") if part.strip()):
        host, port = _split_addr(one)
        try:
            ipaddress.ip_address(host)
        except ValueError:
            kind = "STRICT_DNS"
        endpoints.append({"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}})
    cluster: dict[str, Any] = {
        "name": name,
        "type": kind,
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": endpoints}]},
    }
    if health_check:
        cluster["health_checks"] = [SERVICE_HEALTH_CHECK]
    if http2:
        cluster["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
    return cluster


def jwks_socket(gateway_port: int) -> str:
    """The abstract unix socket of the gateway's JWKS listener (one per gateway, no file to clean up)."""
    return f"@molbridge-gateway-{gateway_port}-jwks"


def _jwks_cluster(socket: str) -> dict[str, Any]:
    return {
        "name": "jwks",
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": "jwks",
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"pipe": {"path": socket}}}}]}],
        },
    }


def _path_match(pattern: str) -> dict[str, Any]:
    """Route match for a policy pattern: exact path when literal, else RE2 over the whole path."""
    if "{" not in pattern and not pattern.endswith("/**"):
        return {"path": pattern}
    return {"safe_regex": {"regex": protoset.template_regex(pattern)}}


def _grpc_match(pattern: str) -> dict[str, Any]:
    return {"prefix": pattern} if pattern.endswith("/") else {"path": pattern}


def _grpc_covers(pattern: str, grpc_path: str) -> bool:
    return grpc_path.startswith(pattern) if pattern.endswith("/") else grpc_path == pattern


def _specificity(pattern: str) -> tuple[int, int]:
    """Sort key: exact before subtree, then more literal characters first."""
    return (pattern.endswith("/**"), -len(re.sub(r"\{[^}]*\}", "", pattern)))


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _token_bucket(per_minute: float, burst: float) -> dict[str, Any]:
    # One token every 60/per_minute s, several per fill when that would be faster than 100 ms
    # (Envoy refuses fill intervals under 50 ms).
    interval_ms = 60000.0 / per_minute
    per_fill = max(1, math.ceil(100.0 / interval_ms))
    return {
        "max_tokens": max(per_fill, round(burst)),
        "tokens_per_fill": per_fill,
        "fill_interval": f"{round(interval_ms * per_fill) / 1000:.3f}s",
    }


@dataclass(frozen=True)
class _RouteClass:
    """How a route is treated: rate-limit category, public or not, timeout."""

    category: str
    public: bool
    timeout: float


class _Renderer:
    def __init__(self, settings: GatewaySettings, policy: Mapping[str, Any]) -> None:
        self.settings = settings
        self.policy = policy
        # Only what this deployment runs is routed; a package whose service is not deployed stays
        # unknown to the gateway (404) instead of failing the whole configuration.
        self.methods = [
            m for m in protoset.methods(protoset.load(settings.descriptor_path)) if self._served(m.upstream)
        ]
        self.auth = policy["auth"]
        self.timeouts = policy["timeouts"]
        self.rate_rows = sorted(policy.get("rate_limits", []), key=lambda r: _specificity(r.get("path") or r["grpc"]))
        self.long_rows = sorted(policy.get("long_routes", []), key=lambda r: _specificity(r["path"]))

    # -- which upstream serves what

    def _served(self, upstream: str) -> bool:
        host = self.policy["routing"].get("hosted_by", {}).get(upstream, upstream)
        return upstream in self.settings.upstreams or host in self.settings.upstreams

    def cluster_of(self, upstream: str) -> str:
        if upstream in self.settings.upstreams:
            return f"svc_{upstream}"
        host = self.policy["routing"].get("hosted_by", {}).get(upstream)
        if host in self.settings.upstreams:
            return f"svc_{host}"
        raise ValueError(f"no upstream address for the {upstream!r} service (GatewaySettings.upstreams)")

    def method_by_rest_path(self, path: str) -> protoset.Method:
        for m in self.methods:
            if any(b.path == path for b in m.bindings):
                return m
        raise ValueError(f"no method in the descriptor set is bound to {path}")

    # -- classification tables

    def rest_category(self, path_template: str) -> str:
        for row in self.rate_rows:
            if "path" in row and protoset.matches(row["path"], path_template):
                return str(row["category"])
        return "standard"

    def method_class(self, m: protoset.Method) -> _RouteClass:
        category = "standard"
        for row in self.rate_rows:
            if "grpc" in row and _grpc_covers(row["grpc"], m.grpc_path):
                category = row["category"]
                break
        else:
            for b in m.bindings:
                if (found := self.rest_category(b.path)) != "standard":
                    category = found
                    break
        timeout = float(self.timeouts["streaming" if m.client_streaming or m.server_streaming else "default"])
        for b in m.bindings:
            for row in self.long_rows:
                if protoset.matches(row["path"], b.path):
                    timeout = max(timeout, float(row["timeout"]))
        public = any(protoset.matches(p, b.path) for p in self.auth["public_paths"] for b in m.bindings)
        return _RouteClass(category, public, timeout)

    # -- rate limits

    def rate_limit_descriptors(self) -> list[dict[str, Any]]:
        """Token buckets per category for each kind of client key (see the `rate_limits` actions
        in envoy.yaml.tmpl): verified token subject, client address on public routes, client
        address for API-key calls (all at the category's rate), and the client address of every
        authenticated call (at address_rate_factor times it: several users behind one address)."""
        scale = self.settings.rate_limit_scale
        factor = float(self.policy["limits"]["address_rate_factor"])
        out = []
        for name, limits in self.policy["categories"].items():
            rate, burst = limits["per_minute"] * scale, limits["burst"] * scale
            bucket = _token_bucket(rate, max(1.0, burst))
            category = {"key": "category", "value": name}
            for entries in (
                [category, {"key": "client"}],
                [category, {"key": "remote_address"}],
                [category, {"key": "credential", "value": "api_key"}, {"key": "remote_address"}],
            ):
                out.append({"entries": entries, "token_bucket": bucket})
            out.append(
                {
                    "entries": [{"key": "address_category", "value": name}, {"key": "remote_address"}],
                    "token_bucket": _token_bucket(rate * factor, max(1.0, burst * factor)),
                }
            )
        return out

    # -- routes

    def route(self, match: dict[str, Any], cluster: str, rc: _RouteClass, *, buffered: bool = False) -> dict[str, Any]:
        # The local_ratelimit filter reads the category from the route's metadata: under
        # `public_category` (keyed by client address) or `category` (keyed by token subject or API key).
        key = "public_category" if rc.public else "category"
        route: dict[str, Any] = {
            "match": match,
            "route": {"cluster": cluster, "timeout": _seconds(rc.timeout)},
            "metadata": {"filter_metadata": {META_NAMESPACE: {key: rc.category}}},
        }
        if buffered:
            # Unary REST bodies are read whole, so an oversized one is a 413 at the gateway (the
            # transcoder streams JSON bodies through; the service would answer RESOURCE_EXHAUSTED).
            limit = int(self.policy["limits"]["max_request_body_bytes"])
            route["typed_per_filter_config"] = {
                "envoy.filters.http.buffer": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute",
                    "buffer": {"max_request_bytes": limit},
                }
            }
        return route

    def static_routes(self, openapi_file: Path | None, openapi_doc: dict[str, Any]) -> list[dict[str, Any]]:
        spec_body = {"filename": str(openapi_file)} if openapi_file else {"inline_string": json.dumps(openapi_doc)}
        routes = [
            _direct(OPENAPI_PATH, spec_body, "application/json"),
            _direct(DOCS_PATH, {"inline_string": DOCS_HTML.read_text()}, "text/html; charset=utf-8"),
            _direct(DOCS_PATH + "/", {"inline_string": DOCS_HTML.read_text()}, "text/html; charset=utf-8"),
        ]
        assets = swagger_ui_dir()
        for asset, content_type in SWAGGER_ASSETS.items():
            routes.append(_direct(f"{DOCS_PATH}/{asset}", {"filename": str(assets / asset)}, content_type))
        return routes

    def routes(self, openapi_file: Path | None, openapi_doc: dict[str, Any]) -> list[dict[str, Any]]:
        default_cluster = self.cluster_of(self.policy["routing"]["standard_services"])
        standard = _RouteClass("standard", False, float(self.timeouts["default"]))
        routes: list[dict[str, Any]] = []
        # Internal methods first: a 404 for every caller, whatever the protocol.
        for path in self.auth["internal_methods"]:
            routes.append(
                {
                    "match": {"path": path},
                    "direct_response": {"status": 404, "body": {"inline_string": "no such route"}},
                    "typed_per_filter_config": _NO_TRANSCODER,
                }
            )
        routes += self.static_routes(openapi_file, openapi_doc)

        # REST routes only choose the rate limit (local_ratelimit runs before the transcoder);
        # after transcoding Envoy matches again on the gRPC path and the gRPC routes below apply.
        public_rest = sorted(
            (p for p in self.auth["public_paths"] if p.startswith("/api/") and p != OPENAPI_PATH),
            key=_specificity,
        )
        # Streaming uploads first: their bodies must flow through unbuffered.
        for m in self.methods:
            if m.client_streaming:
                rc = self.method_class(m)
                routes += [self.route(_path_match(b.path), default_cluster, rc) for b in m.bindings]
        for p in public_rest:
            rc = _RouteClass(self.rest_category(p), True, standard.timeout)
            routes.append(self.route(_path_match(p), default_cluster, rc, buffered=True))
        for row in self.rate_rows:
            if "path" in row and row["path"] not in public_rest:
                rc = _RouteClass(row["category"], False, standard.timeout)
                routes.append(self.route(_path_match(row["path"]), default_cluster, rc, buffered=True))
        routes.append(self.route({"prefix": "/api/"}, default_cluster, standard, buffered=True))

        # Native gRPC (and transcoded REST after the re-match): one route per method that differs
        # from its package's defaults (category, public, timeout: `grpc` policy rows included),
        # then one per package.
        for m in self.methods:
            if m.grpc_path in self.auth["internal_methods"]:
                continue
            rc = self.method_class(m)
            if rc != standard:
                routes.append(self.route({"path": m.grpc_path}, self.cluster_of(m.upstream), rc))
        # Standard services' streams (health Watch, reflection) would be cut at the unary timeout.
        streams = [str(p) for p in self.timeouts.get("streaming_grpc", [])]
        streaming = float(self.timeouts["streaming"])
        for prefix in self.auth["public_grpc_prefixes"]:
            category = self.grpc_category(prefix)
            for path in streams:
                if path != prefix and _grpc_covers(prefix, path):
                    stream = _RouteClass(category, True, streaming)
                    routes.append(self.route(_grpc_match(path), default_cluster, stream))
            rc = _RouteClass(category, True, streaming if prefix in streams else standard.timeout)
            routes.append(self.route(_grpc_match(prefix), default_cluster, rc))
        for package, upstream in sorted({(m.service.rsplit(".", 1)[0], m.upstream) for m in self.methods}):
            routes.append(self.route({"prefix": f"/{package}."}, self.cluster_of(upstream), standard))
        return routes

    def grpc_category(self, prefix: str) -> str:
        return next((r["category"] for r in self.rate_rows if r.get("grpc") == prefix), "standard")

    # -- jwt_authn

    def jwt_rules(self) -> list[dict[str, Any]]:
        public: list[dict[str, Any]] = [_path_match(p) for p in self.auth["public_paths"]]
        public += [{"path": m.grpc_path} for m in self.methods if self.method_class(m).public]
        public += [_grpc_match(p) for p in self.auth["public_grpc_prefixes"]]
        public += [{"path": p} for p in self.auth["internal_methods"]]  # answered 404 by their route
        rules: list[dict[str, Any]] = [{"match": match} for match in public]
        # API keys are not JWTs: the service's interceptor verifies them.
        rules.append({"match": {"prefix": "/", "headers": [{"name": API_KEY_HEADER, "present_match": True}]}})
        rules.append({"match": {"prefix": "/"}, "requires": {"provider_name": "molbridge"}})
        return rules

    # -- transcoder

    def transcoder(self, services: Iterable[str]) -> dict[str, Any]:
        return {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder",
            "proto_descriptor": str(self.settings.descriptor_path.resolve()),
            "services": sorted(set(services)),
            "auto_mapping": False,
            "convert_grpc_status": True,
            "print_options": {
                "preserve_proto_field_names": True,
                "always_print_primitive_fields": True,
                "stream_sse_style_delimited": True,
            },
            # Unknown paths and query parameters are 404 and 400 here (else passed on untranscoded).
            "request_validation_options": {"reject_unknown_method": True, "reject_unknown_query_parameters": True},
        }

    def jwks_routes(self) -> list[dict[str, Any]]:
        m = self.method_by_rest_path(self.auth["jwks_path"])
        cluster = self.cluster_of(m.upstream)
        return [
            {"match": {"path": path}, "route": {"cluster": cluster, "timeout": "5s"}}
            for path in (self.auth["jwks_path"], m.grpc_path)
        ]

    # -- observability

    def tracing(self) -> dict[str, Any] | None:
        if not self.settings.otlp_endpoint:
            return None  # no tracer: an incoming traceparent still passes through untouched
        return {
            "random_sampling": {"value": 100},
            "provider": {
                "name": "envoy.tracers.opentelemetry",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
                    "grpc_service": {"envoy_grpc": {"cluster_name": "otlp"}, "timeout": "2s"},
                    "service_name": "gateway",
                },
            },
        }

    def access_log(self) -> list[dict[str, Any]]:
        log_format = {"json_format": ACCESS_LOG_FORMAT}
        path = self.settings.access_log_path
        if path is None:
            return [
                {
                    "name": "envoy.access_loggers.stdout",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
                        "log_format": log_format,
                    },
                }
            ]
        return [
            {
                "name": "envoy.access_loggers.file",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                    "path": str(path),
                    "log_format": log_format,
                },
            }
        ]

    def clusters(self) -> list[dict[str, Any]]:
        clusters = [
            _cluster(f"svc_{name}", addr, health_check=True) for name, addr in sorted(self.settings.upstreams.items())
        ]
        clusters.append(_jwks_cluster(jwks_socket(self.settings.gateway_port)))
        if self.settings.otlp_endpoint:
            clusters.append(_cluster("otlp", self.settings.otlp_endpoint))
        return clusters

    def envelope_lua(self) -> str:
        config = {
            "statuses": CODE_STATUS,
            "grpc_codes": {str(k): v for k, v in GRPC_CODE.items()},
            "max_request_body_bytes": int(self.policy["limits"]["max_request_body_bytes"]),
        }
        return _lua_source(ENVELOPE_LUA, config)

    def contract_lua(self, fds: descriptor_pb2.FileDescriptorSet) -> str:
        rules = self.policy.get("responses", {})
        return _lua_source(CONTRACT_LUA, contract.build(fds, self.methods, rules))


def _lua_source(script: Path, config: Mapping[str, Any]) -> str:
    """json.lua followed by `script`, whose config marker is replaced by `config` as JSON."""
    source = script.read_text()
    marker = "[==[{}]==]"
    if marker not in source:
        raise RuntimeError(f"{script} lost its config marker {marker}")
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return JSON_LUA.read_text() + "\n" + source.replace(marker, "[==[" + text + "]==]", 1)


ACCESS_LOG_FORMAT = {
    "time": "%START_TIME%",
    "component": "gateway",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "trace_id": "%TRACE_ID%",
    "method": "%REQ(:METHOD)%",
    "path": "%DYNAMIC_METADATA(molbridge.gateway:path)%",
    "grpc_path": "%REQ(:PATH)%",
    "protocol": "%PROTOCOL%",
    "status": "%RESPONSE_CODE%",
    "grpc_status": "%GRPC_STATUS_NUMBER%",
    "response_flags": "%RESPONSE_FLAGS%",
    "response_details": "%RESPONSE_CODE_DETAILS%",
    "duration_ms": "%DURATION%",
    "upstream_ms": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
    "upstream_cluster": "%UPSTREAM_CLUSTER%",
    "upstream_host": "%UPSTREAM_HOST%",
    "client": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
    "subject": "%REQ(X-MOLBRIDGE-SUB)%",
    "user_agent": "%REQ(USER-AGENT)%",
}

# Swagger UI files served under /docs/ (from the swagger-ui-bundle package: no CDN needed).
SWAGGER_ASSETS = {
    "swagger-ui.css": "text/css; charset=utf-8",
    "swagger-ui-bundle.js": "application/javascript; charset=utf-8",
    "favicon-32x32.png": "image/png",
}


def swagger_ui_dir() -> Path:
    from swagger_ui_bundle import swagger_ui_path

    return Path(str(swagger_ui_path))


# The transcoder would answer paths it does not know (reject_unknown_method) before the router
# gets to a direct response: switched off on those routes.
_NO_TRANSCODER = {
    "envoy.filters.http.grpc_json_transcoder": {
        "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
        "disabled": True,
    }
}


def _direct(path: str, body: dict[str, Any], content_type: str) -> dict[str, Any]:
    return {
        "match": {"path": path},
        "direct_response": {"status": 200, "body": body},
        "response_headers_to_add": [
            {"header": {"key": "content-type", "value": content_type}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
        ],
        "typed_per_filter_config": _NO_TRANSCODER,
    }


def build_config(settings: GatewaySettings, policy: Mapping[str, Any] | None = None) -> str:
    """The rendered Envoy config (YAML). Writes openapi.json to settings.openapi_path when set."""
    policy = policy or load_policy()
    r = _Renderer(settings, policy)
    fds = protoset.load(settings.descriptor_path)
    doc = openapi.build_from_policy(fds, policy)
    if settings.openapi_path:
        settings.openapi_path.parent.mkdir(parents=True, exist_ok=True)
        settings.openapi_path.write_text(json.dumps(doc, indent=2) + "\n")
    molbridge_services = sorted({m.service for m in r.methods})
    jwks_method = r.method_by_rest_path(policy["auth"]["jwks_path"])
    values: dict[str, Any] = {
        "admin_port": settings.admin_port,
        "gateway_port": settings.gateway_port,
        "tracing": r.tracing(),
        "access_log": r.access_log(),
        "max_direct_response_bytes": 8 * 1024 * 1024,
        "max_request_body_bytes": int(policy["limits"]["max_request_body_bytes"]),
        "cors_origins": [{"exact": o} for o in settings.cors_origins],
        "routes": r.routes(settings.openapi_path, doc),
        "envelope_lua": r.envelope_lua(),
        "contract_lua": r.contract_lua(fds),
        "issuer": policy["auth"]["issuer"],
        "audience": policy["auth"]["audience"],
        "jwks_uri": f"http://jwks.internal{policy['auth']['jwks_path']}",
        "jwks_cache_duration": _seconds(float(policy["auth"]["jwks_cache_seconds"])),
        "jwt_rules": r.jwt_rules(),
        # One bucket per active client and category; least recently used ones are evicted beyond this.
        "max_dynamic_descriptors": 100000,
        "rate_limit_descriptors": r.rate_limit_descriptors(),
        "transcoder": r.transcoder(molbridge_services),
        "jwks_routes": r.jwks_routes(),
        "jwks_socket": jwks_socket(settings.gateway_port),
        "jwks_transcoder": r.transcoder([jwks_method.service]),
        "clusters": r.clusters(),
    }
    return "# Generated by gateway/envoy/render.py; do not edit.\n" + _fill(TEMPLATE.read_text(), values)


def _fill(template: str, values: Mapping[str, Any]) -> str:
    """Replace each ${name} by its value as indented JSON, continuation lines aligned under it
    (YAML flow content must stay indented deeper than the key that holds it)."""
    names = set(re.findall(r"\$\{(\w+)\}", template))
    if missing := names - set(values):
        raise KeyError(f"no value for {sorted(missing)} in {TEMPLATE.name}")

    def value(match: re.Match[str]) -> str:
        column = match.start() - (template.rfind("\n", 0, match.start()) + 1)
        return json.dumps(values[match.group(1)], indent=2).replace("\n", "\n" + " " * column)

    return re.sub(r"\$\{(\w+)\}", value, template)


def write_config(settings: GatewaySettings, path: Path, policy: Mapping[str, Any] | None = None) -> Path:
    """Render the gateway config to `path` (YAML: Envoy picks the format from the extension)."""
    path = Path(path)
    if path.suffix not in (".yaml", ".yml"):
        raise ValueError(f"{path}: the gateway config is YAML, name it *.yaml")
    text = build_config(settings, policy)
    path.parent.mkdir(parents=True, exist_ok=True)
    if settings.access_log_path:
        settings.access_log_path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Render the Envoy gateway config from the environment.")
    parser.add_argument("--out", type=Path, required=True, help="config file to write (*.yaml)")
    args = parser.parse_args(argv)
    print(write_config(GatewaySettings.from_env(), args.out))


if __name__ == "__main__":
    main()
