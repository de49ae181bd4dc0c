"""Our processes fork while gRPC is in use (the stack's supervisor spawns children while it health-checks
others over gRPC; services start multiprocessing's forkserver): gRPC's fork handlers must be off, or a fork
can hang or the child abort before it execs (services/__init__.py)."""

from __future__ import annotations

import subprocess
import sys

# Spawns children (with a preexec_fn, as stack/processes.py does: that path runs fork handlers) while three
# threads keep calling gRPC; gRPC logs "skipping fork() handlers" or aborts the child when its handlers run.
STRESS = """
import {first}
import subprocess, threading, time
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

def poll():
    while True:
        try:
            with grpc.insecure_channel("127.0.0.1:9") as channel:
                health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=0.05)
        except grpc.RpcError:
            pass

for _ in range(3):
    threading.Thread(target=poll, daemon=True).start()
time.sleep(0.2)
deadline = time.monotonic() + 2
while time.monotonic() < deadline:
    subprocess.run(["true"], preexec_fn=lambda: None, check=True, timeout=10)
print("spawned")
"""


def stress(first_import: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", STRESS.format(first=first_import)], capture_output=True,
                          text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})


def test_importing_our_packages_first_turns_grpc_fork_handlers_off() -> None:
    for package in ("stack", "services"):
        run = stress(package)
        assert run.returncode == 0 and "spawned" in run.stdout, run.stderr[-2000:]
        assert "fork()" not in run.stderr and "Check failed" not in run.stderr, run.stderr[-2000:]


def test_without_them_grpc_runs_its_fork_handlers() -> None:
    # The check above can fail: gRPC as installed runs its handlers when nothing turns them off.
    run = stress("os")
    assert "skipping fork() handlers" in run.stderr or "Check failed" in run.stderr, run.stderr[-2000:]
