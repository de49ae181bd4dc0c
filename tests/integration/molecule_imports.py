"""Shared by the molecule import tests: a migrated database, uploads, jobs, in-process and real workers.

Each test gets its own database and its own work queue (MOLBRIDGE_CSV_QUEUE), so its chunks are its
own on the shared nats-server.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import importlib.util
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from bus import WORK_STREAM, Consumer, OutboxRelay, connect, ensure_streams
from services.molecule.domain.imports import ImportJob
from services.molecule.service.import_jobs import ImportJobService
from services.molecule.service.uploads import ImportLimits, StoredUpload, UploadService
from services.molecule.store.tables import SCHEMA
from services.molecule.store.uow import molecule_transactions
from services.molecule.worker.chunks import MIGRATIONS, ChunkWorker, RowPool, durable_name
from services.runtime import migrations
from services.runtime.auth import Principal
from services.runtime.db import make_engine
from services.runtime.settings import REPO_ROOT
from services.runtime.storage import LocalStorage, ObjectStorage


def scientist(organization_id: str | None = None, *roles: str) -> Principal:
    return Principal(
        subject=str(uuid.uuid4()),
        organization_id=organization_id or str(uuid.uuid4()),
        organization_kind="PHARMA",
        roles=frozenset(roles or ("pharma_scientist",)),
    )


def molsets_smiles(count: int) -> list[str]:
    """The first `count` SMILES of the molsets (MOSES) training set: real, clean, drug-like."""
    spec = importlib.util.find_spec("moses")
    assert spec is not None and spec.submodule_search_locations, "pip install --no-deps molsets==0.3.1"
    path = Path(next(iter(spec.submodule_search_locations))) / "dataset" / "data" / "train.csv.gz"
    smiles: list[str] = []
    with gzip.open(path, "rt") as lines:
        next(lines)
        for line in lines:
            smiles.append(line.split(",", 1)[0].strip())
            if len(smiles) == count:
                return smiles
    raise AssertionError(f"molsets has fewer than {count} rows")


def csv_bytes(header: Sequence[str], rows: Sequence[Sequence[str]]) -> bytes:
    import csv
    import io

    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode()


@dataclass
class ImportWorld:
    database_url: str
    nats_url: str
    data_dir: Path
    engine: AsyncEngine
    storage: ObjectStorage
    uploads: UploadService
    queue: str

    def jobs(self, rows_per_chunk: int = 1000) -> ImportJobService:
        return ImportJobService(
            molecule_transactions(self.engine),
            self.storage,
            self.uploads,
            public_url="http://gw.test",
            queue=self.queue,
            rows_per_chunk=rows_per_chunk,
        )

    async def upload(self, who: Principal, content: bytes, filename: str = "molecules.csv") -> StoredUpload:
        async def pieces() -> AsyncIterator[bytes]:
            for start in range(0, len(content), 64 * 1024):
                yield content[start : start + 64 * 1024]

        return await self.uploads.upload(
            who, "text/csv", pieces(), disposition=f'attachment; filename="{filename}"'
        )

    async def start(
        self,
        who: Principal,
        content: bytes,
        mapping: Mapping[str, str],
        *,
        mode: str = "keep_valid",
        library_id: str = "",
        predict: Sequence[str] = (),
        rows_per_chunk: int = 1000,
        filename: str = "molecules.csv",
    ) -> ImportJob:
        upload = await self.upload(who, content, filename)
        return await self.jobs(rows_per_chunk).start_import(
            who, upload.storage_key, mapping, mode, library_id, predict, ""
        )

    async def wait(self, who: Principal, job_id: str, *, within: float = 120.0) -> ImportJob:
        """The job once it has ended (polls; the cap only turns a hang into a failure)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        jobs = self.jobs()
        while True:
            job = await jobs.get_import(who, job_id)
            if job.status.terminal:
                return job
            if loop.time() > deadline:
                raise AssertionError(f"import {job_id} still {job.status} after {within} s: {job}")
            await asyncio.sleep(0.1)

    async def until(self, who: Principal, job_id: str, predicate: Any, *, within: float = 120.0) -> ImportJob:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        jobs = self.jobs()
        while True:
            job = await jobs.get_import(who, job_id)
            if predicate(job):
                return job
            if job.status.terminal or loop.time() > deadline:
                raise AssertionError(f"import {job_id} never got there: {job}")
            await asyncio.sleep(0.05)

    async def scalar(self, statement: str, **params: Any) -> Any:
        async with self.engine.connect() as conn:
            return (await conn.execute(sa.text(statement), params)).scalar()

    async def rows(self, statement: str, **params: Any) -> list[Any]:
        async with self.engine.connect() as conn:
            return list((await conn.execute(sa.text(statement), params)).all())

    async def execute(self, statement: str, **params: Any) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(sa.text(statement), params)

    async def drained(self, *, within: float = 120.0) -> None:
        """Wait until every message of the world's queue has been taken and settled."""
        nc = await connect(self.nats_url, name="import-tests")
        try:
            js = nc.jetstream()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + within
            while True:
                info = await js.consumer_info(WORK_STREAM, durable_name(self.queue))
                if info.num_pending == 0 and info.num_ack_pending == 0:
                    return
                if loop.time() > deadline:
                    raise AssertionError(f"queue {self.queue} not drained: {info}")
                await asyncio.sleep(0.1)
        finally:
            await nc.close()

    def worker_env(self) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("MOLBRIDGE_", "S3_", "OTEL_"))}
        return keep | {
            "DATABASE_URL": self.database_url,
            "NATS_URL": self.nats_url,
            "MOLBRIDGE_DATA_DIR": str(self.data_dir),
            "MOLBRIDGE_CSV_QUEUE": self.queue,
            "MOLBRIDGE_CSV_PROCESSES": "2",
            "MOLBRIDGE_LOG_LEVEL": "INFO",
        }

    @contextlib.contextmanager
    def worker_process(self, name: str = "worker") -> Iterator[subprocess.Popen[bytes]]:
        """`python -m services.molecule.worker` in its own process group (killed with its pool)."""
        log = open(self.data_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed below
        process = subprocess.Popen(
            [sys.executable, "-m", "services.molecule.worker"],
            cwd=REPO_ROOT,
            env=self.worker_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            kill_group(process, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                kill_group(process, signal.SIGKILL)
                process.wait(10)
            log.close()


def kill_group(process: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


def world_fixture() -> Any:
    """The `world` fixture of a test module: `world = world_fixture()`."""

    @pytest.fixture
    async def world(database_url: str, nats_server: Any, tmp_path: Path) -> AsyncIterator[ImportWorld]:
        async with import_world(database_url, nats_server.url, tmp_path) as built:
            yield built

    return world


@contextlib.asynccontextmanager
async def import_world(
    database_url: str, nats_url: str, data_dir: Path, storage: ObjectStorage | None = None
) -> AsyncIterator[ImportWorld]:
    """A migrated database and the upload and job services; storage defaults to a directory under
    `data_dir`, where a worker started with MOLBRIDGE_DATA_DIR=data_dir looks for it."""
    await asyncio.to_thread(migrations.upgrade, database_url, SCHEMA, MIGRATIONS)
    engine = make_engine(database_url, SCHEMA)
    storage = storage or LocalStorage(data_dir / "objects")
    try:
        yield ImportWorld(
            database_url,
            nats_url,
            data_dir,
            engine,
            storage,
            UploadService(molecule_transactions(engine), storage, ImportLimits()),
            f"csv_t{uuid.uuid4().hex[:12]}",
        )
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def pipeline(
    world: ImportWorld, pool: RowPool, *, max_deliver: int = 5, backoff: Sequence[float] = (0.2,)
) -> AsyncIterator[tuple[ChunkWorker, Consumer]]:
    """An in-process worker and outbox relay on the world's queue."""
    nc = await connect(world.nats_url, name="import-tests")
    js = nc.jetstream()
    await ensure_streams(js)
    worker = ChunkWorker(
        molecule_transactions(world.engine), world.storage, pool, queue=world.queue, max_deliver=max_deliver
    )
    consumer = Consumer(
        js,
        WORK_STREAM,
        durable_name(world.queue),
        worker.subject,
        worker.handle,
        max_deliver=max_deliver,
        backoff=backoff,
        batch=1,
        ack_wait=10,
        fetch_timeout=0.25,
    )
    relay = OutboxRelay(world.engine, SCHEMA, js, poll_interval=0.2)
    tasks = [asyncio.create_task(runner.run()) for runner in (consumer, relay)]
    try:
        yield worker, consumer
    finally:
        consumer.stop()
        relay.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
        await nc.close()
