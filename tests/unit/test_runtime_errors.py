import grpc
import pytest
from google.rpc import error_details_pb2

from services.runtime.errors import PreconditionError, ValidationError
from services.runtime.interceptors import status_of
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


def test_paging_defaults_and_bounds() -> None:
    page = PageRequest.of(0, 0)
    assert (page.page, page.page_size, page.offset) == (1, 50, 0)
    assert PageRequest.of(3, 20).offset == 40
    with pytest.raises(ValidationError):
        PageRequest.of(1, 101)
    with pytest.raises(ValidationError):
        PageRequest.of(-1, 10)
