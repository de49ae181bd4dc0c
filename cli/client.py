"""The gRPC plumbing every command shares: one channel to the gateway, authentication with automatic
token refresh, trace propagation, and turning gRPC errors into one readable message."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any, Generic, TypeVar

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from molbridge.identity.v1 import identity_service_pb2 as identity_pb
from molbridge.identity.v1 import identity_service_pb2_grpc as identity_grpc

from cli.credentials import CredentialStore, Profile

DEFAULT_TIMEOUT_SECONDS = 30.0
# Error reports and pictures come back as one message: allow more than gRPC's 4 MiB default.
MAX_RECEIVE_BYTES = 256 * 1024 * 1024

StubT = TypeVar("StubT")
ResponseT = TypeVar("ResponseT")
ResultT = TypeVar("ResultT")
Metadata = list[tuple[str, str]]


class CliError(Exception):
    """An expected failure: printed as one message, exit status `exit_code` (1), no traceback."""

    def __init__(self, message: str, *, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class ServerStream(Generic[ResponseT]):
    """A server-streaming call whose first message (or error) has already arrived: an expired token is
    refused before the caller starts iterating, where Gateway can still refresh it and call again."""

    _END: Any = object()

    def __init__(self, call: Any) -> None:
        self._call = call
        self._first = next(call, self._END)

    def __iter__(self) -> Iterator[ResponseT]:
        if self._first is not self._END:
            first, self._first = self._first, self._END
            yield first
        yield from self._call

    def cancel(self) -> None:
        self._call.cancel()


def default_target() -> str:
    return os.environ.get("MOLBRIDGE_TARGET") or f"127.0.0.1:{os.environ.get('GATEWAY_PORT', '8080')}"


class Gateway:
    """A connection to the gateway (native gRPC on the REST port) on behalf of the stored login or an
    API key (MOLBRIDGE_API_KEY)."""

    def __init__(
        self,
        target: str,
        store: CredentialStore,
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self.target = target
        self.store = store
        self.api_key = api_key
        self.timeout = timeout
        # All calls of one command share a trace id: Envoy keeps it, so `molbridge trace` finds them.
        self.trace_id = secrets.token_hex(16)
        self._channel = grpc.insecure_channel(
            target, options=[("grpc.max_receive_message_length", MAX_RECEIVE_BYTES)]
        )
        self._stubs: dict[type, Any] = {}

    def __enter__(self) -> Gateway:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._channel.close()

    def stub(self, stub_class: Callable[[grpc.Channel], StubT]) -> StubT:
        if stub_class not in self._stubs:
            self._stubs[stub_class] = stub_class(self._channel)  # type: ignore[index]
        return self._stubs[stub_class]  # type: ignore[index, no-any-return]

    @property
    def identity(self) -> identity_grpc.IdentityServiceStub:
        return self.stub(identity_grpc.IdentityServiceStub)

    def call(self, method: Callable[..., ResponseT], request: Any, *, authenticated: bool = True) -> ResponseT:
        """Invoke `method` (a bound stub method); when authenticated, with a fresh access token, and once
        more after a refresh if the gateway rejects the token."""
        return self._authorized(
            lambda metadata: method(request, metadata=metadata, timeout=self.timeout), authenticated
        )

    def upload(
        self,
        method: Callable[..., ResponseT],
        requests: Callable[[], Iterator[Any]],
        *,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> ResponseT:
        """A client-streaming call. `requests` makes the message iterator: it is made again if the call is
        repeated after a token refresh. No deadline: the gateway's route timeout for streams bounds it."""
        return self._authorized(lambda auth: method(requests(), metadata=[*auth, *metadata], timeout=None))

    def stream(self, method: Callable[..., Any], request: Any) -> ServerStream[Any]:
        """A server-streaming call, started (see ServerStream); no deadline, as for `upload`."""
        return self._authorized(
            lambda metadata: ServerStream(method(request, metadata=metadata, timeout=None))
        )

    def _authorized(self, invoke: Callable[[Metadata], ResultT], authenticated: bool = True) -> ResultT:
        if not authenticated or self.api_key:
            credential = ("x-api-key", self.api_key) if authenticated and self.api_key else None
            return invoke(self._metadata(credential))
        profile = self._fresh_profile()
        try:
            return invoke(self._metadata(_bearer(profile)))
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.UNAUTHENTICATED:  # type: ignore[attr-defined]
                raise
        # The token was refused before its expiry (signing key rotated, clock skew): refresh once.
        profile = self._refresh(stale=profile)
        return invoke(self._metadata(_bearer(profile)))

    def remember(self, session: identity_pb.Session) -> Profile:
        """Store the tokens of a session from Login, VerifyMfa or RefreshToken."""
        profile = Profile(
            email=session.user.email,
            user_id=session.user.id,
            access_token=session.access_token,
            refresh_token=session.refresh_token,
            expires_at=time.time() + session.expires_in,
        )
        self.store.put(self.target, profile)
        return profile

    def profile(self) -> Profile:
        profile = self.store.get(self.target)
        if profile is None:
            raise CliError(f"not logged in to {self.target}: run `molbridge login`")
        return profile

    def _fresh_profile(self) -> Profile:
        profile = self.profile()
        return self._refresh(stale=profile) if profile.expired() else profile

    def _refresh(self, stale: Profile) -> Profile:
        with self.store.locked():
            current = self.profile()
            if current.access_token != stale.access_token and not current.expired():
                return current  # another molbridge process refreshed meanwhile
            request = identity_pb.RefreshTokenRequest(refresh_token=current.refresh_token)
            try:
                response = self.call(self.identity.RefreshToken, request, authenticated=False)
            except grpc.RpcError as err:
                if err.code() not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):  # type: ignore[attr-defined]
                    raise
                self.store.delete(self.target)
                raise CliError("your session has expired or was revoked: run `molbridge login`") from err
            return self.remember(response.data)

    def _metadata(self, credential: tuple[str, str] | None) -> Metadata:
        metadata = [("traceparent", f"00-{self.trace_id}-{secrets.token_hex(8)}-01")]
        if credential:
            metadata.append(credential)
        return metadata


def _bearer(profile: Profile) -> tuple[str, str]:
    return ("authorization", f"Bearer {profile.access_token}")


def describe_rpc_error(err: grpc.RpcError, target: str) -> str:
    """The server's message with the gRPC code and the ErrorInfo reason/detail, plus field violations."""
    code: grpc.StatusCode = err.code()  # type: ignore[attr-defined]
    message: str = err.details() or code.name  # type: ignore[attr-defined]
    try:
        status = rpc_status.from_call(err)  # type: ignore[arg-type]
    except ValueError:  # details inconsistent with the code/message: show what we have
        status = None
    if status is None and code == grpc.StatusCode.UNAVAILABLE:
        return f"the gateway at {target} is unavailable: {message}"
    if status is None and code == grpc.StatusCode.UNIMPLEMENTED:
        return f"the gateway at {target} does not offer this call (UNIMPLEMENTED): is its service deployed?"

    tags = [code.name]
    extra: list[str] = []
    for detail in status.details if status is not None else []:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            tags.append(info.reason)
            tags.extend(f"{k}={v}" for k, v in sorted(info.metadata.items()))
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            extra.extend(f"  {v.field}: {v.description}" for v in bad_request.field_violations)
    return "\n".join([f"{message} ({', '.join(tags)})", *extra])
