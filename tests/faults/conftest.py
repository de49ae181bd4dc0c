"""Fault modules: each runs a whole mesh of its own (its own PostgreSQL, NATS, engine, DocuSign peer, SMTP
listener) that it may crash, with a webhook receiver and the workload of workload.py."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Mesh, running_mesh
from tests.faults.workload import Workload
from tests.webhook_receiver import WebhookReceiver

# Rows of the import under faults (molsets structures); `make faults` takes 20,000, MOLBRIDGE_FAULTS_ROWS
# changes it. Chunks of 1,000 rows: a crash lands in the middle of many work items.
ROWS = int(os.environ.get("MOLBRIDGE_FAULTS_ROWS", "20000"))
CHUNK_ROWS = "1000"


@pytest.fixture(scope="module")
def fault_mesh(server_tmp_root: Path) -> Iterator[Mesh]:
    # Under server_tmp_root: PostgreSQL runs as another user when we are root (see tests/conftest.py).
    root = Path(tempfile.mkdtemp(dir=server_tmp_root))
    root.chmod(0o711)
    (root / "docusign").mkdir()
    with running_mesh(root / "mesh", root / "docusign", database_url=None,
                      extra_env={"MOLBRIDGE_IMPORT_CHUNK_ROWS": CHUNK_ROWS}) as mesh:
        yield mesh


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as started:
        yield started


@pytest.fixture(scope="module")
def workload(fault_mesh: Mesh, receiver: WebhookReceiver) -> Iterator[Workload]:
    running = Workload(fault_mesh, receiver, ROWS)
    try:
        yield running
    finally:
        running.api.close()
