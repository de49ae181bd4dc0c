"""Fault injection for the prediction service's tests: real misbehaviour of the real engine process.

Enabled only with `--faults` or MOLBRIDGE_ENGINE_FAULTS=1. `POST /v1/_faults` sets (fields optional):
  fail_next: N          the next N requests under path_prefix answer `status` (default 500) with a JSON error
  hang_next: N          the next N requests under path_prefix sleep hang_seconds before being served
  hang_seconds: S       (default 30)
  fail_jobs_next: N     the next N jobs to start end `failed` with error "injected job failure"
  job_delay_seconds: S  every job sleeps S before each chunk of 50 molecules (until cleared): lets a test
                        kill the engine mid-job
  path_prefix: P        which requests fail/hang (default "/v1/jobs"); /healthz and /v1/_faults never do
`GET /v1/_faults` shows the state; `DELETE /v1/_faults` clears everything.
"""

from __future__ import annotations

import threading
import time
from typing import Any

FIELDS = {"fail_next": int, "status": int, "hang_next": int, "hang_seconds": float, "fail_jobs_next": int,
          "job_delay_seconds": float, "path_prefix": str}
DEFAULTS: dict[str, Any] = {"fail_next": 0, "status": 500, "hang_next": 0, "hang_seconds": 30.0,
                            "fail_jobs_next": 0, "job_delay_seconds": 0.0, "path_prefix": "/v1/jobs"}


class Faults:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = dict(DEFAULTS)

    def view(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._state)

    def update(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Validate and apply; raises ValueError naming the bad field."""
        clean = {}
        for key, value in changes.items():
            kind = FIELDS.get(key)
            if kind is None:
                raise ValueError(f"unknown fault field {key!r}")
            if isinstance(value, bool) or not isinstance(value, (str,) if kind is str else (int, float)):
                raise ValueError(f"{key} must be a {kind.__name__}")
            if kind is not str and value < 0:
                raise ValueError(f"{key} must be >= 0")
            clean[key] = kind(value)
        with self._lock:
            self._state.update(clean)
            return dict(self._state)

    def clear(self) -> None:
        with self._lock:
            self._state = dict(DEFAULTS)

    def for_request(self, path: str) -> tuple[float, int | None]:
        """(seconds to hang, status to fail with or None) for one incoming request, consuming counters."""
        with self._lock:
            if not path.startswith(self._state["path_prefix"]):
                return 0.0, None
            hang = 0.0
            if self._state["hang_next"] > 0:
                self._state["hang_next"] -= 1
                hang = self._state["hang_seconds"]
            if self._state["fail_next"] > 0:
                self._state["fail_next"] -= 1
                return hang, self._state["status"]
            return hang, None

    def take_job_failure(self) -> bool:
        with self._lock:
            if self._state["fail_jobs_next"] > 0:
                self._state["fail_jobs_next"] -= 1
                return True
            return False

    def job_delay(self) -> None:
        with self._lock:
            delay = self._state["job_delay_seconds"]
        if delay:
            time.sleep(delay)
