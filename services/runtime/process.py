"""One bootstrap for every Molbridge process, server or worker: `run_process(name, build)`.

A service's `__main__` is one line; its `bootstrap.py` builds a `Process` (data, no I/O) from typed
settings, and the runtime does the rest, in this order:

1. settings: `settings.from_env(name)` — a bad variable stops the process naming it (SettingsError);
2. JSON logs (MOLBRIDGE_LOG_LEVEL) and tracing (OTLP or local JSON lines);
3. `build(settings)` inside the event loop (gRPC channels and engines bind to the loop) → `Process`;
4. migrations: a process with servicers migrates its schema to head; a worker (no servicers) waits
   until the server has (up to MIGRATION_WAIT_S) instead of migrating;
5. `on_start` hooks (e.g. identity's first admin), then serving: gRPC servicers behind the mesh
   interceptor, health and reflection; ONE NATS connection shared by the outbox relay and every
   declared `Subscription` (streams created or updated to the configured limits); the retention sweep
   of the outbox's schema (bus.retention); supervised background `jobs` (restarted with jittered backoff);
6. health: SERVING once started; NOT_SERVING while any liveness check reports a problem (a consumer
   handler or a `Watchdog`-watched job busy beyond its limit, or a service's own check). Servers answer
   health on their gRPC port; a worker serves gRPC health on MOLBRIDGE_<NAME>_HEALTH_ADDR (default
   `127.0.0.1:0`, an ephemeral port that is logged; `off` disables it);
7. SIGINT/SIGTERM: NOT_SERVING first, drain gRPC calls, stop consumers and relay after the message in
   hand, cancel jobs, run `on_stop` hooks, close NATS, flush traces.

    # services/identity/__main__.py
    run_process("identity", build_server, settings=IdentitySettings, migrations=MIGRATIONS, commands=COMMANDS)

    # a worker: subscriptions only
    def build_worker(settings: MoleculeSettings) -> Process:
        ...
        return Process(
            subscriptions=[Subscription(WorkQueue("csv_chunks", CsvChunk), durable="csv-chunks",
                                        handler=chunks.handle, concurrency=4, batch=1, ack_wait=60)],
            outbox=Outbox(engine, SCHEMA),
            on_stop=[engine.dispose],
        )

A handler receives the typed payload and its envelope: `async def handle(item: CsvChunk, envelope)`.
It returns → ack; raises `TransientError` → nak with JetStream backoff; raises `PoisonError` (or the
payload is undecodable or of another type) → term. See bus.consumer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from molbridge.events.v1.envelope_pb2 import EventEnvelope
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncEngine

from bus.connection import connect
from bus.consumer import Consumer, PoisonError, TransientError
from bus.envelope import unpack
from bus.relay import OutboxRelay
from bus.retention import RetentionSweep
from bus.streams import EVENTS_STREAM, WORK_STREAM, ensure_streams
from bus.subjects import EVENTS_PREFIX, event_subject, event_type_name, work_subject
from services.runtime import telemetry
from services.runtime.auth import Authenticator
from services.runtime.logs import configure_logging
from services.runtime.migrations import MigrationSpec
from services.runtime.retry import supervise
from services.runtime.server import make_grpc_server, service_names
from services.runtime.settings import Settings, SettingsError, check_host_port, health_addr_variable

log = logging.getLogger("molbridge.process")

M = TypeVar("M", bound=Message)
S = TypeVar("S", bound=Settings)

GRACE_SECONDS = 5.0  # in-flight gRPC calls and consumer batches get this long at stop
HEALTH_POLL_S = 1.0  # how often liveness checks are evaluated
MIGRATION_WAIT_S = 300.0  # a worker gives up (and is restarted by its supervisor) after this long

Servicer = tuple[Callable[[Any, grpc.aio.Server], None], Any]  # (add_XServicer_to_server, servicer)
Hook = Callable[[], Awaitable[None]]
# A liveness check returns None when healthy, else a short reason (logged, health goes NOT_SERVING).
LivenessCheck = Callable[[], str | None]


@dataclass(frozen=True)
class WorkQueue(Generic[M]):
    """A work queue (`molbridge.work.<name>`) whose items are `item` messages (see UnitOfWork.enqueue)."""

    name: str
    item: type[M]


@dataclass(frozen=True)
class Subscription(Generic[M]):
    """A durable consumer declared as data. `topic` is an event type (from any service, or only from
    `source`) or a WorkQueue; `handler(payload, envelope)` gets the unpacked payload."""

    topic: type[M] | WorkQueue[M]
    durable: str
    handler: Callable[[M, EventEnvelope], Awaitable[None]]
    source: str | None = None  # events only: the emitting service; None = every service
    concurrency: int = 1  # consumers sharing the durable in this process
    max_deliver: int = 5
    backoff: Sequence[float] = (1.0, 5.0, 30.0, 120.0)  # JetStream nak delays by delivery count
    batch: int = 10
    ack_wait: float = 30.0
    stall_after: float | None = 900.0  # a handler busy longer than this makes health NOT_SERVING

    @property
    def payload_type(self) -> type[M]:
        return self.topic.item if isinstance(self.topic, WorkQueue) else self.topic

    @property
    def stream(self) -> str:
        return WORK_STREAM if isinstance(self.topic, WorkQueue) else EVENTS_STREAM

    @property
    def subject(self) -> str:
        if isinstance(self.topic, WorkQueue):
            return work_subject(self.topic.name)
        if self.source:
            return event_subject(self.source, self.topic)
        return f"{EVENTS_PREFIX}.*.{event_type_name(self.topic)}"


@dataclass(frozen=True)
class Outbox:
    """The schema whose outbox this process relays to JetStream."""

    engine: AsyncEngine
    schema: str


class Watchdog:
    """A liveness check for work that may wedge: `with watchdog.watch(): …` around each unit of work;
    the check fails while any unit has been running longer than `stall_after` seconds.

        matching = Watchdog("structure matching", stall_after=120)
        Process(..., liveness=[matching])      # then `with matching.watch(): run_match()`
    """

    def __init__(self, name: str, stall_after: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.stall_after = stall_after
        self._clock = clock
        self._started: dict[int, float] = {}
        self._next = 0

    @contextlib.contextmanager
    def watch(self) -> Iterator[None]:
        token = self._next
        self._next += 1
        self._started[token] = self._clock()
        try:
            yield
        finally:
            del self._started[token]

    def __call__(self) -> str | None:
        if not self._started:
            return None
        busy = self._clock() - min(self._started.values())
        if busy > self.stall_after:
            return f"{self.name}: busy for {busy:.0f} s (limit {self.stall_after:g} s)"
        return None


@dataclass
class Process:
    """What a service's composition root hands to the runtime. All fields are optional: a server has
    servicers, a worker has subscriptions; either may relay an outbox and run jobs."""

    servicers: Sequence[Servicer] = ()
    authenticator: Authenticator | None = None
    public_methods: Collection[str] = ()
    subscriptions: Sequence[Subscription[Any]] = ()
    # Consumers that are not a shared durable (e.g. runtime.revocation's per-process feed), built on
    # the process's NATS connection.
    consumers: Sequence[Callable[[JetStreamContext], Consumer]] = ()
    outbox: Outbox | None = None
    # Long-running coroutines, supervised: restarted with jittered backoff if they raise.
    jobs: Sequence[Hook] = ()
    # Run after migrations, before serving (may use the database).
    on_start: Sequence[Hook] = ()
    # Run at stop after everything else has stopped, in order (close clients, dispose engines).
    on_stop: Sequence[Hook] = ()
    # Extra liveness checks: a Watchdog, or any callable returning None (healthy) or a reason.
    liveness: Sequence[LivenessCheck] = ()

    @property
    def is_server(self) -> bool:
        return bool(self.servicers)


@dataclass(frozen=True)
class Command(Generic[S]):
    """A CLI subcommand (`python -m services.<name> <command>`), run after migrations instead of serving."""

    help: str
    run: Callable[[S, argparse.Namespace], Awaitable[None]]
    arguments: Callable[[argparse.ArgumentParser], object] = lambda parser: None


def run_process(
    name: str,
    build: Callable[[S], Process],
    *,
    settings: type[S] = Settings,  # type: ignore[assignment]
    migrations: MigrationSpec | None = None,
    commands: Mapping[str, Command[S]] | None = None,
    argv: Sequence[str] | None = None,
) -> None:
    """The whole life of a process (see the module docstring); exits 2 on bad settings."""
    commands = commands or {}
    parser = argparse.ArgumentParser(prog=f"python -m services.{name.replace('-', '.')}")
    if commands:
        sub = parser.add_subparsers(dest="command")
        for command_name, command in commands.items():
            command.arguments(sub.add_parser(command_name, help=command.help))
    args = parser.parse_args(argv)
    try:
        config = settings.from_env(name)
    except SettingsError as error:
        print(f"{name}: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(name, config.log_level)
    telemetry.configure_tracing(name, config.data_dir, config.otlp_endpoint)
    try:
        chosen = commands.get(getattr(args, "command", None) or "")
        if chosen is not None:
            asyncio.run(_run_command(config, chosen, args, migrations))
        else:
            asyncio.run(_serve_until_signal(name, build, config, migrations))
    finally:
        telemetry.shutdown_tracing()


async def _run_command(config: S, command: Command[S], args: argparse.Namespace, migrations: MigrationSpec | None):
    if migrations is not None:
        await asyncio.to_thread(migrations.upgrade, config.database_url)
    await command.run(config, args)


async def _serve_until_signal(
    name: str, build: Callable[[S], Process], config: S, migrations: MigrationSpec | None
) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    process = build(config)
    if migrations is not None:
        if process.is_server:
            await asyncio.to_thread(migrations.upgrade, config.database_url)
        else:
            await migrations.wait_until_at_head(config.database_url, timeout=MIGRATION_WAIT_S)
    async with running(name, process, config):
        await stopping.wait()


class RunningProcess:
    """A started process (what `running` yields): its ports and bus parts, for logs and tests."""

    def __init__(self, name: str, process: Process, config: Settings) -> None:
        self.name = name
        self.process = process
        self.config = config
        self.grpc_port: int | None = None  # servers
        self.health_port: int | None = None  # where gRPC health answers (the gRPC port for servers)
        self.consumers: list[Consumer] = []
        self.relay: OutboxRelay | None = None
        self.retention: RetentionSweep | None = None
        self.serving = False
        self._checks: list[LivenessCheck] = list(process.liveness)
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()
        self._health_names: list[str] = [""]
        self._tasks: list[asyncio.Task[None]] = []  # supervised jobs
        self._health_task: asyncio.Task[None] | None = None
        self._bus_tasks: list[asyncio.Task[None]] = []
        self._nats: Any = None

    def add_liveness(self, check: LivenessCheck) -> None:
        self._checks.append(check)

    def problems(self) -> list[str]:
        """What the liveness checks report now (empty = healthy)."""
        return [reason for _, reason in self._failing()]

    def _failing(self) -> list[tuple[LivenessCheck, str]]:
        found = []
        for check in self._checks:
            try:
                reason = check()
            except Exception as error:  # a failing check is itself a problem, not a crash
                reason = f"liveness check failed: {error!r}"
            if reason:
                found.append((check, reason))
        return found

    async def start(self) -> None:
        for hook in self.process.on_start:
            await hook()
        if self.process.is_server:
            self._server, self._health = make_grpc_server(
                self.name, self.process.servicers, self.process.authenticator, self.process.public_methods
            )
            self._health_names = list(service_names(self.process.servicers))
            self.grpc_port = self.health_port = self._server.add_insecure_port(self.config.listen_addr)
            await self._server.start()
            log.info("serving %s on %s", self.name, self.config.listen_addr)
        else:
            await self._start_worker_health()
        await self._start_bus()
        self._tasks += [
            asyncio.create_task(supervise(job), name=f"job-{getattr(job, '__qualname__', job)}")
            for job in self.process.jobs
        ]
        self._health_task = asyncio.create_task(self._watch_health(), name="health")
        await self._set_health(serving=not self.problems())

    async def _start_worker_health(self) -> None:
        variable = health_addr_variable(self.name)
        addr = self.config.env.get(variable) or "127.0.0.1:0"
        if addr == "off":
            return
        check_host_port(addr, variable)
        self._server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        self.health_port = self._server.add_insecure_port(addr)
        await self._server.start()
        log.info("%s: health on %s:%d", self.name, addr.rpartition(":")[0], self.health_port)

    async def _start_bus(self) -> None:
        if not self.process.subscriptions and not self.process.consumers and self.process.outbox is None:
            return
        # One connection per process, shared by the relay and every consumer.
        self._nats = await connect(self.config.nats_url, name=self.name)
        js = self._nats.jetstream()
        await ensure_streams(js, policy=self.config.stream_policy)
        if self.process.outbox is not None:
            self.relay = OutboxRelay(self.process.outbox.engine, self.process.outbox.schema, js)
            self._bus_tasks.append(asyncio.create_task(supervise(self.relay.run, name="outbox relay")))
            # Whoever relays a schema's outbox also prunes it; replicas share the work safely.
            outbox = self.process.outbox
            self.retention = RetentionSweep(outbox.engine, outbox.schema, self.config.retention)
            self._tasks.append(asyncio.create_task(supervise(self.retention.run, name="retention sweep")))
        for subscription in self.process.subscriptions:
            watchdog = Watchdog(f"consumer {subscription.durable}", subscription.stall_after or float("inf"))
            if subscription.stall_after is not None:
                self._checks.append(watchdog)
            for _ in range(subscription.concurrency):
                consumer = _consumer(js, subscription, watchdog)
                self.consumers.append(consumer)
                job = supervise(consumer.run, name=f"consumer {consumer.durable}")
                self._bus_tasks.append(asyncio.create_task(job))
        for make in self.process.consumers:
            consumer = make(js)
            self.consumers.append(consumer)
            self._bus_tasks.append(asyncio.create_task(supervise(consumer.run, name=f"consumer {consumer.durable}")))
        log.info(
            "%s: bus on %s (outbox: %s; subscriptions: %s)",
            self.name,
            self.config.nats_url,
            self.process.outbox.schema if self.process.outbox else "none",
            ", ".join(s.durable for s in self.process.subscriptions) or "none",
        )

    async def _watch_health(self) -> None:
        reported: list[LivenessCheck] = []  # logged when the set of failing checks changes, not every poll
        while True:
            await asyncio.sleep(HEALTH_POLL_S)
            failing = self._failing()
            checks = [check for check, _ in failing]
            if checks != reported:
                if failing:
                    log.error("%s: NOT_SERVING: %s", self.name, "; ".join(reason for _, reason in failing))
                else:
                    log.info("%s: healthy again", self.name)
                reported = checks
            await self._set_health(serving=not failing)

    async def _set_health(self, *, serving: bool) -> None:
        self.serving = serving
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in self._health_names:
            await self._health.set(name, status)

    async def stop(self) -> None:
        # Tell load balancers first, then drain in-flight calls, then stop the bus and background work.
        if self._health_task is not None:
            self._health_task.cancel()
            await asyncio.gather(self._health_task, return_exceptions=True)
        await self._set_health(serving=False)
        if self._server is not None and self.process.is_server:
            if self.config.drain_seconds:
                log.info("%s: NOT_SERVING, draining for %.1f s", self.name, self.config.drain_seconds)
                await asyncio.sleep(self.config.drain_seconds)
            await self._server.stop(GRACE_SECONDS)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        runners: list[Consumer | OutboxRelay] = [*self.consumers, *([self.relay] if self.relay else [])]
        for runner in runners:
            runner.stop()
        _, pending = await asyncio.wait(self._bus_tasks, timeout=GRACE_SECONDS) if self._bus_tasks else ((), ())
        for task in pending:
            task.cancel()
        await asyncio.gather(*self._bus_tasks, return_exceptions=True)
        if self._server is not None and not self.process.is_server:
            await self._server.stop(0)
        for hook in self.process.on_stop:
            try:
                await hook()
            except Exception:
                log.exception("%s: stop hook %s failed", self.name, getattr(hook, "__qualname__", hook))
        if self._nats is not None:
            with contextlib.suppress(Exception):
                await self._nats.close()
        log.info("stopped %s", self.name)


@contextlib.asynccontextmanager
async def running(name: str, process: Process, config: Settings) -> Any:
    """Start `process`, yield its RunningProcess, stop it gracefully on exit (tests use this directly)."""
    started = RunningProcess(name, process, config)
    try:
        await started.start()
        yield started
    finally:
        await started.stop()


def _consumer(js: JetStreamContext, subscription: Subscription[Any], watchdog: Watchdog) -> Consumer:
    payload_type = subscription.payload_type

    async def handle(envelope: EventEnvelope, msg: Msg) -> None:
        try:
            payload = unpack(envelope, payload_type)
        except TypeError as error:  # another type on this subject: it will never fit
            raise PoisonError(str(error)) from error
        with watchdog.watch():
            await subscription.handler(payload, envelope)

    handle.__qualname__ = getattr(subscription.handler, "__qualname__", subscription.durable)
    return Consumer(
        js,
        subscription.stream,
        subscription.durable,
        subscription.subject,
        handle,
        max_deliver=subscription.max_deliver,
        backoff=subscription.backoff,
        batch=subscription.batch,
        ack_wait=subscription.ack_wait,
    )


__all__ = [
    "Command",
    "LivenessCheck",
    "MigrationSpec",
    "Outbox",
    "PoisonError",
    "Process",
    "RunningProcess",
    "Subscription",
    "TransientError",
    "Watchdog",
    "WorkQueue",
    "run_process",
    "running",
]
