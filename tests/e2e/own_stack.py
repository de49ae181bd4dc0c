"""For tests that crash parts of a mesh: a stack of their own (identity, molecule and its worker, with
its own PostgreSQL and NATS: the session's mesh is shared by every other test), and browsing traffic
that counts every answer while parts come and go (tests/traffic.py)."""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from stack.mesh import SERVICES, Stack, StackSettings
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.traffic import Traffic
from tests.waiting import eventually


@contextmanager
def core_stack(root: Path, *, replicas: int = 1) -> Iterator[Stack]:
    settings = StackSettings.isolated(
        root,
        env=os.environ,
        extra_env={"MOLBRIDGE_ADMIN_EMAIL": ADMIN_EMAIL, "MOLBRIDGE_ADMIN_PASSWORD": ADMIN_PASSWORD,
                   "MOLBRIDGE_RATE_LIMIT_SCALE": "100"},
        replicas=replicas,
    )
    settings.ai_engine_url = "http://127.0.0.1:9"  # not used here: no engine started
    services = [s for s in SERVICES if s.name in ("identity", "molecule", "molecule-worker")]
    running = Stack(settings, services=services).start()
    try:
        yield running
    finally:
        running.stop()



class Tally:
    """Every answer's status counted; anything but 200 kept with its body, and the Retry-After it carried."""

    def __init__(self) -> None:
        self.statuses: Counter[int] = Counter()
        self.other: list[str] = []
        self.retry_afters: set[str | None] = set()
        self._lock = threading.Lock()

    def record(self, request: httpx.Request, response: httpx.Response | None, error: str) -> None:
        status = response.status_code if response is not None else 0
        with self._lock:
            self.statuses[status] += 1
            if response is None:
                self.other.append(f"{request.url.path}: {error}")
            elif status != 200:
                self.other.append(f"{request.url.path}: {status} {response.text[:200]}")
                self.retry_afters.add(response.headers.get("retry-after"))

    def served(self) -> int:
        return self.statuses[200]

    def go_on(self, requests: int = 30) -> None:
        """Wait until `requests` more requests have succeeded."""
        target = self.served() + requests
        eventually(lambda: self.served() >= target, f"{requests} more answered requests")

    def only_unavailable(self) -> bool:
        """Whatever failed failed with 503 and the retry hint, never a 500, a hang or another error."""
        return set(self.statuses) <= {200, 503} and self.retry_afters <= {"5"}


BROWSING = ("/molecules?page_size=5", "/users/me", "/libraries")


@contextmanager
def browsing(base_url: str, headers: dict[str, str], *, threads: int = 1) -> Iterator[Tally]:
    """Browsing traffic from `threads` threads while parts of the mesh come and go, counted in a Tally."""
    tally = Tally()
    routes = [(path, headers) for path in BROWSING]
    with Traffic(base_url, lambda: routes, tally.record, threads=threads, pause_s=0.01, timeout_s=30):
        yield tally
