"""What a partner gets: the molbridge-client wheel built from this tree, installed into a fresh virtual
environment (no dev tree on the path, no server packages), used against the running mesh through the
installed `molbridge` CLI and the molbridge_client package."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTALL_TIMEOUT_SECONDS = 600
RUN_TIMEOUT_SECONDS = 60
SERVER_PACKAGES = ("services", "bus", "gateway", "stack", "rdkit", "pandas", "sqlalchemy", "nats", "envoy")

Run = Callable[..., subprocess.CompletedProcess[str]]


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without anything pointing at the dev tree or a molbridge login."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MOLBRIDGE_", "PYTHON", "VIRTUAL_ENV")) and k != "GATEWAY_PORT"
    }
    return env | extra


@pytest.fixture(scope="module")
def partner_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with only the molbridge-client wheel (and its dependencies) installed."""
    root = tmp_path_factory.mktemp("partner")
    built = subprocess.run(
        [sys.executable, str(REPO / "clients/python/build_wheel.py"), "--out", str(root / "dist")],
        capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS, check=False,
    )
    assert built.returncode == 0, built.stderr
    wheel = Path(built.stdout.strip().splitlines()[-1])
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=RUN_TIMEOUT_SECONDS)
    installed = subprocess.run(
        [str(venv / "bin/python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
        capture_output=True, text=True, timeout=INSTALL_TIMEOUT_SECONDS, env=clean_env(), cwd=root, check=False,
    )
    assert installed.returncode == 0, installed.stderr
    return venv


@pytest.fixture(scope="module")
def partner_cli(partner_venv: Path, mesh, tmp_path_factory: pytest.TempPathFactory) -> Run:  # type: ignore[no-untyped-def]
    """`run(*args)`: the installed `molbridge` script against the mesh, its login in a private config dir."""
    home = tmp_path_factory.mktemp("partner-home")
    env = clean_env(
        MOLBRIDGE_TARGET=mesh.grpc_target, MOLBRIDGE_PASSWORD=mesh.admin_password, XDG_CONFIG_HOME=str(home)
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(partner_venv / "bin/molbridge"), *args],
            env=env, cwd=home, capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS,
            stdin=subprocess.DEVNULL, check=False,
        )
        assert "Traceback" not in done.stderr, done.stderr
        return done

    return run


def test_the_wheel_brings_typed_stubs_and_no_server_code(partner_venv: Path) -> None:
    probe = textwrap.dedent(
        f"""
        import importlib.util, pathlib
        import molbridge.identity.v1.identity_service_pb2 as pb
        import molbridge.document.v1.document_service_pb2_grpc as documents
        import molbridge_client
        import cli.documents
        stubs = pathlib.Path(pb.__file__).parent
        assert (stubs / "identity_service_pb2.pyi").exists() and (stubs / "identity_service_pb2_grpc.pyi").exists()
        assert (pathlib.Path(documents.__file__).parent / "document_service_pb2.pyi").exists()
        assert molbridge_client.Client.documents and molbridge_client.Client.signatures
        assert (pathlib.Path(molbridge_client.__file__).parent / "py.typed").exists()
        present = [name for name in {SERVER_PACKAGES!r} if importlib.util.find_spec(name)]
        assert not present, present
        print(molbridge_client.__version__)
        """
    )
    done = subprocess.run(
        [str(partner_venv / "bin/python"), "-c", probe],
        env=clean_env(), cwd=partner_venv, capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0.1.0"


def test_installed_cli_version_help_and_exit_codes(partner_cli: Run, mesh) -> None:  # type: ignore[no-untyped-def]
    version = partner_cli("--version")
    assert version.returncode == 0 and version.stdout.strip() == "molbridge 0.1.0", version
    bare = partner_cli()
    assert bare.returncode == 0 and "usage: molbridge" in bare.stdout and "Exit codes:" in bare.stdout

    assert partner_cli("whoami").returncode == 3  # not logged in yet: authentication

    login = partner_cli("login", "--email", mesh.admin_email)
    assert login.returncode == 0, login.stderr
    assert f"as {mesh.admin_email} (system_admin)" in login.stdout

    listed = partner_cli("users", "list", "--output", "csv", "--sort", "email")
    assert listed.returncode == 0, listed.stderr
    rows = list(csv.reader(io.StringIO(listed.stdout)))
    assert rows[0] == ["ID", "EMAIL", "NAME", "ROLES", "ACTIVE", "MFA"]
    assert mesh.admin_email in [row[1] for row in rows[1:]]

    missing = partner_cli("molecules", "get", str(uuid.uuid4()))
    assert missing.returncode == 5, missing  # not found
    assert "RESOURCE_NOT_FOUND" in missing.stderr

    weak = partner_cli(
        "users", "create", "--email", f"w-{uuid.uuid4().hex[:8]}@cli.test", "--name", "W", "--password", "weak"
    )
    assert weak.returncode == 6 and "VALIDATION_ERROR" in weak.stderr, weak  # validation

    absent = partner_cli("--target", "127.0.0.1:9", "login", "--email", mesh.admin_email)  # nothing listens
    assert absent.returncode == 9, absent  # unavailable

    assert partner_cli("trace", "0" * 32).returncode == 1  # a dev-checkout command: a message, no traceback


def test_partner_client_pages_and_typed_errors(partner_venv: Path, mesh) -> None:  # type: ignore[no-untyped-def]
    script = textwrap.dedent(
        """
        import os, uuid
        from molbridge.identity.v1 import identity_service_pb2 as identity
        from molbridge.molecule.v1 import molecule_service_pb2 as molecules
        from molbridge_client import AuthenticationError, Client, NotFoundError

        with Client(os.environ["TARGET"]) as client:
            try:
                client.login(os.environ["EMAIL"], "not-the-password")
                raise SystemExit("a wrong password logged in")
            except AuthenticationError as err:
                assert err.reason == "AUTHENTICATION_ERROR", err
            user = client.login(os.environ["EMAIL"], os.environ["PASSWORD"])
            for _ in range(2):  # so that paging by one takes several pages
                client.call(client.identity.CreateUser, identity.CreateUserRequest(
                    email=f"page-{uuid.uuid4().hex[:8]}@cli.test", full_name="Pager", password="Cli-Strong-Pass-42!",
                    roles=["auditor"], request_id=str(uuid.uuid4())))
            first = client.call(client.identity.ListUsers, identity.ListUsersRequest(page_size=1))
            by_one = identity.ListUsersRequest(page_size=1)
            emails = [u.email for u in client.paginate(client.identity.ListUsers, by_one)]
            assert len(emails) == first.meta.total >= 3 and len(set(emails)) == len(emails), (emails, first.meta)
            assert user.email in emails
            try:
                client.call(client.molecules.GetMolecule, molecules.GetMoleculeRequest(id=str(uuid.uuid4())))
                raise SystemExit("an unknown molecule was found")
            except NotFoundError as err:
                assert err.reason == "RESOURCE_NOT_FOUND", err
        print(f"ok {len(emails)}")
        """
    )
    env = clean_env(TARGET=mesh.grpc_target, EMAIL=mesh.admin_email, PASSWORD=mesh.admin_password)
    done = subprocess.run(
        [str(partner_venv / "bin/python"), "-c", script],
        env=env, cwd=partner_venv, capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("ok ")


def test_readme_example_runs_in_the_partner_venv(partner_venv: Path, mesh) -> None:  # type: ignore[no-untyped-def]
    env = clean_env(
        MOLBRIDGE_TARGET=mesh.grpc_target, MOLBRIDGE_EMAIL=mesh.admin_email, MOLBRIDGE_PASSWORD=mesh.admin_password
    )
    done = subprocess.run(
        [str(partner_venv / "bin/python"), str(REPO / "clients/python/example.py")],
        env=env, cwd=partner_venv, capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"logged in as {mesh.admin_email}" in done.stdout
    assert any(line.startswith(f"{mesh.admin_email}\t") for line in done.stdout.splitlines()), done.stdout
    assert "as expected, no such molecule: RESOURCE_NOT_FOUND" in done.stdout
