"""Another service's answer as the caller's error: refusals pass on, the rest is that service being unavailable."""

import grpc
import pytest

from services.runtime.errors import AuthorizationError, IntegrationError, UnavailableError, ValidationError
from services.runtime.peer_errors import peer_error, peer_failure


def rpc_error(code: grpc.StatusCode, details: str = "") -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


@pytest.mark.parametrize(("code", "kind"), [
    (grpc.StatusCode.INVALID_ARGUMENT, ValidationError),
    (grpc.StatusCode.PERMISSION_DENIED, AuthorizationError),
])
def test_a_refusal_passes_on_with_the_peers_words(code: grpc.StatusCode, kind: type) -> None:
    error = peer_error(rpc_error(code, "molecule_ids: at most 1000"), "prediction")
    assert isinstance(error, kind)
    assert error.message == "molecule_ids: at most 1000"


def test_a_refusal_without_words_names_the_peer() -> None:
    assert "document service" in peer_error(rpc_error(grpc.StatusCode.INVALID_ARGUMENT), "document").message


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED])
def test_a_peer_that_is_down_is_a_retry_later(code: grpc.StatusCode) -> None:
    error = peer_error(rpc_error(code, "stack trace of the peer"), "prediction")
    assert isinstance(error, UnavailableError) and isinstance(error, IntegrationError)  # retried where those are
    assert (error.code, error.detail, error.retry_after) == ("SERVICE_UNAVAILABLE", "PEER_UNAVAILABLE", 5.0)
    assert error.message == "The prediction service is unavailable; try again in a few seconds"


@pytest.mark.parametrize("code", [grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAUTHENTICATED])
def test_anything_else_is_the_peer_failing(code: grpc.StatusCode) -> None:
    error = peer_error(rpc_error(code, "stack trace of the peer"), "prediction")
    assert type(error) is IntegrationError
    assert error.message == f"The prediction service could not answer ({code.name}); try again"


def test_what_the_peer_was_asked_for_is_named() -> None:
    down = peer_failure(rpc_error(grpc.StatusCode.UNAVAILABLE, "connection refused"), "identity", "confirm the signer")
    assert isinstance(down, UnavailableError) and down.detail == "PEER_UNAVAILABLE"
    assert down.message == "The identity service is unavailable: cannot confirm the signer; try again in a few seconds"
    failed = peer_failure(rpc_error(grpc.StatusCode.INTERNAL, "boom"), "identity", "check the user")
    assert type(failed) is IntegrationError and "cannot check the user (INTERNAL)" in failed.message
