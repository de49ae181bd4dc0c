"""The partner client: one gRPC channel to the gateway (h2c, or TLS), a login with automatic token
refresh or an API key, typed errors (molbridge_client.errors) and a page iterator for list calls."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar

import grpc
from molbridge.common.v1 import page_pb2
from molbridge.cro.v1 import cro_service_pb2_grpc as cro_grpc
from molbridge.cro.v1 import result_service_pb2_grpc as result_grpc
from molbridge.document.v1 import document_service_pb2_grpc as document_grpc
from molbridge.identity.v1 import identity_service_pb2 as identity_pb
from molbridge.identity.v1 import identity_service_pb2_grpc as identity_grpc
from molbridge.molecule.v1 import import_service_pb2_grpc as import_grpc
from molbridge.molecule.v1 import library_service_pb2_grpc as library_grpc
from molbridge.molecule.v1 import molecule_service_pb2_grpc as molecule_grpc
from molbridge.molecule.v1 import search_service_pb2_grpc as search_grpc
from molbridge.prediction.v1 import prediction_service_pb2_grpc as prediction_grpc

from molbridge_client.errors import (
    AuthenticationError,
    MolbridgeError,
    NotLoggedIn,
    SessionExpired,
    from_rpc_error,
)
from molbridge_client.tokens import MemoryTokenStore, Tokens, TokenStore

DEFAULT_TIMEOUT_SECONDS = 30.0
# Error reports and pictures come back as one message: allow more than gRPC's 4 MiB default.
MAX_RECEIVE_BYTES = 256 * 1024 * 1024
MAX_PAGE_SIZE = 100  # DOMAIN.md: lists page at most 100 items

StubT = TypeVar("StubT")
ResponseT = TypeVar("ResponseT")
ResultT = TypeVar("ResultT")
ItemT = TypeVar("ItemT")
ItemT_co = TypeVar("ItemT_co", covariant=True)
Metadata = list[tuple[str, str]]


class ListResponse(Protocol[ItemT_co]):
    """What every list RPC answers: `data` (one page) and `meta` (page, page_size, total)."""

    @property
    def data(self) -> Sequence[ItemT_co]: ...

    @property
    def meta(self) -> page_pb2.PageMeta: ...


def default_target() -> str:
    """$MOLBRIDGE_TARGET, else the local gateway (127.0.0.1:$GATEWAY_PORT or 8080)."""
    return os.environ.get("MOLBRIDGE_TARGET") or f"127.0.0.1:{os.environ.get('GATEWAY_PORT', '8080')}"


class ServerStream(Generic[ResponseT]):
    """A server-streaming call whose first message (or error) has already arrived: an expired token is
    refused before the caller starts iterating, where the client can still refresh it and call again."""

    _END: Any = object()

    def __init__(self, call: Any) -> None:
        self._call = call
        self._first = _typed(lambda: next(call, self._END))

    def __iter__(self) -> Iterator[ResponseT]:
        if self._first is not self._END:
            first, self._first = self._first, self._END
            yield first
        try:
            yield from self._call
        except grpc.RpcError as err:
            raise from_rpc_error(err) from err

    def initial_metadata(self) -> dict[str, str]:
        """The response's headers, sent before its first message (a download's `content-disposition`)."""
        return {key: value for key, value in self._call.initial_metadata() or () if isinstance(value, str)}

    def cancel(self) -> None:
        self._call.cancel()


class Client:
    """A connection to the Molbridge gateway.

    >>> with Client("gateway.example.com:443", tls=True) as client:
    ...     client.login("me@example.com", "…", mfa_code=lambda: input("MFA code: "))
    ...     me = client.call(client.identity.GetMe, identity_pb.GetMeRequest()).data

    Authenticates with `api_key` when given (sent as x-api-key), else with the session of `login`, kept in
    `tokens` (in memory unless another TokenStore is given) and refreshed when the access token expires.
    Every failed call raises a molbridge_client.errors.MolbridgeError subclass."""

    def __init__(
        self,
        target: str | None = None,
        *,
        tls: bool = False,
        root_certificates: bytes | None = None,
        api_key: str | None = None,
        tokens: TokenStore | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self.target = target or default_target()
        self.api_key = api_key
        self.tokens: TokenStore = tokens if tokens is not None else MemoryTokenStore()
        self.timeout = timeout
        # The calls of one client share a trace id (Envoy keeps it): one id finds them all in the traces.
        self.trace_id = secrets.token_hex(16)
        options = [("grpc.max_receive_message_length", MAX_RECEIVE_BYTES)]
        if tls or root_certificates:
            credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            self._channel = grpc.secure_channel(self.target, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(self.target, options=options)
        self._stubs: dict[Any, Any] = {}

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    # Stubs of the gateway's services, on this client's channel.
    def stub(self, stub_class: Callable[[grpc.Channel], StubT]) -> StubT:
        if stub_class not in self._stubs:
            self._stubs[stub_class] = stub_class(self._channel)
        return self._stubs[stub_class]  # type: ignore[no-any-return]

    @property
    def identity(self) -> identity_grpc.IdentityServiceStub:
        return self.stub(identity_grpc.IdentityServiceStub)

    @property
    def molecules(self) -> molecule_grpc.MoleculeServiceStub:
        return self.stub(molecule_grpc.MoleculeServiceStub)

    @property
    def search(self) -> search_grpc.SearchServiceStub:
        return self.stub(search_grpc.SearchServiceStub)

    @property
    def libraries(self) -> library_grpc.LibraryServiceStub:
        return self.stub(library_grpc.LibraryServiceStub)

    @property
    def imports(self) -> import_grpc.ImportServiceStub:
        return self.stub(import_grpc.ImportServiceStub)

    @property
    def predictions(self) -> prediction_grpc.PredictionServiceStub:
        return self.stub(prediction_grpc.PredictionServiceStub)

    @property
    def documents(self) -> document_grpc.DocumentServiceStub:
        return self.stub(document_grpc.DocumentServiceStub)

    @property
    def signatures(self) -> document_grpc.SignatureServiceStub:
        return self.stub(document_grpc.SignatureServiceStub)

    @property
    def catalogue(self) -> cro_grpc.CatalogueServiceStub:
        return self.stub(cro_grpc.CatalogueServiceStub)

    @property
    def submissions(self) -> cro_grpc.SubmissionServiceStub:
        return self.stub(cro_grpc.SubmissionServiceStub)

    @property
    def messages(self) -> cro_grpc.MessageServiceStub:
        return self.stub(cro_grpc.MessageServiceStub)

    @property
    def results(self) -> result_grpc.ResultServiceStub:
        return self.stub(result_grpc.ResultServiceStub)

    # Sessions.
    def login(
        self, email: str, password: str, *, mfa_code: str | Callable[[], str] | None = None
    ) -> identity_pb.User:
        """Start a session. With MFA enabled, `mfa_code` (the TOTP code, or a function asked for it only
        when the server wants one) completes it. Raises AuthenticationError on wrong credentials."""
        session = self.call(
            self.identity.Login, identity_pb.LoginRequest(email=email, password=password), authenticated=False
        ).data
        if session.mfa_required:
            code = mfa_code() if callable(mfa_code) else mfa_code
            if not code:
                raise NotLoggedIn("this account uses MFA: pass mfa_code", code=grpc.StatusCode.UNAUTHENTICATED)
            request = identity_pb.VerifyMfaRequest(mfa_token=session.mfa_token, code=code)
            session = self.call(self.identity.VerifyMfa, request, authenticated=False).data
        self.remember(session)
        return session.user

    def logout(self) -> None:
        """End the session on the server (when it still exists) and forget its tokens."""
        tokens = self.tokens.load()
        if tokens is None:
            return
        try:
            self.call(self.identity.Logout, identity_pb.LogoutRequest(refresh_token=tokens.refresh_token))
        except AuthenticationError:
            pass  # the session had already ended on the server
        finally:
            self.tokens.clear()

    def remember(self, session: identity_pb.Session) -> Tokens:
        """Keep the tokens of a session from Login, VerifyMfa or RefreshToken."""
        tokens = Tokens(
            email=session.user.email,
            user_id=session.user.id,
            access_token=session.access_token,
            refresh_token=session.refresh_token,
            expires_at=time.time() + session.expires_in,
        )
        self.tokens.save(tokens)
        return tokens

    # Calls.
    def call(
        self,
        method: Callable[..., ResponseT],
        request: Any,
        *,
        authenticated: bool = True,
        timeout: float | None = None,
    ) -> ResponseT:
        """Invoke `method` (a stub method, e.g. client.identity.GetMe); when authenticated, with a fresh
        access token, and once more after a refresh if the gateway rejects the token. `timeout` overrides
        the client's deadline for a call known to be long."""
        deadline = timeout or self.timeout
        return self._authorized(lambda metadata: method(request, metadata=metadata, timeout=deadline), authenticated)

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
        return self._authorized(lambda metadata: ServerStream(method(request, metadata=metadata, timeout=None)))

    def paginate(
        self, method: Callable[..., ListResponse[ItemT]], request: Any, *, page_size: int = MAX_PAGE_SIZE
    ) -> Iterator[ItemT]:
        """Every item of a list RPC, fetching page after page (from `request.page`, else 1) until
        `meta.total` is reached: `for user in client.paginate(client.identity.ListUsers, ListUsersRequest())`.
        The request's filters and sort apply to every page; its page_size, when set, wins over `page_size`."""
        page_request = type(request)()
        page_request.CopyFrom(request)
        page_request.page_size = page_request.page_size or page_size
        page = page_request.page or 1
        while True:
            page_request.page = page
            answer = self.call(method, page_request)
            yield from answer.data
            if not answer.data or page * max(answer.meta.page_size, 1) >= answer.meta.total:
                return
            page += 1

    def _authorized(self, invoke: Callable[[Metadata], ResultT], authenticated: bool = True) -> ResultT:
        if not authenticated or self.api_key:
            credential = ("x-api-key", self.api_key) if authenticated and self.api_key else None
            return _typed(lambda: invoke(self._metadata(credential)))
        tokens = self._fresh_tokens()
        try:
            return _typed(lambda: invoke(self._metadata(_bearer(tokens))))
        except MolbridgeError as err:
            if err.code() != grpc.StatusCode.UNAUTHENTICATED:
                raise
        # The token was refused before its expiry (signing key rotated, clock skew): refresh once.
        tokens = self._refresh(stale=tokens)
        return _typed(lambda: invoke(self._metadata(_bearer(tokens))))

    def _current_tokens(self) -> Tokens:
        tokens = self.tokens.load()
        if tokens is None:
            raise NotLoggedIn(f"not logged in to {self.target}", code=grpc.StatusCode.UNAUTHENTICATED)
        return tokens

    def _fresh_tokens(self) -> Tokens:
        tokens = self._current_tokens()
        return self._refresh(stale=tokens) if tokens.expired() else tokens

    def _refresh(self, stale: Tokens) -> Tokens:
        with self.tokens.locked():
            current = self._current_tokens()
            if current.access_token != stale.access_token and not current.expired():
                return current  # another user of the store refreshed meanwhile
            request = identity_pb.RefreshTokenRequest(refresh_token=current.refresh_token)
            try:
                response = self.call(self.identity.RefreshToken, request, authenticated=False)
            except MolbridgeError as err:
                if err.code() not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                    raise
                self.tokens.clear()
                raise SessionExpired(
                    f"the session with {self.target} has expired or was revoked: log in again",
                    code=grpc.StatusCode.UNAUTHENTICATED,
                ) from err
            return self.remember(response.data)

    def _metadata(self, credential: tuple[str, str] | None) -> Metadata:
        metadata = [("traceparent", f"00-{self.trace_id}-{secrets.token_hex(8)}-01")]
        if credential:
            metadata.append(credential)
        return metadata


def _typed(invoke: Callable[[], ResultT]) -> ResultT:
    try:
        return invoke()
    except grpc.RpcError as err:
        raise from_rpc_error(err) from err


def _bearer(tokens: Tokens) -> tuple[str, str]:
    return ("authorization", f"Bearer {tokens.access_token}")
