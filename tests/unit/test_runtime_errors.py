import ast
import re
from pathlib import Path

import grpc
import pytest
import sqlalchemy.exc
from google.rpc import code_pb2, error_details_pb2

from services.runtime import errors
from services.runtime.context import safe_request_id
from services.runtime.db import database_unavailable
from services.runtime.errors import DomainError, PreconditionError, UnavailableError, ValidationError
from services.runtime.interceptors import GRPC_CODES, grpc_code_of, status_of
from services.runtime.pagination import PageRequest


def test_validation_error_becomes_status_with_error_info_and_bad_request() -> None:
    status = status_of(
        ValidationError("bad", detail="WEAK_PASSWORD", field_violations=[("password", "needs a digit")]), "identity"
    )
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert (info.reason, info.domain) == ("VALIDATION_ERROR", "identity.molbridge")
    assert info.metadata["detail"] == "WEAK_PASSWORD"
    bad = error_details_pb2.BadRequest()
    assert status.details[1].Unpack(bad)
    assert bad.field_violations[0].field == "password"


def test_precondition_maps_to_failed_precondition_with_conflict_code() -> None:
    status = status_of(PreconditionError("locked"), "cro")
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    assert status.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert info.reason == "RESOURCE_CONFLICT"


def test_unavailable_becomes_unavailable_with_a_retry_hint() -> None:
    status = status_of(UnavailableError("down", detail="DATABASE_UNAVAILABLE", retry_after=2.5), "molecule")
    assert status.code == grpc.StatusCode.UNAVAILABLE.value[0]
    info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(info) and status.details[1].Unpack(retry)
    assert (info.reason, info.metadata["detail"]) == ("SERVICE_UNAVAILABLE", "DATABASE_UNAVAILABLE")
    assert retry.retry_delay.ToMilliseconds() == 2500
    assert len(status_of(ValidationError("bad"), "molecule").details) == 1  # no hint where none was given


def _dbapi(kind: type[sqlalchemy.exc.DBAPIError], *, invalidated: bool = False) -> sqlalchemy.exc.DBAPIError:
    return kind("SELECT 1", {}, Exception("server closed the connection"), connection_invalidated=invalidated)


@pytest.mark.parametrize("error", [
    _dbapi(sqlalchemy.exc.OperationalError),  # refused, restarting, cancelled, deadlock
    _dbapi(sqlalchemy.exc.InterfaceError),  # the connection is closed
    _dbapi(sqlalchemy.exc.DBAPIError, invalidated=True),  # cut in the middle of a statement
    sqlalchemy.exc.TimeoutError("QueuePool limit reached"),  # every connection busy
])
def test_an_unreachable_database_is_a_retry_later(error: Exception) -> None:
    answer = database_unavailable(error)
    assert answer is not None and answer.detail == "DATABASE_UNAVAILABLE" and answer.retry_after == 5.0
    assert "server closed" not in answer.message  # the driver's words stay in the log


@pytest.mark.parametrize("error", [
    _dbapi(sqlalchemy.exc.IntegrityError), _dbapi(sqlalchemy.exc.ProgrammingError), ValueError("x"),
])
def test_other_failures_are_not_called_unavailable(error: Exception) -> None:
    assert database_unavailable(error) is None


def test_paging_defaults_and_bounds() -> None:
    page = PageRequest.of(0, 0)
    assert (page.page, page.page_size, page.offset) == (1, 50, 0)
    assert PageRequest.of(3, 20).offset == 40
    with pytest.raises(ValidationError):
        PageRequest.of(1, 101)
    with pytest.raises(ValidationError):
        PageRequest.of(-1, 10)


def test_errors_module_knows_nothing_of_grpc() -> None:
    tree = ast.parse(Path(errors.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not any(name.split(".")[0] == "grpc" for name in imported), imported


def test_every_domain_error_class_has_a_grpc_code() -> None:
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, DomainError)]
    assert set(classes) <= set(GRPC_CODES)

    class TooBig(ValidationError):  # a service's own subclass takes its ancestor's code
        pass

    assert grpc_code_of(TooBig("x")) == code_pb2.INVALID_ARGUMENT
    assert grpc_code_of(DomainError("x")) == code_pb2.INTERNAL


@pytest.mark.parametrize("kept", ["3f2c1a9e-5d7b-4c1e-9a0b-2e4f6a8c0d1e", "abc", "req.1_2-3", "a" * 64])
def test_plain_request_ids_are_kept(kept: str) -> None:
    assert safe_request_id(kept) == kept


@pytest.mark.parametrize("unsafe", [None, "", "a" * 65, "a b", "x/y", "é", "id\n", "<script>", "a;drop"])
def test_unsafe_request_ids_are_replaced(unsafe: str | None) -> None:
    replaced = safe_request_id(unsafe)
    assert replaced != unsafe and re.fullmatch(r"[0-9a-f]{32}", replaced)
