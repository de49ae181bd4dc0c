"""Child processes we own: started in their own session, logged to a file, checked for readiness,
stopped with a signal and then SIGKILL, never left behind.

Every child of the stack (PostgreSQL, nats-server, Envoy, services, the trace receiver) is a
ManagedProcess; PostgresServer and NatsServer only add their preparation and readiness checks.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from stack.ports import port_accepts, split_host_port

ReadyCheck = Callable[[], bool]

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


class StartupError(RuntimeError):
    """A child could not be started or did not become ready; the message names its log."""


def find_executable(name: str) -> str:
    """A binary installed into our virtualenv by pip (envoy, nats-server, …), else from PATH."""
    beside_python = Path(sys.executable).parent / name
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which(name)
    if found is None:
        raise StartupError(f"{name} not found next to {sys.executable} nor on PATH (run `make venv`)")
    return found


def log_tail(path: Path, lines: int = 20, width: int = 300) -> str:
    """The last lines of a log, each cut to `width` (JSON logs can carry whole tracebacks)."""
    try:
        with open(path, "rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - 64 * 1024))  # a long-lived log can be large
            text = log.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(line if len(line) <= width else line[:width] + " …" for line in text.splitlines()[-lines:])


class ManagedProcess:
    """One child process: `start()` spawns it and waits until `ready()` is true; `stop()` sends
    `stop_signal`, waits `stop_timeout` seconds, then SIGKILLs its whole process group."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        ready: ReadyCheck | None = None,
        ready_timeout: float = 60.0,
        stop_signal: signal.Signals = signal.SIGTERM,
        stop_timeout: float = 5.0,
        user: str | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.ready = ready
        self.ready_timeout = ready_timeout
        self.stop_signal = stop_signal
        self.stop_timeout = stop_timeout
        self.user = user
        self._popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} pid={self.pid}>"

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def exit_code(self) -> int | None:
        """None while running (or never started), else the exit status (negative: killed by signal)."""
        return self._popen.poll() if self._popen is not None else None

    def prepare(self) -> None:
        """Hook run before every spawn (e.g. initdb)."""

    def after_ready(self) -> None:
        """Hook run once the child is ready (e.g. create a database)."""

    def start(self) -> None:
        if self.running:
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - stays open for the child's lifetime
        self._log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} start: {' '.join(self.argv)}\n".encode())
        self._log.flush()
        try:
            self.prepare()
            spawning = _spawner().submit(self._spawn)
            try:
                self._popen = spawning.result()
            except BaseException:  # interrupted (Ctrl-C) while spawning: still own the child, to stop it
                self._popen = spawning.result()
                raise
            self._wait_ready()
            self.after_ready()
        except BaseException:
            self.stop()
            raise

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,
            preexec_fn=self._die_with_parent(),
            **run_as(self.user),
        )

    def _die_with_parent(self) -> Callable[[], None] | None:
        # If the supervisor itself dies (kill -9, a crashed test run), the kernel sends the child
        # its stop signal, so nothing outlives us. PDEATHSIG follows the spawning *thread*: all
        # children are spawned by one thread that lives as long as the process (see _spawner).
        if _libc is None:
            return None
        prctl, sig, parent = _libc.prctl, int(self.stop_signal), os.getpid()

        def set_pdeathsig() -> None:
            prctl(_PR_SET_PDEATHSIG, sig)
            if os.getppid() != parent:  # the parent died before prctl took effect
                os._exit(1)

        return set_pdeathsig

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while True:
            code = self.exit_code()
            if code is not None:
                raise StartupError(self.describe_exit(f"exited with code {code} before it was ready"))
            if self.ready is None or _safe(self.ready):
                return
            if time.monotonic() > deadline:
                raise StartupError(self.describe_exit(f"was not ready after {self.ready_timeout:.0f} s"))
            time.sleep(0.05)

    def describe_exit(self, what: str) -> str:
        self._flush_log()
        tail = log_tail(self.log_path)
        text = f"{self.name} {what}; its log: {self.log_path}"
        return f"{text}\n--- last lines of {self.log_path.name} ---\n{tail}" if tail else text

    def stop(self, timeout: float | None = None) -> int | None:
        """Stop the child and anything left in its process group; returns its exit status."""
        popen, self._popen = self._popen, None
        code: int | None = None
        if popen is not None:
            timeout = self.stop_timeout if timeout is None else timeout
            if popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    popen.send_signal(self.stop_signal)
                try:
                    popen.wait(timeout)
                except subprocess.TimeoutExpired:
                    self._write_log(f"=== {self.name} did not stop within {timeout:.1f} s: SIGKILL\n")
                    _kill_group(popen.pid)
                    popen.wait()
            code = popen.returncode
            # Grandchildren that outlived the leader share its process group (its pid).
            _kill_group(popen.pid)
            self._write_log(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} stopped, exit status {code}\n")
        self._close_log()
        return code

    def terminate(self) -> None:
        """Send the stop signal without waiting (`stop()` then waits): lets several children drain at once."""
        if self._popen is not None and self._popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._popen.send_signal(self.stop_signal)

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> int | None:
        """`kill -9` the child and its process group, as a crash would (no graceful shutdown);
        `start()` brings it back. Returns the exit status (-9)."""
        popen, self._popen = self._popen, None
        if popen is None:
            return None
        _kill_group(popen.pid)
        code = popen.wait()
        self._write_log(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} killed (SIGKILL), exit status {code}\n")
        self._close_log()
        return code

    def _write_log(self, text: str) -> None:
        if self._log is not None:
            self._log.write(text.encode())
            self._log.flush()

    def _flush_log(self) -> None:
        if self._log is not None:
            self._log.flush()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


