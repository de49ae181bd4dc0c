"""For tests that crash parts of a mesh: a stack of their own (identity, molecule and its worker, with
its own PostgreSQL and NATS: the session's mesh is shared by every other test), and browsing traffic
that counts every answer while parts come and go."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from stack.mesh import SERVICES, Stack, StackSettings
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD

WAIT_SECONDS = 120.0  # a bound for a hang, not a performance figure


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


def wait_for(check: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not check():
        assert time.monotonic() < deadline, f"{what} not within {WAIT_SECONDS} s"
        time.sleep(0.2)


class Traffic:
    """Browsing from `threads` threads while parts of the mesh come and go: every answer's status is
    counted; anything but 200 is kept with its body, and the Retry-After it carried."""

    PATHS = ("/molecules?page_size=5", "/users/me", "/libraries")

    def __init__(self, base_url: str, headers: dict[str, str], *, threads: int = 1) -> None:
        self.statuses: Counter[int] = Counter()
        self.other: list[str] = []
        self.retry_afters: set[str | None] = set()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(base_url, headers), daemon=True)
                         for _ in range(threads)]

    def _run(self, base_url: str, headers: dict[str, str]) -> None:
        with httpx.Client(base_url=base_url, timeout=30, headers=headers) as client:
            while not self._stop.is_set():
                for path in self.PATHS:
                    response = client.get(path)
                    self.statuses[response.status_code] += 1
                    if response.status_code != 200:
                        self.other.append(f"{path}: {response.status_code} {response.text[:200]}")
                        self.retry_afters.add(response.headers.get("retry-after"))
                time.sleep(0.01)

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def served(self) -> int:
        return self.statuses[200]

    def go_on(self, requests: int = 30) -> None:
        """Wait until `requests` more requests have succeeded."""
        target = self.served() + requests
        wait_for(lambda: self.served() >= target, f"{requests} more answered requests")

    def only_unavailable(self) -> bool:
        """Whatever failed failed with 503 and the retry hint, never a 500 or another error."""
        return set(self.statuses) <= {200, 503} and self.retry_afters <= {"5"}
