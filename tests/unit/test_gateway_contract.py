"""The contract tables rendered for contract.lua (unknown body fields, 201 for creates) from the real
descriptor set and policy.toml; the filter itself runs against a real Envoy in
tests/integration/test_gateway_contract.py."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from gateway.envoy import contract, protoset
from gateway.envoy.policy import load_policy

DESCRIPTOR = Path(__file__).resolve().parents[2] / "build" / "descriptor.pb"


@pytest.fixture(scope="module")
def table() -> dict[str, Any]:
    fds = protoset.load(DESCRIPTOR)
    return contract.build(fds, protoset.methods(fds), load_policy()["responses"])


def route(table: dict[str, Any], verb: str, path: str) -> dict[str, Any]:
    """The first route whose pattern matches, as contract.lua picks it (Lua's `[^/]+` and `.+` mean
    the same in Python's re; `%` escapes a magic character)."""
    for r in table["routes"]:
        if r["verb"] == verb and re.fullmatch(r["pattern"].strip("^$").replace("%", "\\"), path):
            return dict(r)
    raise AssertionError(f"no route for {verb} {path}")


def test_lua_patterns() -> None:
    assert contract.lua_pattern("/api/v1/users/{id}") == "^/api/v1/users/[^/]+$"
    assert contract.lua_pattern("/api/v1/molecules/imports/{job_id}:cancel") == (
        "^/api/v1/molecules/imports/[^/]+:cancel$"
    )
    assert contract.lua_pattern("/api/v1/password-reset/{name=**}") == "^/api/v1/password%-reset/.+$"


def test_body_star_is_the_request_minus_path_fields(table: dict[str, Any]) -> None:
    create = route(table, "post", "/api/v1/users")
    assert create["body"] == "molbridge.identity.v1.CreateUserRequest"
    fields = table["messages"][create["body"]]
    assert {"email", "full_name", "fullName", "roles"} <= set(fields) and "role" not in fields
    update = route(table, "put", "/api/v1/users/u-1")
    assert "id" not in table["messages"][update["body"]] and "roles" in table["messages"][update["body"]]


def test_literal_routes_win_over_path_parameters(table: dict[str, Any]) -> None:
    assert route(table, "put", "/api/v1/users/me")["body"] == "molbridge.identity.v1.UpdateMeRequest"
    assert route(table, "post", "/api/v1/molecules/batch")["template"] == "/api/v1/molecules/batch"


def test_nested_messages_are_reachable(table: dict[str, Any]) -> None:
    messages = table["messages"]
    for name, fields in messages.items():
        for entry in fields.values():
            if "m" in entry:
                assert entry["m"] in messages, (name, entry)
                assert not entry["m"].startswith("google.protobuf."), "well-known types are free-form"


def test_uploads_and_bodiless_routes_are_not_read(table: dict[str, Any]) -> None:
    assert route(table, "post", "/api/v1/molecules/upload/csv")["body"] == ""
    assert route(table, "get", "/api/v1/users")["body"] == ""
    assert route(table, "delete", "/api/v1/users/u-1")["body"] == ""


def test_creates_answer_201(table: dict[str, Any]) -> None:
    created = {(r["verb"], r["template"]) for r in table["routes"] if r["created"]}
    assert {
        ("post", "/api/v1/users"),
        ("post", "/api/v1/organizations"),
        ("post", "/api/v1/api-keys"),
        ("post", "/api/v1/molecules"),
        ("post", "/api/v1/molecules/batch"),
        ("post", "/api/v1/molecules/upload/csv"),
        ("post", "/api/v1/molecules/upload/csv/{storage_key}/import"),
        ("post", "/api/v1/libraries"),
        ("post", "/api/v1/predictions"),
    } <= created
    assert all(verb == "post" for verb, _ in created)
    for not_created in ["/api/v1/auth/login", "/api/v1/molecules/filter", "/api/v1/molecules/search/similarity"]:
        assert ("post", not_created) not in created


def test_created_methods_lists_creates_named_otherwise() -> None:
    login = next(m for m in protoset.methods(protoset.load(DESCRIPTOR)) if m.name == "Login")
    rules = {"created_prefixes": ["Create"], "created_methods": [login.grpc_path]}
    assert contract.success_status(login, login.bindings[0], rules) == 201
    assert contract.success_status(login, login.bindings[0], {"created_prefixes": ["Create"]}) == 200
