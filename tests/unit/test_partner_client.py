"""molbridge_client's error typing and the CLI's use of it: which class and exit status a failed call gets
from its google.rpc.Status details, and enum words read from descriptors."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from molbridge.identity.v1 import identity_service_pb2 as identity_pb
from molbridge.molecule.v1 import molecule_pb2 as mol_pb

from cli.client import EXIT_NOT_FOUND, EXIT_UNAVAILABLE, EXIT_VALIDATION, exit_code_of
from cli.output import enum_word
from molbridge_client import (
    ConflictError,
    FieldViolation,
    IntegrationError,
    MolbridgeError,
    NotFoundError,
    RateLimited,
    Unavailable,
    ValidationError,
)
from molbridge_client.errors import from_rpc_error


class FailedCall(grpc.RpcError):
    """What grpc raises for a failed unary call: the status code, message and trailing metadata."""

    def __init__(self, status: grpc.Status) -> None:
        self._status = status

    def code(self) -> grpc.StatusCode:
        return self._status.code

    def details(self) -> str:
        return self._status.details

    def trailing_metadata(self) -> Any:
        return self._status.trailing_metadata


def failed(code: int, message: str, *details: Any) -> FailedCall:
    packed = []
    for detail in details:
        holder = any_pb2.Any()
        holder.Pack(detail)
        packed.append(holder)
    return FailedCall(rpc_status.to_status(status_pb2.Status(code=code, message=message, details=packed)))


def test_the_error_info_reason_chooses_the_class_and_field_violations_are_kept() -> None:
    violation = error_details_pb2.BadRequest.FieldViolation(field="email", description="must contain @")
    err = from_rpc_error(
        failed(
            code_pb2.INVALID_ARGUMENT,
            "email is invalid",
            error_details_pb2.ErrorInfo(reason="VALIDATION_ERROR", domain="molbridge", metadata={"k": "v"}),
            error_details_pb2.BadRequest(field_violations=[violation]),
        )
    )
    assert isinstance(err, ValidationError) and isinstance(err, grpc.RpcError)
    assert (err.reason, err.message, err.metadata) == ("VALIDATION_ERROR", "email is invalid", {"k": "v"})
    assert err.field_violations == (FieldViolation("email", "must contain @"),)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert rpc_status.from_call(err) is not None  # still readable as a grpc call  # type: ignore[arg-type]
    assert exit_code_of(err) == EXIT_VALIDATION


def test_rate_limits_carry_the_retry_delay() -> None:
    retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=7))
    err = from_rpc_error(
        failed(code_pb2.RESOURCE_EXHAUSTED, "slow down", error_details_pb2.ErrorInfo(reason="RATE_LIMITED"), retry)
    )
    assert isinstance(err, RateLimited) and err.retry_after == 7.0


@pytest.mark.parametrize(
    ("code", "reason", "expected", "exit_code"),
    [
        (code_pb2.NOT_FOUND, "", NotFoundError, EXIT_NOT_FOUND),
        (code_pb2.FAILED_PRECONDITION, "RESOURCE_CONFLICT", ConflictError, 7),
        (code_pb2.UNAVAILABLE, "INTEGRATION_ERROR", IntegrationError, EXIT_UNAVAILABLE),
        (code_pb2.DEADLINE_EXCEEDED, "", Unavailable, EXIT_UNAVAILABLE),
        (code_pb2.UNKNOWN, "", MolbridgeError, 1),
    ],
)
def test_without_a_known_reason_the_grpc_code_decides(
    code: int, reason: str, expected: type[MolbridgeError], exit_code: int
) -> None:
    details = [error_details_pb2.ErrorInfo(reason=reason)] if reason else []
    err = from_rpc_error(failed(code, "no", *details))
    assert type(err) is expected
    assert exit_code_of(err) == exit_code


def test_enum_words_drop_the_prefix_every_value_shares() -> None:
    assert enum_word(identity_pb.Organization(kind=1), "kind") == "PHARMA"
    assert enum_word(mol_pb.Molecule(status=0), "status").endswith("UNSPECIFIED")
