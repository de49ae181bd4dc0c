"""The mesh a benchmark runs on, and what its processes use.

`isolated_stack()` starts every child of stack/mesh.py on free ports with a temporary data dir (removed
afterwards unless kept), a system admin to log in as, and the gateway's rate limits scaled out of reach
(for this stack only): a benchmark never disturbs, nor is disturbed by, a `make run` on the same machine.
`process_trees()` finds each child's processes (PostgreSQL's backends, the CSV worker's pool) for CPU and
memory accounting.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
from collections.abc import Generator, Iterator, Mapping
from pathlib import Path

import httpx
import psutil

from stack.mesh import Stack, StackSettings

ADMIN_EMAIL = "bench@molbridge.test"
ADMIN_PASSWORD = "Bench-Admin-Passw0rd!"
# Every category (GetMe is `standard`, 100/min per user; uploads 10/min) would throttle a benchmark.
RATE_LIMIT_SCALE = 100_000
CLIENT = "bench client"  # this process, in the accounting


def say(text: str) -> None:
    """Progress, on stderr (the figures go to stdout)."""
    print(text, file=sys.stderr, flush=True)


@contextlib.contextmanager
def isolated_stack(
    *, extra_env: Mapping[str, str] | None = None, keep: bool = False, replicas: int = 1
) -> Iterator[Stack]:
    """A started mesh of its own, stopped (and its data dir removed unless `keep`) on leaving.

    Raises stack.processes.StartupError when a child does not start."""
    data_dir = Path(tempfile.mkdtemp(prefix="molbridge-bench-"))
    env = {
        "MOLBRIDGE_ADMIN_EMAIL": ADMIN_EMAIL,
        "MOLBRIDGE_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "MOLBRIDGE_RATE_LIMIT_SCALE": str(RATE_LIMIT_SCALE),
        **(extra_env or {}),
    }
    stack = Stack(StackSettings.isolated(data_dir, extra_env=env, replicas=replicas), say=say)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
        if keep:
            say(f"data dir kept: {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


def login(stack: Stack) -> str:
    """The bench admin's access token, through the gateway (REST)."""
    credentials = {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
    response = httpx.post(f"{stack.gateway_url}/api/v1/auth/login", json=credentials, timeout=30)
    response.raise_for_status()
    token: str = response.json()["data"]["access_token"]
    return token


class AdminAuth(httpx.Auth):
    """The bench admin's bearer token for an httpx client, logged in again once it has expired (a long
    benchmark outlasts an access token)."""

    def __init__(self, stack: Stack) -> None:
        self._stack = stack
        self._token = login(stack)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["authorization"] = f"Bearer {self._token}"
        response = yield request
        if response.status_code == 401:
            self._token = login(self._stack)
            request.headers["authorization"] = f"Bearer {self._token}"
            yield request


def process_trees(stack: Stack) -> dict[str, list[psutil.Process]]:
    """Each running child of the stack by name: its process first, then all its descendants; and this
    process (the load generator) as CLIENT. One pass over the process table for all of them."""
    parents: dict[int, list[int]] = {}
    for process in psutil.process_iter(["ppid"]):
        parents.setdefault(process.info["ppid"], []).append(process.pid)
    trees: dict[str, list[psutil.Process]] = {CLIENT: [psutil.Process()]}
    for child in stack.supervisor.processes:
        if child.pid is None:
            continue
        pids, queue = [], [child.pid]
        while queue:
            pid = queue.pop(0)
            pids.append(pid)
            queue += parents.get(pid, [])
        with contextlib.suppress(psutil.Error):
            trees[child.name] = [psutil.Process(pid) for pid in pids]
    return trees


def cpu_seconds(process: psutil.Process) -> float:
    """User + system CPU time of a process and of its children it has waited for; 0 once it is gone."""
    with contextlib.suppress(psutil.Error):
        used = process.cpu_times()
        return used.user + used.system + used.children_user + used.children_system
    return 0.0


def tree_cpu_seconds(stack: Stack) -> dict[str, float]:
    """CPU seconds used so far by each child of the stack (descendants included) and by this process."""
    return {name: sum(cpu_seconds(p) for p in tree) for name, tree in process_trees(stack).items()}
