"""The whole mesh as a library: `Stack(StackSettings.from_env()).start()` … `.stop()`.

`make run` (stack/__main__.py) and the test harness (tests/conftest.py) both use it: embedded
PostgreSQL unless DATABASE_URL is given, nats-server unless NATS_URL is given, the local trace
receiver unless OTEL_EXPORTER_OTLP_ENDPOINT is given, every service of SERVICES, then Envoy.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import Field

from services.runtime.settings import REPO_ROOT, Settings, SettingsError, addr_list, health_addr_variable
from stack.envoy import envoy_process
from stack.nats import NatsServer, cluster_url, nats_cluster, wait_for_jetstream
from stack.ports import free_port
from stack.postgres import PostgresServer
from stack.processes import ManagedProcess, StartupError, Supervisor, grpc_ready, http_ready, tcp_ready


@dataclass(frozen=True)
class ServiceSpec:
    """A process of the mesh run as `python -m <module>`. A gRPC service listens on
    MOLBRIDGE_<NAME>_ADDR (default port in services.runtime.settings.SERVICE_PORTS), is routed by
    Envoy, and is ready when grpc.health.v1 says SERVING; a worker (grpc=False) is ready once running,
    or, with health=True (a worker on run_process), when its health server on a free port
    (MOLBRIDGE_<NAME>_HEALTH_ADDR) says SERVING."""

    name: str
    module: str
    grpc: bool = True
    health: bool = False


# Every service and worker of the mesh, in start order. Adding one is one line.
SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("identity", "services.identity"),
    ServiceSpec("molecule", "services.molecule"),
    ServiceSpec("molecule-worker", "services.molecule.worker", grpc=False, health=True),
    ServiceSpec("prediction", "services.prediction"),
    ServiceSpec("prediction-worker", "services.prediction.worker", grpc=False, health=True),
    ServiceSpec("document", "services.document"),
    ServiceSpec("cro", "services.cro"),
    ServiceSpec("cro-worker", "services.cro.worker", grpc=False, health=True),
    ServiceSpec("notification", "services.notification"),
    ServiceSpec("notification-worker", "services.notification.worker", grpc=False, health=True),
)

DESCRIPTOR_PATH = REPO_ROOT / "build" / "descriptor.pb"
# The reference AI engine runs from its own virtualenv (`make engine`); without it, AI_ENGINE_URL must be set.
ENGINE_PYTHON = REPO_ROOT / ".venv-engine" / "bin" / "python"
# With replicas, a server stopping keeps serving this long after it says NOT_SERVING: Envoy checks every
# second and takes an endpoint out after two failed checks (gateway/envoy/render.py SERVICE_HEALTH_CHECK).
DRAIN_SECONDS = 3.0
TRACE_RECEIVER = "stack.trace_receiver"  # OTLP receiver for Envoy's spans when no collector is set

# Variables the stack decides for its children; an isolated (test) stack never inherits them.
_OWN_VARS = ("DATABASE_URL", "NATS_URL", "OTEL_EXPORTER_OTLP_ENDPOINT", "GATEWAY_PORT",
             "GATEWAY_ADMIN_PORT", "SMTP_URL", "AI_ENGINE_URL")
# Passed on to the services when set.
_PASS_THROUGH = ("MOLBRIDGE_ADMIN_EMAIL", "MOLBRIDGE_ADMIN_PASSWORD", "SMTP_URL", "MOLBRIDGE_LOG_LEVEL")


class StackEnv(Settings):
    """The stack's own variables on top of every process's (services.runtime.settings)."""

    gateway_admin_port: int = Field(9901, ge=1, le=65535, validation_alias="GATEWAY_ADMIN_PORT")
    trace_receiver_port: int = Field(4319, ge=1, le=65535, validation_alias="MOLBRIDGE_TRACE_RECEIVER_PORT")
    ai_engine_url: str | None = Field(None, validation_alias="AI_ENGINE_URL")
    engine_port: int = Field(8090, ge=1, le=65535, validation_alias="MOLBRIDGE_ENGINE_PORT")
    engine_models: str = Field("baseline,admet", validation_alias="MOLBRIDGE_ENGINE_MODELS")
    replicas: int = Field(1, ge=1, le=8, validation_alias="MOLBRIDGE_REPLICAS")


@dataclass
class StackSettings:
    data_dir: Path
    database_url: str | None  # None: start embedded PostgreSQL
    nats_url: str | None  # None: start nats-server
    otlp_endpoint: str | None  # None: start the local trace receiver for Envoy's spans
    gateway_port: int = 8080
    admin_port: int = 9901
    trace_receiver_port: int = 4319
    postgres_port: int | None = None  # None: a free port
    nats_port: int | None = None  # None: a free port
    ai_engine_url: str | None = None  # None: start the reference engine (engine/) on engine_port
    engine_port: int = 8090
    engine_models: str = "baseline,admet"
    service_addrs: dict[str, str] = field(default_factory=dict)  # per service: its replicas, comma separated
    # Instances of every service and worker; above 1, NATS is a three-node JetStream cluster with R3 streams.
    replicas: int = 1
    ephemeral: bool = False  # PostgreSQL without fsync (tests)
    env: Mapping[str, str] = field(default_factory=dict, repr=False)  # base environment of children

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> StackSettings:
        """Checked like every process's settings: a bad value raises SettingsError naming the variable."""
        typed = StackEnv.from_env("stack", env)
        return cls(
            data_dir=typed.data_dir,
            database_url=typed.database_url or None,
            nats_url=typed.nats_url if env.get("NATS_URL") else None,
            otlp_endpoint=typed.otlp_endpoint,
            gateway_port=typed.gateway_port,
            admin_port=typed.gateway_admin_port,
            trace_receiver_port=typed.trace_receiver_port,
            service_addrs={s.name: replica_addrs(typed.addr_of(s.name), typed.replicas) for s in SERVICES if s.grpc},
            replicas=typed.replicas,
            ai_engine_url=typed.ai_engine_url,
            engine_port=typed.engine_port,
            engine_models=typed.engine_models,
            env=dict(env),
        )

    @classmethod
    def isolated(
        cls,
        data_dir: Path,
        *,
        database_url: str | None = None,
        env: Mapping[str, str] | None = None,
        extra_env: Mapping[str, str] | None = None,
        replicas: int = 1,
    ) -> StackSettings:
        """A stack that shares nothing with others on this machine: every port free, its own data
        dir, none of the project's variables inherited from `env` (default os.environ) — only
        those of `extra_env` (e.g. MOLBRIDGE_ADMIN_EMAIL, SMTP_URL)."""
        base = {k: v for k, v in (os.environ if env is None else env).items()
                if not k.startswith("MOLBRIDGE_") and k not in _OWN_VARS}
        base |= extra_env or {}
        return cls(
            data_dir=data_dir.resolve(),
            database_url=database_url,
            nats_url=None,
            otlp_endpoint=None,
            gateway_port=free_port(),
            admin_port=free_port(),
            trace_receiver_port=free_port(),
            service_addrs={s.name: ",".join(f"127.0.0.1:{free_port()}" for _ in range(replicas))
                           for s in SERVICES if s.grpc},
            replicas=replicas,
            engine_port=free_port(),
            engine_models="baseline",  # loads in seconds; admet-ai is tested by the engine's own tests
            ephemeral=True,
            env=base,
        )


