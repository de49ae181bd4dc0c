"""Hostile input against every REST operation: Schemathesis generates requests from the OpenAPI document
the gateway serves, and every answer must be no 5xx and conform to the document (status code, content
type, schema), for a pharma organization's admin and for the system admin.

Bounded and reproducible: a fixed seed, derandomized generation and a few examples per operation.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi import checks as openapi_checks

from gateway.envoy import openapi, protoset
from gateway.envoy.policy import load_policy
from tests.e2e import test_identity_gateway
from tests.e2e.molecule_rest import Org
from tests.e2e.test_identity_gateway import bearer

api = test_identity_gateway.api
admin = test_identity_gateway.admin

DESCRIPTOR = Path(__file__).resolve().parents[2] / "build" / "descriptor.pb"
SEED = 20261204
MAX_EXAMPLES = 4
# Calls that would end the session the test runs as: logout revokes it, a changed password revokes
# every session of the user. Each has its own tests (test_identity_gateway.py).
SESSION_ENDING = ["IdentityService_Logout", "IdentityService_ChangePassword"]
CONFIG = schemathesis.Config.from_dict(
    {
        "seed": SEED,
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
        "phases": {
            "examples": {"enabled": True},
            "coverage": {"enabled": False},
            "fuzzing": {"enabled": True},
            "stateful": {"enabled": False},
        },
    }
)
CHECKS = [
    not_a_server_error,
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_schema_conformance,
]


# Built at collection time from the descriptor set, as the gateway renders it at mesh start (the lazy
# `schemathesis.pytest.from_fixture` loader does not run under pytest 9: it sets `Node._nodeid`, which
# pytest 9 no longer has). test_the_fuzzed_document_is_the_served_one holds the two equal.
DOCUMENT = openapi.build_from_policy(protoset.load(DESCRIPTOR), load_policy())
# Server-sent event streams (…/watch) stay open by design: a call would not return. Their own tests
# read them (test_molecule_uploads_rest.py, test_notifications.py, test_cro_messages_rest.py).
schema = (
    schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG)
    .exclude(path_regex=r"/watch$")
    .exclude(operation_id=SESSION_ENDING)
)


def test_the_fuzzed_document_is_the_served_one(api: httpx.Client) -> None:
    served = api.get("/openapi.json")
    assert served.status_code == 200
    assert served.json() == DOCUMENT


@pytest.fixture(scope="module")
def pharma(api: httpx.Client, admin: dict) -> Org:
    return Org.create(api, admin)


@schema.parametrize()
def test_every_operation_as_a_pharma_admin(case: schemathesis.Case, mesh, pharma: Org) -> None:  # type: ignore[no-untyped-def]
    case.call_and_validate(base_url=mesh.gateway_url, headers=pharma.headers, checks=CHECKS, timeout=30)


@schema.parametrize()
def test_every_operation_as_the_system_admin(case: schemathesis.Case, mesh, admin: dict) -> None:  # type: ignore[no-untyped-def]
    case.call_and_validate(base_url=mesh.gateway_url, headers=bearer(admin), checks=CHECKS, timeout=30)
