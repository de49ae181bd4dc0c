"""The process supervisor and the harness servers: real PostgreSQL, real nats-server, real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import nats
import psutil
import psycopg
import pytest

from stack.mesh import ServiceSpec, Stack, StackSettings
from stack.nats import NatsServer
from stack.ports import free_port
from stack.postgres import PostgresServer
from stack.processes import ManagedProcess, StartupError, Supervisor, grpc_ready


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll a condition (bounded), for effects that happen asynchronously in other processes."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def family(pid: int) -> list[int]:
    process = psutil.Process(pid)
    return [pid, *(child.pid for child in process.children(recursive=True))]


# --- PostgreSQL


def test_postgres_serves_fresh_empty_databases(postgres_server: PostgresServer) -> None:
    with psycopg.connect(postgres_server.url) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("postgres",)

    first, second = postgres_server.create_database(), postgres_server.create_database()
    assert first != second
    with psycopg.connect(first) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
        assert tables == (0,)
        encoding = conn.execute("SHOW server_encoding").fetchone()
        assert encoding == ("UTF8",)


def test_create_database_with_a_name_starts_empty_again(postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database("harness_named")
    assert url.endswith("/harness_named")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE leftover (id int)")
    postgres_server.create_database("harness_named")
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT to_regclass('leftover')").fetchone() == (None,)


def test_database_url_fixture_is_usable(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
        conn.execute("INSERT INTO t VALUES (1), (2)")
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (2,)


def test_postgres_keeps_data_across_restart_and_leaves_no_process(server_tmp_path: Path) -> None:
    server = PostgresServer(server_tmp_path / "pg", log_path=server_tmp_path / "postgres.log", ephemeral=True)
    server.start()
    try:
        url = server.ensure_database("molbridge")
        assert url == f"postgresql://postgres@127.0.0.1:{server.port}/molbridge"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (id int)")
            conn.execute("INSERT INTO kept VALUES (7)")
        assert server.pid is not None
        pids = family(server.pid)
        assert len(pids) > 1  # the postmaster and its helpers
        server.restart()
        assert all(gone(pid) for pid in pids)
        assert server.ensure_database("molbridge") == url
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT id FROM kept").fetchone() == (7,)
        assert server.pid is not None
        pids = family(server.pid)
    finally:
        server.stop()
    assert all(gone(pid) for pid in pids)
    assert not (server_tmp_path / "pg" / "postmaster.pid").exists()


# --- NATS


async def test_jetstream_store_survives_nats_restart(nats_server: NatsServer) -> None:
    stream, url = f"HARNESS_{uuid.uuid4().hex[:8].upper()}", nats_server.url
    client = await nats.connect(url)
    js = client.jetstream()
    await js.add_stream(name=stream, subjects=[f"{stream.lower()}.>"])
    for n in range(3):
        await js.publish(f"{stream.lower()}.event", f"message {n}".encode())
    await client.close()

    nats_server.restart()
    assert nats_server.url == url

    client = await nats.connect(url)
    try:
        js = client.jetstream()
        info = await js.stream_info(stream)
        assert info.state.messages == 3
        message = await js.get_msg(stream, seq=2)
        assert message.data == b"message 1"
        await js.delete_stream(stream)
    finally:
        await client.close()


def test_nats_stop_and_start_keep_the_port(nats_server: NatsServer) -> None:
    port = nats_server.port
    nats_server.stop()
    assert not nats_server.running
    nats_server.start()
    assert nats_server.running and nats_server.port == port


# --- processes


def test_stop_signals_then_kills_the_whole_process_group(tmp_path: Path) -> None:
    # A child that ignores SIGTERM and has a grandchild of its own.
    pid_file = tmp_path / "grandchild.pid"
    script = f"trap '' TERM; sleep 300 & echo $! > {pid_file}.new; mv {pid_file}.new {pid_file}; wait"
    process = ManagedProcess("stubborn", ["bash", "-c", script], log_path=tmp_path / "stubborn.log",
                             ready=pid_file.exists, stop_timeout=0.3)
    process.start()
    assert process.pid is not None
    leader, grandchild = process.pid, int(pid_file.read_text())
    code = process.stop()
    assert code == -signal.SIGKILL
    assert gone(leader)
    assert wait_until(lambda: gone(grandchild))  # SIGKILL is delivered asynchronously
    assert "did not stop" in (tmp_path / "stubborn.log").read_text()


def test_kill_is_a_crash_of_the_whole_group_and_start_brings_it_back(tmp_path: Path) -> None:
    # A child that would trap SIGTERM and clean up: kill gives it no chance to.
    pid_file, cleaned = tmp_path / "grandchild.pid", tmp_path / "cleaned"
    script = (f"trap 'touch {cleaned}; exit 0' TERM; sleep 300 & echo $! > {pid_file}.new; "
              f"mv {pid_file}.new {pid_file}; wait")
    process = ManagedProcess("crashy", ["bash", "-c", script], log_path=tmp_path / "crashy.log", ready=pid_file.exists)
    process.start()
    assert process.pid is not None
    leader, grandchild = process.pid, int(pid_file.read_text())
    assert process.kill() == -signal.SIGKILL
    assert gone(leader) and wait_until(lambda: gone(grandchild))
    assert not cleaned.exists() and "killed (SIGKILL)" in (tmp_path / "crashy.log").read_text()
    assert process.kill() is None  # nothing left to kill
    pid_file.unlink()
    process.start()
    assert process.running and process.pid != leader
    assert process.stop() == 0  # this time the trap ran
    assert cleaned.exists()


def test_graceful_stop_reports_the_exit_status(tmp_path: Path) -> None:
    process = ManagedProcess("sleeper", ["sleep", "300"], log_path=tmp_path / "sleeper.log")
    process.start()
    assert process.running
    assert process.stop() == -signal.SIGTERM
    assert not process.running
    assert process.stop() is None  # stopping twice is harmless


def test_a_child_that_exits_during_startup_names_its_log(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "print('boom', flush=True); raise SystemExit(3)"]
    process = ManagedProcess("broken", argv, log_path=tmp_path / "logs" / "broken.log", ready=lambda: False)
    with pytest.raises(StartupError) as error:
        process.start()
    message = str(error.value)
    assert "broken exited with code 3" in message
    assert str(tmp_path / "logs" / "broken.log") in message
    assert "boom" in message
    assert not process.running


def test_a_child_that_never_gets_ready_is_stopped(tmp_path: Path) -> None:
    process = ManagedProcess("slow", ["sleep", "300"], log_path=tmp_path / "slow.log",
                             ready=lambda: False, ready_timeout=0.2)
    with pytest.raises(StartupError, match="slow was not ready"):
        process.start()
    assert not process.running


def test_supervisor_stops_everything_when_an_exception_escapes(tmp_path: Path) -> None:
    pids: list[int] = []
    with pytest.raises(RuntimeError), Supervisor() as supervisor:
        for name in ("first", "second"):
            sleeper = ManagedProcess(name, ["sleep", "300"], log_path=tmp_path / f"{name}.log")
            process = supervisor.start(sleeper)
            assert process.pid is not None
            pids.append(process.pid)
        raise RuntimeError("test body failed")
    assert all(gone(pid) for pid in pids)
    assert supervisor.processes == []


def test_children_do_not_outlive_a_killed_supervisor(tmp_path: Path) -> None:
    # One child started from the main thread, one from a thread that exits at once (as the
    # asyncio.to_thread workers that tests use): the second must survive that thread's end,
    # and both must go when the supervisor is killed with no chance to clean up.
    script = textwrap.dedent(f"""
        import threading, time
        from pathlib import Path
        from stack.processes import ManagedProcess
        logs = Path({str(tmp_path)!r})
        first = ManagedProcess("first", ["sleep", "300"], log_path=logs / "first.log")
        second = ManagedProcess("second", ["sleep", "300"], log_path=logs / "second.log")
        first.start()
        worker = threading.Thread(target=second.start)
        worker.start()
        worker.join()
        time.sleep(0.2)
        print(first.pid, second.pid, second.running, flush=True)
        time.sleep(300)
    """)
    supervisor = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert supervisor.stdout is not None
    first, second, second_running = supervisor.stdout.readline().split()
    assert second_running == "True" and not gone(int(second))
    supervisor.kill()
    supervisor.wait()
    assert wait_until(lambda: gone(int(first)) and gone(int(second)))


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = [free_port() for _ in range(20)]
    assert len(set(ports)) == len(ports)


def test_isolated_settings_inherit_none_of_the_projects_variables(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "DATABASE_URL": "postgresql://elsewhere/db",
           "MOLBRIDGE_IDENTITY_ADDR": "127.0.0.1:50051", "GATEWAY_PORT": "8080"}
    settings = StackSettings.isolated(tmp_path, env=env, extra_env={"SMTP_URL": "smtp://127.0.0.1:2525"})
    assert settings.env == {"PATH": os.environ["PATH"], "SMTP_URL": "smtp://127.0.0.1:2525"}
    assert settings.database_url is None and settings.nats_url is None
    ports = [settings.gateway_port, settings.admin_port, settings.trace_receiver_port,
             *(int(addr.rsplit(":", 1)[1]) for addr in settings.service_addrs.values())]
    assert len(set(ports)) == len(ports)


def test_a_service_that_fails_to_start_stops_the_whole_stack(server_tmp_path: Path) -> None:
    settings = StackSettings.isolated(server_tmp_path / "data")
    settings.service_addrs = {"broken": f"127.0.0.1:{free_port()}"}
    stack = Stack(settings, services=[ServiceSpec("broken", "stack.no_such_module")])
    with pytest.raises(StartupError) as error:
        stack.start()
    assert "broken exited with code 1" in str(error.value)
    assert str(stack.logs_dir / "broken.log") in str(error.value)
    assert stack.postgres is not None and stack.nats is not None
    assert not stack.postgres.running and not stack.nats.running
    assert stack.supervisor.processes == []
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(stack.database_url, connect_timeout=1).close()


def test_a_worker_with_health_is_ready_when_it_says_serving(server_tmp_path: Path) -> None:
    settings = StackSettings.isolated(server_tmp_path / "data")  # Envoy routes to services not started here
    stack = Stack(settings, services=[ServiceSpec("toy-worker", "tests.integration.toy_worker", grpc=False,
                                                  health=True)])
    try:
        stack.start()  # returns only once the worker's health server answered SERVING
        addr = stack.health_addrs["toy-worker"]
        assert grpc_ready(addr)()
        assert f"toy-worker: health on {addr}" in (stack.logs_dir / "toy-worker.log").read_text()
    finally:
        stack.stop()
    assert stack.supervisor.processes == []
