"""Test harness: real PostgreSQL, NATS, SMTP and, for end-to-end tests, the whole mesh behind Envoy.

Fixtures
- postgres_server (session): `.url` (admin URL, database `postgres`), `.create_database(name=None)`.
- database_url: URL of a fresh, empty database (dropped after the test).
- nats_server (session): `.url`, `.stop()`, `.start()`, `.restart()` (same port, JetStream store kept).
- mesh (session): the whole stack on free ports in a temp dir, see `Mesh` (rate limits scaled up:
  tests share one admin and one client address; `mesh.extra_gateway` gives a gateway with others).
  Its document service talks to a local DocuSign eSignature peer (`mesh.docusign`, tests/docusign_server.py)
  whose Connect callbacks go to the gateway's webhook route, signed with MESH_DOCUSIGN_CONNECT_SECRET.
- server_tmp_path: a directory for a test that starts its own PostgreSQL.
Everything runs as our own child processes (stack/) and is stopped at session end.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, cast

import pytest
from aiosmtpd.controller import Controller

from stack.mesh import Stack, StackSettings
from stack.nats import NatsServer
from stack.ports import free_port
from stack.postgres import PostgresServer
from tests.docusign_server import DocuSignServer

ADMIN_EMAIL = "admin@molbridge.test"
ADMIN_PASSWORD = "Mesh-Admin-Passw0rd!"
MESH_RATE_LIMIT_SCALE = "100"
# Import limits of the mesh, below the defaults (100 MiB, 500,000 rows) so that end-to-end tests can
# cross them through the gateway without sending 100 MiB.
MESH_MAX_UPLOAD_BYTES = 32 * 1024 * 1024
MESH_MAX_IMPORT_ROWS = 200_000
# The document service's upload limit in the mesh (default 50 MiB), and an expiry sweep every second.
MESH_DOCUMENT_MAX_BYTES = 4 * 1024 * 1024
MESH_DOCUSIGN_CONNECT_SECRET = "mesh-docusign-connect-secret"
WEBHOOK_PATH = "/api/v1/documents/signature/webhook"


@pytest.fixture(scope="session")
def server_tmp_root() -> Iterator[Path]:
    """Root for the data of servers that run as another user (PostgreSQL runs as
    `embedded_postgres` when we are root). Not under pytest's basetemp: every pytest session that
    starts chmods /tmp/pytest-of-<user> back to 0700, which would lock that user out mid-run."""
    root = Path(tempfile.mkdtemp(prefix="molbridge-test-"))
    root.chmod(0o711)  # traversable, not listable
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def server_tmp_path(server_tmp_root: Path) -> Path:
    """A fresh directory for a test that starts its own PostgreSQL (see server_tmp_root)."""
    path = Path(tempfile.mkdtemp(dir=server_tmp_root))
    path.chmod(0o711)
    return path


@pytest.fixture(scope="session")
def postgres_server(server_tmp_root: Path) -> Iterator[PostgresServer]:
    root = server_tmp_root / "postgres"
    server = PostgresServer(root / "data", log_path=root / "postgres.log", ephemeral=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def database_url(postgres_server: PostgresServer) -> Iterator[str]:
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url.rsplit("/", 1)[1])


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    root = tmp_path_factory.mktemp("nats")
    server = NatsServer(root / "store", log_path=root / "nats.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


class SmtpCollector:
    """aiosmtpd handler: every message received is parsed and appended to `messages`."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content, policy=policy.default)
        self.messages.append(cast(EmailMessage, message))
        return "250 Message accepted for delivery"


class Mesh(Stack):
    """The running mesh as end-to-end tests see it: everything of `Stack` (gateway_url,
    grpc_target, admin_url, data_dir, logs_dir, service_addr(name), env, extra_gateway(name, env), …)
    plus the admin's credentials and the mailbox of the SMTP listener."""

    def __init__(self, settings: StackSettings, mailbox: list[EmailMessage], docusign: DocuSignServer) -> None:
        super().__init__(settings)
        self.mailbox = mailbox
        self.docusign = docusign
        self.admin_email = ADMIN_EMAIL
        self.admin_password = ADMIN_PASSWORD

    def restart_service(self, name: str) -> None:
        self.restart(name)

    async def wait_for_mail(self, to: str, *, after: int = 0, timeout: float = 10.0) -> EmailMessage:
        """The first message to `to` among mailbox[after:], waiting for it to arrive."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for message in self.mailbox[after:]:
                if to.lower() in str(message.get("To", "")).lower():
                    return message
            if loop.time() > deadline:
                raise AssertionError(f"no mail to {to} within {timeout} s; mailbox: "
                                     f"{[str(m.get('To')) for m in self.mailbox]}")
            await asyncio.sleep(0.05)


@contextmanager
def running_mesh(data_dir: Path, docusign_dir: Path, *, database_url: str | None,
                 extra_env: Mapping[str, str] | None = None) -> Iterator[Mesh]:
    """The whole mesh (engine, DocuSign peer, SMTP listener) on free ports under `data_dir`; with
    `database_url` None it runs a PostgreSQL of its own (a stack that can crash its database)."""
    collector = SmtpCollector()
    smtp = Controller(collector, hostname="127.0.0.1", port=free_port())
    smtp.start()
    docusign = DocuSignServer(docusign_dir)
    docusign.start()
    try:
        settings = StackSettings.isolated(
            data_dir,
            database_url=database_url,
            env=os.environ,
            extra_env={
                "MOLBRIDGE_ADMIN_EMAIL": ADMIN_EMAIL,
                "MOLBRIDGE_ADMIN_PASSWORD": ADMIN_PASSWORD,
                "SMTP_URL": f"smtp://127.0.0.1:{smtp.port}",
                # One admin and one client address (127.0.0.1) serve the whole session: with the
                # real limits, tests would throttle each other. A test of the limits themselves
                # runs its own gateway: mesh.extra_gateway("strict", {"MOLBRIDGE_RATE_LIMIT_SCALE": "1"}).
                "MOLBRIDGE_RATE_LIMIT_SCALE": MESH_RATE_LIMIT_SCALE,
                "MOLBRIDGE_MAX_UPLOAD_BYTES": str(MESH_MAX_UPLOAD_BYTES),
                "MOLBRIDGE_MAX_IMPORT_ROWS": str(MESH_MAX_IMPORT_ROWS),
                "MOLBRIDGE_DOCUMENT_MAX_BYTES": str(MESH_DOCUMENT_MAX_BYTES),
                "MOLBRIDGE_DOCUMENT_EXPIRY_SWEEP_S": "1",
                **docusign.environ(DOCUSIGN_CONNECT_SECRETS=MESH_DOCUSIGN_CONNECT_SECRET),
                **(extra_env or {}),
            },
        )
        docusign.configure_connect(f"http://127.0.0.1:{settings.gateway_port}{WEBHOOK_PATH}",
                                   MESH_DOCUSIGN_CONNECT_SECRET)
        running = Mesh(settings, collector.messages, docusign)
        running.start()
        try:
            yield running
        finally:
            running.stop()
    finally:
        docusign.stop()
        smtp.stop()


@pytest.fixture(scope="session")
def mesh(tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer) -> Iterator[Mesh]:
    with running_mesh(tmp_path_factory.mktemp("mesh"), tmp_path_factory.mktemp("docusign"),
                      database_url=postgres_server.create_database("mesh")) as running:
        yield running
