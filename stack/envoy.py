"""Envoy as our own child: `envoy_process(config, admin_port=…, log_path=…).start()`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from stack.processes import ManagedProcess, find_executable, http_ready


def envoy_process(
    config: Path,
    *,
    admin_port: int,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    name: str = "envoy",
) -> ManagedProcess:
    """Ready when the admin interface's /ready says LIVE (listeners and clusters initialised)."""
    # No hot restart: several Envoys (tests, a `make run`) share the machine without picking base
    # ids, and nothing is left in /dev/shm (hot restart leaves a file there for every run).
    argv = [find_executable("envoy"), "-c", str(config), "--disable-hot-restart", "--log-level", "warn",
            "--file-flush-interval-msec", "1000",  # access log lines show up within a second
            *extra_args]
    ready = http_ready(f"http://127.0.0.1:{admin_port}/ready", "LIVE")
    return ManagedProcess(name, argv, log_path=log_path, env=env, ready=ready)
