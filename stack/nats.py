"""nats-server with JetStream as our own child; restarts keep its port and its store. `nats_cluster`
makes the nodes of a JetStream cluster (routes between them, one store each)."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from stack.ports import free_port
from stack.processes import ManagedProcess, StartupError, find_executable, tcp_ready

CLUSTER_NAME = "molbridge"


class NatsServer(ManagedProcess):
    """`NatsServer(store_dir, log_path=...).start()`; `.url`; `.stop()`, `.start()`, `.restart()`
    reuse the same port and JetStream store dir, so streams and messages survive. As a node of a
    cluster (`nats_cluster`), it also listens for routes on `cluster_port` and dials `routes`."""

    def __init__(
        self,
        store_dir: Path,
        *,
        log_path: Path,
        port: int | None = None,
        monitor_port: int | None = None,
        name: str = "nats",
        cluster_port: int | None = None,
        routes: Sequence[int] = (),
    ) -> None:
        self.store_dir = store_dir.resolve()
        self.port = port or free_port()
        self.monitor_port = monitor_port
        argv = [find_executable("nats-server"), "-js", "-a", "127.0.0.1", "-p", str(self.port),
                "-sd", str(self.store_dir)]
        if monitor_port is not None:
            argv += ["-m", str(monitor_port)]
        if cluster_port is not None:
            # JetStream in a cluster needs a name per server and one for the cluster.
            argv += ["--server_name", name, "--cluster_name", CLUSTER_NAME,
                     "--cluster", f"nats://127.0.0.1:{cluster_port}",
                     "--routes", ",".join(f"nats://127.0.0.1:{p}" for p in routes)]
        # nats-server opens its client port only after JetStream has recovered its streams.
        super().__init__(name, argv, log_path=log_path, ready=tcp_ready(f"127.0.0.1:{self.port}"))

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def prepare(self) -> None:
        self.store_dir.mkdir(parents=True, exist_ok=True)

    def jetstream_healthy(self) -> bool:
        """The node's /healthz: JetStream is up and (in a cluster) has a meta leader and is current."""
        if self.monitor_port is None:
            return self.running
        url = f"http://127.0.0.1:{self.monitor_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=1) as reply:
                return bool(json.load(reply).get("status") == "ok")
        except (OSError, ValueError):
            return False


def nats_cluster(root: Path, logs_dir: Path, *, size: int = 3) -> list[NatsServer]:
    """The nodes of a JetStream cluster (`nats-1` …), each with its own store under `root`, routes to
    every other node, and a monitoring port. Start them all, then `wait_for_jetstream(nodes)`: a node
    serves JetStream only once a majority of the cluster is up."""
    cluster_ports = [free_port() for _ in range(size)]
    return [
        NatsServer(root / f"node-{i + 1}", log_path=logs_dir / f"nats-{i + 1}.log", name=f"nats-{i + 1}",
                   monitor_port=free_port(), cluster_port=port,
                   routes=[p for p in cluster_ports if p != port])
        for i, port in enumerate(cluster_ports)
    ]


def cluster_url(nodes: Sequence[NatsServer]) -> str:
    """NATS_URL for clients: every node, comma separated (a client moves to another when its node goes)."""
    return ",".join(node.url for node in nodes)


def wait_for_jetstream(nodes: Sequence[NatsServer], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not all(node.jetstream_healthy() for node in nodes if node.running):
        if time.monotonic() > deadline:
            raise StartupError(f"the NATS cluster has no JetStream quorum after {timeout:.0f} s "
                               f"(logs: {', '.join(str(n.log_path) for n in nodes)})")
        time.sleep(0.2)
