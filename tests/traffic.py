"""Client traffic for tests that take parts of a mesh away: readers that keep asking while it happens."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence

import httpx

Routes = Callable[[], Sequence[tuple[str, Mapping[str, str]]]]  # (path, headers), asked again every round
Record = Callable[[httpx.Request, "httpx.Response | None", str], None]  # the answer, or None and the error


class Traffic:
    """Readers on `threads` threads, one plain GET per route and round, no retry (each sees what a client
    sees); every answer goes to `record`, a timeout (a hang) as None with its error. `last_green` is when a
    whole round last came back 2xx (monotonic clock; 0 before the first)."""

    def __init__(
        self, base_url: str, routes: Routes, record: Record, *, threads: int = 1, pause_s: float = 0.05,
        timeout_s: float = 60.0,
    ) -> None:
        self.routes, self.record = routes, record
        self.last_green = 0.0
        self._pause_s, self._timeout_s = pause_s, timeout_s
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(base_url,), daemon=True) for _ in range(threads)]

    def _run(self, base_url: str) -> None:
        with httpx.Client(base_url=base_url, timeout=self._timeout_s) as client:
            while not self._stop.is_set():
                green = True
                for path, headers in self.routes():
                    request = client.build_request("GET", path, headers=headers)
                    try:
                        response = client.send(request)
                    except httpx.TimeoutException as error:
                        self.record(request, None, f"timeout (a hang): {error!r}")
                        green = False
                        continue
                    self.record(request, response, "")
                    green = green and response.status_code < 300
                if green:
                    self.last_green = time.monotonic()
                time.sleep(self._pause_s)

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self._timeout_s * 2)
