"""How the CLI tells a user why a call failed."""

from __future__ import annotations

import grpc

from cli.client import describe_rpc_error
from molbridge_client.errors import MolbridgeError


def test_a_refusal_names_its_rule_once() -> None:
    rule = "only pharma_admin or system_admin may APPROVE a price"
    refused = MolbridgeError(rule, code=grpc.StatusCode.PERMISSION_DENIED, reason="SUBMISSION_ROLE",
                             metadata={"rule": rule, "status": "PRICING_PROVIDED"})
    text = describe_rpc_error(refused, "127.0.0.1:8080")
    assert text.count(rule) == 1
    assert "PERMISSION_DENIED" in text and "status=PRICING_PROVIDED" in text
