"""A real local HTTP server that receives Molbridge webhooks, for the tests: it verifies every request's
`Molbridge-Signature` with the shared domain `verify`, can be told to fail N times, to answer slowly, or
to be down (its port closed), and records what it received.

It runs in its own thread (any test's event loop can use it) on 127.0.0.1 and keeps its port across
`down()` / `up()`, so a registered endpoint URL stays valid while the receiver is away.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from services.notification.domain.webhooks import SIGNATURE_HEADER, SignatureError, verify
from stack.ports import free_port


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool
    refusal: str = ""  # the SignatureError reason when not verified
    answered: int = 200

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class _Behaviour:
    failures_left: int = 0
    failure_status: int = 500
    delay_s: float = 0.0
    retry_after: str | None = None


class WebhookReceiver:
    """`url` is where to register it (path /hook by default). `secrets` are the endpoint secrets it checks
    against (set them once Molbridge has answered the secret). Every request is kept in `received`; the
    ones answered 2xx with a valid signature are `delivered`."""

    def __init__(self, *, path: str = "/hook", tolerance: float = 300) -> None:
        self.port = free_port()
        self.path = path
        self.tolerance = tolerance
        self.secrets: list[str] = []
        self.received: list[Received] = []
        self._behaviour = _Behaviour()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    # ---------------------------------------------------------------- control

    def up(self) -> WebhookReceiver:
        if self._server is not None:
            return self
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                receiver._handle(self)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name=f"webhook-receiver-{self.port}", daemon=True)
        self._thread.start()
        return self

    def down(self) -> None:
        """Close the port: attempts get a connection refused until `up()`."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def fail(self, times: int, *, status: int = 500, retry_after: str | None = None) -> None:
        """Answer the next `times` requests with `status` (they are still recorded)."""
        with self._lock:
            self._behaviour.failures_left = times
            self._behaviour.failure_status = status
            self._behaviour.retry_after = retry_after

    def slow(self, seconds: float) -> None:
        """Wait this long before answering each request (0: answer at once)."""
        with self._lock:
            self._behaviour.delay_s = seconds

    def __enter__(self) -> WebhookReceiver:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    # ---------------------------------------------------------------- what arrived

    @property
    def delivered(self) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.verified and 200 <= r.answered < 300]

    def delivered_ids(self) -> list[str]:
        return [str(r.json()["id"]) for r in self.delivered]

    async def wait_for(self, count: int, *, timeout: float = 20.0) -> list[Received]:
        """Wait until at least `count` requests were delivered (2xx, verified); returns them."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.delivered) < count:
            if loop.time() > deadline:
                raise AssertionError(
                    f"{len(self.delivered)} of {count} webhooks delivered within {timeout} s; "
                    f"received {[(r.answered, r.refusal) for r in self.received]}"
                )
            await asyncio.sleep(0.05)
        return self.delivered

    # ---------------------------------------------------------------- the handler

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length)
        headers = {name: value for name, value in request.headers.items()}
        refusal = ""
        try:
            verify(request.headers.get(SIGNATURE_HEADER), body, list(self.secrets), time.time(), self.tolerance)
        except SignatureError as error:
            refusal = error.reason
        with self._lock:
            behaviour = self._behaviour
            delay = behaviour.delay_s
            retry_after: str | None = None
            if refusal:
                status = 401
            elif behaviour.failures_left > 0:
                behaviour.failures_left -= 1
                status, retry_after = behaviour.failure_status, behaviour.retry_after
            else:
                status = 204
            record = Received(request.path, headers, body, verified=not refusal, refusal=refusal, answered=status)
        if delay:
            time.sleep(delay)
        with self._lock:
            self.received.append(record)
        request.send_response(status)
        if retry_after is not None:
            request.send_header("Retry-After", retry_after)
        request.send_header("Content-Length", "0")
        request.end_headers()


@dataclass
class Receivers:
    """Several receivers, stopped together at the end of a test."""

    started: list[WebhookReceiver] = field(default_factory=list)

    def new(self, **options: Any) -> WebhookReceiver:
        receiver = WebhookReceiver(**options).up()
        self.started.append(receiver)
        return receiver

    def close(self) -> None:
        for receiver in self.started:
            receiver.down()
