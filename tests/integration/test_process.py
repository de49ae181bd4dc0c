"""The process runtime against real PostgreSQL and NATS: declared subscriptions get typed payloads,
bad payloads are terminated, health follows liveness, background jobs are restarted, hooks run in
order, workers wait for the server's migrations, and a bad variable stops a process at start.

Waits poll for a condition with a generous cap; nothing asserts on time."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from molbridge.events.v1.audit_pb2 import AuditRecorded
from molbridge.events.v1.envelope_pb2 import EventEnvelope
from molbridge.health.v1 import health_service_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncSession

from bus.connection import connect
from bus.outbox import insert_outbox_rows, outbox_row
from bus.subjects import event_subject, work_subject
from services.identity.bootstrap import MIGRATIONS
from services.runtime.db import make_engine
from services.runtime.mesh_health import HealthServicer
from services.runtime.migrations import SchemaBehind
from services.runtime.process import Outbox, Process, Subscription, Watchdog, WorkQueue, running
from services.runtime.settings import REPO_ROOT, Settings
from stack.ports import free_port
from tests.waiting import eventually_async as eventually

SCHEMA = MIGRATIONS.schema  # identity's schema: a real outbox table to relay



async def health_status(port: int, service: str = "") -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service))
        return reply.status


SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


def reports(port: int, status: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await health_status(port) == status

    return check


async def test_a_worker_is_its_declared_subscriptions(database_url: str, nats_server) -> None:  # type: ignore[no-untyped-def]
    MIGRATIONS.upgrade(database_url)
    engine = make_engine(database_url, SCHEMA)
    source, queue, tag = f"p{uuid.uuid4().hex[:10]}", f"q{uuid.uuid4().hex[:10]}", uuid.uuid4().hex[:8]
    received: list[tuple[str, str, str]] = []
    gate = asyncio.Event()
    working: list[str] = []

    async def on_audit(event: AuditRecorded, envelope: EventEnvelope) -> None:
        received.append((event.action, envelope.source, envelope.id))

    async def on_item(item: AuditRecorded, envelope: EventEnvelope) -> None:
        working.append(item.action)
        await gate.wait()  # wedged until the test lets go

    process = Process(
        subscriptions=[
            Subscription(AuditRecorded, durable=f"audit-{tag}", handler=on_audit, source=source),
            Subscription(WorkQueue(queue, AuditRecorded), durable=f"work-{tag}", handler=on_item, stall_after=0.2,
                         batch=1),
        ],
        outbox=Outbox(engine, SCHEMA),
        on_stop=[engine.dispose],
    )
    settings = Settings.from_env("test-worker", {"NATS_URL": nats_server.url, "DATABASE_URL": database_url})
    async with running("test-worker", process, settings) as worker:
        assert worker.health_port and worker.grpc_port is None, "a worker serves health on its own port"
        await eventually(lambda: worker.serving, "serving")
        assert await health_status(worker.health_port) == SERVING

        # An event written to the outbox goes out through the process's relay and comes back typed.
        rows = [outbox_row(source=source, payload=AuditRecorded(action="user.created"))]
        async with AsyncSession(engine) as session, session.begin():
            await insert_outbox_rows(session, SCHEMA, rows)
        await eventually(lambda: bool(received), "the event reaches its handler")
        assert received == [("user.created", source, str(rows[0]["id"]))]

        # A payload of another type on the subject can never succeed: terminated, not retried.
        nats = await connect(nats_server.url)
        try:
            wrong = EventEnvelope(id=str(uuid.uuid4()), source=source)
            wrong.payload.Pack(EventEnvelope(id="not an audit event"))
            await nats.jetstream().publish(event_subject(source, AuditRecorded), wrong.SerializeToString())
            await nats.jetstream().publish(event_subject(source, AuditRecorded), b"\xff not protobuf")
        finally:
            await nats.close()
        audit_consumer = next(c for c in worker.consumers if c.durable == f"audit-{tag}")
        await eventually(lambda: audit_consumer.terminated == 2, "both bad messages terminated")
        assert len(received) == 1

        # A handler stuck beyond its stall_after turns health NOT_SERVING until it finishes.
        rows = [outbox_row(source=source, payload=AuditRecorded(action="slow"), subject=work_subject(queue))]
        async with AsyncSession(engine) as session, session.begin():
            await insert_outbox_rows(session, SCHEMA, rows)
        await eventually(lambda: working == ["slow"], "the work item is taken")
        await eventually(reports(worker.health_port, NOT_SERVING), "NOT_SERVING while wedged")
        assert any("consumer work-" in problem for problem in worker.problems())
        gate.set()
        await eventually(lambda: worker.serving, "healthy again")
        assert await health_status(worker.health_port) == SERVING


async def test_a_server_serves_health_runs_hooks_and_restarts_failed_jobs(database_url: str) -> None:
    settings = Settings.from_env("identity", {"MOLBRIDGE_IDENTITY_ADDR": "127.0.0.1:0", "MOLBRIDGE_SERVICES": ""})
    trail: list[str] = []
    problem: list[str | None] = [None]
    runs = 0

    async def flaky_job() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise RuntimeError("first run fails")
        await asyncio.Event().wait()

    def hook(name: str) -> Callable[[], Awaitable[None]]:
        async def record() -> None:
            trail.append(name)

        return record

    mesh_health = HealthServicer(settings)
    process = Process(
        servicers=[(health_service_pb2_grpc.add_HealthServiceServicer_to_server, mesh_health)],
        jobs=[flaky_job],
        on_start=[hook("start")],
        on_stop=[hook("stop 1"), hook("stop 2"), mesh_health.close],
        liveness=[lambda: problem[0]],
    )
    async with running("identity", process, settings) as server:
        assert trail == ["start"] and server.grpc_port == server.health_port
        assert await health_status(server.grpc_port) == SERVING
        assert await health_status(server.grpc_port, "molbridge.health.v1.HealthService") == SERVING
        await eventually(lambda: runs == 2, "the failed job is restarted")
        problem[0] = "search index stuck"
        await eventually(reports(server.grpc_port, NOT_SERVING), "a failing check shows")
        problem[0] = None
        await eventually(reports(server.grpc_port, SERVING), "and clears")
    assert trail == ["start", "stop 1", "stop 2"]


def test_a_watchdog_reports_work_running_past_its_limit() -> None:
    now = [0.0]
    watchdog = Watchdog("structure matching", stall_after=10, clock=lambda: now[0])
    assert watchdog() is None
    with watchdog.watch():
        now[0] = 5
        assert watchdog() is None
        now[0] = 11
        assert watchdog() == "structure matching: busy for 11 s (limit 10 s)"
    assert watchdog() is None


async def test_workers_wait_for_the_servers_migrations(database_url: str) -> None:
    with pytest.raises(SchemaBehind):
        await MIGRATIONS.wait_until_at_head(database_url, timeout=0.3)
    MIGRATIONS.upgrade(database_url)
    await MIGRATIONS.wait_until_at_head(database_url, timeout=10)


def run_identity(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.identity", *args],
        env={**os.environ, **env},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_bad_variable_stops_the_process_at_start_naming_it(database_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = run_identity(env={"MOLBRIDGE_LOG_LEVEL": "LOUD", "DATABASE_URL": database_url,
                               "MOLBRIDGE_DATA_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert "MOLBRIDGE_LOG_LEVEL='LOUD'" in result.stderr and "'DEBUG', 'INFO'" in result.stderr


def test_identity_cli_commands_still_work(database_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = run_identity("rotate-keys", "--publish-ahead-s", "0",
                          env={"DATABASE_URL": database_url, "MOLBRIDGE_DATA_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "new signing key" in result.stdout


async def test_a_server_process_starts_serves_and_stops_gracefully_on_sigterm(  # type: ignore[no-untyped-def]
    database_url: str, nats_server, tmp_path
) -> None:
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "NATS_URL": nats_server.url,
           "MOLBRIDGE_DATA_DIR": str(tmp_path), "MOLBRIDGE_IDENTITY_ADDR": f"127.0.0.1:{port}",
           "MOLBRIDGE_ADMIN_EMAIL": "admin@process.test", "MOLBRIDGE_ADMIN_PASSWORD": "A-long-enough-passw0rd!"}
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.identity", env=env, cwd=REPO_ROOT,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    try:
        async def serving() -> bool:
            try:
                return await health_status(port) == SERVING
            except grpc.aio.AioRpcError:
                return False

        await eventually(serving, "identity serving", timeout=60)
        assert MIGRATIONS.current(database_url) == MIGRATIONS.heads(), "the server migrated its schema"
        child.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(child.communicate(), 60)
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    assert child.returncode == 0, stderr.decode()[-2000:]
    assert "stopped identity" in stderr.decode()