@functools.cache
def _spawner() -> ThreadPoolExecutor:
    """The one thread that spawns every child, whichever thread asks (tests restart servers from
    asyncio.to_thread workers, which may exit early and would take PDEATHSIG children with them)."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="stack-spawner")


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _safe(check: ReadyCheck) -> bool:
    try:
        return bool(check())
    except Exception:
        return False


def run_as(user: str | None) -> dict[str, Any]:
    """Run as another system user (PostgreSQL refuses root), dropping root's groups."""
    if user is None:
        return {}
    import pwd

    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


class Supervisor:
    """Owns a list of started children; stops them in reverse order, also on exceptions."""

    def __init__(self) -> None:
        self.processes: list[ManagedProcess] = []

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop_all()

    def start(self, process: ManagedProcess) -> ManagedProcess:
        """Start a child and keep it; a child that fails to start is already stopped."""
        process.start()
        self.processes.append(process)
        return process

    def get(self, name: str) -> ManagedProcess:
        for process in self.processes:
            if process.name == name:
                return process
        raise KeyError(f"no process named {name!r} (have: {', '.join(p.name for p in self.processes)})")

    def first_exited(self) -> ManagedProcess | None:
        for process in self.processes:
            if process.exit_code() is not None:
                return process
        return None

    def stop_all(self, within: float = 8.0) -> None:
        """Reverse order (gateway before services before databases), all within `within` seconds."""
        deadline = time.monotonic() + within
        while self.processes:
            process = self.processes.pop()
            remaining = deadline - time.monotonic()
            process.stop(timeout=max(0.5, min(process.stop_timeout, remaining)))


# Readiness checks: small factories so each child states what "ready" means for it.


def tcp_ready(addr: str) -> ReadyCheck:
    host, port = split_host_port(addr)
    return lambda: port_accepts(host, port)


def http_ready(url: str, expect: str | None = None) -> ReadyCheck:
    """200 from url (and `expect` in its body, when given)."""

    def check() -> bool:
        with urllib.request.urlopen(url, timeout=1) as response:
            body = response.read().decode(errors="replace")
            return bool(response.status == 200 and (expect is None or expect in body))

    return check


def grpc_ready(addr: str) -> ReadyCheck:
    """The standard grpc.health.v1 Check (overall server) answers SERVING."""

    def check() -> bool:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(addr) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    return check
