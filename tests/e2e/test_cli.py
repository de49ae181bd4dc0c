"""The `molbridge` console script as a user runs it: a subprocess talking gRPC to the real gateway, with
its tokens in a private config dir."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from cli.trace import load_trace

MOLBRIDGE = Path(sys.executable).with_name("molbridge")  # the console script installed into .venv/bin
STRONG_PASSWORD = "Cli-Strong-Pass-42!"
TRACE_WAIT_SECONDS = 20.0

Run = Callable[..., subprocess.CompletedProcess[str]]


def cli_env(mesh, config_home: Path) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """The environment `molbridge` runs in against the mesh, with `config_home` as XDG_CONFIG_HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOLBRIDGE_")}
    return env | {
        "MOLBRIDGE_TARGET": mesh.grpc_target,
        "MOLBRIDGE_PASSWORD": mesh.admin_password,
        "XDG_CONFIG_HOME": str(config_home),
    }


def cli_runner(mesh, config_home: Path) -> Run:  # type: ignore[no-untyped-def]
    """`run(*args, ok=True, typed=None)` runs `molbridge args…` against the mesh with `config_home` as
    XDG_CONFIG_HOME; with ok, asserts exit status 0."""
    env = cli_env(mesh, config_home)

    def run(*args: str, ok: bool = True, typed: str | None = None) -> subprocess.CompletedProcess[str]:
        """`typed`: what the user types at the prompts (stdin); nothing by default."""
        done = subprocess.run(
            [str(MOLBRIDGE), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            input=typed,
            stdin=subprocess.DEVNULL if typed is None else None,
        )
        if ok:
            assert done.returncode == 0, f"molbridge {' '.join(args)}: {done.returncode}\n{done.stderr}"
        assert "Traceback" not in done.stderr, done.stderr
        return done

    return run


@pytest.fixture(scope="module")
def molbridge(mesh, tmp_path_factory: pytest.TempPathFactory) -> Run:  # type: ignore[no-untyped-def]
    """The CLI, logged in as the mesh's system admin."""
    assert MOLBRIDGE.exists(), f"{MOLBRIDGE} is missing: `pip install -e .` installs the console script"
    run = cli_runner(mesh, tmp_path_factory.mktemp("config"))
    done = run("login", "--email", mesh.admin_email)
    assert f"Logged in to {mesh.grpc_target} as {mesh.admin_email} (system_admin)" in done.stdout
    return run


def test_whoami_shows_the_logged_in_user(molbridge: Run, mesh) -> None:  # type: ignore[no-untyped-def]
    out = molbridge("whoami").stdout
    assert re.search(rf"^email:\s+{re.escape(mesh.admin_email)}$", out, re.M), out
    assert re.search(r"^roles:\s+system_admin$", out, re.M), out


def test_created_user_is_listed(molbridge: Run) -> None:
    email = f"cli-{uuid.uuid4().hex[:8]}@cli.test"
    created = molbridge(
        "users",
        "create",
        "--email",
        email,
        "--name",
        "CLI Auditor",
        "--role",
        "auditor",
        "--password",
        STRONG_PASSWORD,
    )
    assert f"Created user {email} (auditor)" in created.stdout
    listed = molbridge("users", "list", "--sort=-created_at").stdout
    [row] = [line for line in listed.splitlines() if email in line]
    assert "CLI Auditor" in row and "auditor" in row


def test_weak_password_names_the_broken_rules(molbridge: Run) -> None:
    done = molbridge(
        "users",
        "create",
        "--email",
        f"weak-{uuid.uuid4().hex[:8]}@cli.test",
        "--name",
        "Weak",
        "--role",
        "auditor",
        "--password",
        "weakpass",
        ok=False,
    )
    assert done.returncode == 6  # validation (README: exit codes)
    assert "VALIDATION_ERROR" in done.stderr
    for rule in ("at least 12 characters", "an uppercase letter", "a digit", "a symbol"):
        assert rule in done.stderr, done.stderr
    assert "a lowercase letter" not in done.stderr  # only the rules actually broken


def test_logout_forgets_the_session(mesh, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run = cli_runner(mesh, tmp_path)  # a session of its own: the module's login stays valid
    run("login", "--email", mesh.admin_email)
    credentials = tmp_path / "molbridge" / "credentials.json"
    assert credentials.stat().st_mode & 0o777 == 0o600  # tokens readable by the user only
    assert mesh.grpc_target in json.loads(credentials.read_text())["profiles"]

    assert f"Logged out of {mesh.grpc_target}" in run("logout").stdout
    assert mesh.grpc_target not in json.loads(credentials.read_text())["profiles"]
    done = run("whoami", ok=False)
    assert done.returncode == 3 and "not logged in" in done.stderr  # authentication


def test_trace_prints_the_calls_of_a_command_as_a_tree(molbridge: Run, mesh) -> None:  # type: ignore[no-untyped-def]
    done = molbridge("--show-trace", "whoami")
    match = re.search(r"trace_id: ([0-9a-f]{32})", done.stderr)
    assert match, done.stderr
    trace_id = match.group(1)

    # Spans reach the files in batches: wait until both the gateway's and the server's are there.
    deadline = time.monotonic() + TRACE_WAIT_SECONDS
    while {s.service for s in load_trace(mesh.traces_dir, trace_id)} < {"gateway", "identity"}:
        assert time.monotonic() < deadline, (
            f"trace {trace_id} incomplete: {load_trace(mesh.traces_dir, trace_id)}"
        )
        time.sleep(0.2)

    out = molbridge("trace", trace_id, "--data-dir", str(mesh.data_dir)).stdout
    lines = out.splitlines()
    assert lines[0].startswith(f"trace {trace_id}: ") and "gateway" in lines[0] and "identity" in lines[0], (
        out
    )
    [get_me] = [line for line in lines if line.endswith("IdentityService/GetMe")]
    # The server span hangs under the gateway's: drawn with a branch, indented.
    assert re.search(r"identity\s+(│  |   )*[├└]─ molbridge\.identity\.v1\.IdentityService/GetMe$", get_me), (
        out
    )

    unknown = molbridge("trace", "0" * 32, "--data-dir", str(mesh.data_dir), ok=False)
    assert unknown.returncode == 1 and "not found" in unknown.stderr
