"""The gateway renderer's tables: routes, rate-limit buckets and auth rules from policy.toml and the
descriptor set (the rendered config itself is exercised against a real Envoy in
tests/integration/test_gateway.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.envoy import protoset
from gateway.envoy.policy import load_policy
from gateway.envoy.render import GatewaySettings, _Renderer, build_config, write_config

DESCRIPTOR = Path(__file__).resolve().parents[2] / "build" / "descriptor.pb"


def settings(**overrides: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "gateway_port": 8080,
        "admin_port": 9901,
        "upstreams": {"identity": "127.0.0.1:50051"},
        "descriptor_path": DESCRIPTOR,
        "otlp_endpoint": None,
        "access_log_path": None,
        "openapi_path": None,
        "cors_origins": ("http://localhost:3000",),
        "rate_limit_scale": 1.0,
    }
    values.update(overrides)
    return GatewaySettings(**values)


def buckets(renderer: _Renderer, kind: tuple[str, ...] = ("category", "client")) -> dict[str, dict[str, Any]]:
    """Category -> token bucket of the descriptors whose entry keys are `kind` (the last one a
    wildcard: one bucket per distinct client value)."""
    out = {}
    for descriptor in renderer.rate_limit_descriptors():
        entries = descriptor["entries"]
        if tuple(e["key"] for e in entries) == kind:
            assert "value" not in entries[-1]
            out[entries[0]["value"]] = descriptor["token_bucket"]
    return out


def test_no_bucket_is_keyed_by_an_unverified_credential() -> None:
    renderer = _Renderer(settings(), load_policy())
    kinds = {tuple(e["key"] for e in d["entries"]) for d in renderer.rate_limit_descriptors()}
    assert kinds == {
        ("category", "client"),  # x-molbridge-sub: set by jwt_authn from a verified token
        ("category", "remote_address"),  # public routes
        ("category", "credential", "remote_address"),  # API-key calls: per address
        ("address_category", "remote_address"),  # every authenticated call: per address too
    }
    for descriptor in renderer.rate_limit_descriptors():
        assert all(e["key"] != "x-api-key" for e in descriptor["entries"])
    api_key = buckets(renderer, ("category", "credential", "remote_address"))
    assert api_key == buckets(renderer)  # an API-key address gets one client's rate, not more
    address = buckets(renderer, ("address_category", "remote_address"))
    factor = load_policy()["limits"]["address_rate_factor"]
    assert address["standard"]["max_tokens"] == 20 * factor


def test_default_limits_are_domain_md() -> None:
    got = buckets(_Renderer(settings(), load_policy()))
    # DOMAIN.md: standard 100/min (burst 20), batch 20/min (5), AI 50/min (10), CRO 200/min (50), CSV 10/min.
    assert got["standard"] == {"max_tokens": 20, "tokens_per_fill": 1, "fill_interval": "0.600s"}
    assert got["batch"] == {"max_tokens": 5, "tokens_per_fill": 1, "fill_interval": "3.000s"}
    assert got["ai_prediction"] == {"max_tokens": 10, "tokens_per_fill": 1, "fill_interval": "1.200s"}
    assert got["cro_communication"] == {"max_tokens": 50, "tokens_per_fill": 1, "fill_interval": "0.300s"}
    assert got["csv_upload"] == {"max_tokens": 10, "tokens_per_fill": 1, "fill_interval": "6.000s"}


def test_scale_lowers_and_raises_limits() -> None:
    low = buckets(_Renderer(settings(rate_limit_scale=0.05), load_policy()))
    assert low["standard"] == {"max_tokens": 1, "tokens_per_fill": 1, "fill_interval": "12.000s"}
    high = buckets(_Renderer(settings(rate_limit_scale=100), load_policy()))
    for bucket in high.values():
        assert float(bucket["fill_interval"].rstrip("s")) >= 0.05  # Envoy's minimum
    assert high["cro_communication"]["max_tokens"] == 5000


def test_every_package_is_routed_to_its_upstream() -> None:
    upstreams = {
        "identity": "127.0.0.1:1", "molecule": "127.0.0.1:2", "prediction": "127.0.0.1:3", "document": "127.0.0.1:4",
        "cro": "127.0.0.1:5", "notification": "127.0.0.1:6",
    }
    renderer = _Renderer(settings(upstreams=upstreams), load_policy())
    routes = renderer.routes(None, {})
    prefixes = {r["match"].get("prefix"): r["route"]["cluster"] for r in routes if "route" in r}
    for method in protoset.methods(protoset.load(DESCRIPTOR)):
        package = method.service.rsplit(".", 1)[0]
        assert f"/{package}." in prefixes
    assert prefixes["/molbridge.identity.v1."] == "svc_identity"
    assert prefixes["/molbridge.health.v1."] == "svc_identity"  # hosted_by in policy.toml
    assert prefixes["/grpc.reflection.v1alpha.ServerReflection/"] == "svc_identity"
    assert prefixes["/grpc.reflection.v1.ServerReflection/"] == "svc_identity"


def test_a_service_without_an_upstream_is_not_routed_and_reflection_needs_identity() -> None:
    renderer = _Renderer(settings(upstreams={"identity": "127.0.0.1:1"}), load_policy())
    assert {m.upstream for m in renderer.methods} == {"identity", "health"}
    with pytest.raises(ValueError, match="identity"):
        _Renderer(settings(upstreams={"molecule": "127.0.0.1:2"}), load_policy()).routes(None, {})


def test_public_and_internal_methods() -> None:
    renderer = _Renderer(settings(), load_policy())
    rules = renderer.jwt_rules()
    public = {r["match"].get("path") for r in rules if "requires" not in r}
    for name in ["Login", "RefreshToken", "RequestPasswordReset", "ConfirmPasswordReset", "VerifyMfa", "GetJwks"]:
        assert f"/molbridge.identity.v1.IdentityService/{name}" in public
    assert "/molbridge.health.v1.HealthService/GetHealth" in public
    assert "/molbridge.identity.v1.IdentityService/GetMe" not in public
    assert rules[-1] == {"match": {"prefix": "/"}, "requires": {"provider_name": "molbridge"}}
    internal = "/molbridge.identity.v1.IdentityService/AuthenticateApiKey"
    first = renderer.routes(None, {})[0]
    assert first["match"] == {"path": internal} and first["direct_response"]["status"] == 404


def test_login_counts_as_standard_per_address() -> None:
    routes = _Renderer(settings(), load_policy()).routes(None, {})
    login = next(r for r in routes if r["match"] == {"path": "/api/v1/auth/login"})
    assert login["metadata"]["filter_metadata"]["molbridge.gateway"] == {"public_category": "standard"}
    me = next(r for r in routes if r["match"] == {"prefix": "/molbridge.identity.v1."})
    assert me["metadata"]["filter_metadata"]["molbridge.gateway"] == {"category": "standard"}


def test_rendered_text(tmp_path: Path) -> None:
    text = build_config(settings(cors_origins=("https://app.example",)))
    assert "${" not in text
    assert '"https://app.example"' in text
    assert "[==[{}]==]" not in text  # the Lua config marker was filled
    with pytest.raises(ValueError, match="yaml"):
        write_config(settings(), tmp_path / "envoy.json")


def test_cors_origins_and_scale_from_the_environment() -> None:
    defaults = GatewaySettings.from_env({})
    assert defaults.cors_origins == ("http://localhost:3000", "http://127.0.0.1:3000")
    assert defaults.rate_limit_scale == 1.0
    configured = GatewaySettings.from_env(
        {"MOLBRIDGE_CORS_ORIGINS": "https://a.example, https://b.example", "MOLBRIDGE_RATE_LIMIT_SCALE": "0.5"}
    )
    assert configured.cors_origins == ("https://a.example", "https://b.example")
    assert configured.rate_limit_scale == 0.5


def test_standard_streams_get_the_streaming_timeout() -> None:
    routes = _Renderer(settings(), load_policy()).routes(None, {})
    timeouts = {
        r["match"].get("path") or r["match"].get("prefix"): r["route"]["timeout"] for r in routes if "route" in r
    }
    assert timeouts["/grpc.health.v1.Health/Watch"] == "3600s"  # a Watch lasts as long as the client wants
    assert timeouts["/grpc.health.v1.Health/"] == "30s"  # Check stays unary
    assert timeouts["/grpc.reflection.v1alpha.ServerReflection/"] == "3600s"
    assert timeouts["/grpc.reflection.v1.ServerReflection/"] == "3600s"


def test_replicas_are_endpoints_of_one_health_checked_cluster() -> None:
    upstreams = {"identity": "127.0.0.1:1, 127.0.0.1:2", "molecule": "molecule.internal:50052"}
    clusters = {c["name"]: c for c in _Renderer(settings(upstreams=upstreams), load_policy()).clusters()}
    identity, molecule = clusters["svc_identity"], clusters["svc_molecule"]
    [locality] = identity["load_assignment"]["endpoints"]
    endpoints = [e["endpoint"]["address"]["socket_address"] for e in locality["lb_endpoints"]]
    assert endpoints == [{"address": "127.0.0.1", "port_value": 1}, {"address": "127.0.0.1", "port_value": 2}]
    assert (identity["type"], molecule["type"]) == ("STATIC", "STRICT_DNS")
    for cluster in (identity, molecule):
        [check] = cluster["health_checks"]
        assert "grpc_health_check" in check and check["unhealthy_threshold"] >= 1
    assert "health_checks" not in clusters["jwks"]