def replica_addrs(addr: str, replicas: int) -> str:
    """The addresses of `replicas` instances: a list given as such, else the next ones on ports 100
    apart (127.0.0.1:50052 → …:50052,…:50152)."""
    given = addr_list(addr)
    if len(given) > 1 and len(given) != replicas:
        raise SettingsError(f"{addr!r} lists {len(given)} addresses for MOLBRIDGE_REPLICAS={replicas}")
    if len(given) > 1 or replicas == 1:
        return addr
    host, _, port = addr.rpartition(":")
    return ",".join(f"{host}:{int(port) + 100 * i}" for i in range(replicas))


def instance_name(name: str, index: int) -> str:
    """`molecule`, `molecule-2`, …: the first instance keeps the plain name."""
    return name if index == 0 else f"{name}-{index + 1}"


class Stack:
    """Starts the mesh in dependency order and stops it in reverse; `restart(name)` restarts one
    child (postgres, nats, trace-receiver, a service, envoy) on the same port."""

    def __init__(
        self,
        settings: StackSettings,
        *,
        services: Sequence[ServiceSpec] = SERVICES,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.services = tuple(services)
        self.supervisor = Supervisor()
        self.health_addrs: dict[str, str] = {}  # workers with health=True: where they answer grpc.health.v1
        self.postgres: PostgresServer | None = None
        self.nats: NatsServer | None = None  # one node, or the first node of the cluster
        self.nats_nodes: list[NatsServer] = []
        self.database_url = settings.database_url or ""
        self.nats_url = settings.nats_url or ""
        self.env: dict[str, str] = {}  # what the services were given on top of settings.env
        self._gateway_traces = False
        self._say = say or (lambda _text: None)

    # --- where things are
    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    @property
    def logs_dir(self) -> Path:
        return self.settings.data_dir / "logs"

    @property
    def traces_dir(self) -> Path:
        return self.settings.data_dir / "traces"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.gateway_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.settings.gateway_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.admin_port}"

    def service_addr(self, name: str) -> str:
        """Where the service answers: its address, or with replicas all of them, comma separated."""
        return self.settings.service_addrs[name]

    def instances(self, name: str) -> list[str]:
        """The process names of a service's or worker's instances (`molecule`, `molecule-2`, …)."""
        return [instance_name(name, i) for i in range(self.settings.replicas)]

    # --- lifecycle
    def start(self) -> Stack:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.settings.replicas > 1:
            # Instances drain (NOT_SERVING, then DRAIN_SECONDS of serving) all at once, not one by one.
            names = {n for spec in self.services for n in self.instances(spec.name)}
            for process in self.supervisor.processes:
                if process.name in names:
                    process.terminate()
        self.supervisor.stop_all(within=8.0 + (DRAIN_SECONDS if self.settings.replicas > 1 else 0.0))

    def restart(self, name: str) -> None:
        self._say(f"restarting {name} …")
        self.supervisor.get(name).restart()

    def kill(self, name: str) -> None:
        """SIGKILL one child (a crash, for fault tests); `restart(name)` brings it back."""
        self._say(f"killing {name} (SIGKILL) …")
        self.supervisor.get(name).kill()

    def extra_gateway(self, name: str, env: Mapping[str, str]) -> str:
        """Another Envoy in front of the same services, on free ports, with some gateway variables
        changed (e.g. MOLBRIDGE_RATE_LIMIT_SCALE); stopped with the stack. Returns its base URL."""
        port = free_port()
        overrides = {**env, "GATEWAY_PORT": str(port), "GATEWAY_ADMIN_PORT": str(free_port())}
        self._run(self._envoy(traces=self._gateway_traces, name=name, overrides=overrides))
        return f"http://127.0.0.1:{port}"

    def wait(self, poll: float = 0.2) -> ManagedProcess:
        """Block until a child exits on its own; returns it (still registered, for its log)."""
        while True:
            exited = self.supervisor.first_exited()
            if exited is not None:
                return exited
            time.sleep(poll)

    def _start(self) -> None:
        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        if s.database_url is None:
            self.postgres = PostgresServer(
                s.data_dir / "postgres", log_path=self._log("postgres"), port=s.postgres_port,
                ephemeral=s.ephemeral,
            )
            self._run(self.postgres)
            self.database_url = self.postgres.ensure_database("molbridge")
        if s.nats_url is None and s.replicas > 1:
            self.nats_nodes = nats_cluster(s.data_dir / "nats", self.logs_dir)
            for node in self.nats_nodes:
                self._run(node)
            wait_for_jetstream(self.nats_nodes)
            self.nats, self.nats_url = self.nats_nodes[0], cluster_url(self.nats_nodes)
        elif s.nats_url is None:
            self.nats = NatsServer(s.data_dir / "nats", log_path=self._log("nats"), port=s.nats_port)
            self.nats_nodes = [self.nats]
            self._run(self.nats)
            self.nats_url = self.nats.url

        gateway_traces = s.otlp_endpoint is not None
        if s.otlp_endpoint is None and importlib.util.find_spec(TRACE_RECEIVER) is not None:
            args = ["--port", str(s.trace_receiver_port), "--out", str(self.traces_dir)]
            listening = tcp_ready(f"127.0.0.1:{s.trace_receiver_port}")
            self._run(self._python("trace-receiver", TRACE_RECEIVER, args=args, ready=listening))
            gateway_traces = True

        if s.ai_engine_url is None and ENGINE_PYTHON.exists():
            self._run(self._engine(traces=gateway_traces))
        self.env = self._service_env()
        for spec in self.services:
            own_addrs = addr_list(self.service_addr(spec.name)) if spec.grpc else []
            for index, name in enumerate(self.instances(spec.name)):
                own_env: dict[str, str] = {}
                ready = None
                if spec.grpc:
                    own_env["MOLBRIDGE_LISTEN_ADDR"] = own_addrs[index]
                    ready = grpc_ready(own_addrs[index])
                elif spec.health:
                    self.health_addrs[name] = own_env[health_addr_variable(spec.name)] = f"127.0.0.1:{free_port()}"
                    ready = grpc_ready(self.health_addrs[name])
                self._run(self._python(name, spec.module, ready=ready, env=own_env))
        self._gateway_traces = gateway_traces
        self._run(self._envoy(traces=gateway_traces))

    def _run(self, process: ManagedProcess) -> None:
        self._say(f"starting {process.name} …")
        began = time.monotonic()
        self.supervisor.start(process)
        self._say(f"  {process.name} ready in {time.monotonic() - began:.1f} s (log: {process.log_path})")

    def _log(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    def _service_env(self) -> dict[str, str]:
        s = self.settings
        env = {
            "MOLBRIDGE_DATA_DIR": str(s.data_dir),
            "DATABASE_URL": self.database_url,
            "NATS_URL": self.nats_url,
            "GATEWAY_PORT": str(s.gateway_port),
            "GATEWAY_ADMIN_PORT": str(s.admin_port),
            "MOLBRIDGE_TRACE_RECEIVER_PORT": str(s.trace_receiver_port),
            # A local stack's webhook receivers live on loopback (production keeps them refused).
            "MOLBRIDGE_WEBHOOK_ALLOW_PRIVATE": "true",
            # The gRPC services this deployment runs (GET /api/v1/health probes each of them).
            "MOLBRIDGE_SERVICES": ",".join(spec.name for spec in self.services if spec.grpc),
        }
        env |= {f"MOLBRIDGE_{name.upper()}_ADDR": addr for name, addr in s.service_addrs.items()}
        if s.replicas > 1:
            env["MOLBRIDGE_DRAIN_SECONDS"] = str(DRAIN_SECONDS)
        if len(self.nats_nodes) > 1:
            env["MOLBRIDGE_STREAM_REPLICAS"] = str(len(self.nats_nodes))  # one node may fail
        if s.otlp_endpoint:
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = s.otlp_endpoint
        env["AI_ENGINE_URL"] = self.ai_engine_url
        env |= {k: s.env[k] for k in _PASS_THROUGH if s.env.get(k)}
        return env

    @property
    def ai_engine_url(self) -> str:
        return self.settings.ai_engine_url or f"http://127.0.0.1:{self.settings.engine_port}"

    def _engine(self, *, traces: bool) -> ManagedProcess:
        """The reference AI engine (engine/), an external system with its own virtualenv; its spans go
        over OTLP where the gateway's go (the configured endpoint, else our trace receiver)."""
        s = self.settings
        args = ["-m", "engine", "--port", str(s.engine_port), "--models", s.engine_models]
        env = {k: v for k, v in s.env.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
        if traces:
            endpoint = s.otlp_endpoint or f"http://127.0.0.1:{s.trace_receiver_port}"
            env |= {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_SERVICE_NAME": "engine"}
        return ManagedProcess("engine", [str(ENGINE_PYTHON), *args], log_path=self._log("engine"), env=env,
                              cwd=REPO_ROOT, ready=http_ready(f"{self.ai_engine_url}/healthz"),
                              ready_timeout=180.0, stop_timeout=8.0)

    def _python(
        self,
        name: str,
        module: str,
        *,
        args: Sequence[str] = (),
        ready: Callable[[], bool] | None,
        env: Mapping[str, str] | None = None,
    ) -> ManagedProcess:
        env = {**self.settings.env, **self.env, **(env or {}), "PYTHONUNBUFFERED": "1"}
        return ManagedProcess(name, [sys.executable, "-m", module, *args], log_path=self._log(name),
                              env=env, cwd=REPO_ROOT, ready=ready, stop_timeout=8.0)

    def _envoy(
        self, *, traces: bool, name: str = "envoy", overrides: Mapping[str, str] | None = None
    ) -> ManagedProcess:
        try:
            from gateway.envoy.render import GatewaySettings, write_config
        except ImportError as error:
            raise StartupError(f"cannot render the Envoy config: {error}") from error
        if not DESCRIPTOR_PATH.exists():
            raise StartupError(f"{DESCRIPTOR_PATH} is missing (run `make gen`)")
        env = {**self.settings.env, **self.env, **(overrides or {})}
        # The gateway reads its variables (ports, OTLP endpoint or our receiver's port, CORS,
        # rate-limit scale) from the services' environment; it routes to the services we run.
        gateway = GatewaySettings.from_env(env)
        gateway = dataclasses.replace(
            gateway,
            upstreams=dict(self.settings.service_addrs),
            otlp_endpoint=gateway.otlp_endpoint if traces else None,
            access_log_path=self._log(f"{name}-access"),
        )
        config = write_config(gateway, self.data_dir / "gateway" / f"{name}.yaml")
        return envoy_process(config, admin_port=gateway.admin_port, log_path=self._log(name), env=env, name=name)
