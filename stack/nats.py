"""nats-server with JetStream as our own child; restarts keep its port and its store."""

from __future__ import annotations

from pathlib import Path

from stack.ports import free_port
from stack.processes import ManagedProcess, find_executable, tcp_ready


class NatsServer(ManagedProcess):
    """`NatsServer(store_dir, log_path=...).start()`; `.url`; `.stop()`, `.start()`, `.restart()`
    reuse the same port and JetStream store dir, so streams and messages survive."""

    def __init__(
        self, store_dir: Path, *, log_path: Path, port: int | None = None, monitor_port: int | None = None
    ) -> None:
        self.store_dir = store_dir.resolve()
        self.port = port or free_port()
        self.monitor_port = monitor_port
        argv = [find_executable("nats-server"), "-js", "-a", "127.0.0.1", "-p", str(self.port),
                "-sd", str(self.store_dir)]
        if monitor_port is not None:
            argv += ["-m", str(monitor_port)]
        # nats-server opens its client port only after JetStream has recovered its streams.
        super().__init__("nats", argv, log_path=log_path, ready=tcp_ready(f"127.0.0.1:{self.port}"))

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def prepare(self) -> None:
        self.store_dir.mkdir(parents=True, exist_ok=True)
