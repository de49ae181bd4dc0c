"""The CSV worker: `python -m services.molecule.worker`. Any number run, on any machines.

Each takes ImportChunkRequested messages from the WORK stream's csv_chunks queue (one durable
consumer shared by all workers, so each chunk goes to one of them), reads the chunk's byte range
from object storage, evaluates its rows on a process pool that uses every core (RDKit is ~95% of
the work), and writes the outcome in one transaction: registration (store/registration.py), rejected
rows, the import_chunks row, and the job's counters — and, with the last chunk, the job's end (SQL in
store/import_chunks.py, on the molecule unit of work).

Exactly once on an at-least-once bus: a chunk's effects and its import_chunks row commit together,
and the transaction starts by claiming that row, so a redelivered chunk (a worker killed after the
commit but before the ack, a NATS restart) finds it and changes nothing; one redelivered while the
first copy is still running waits for it, then stops. Provenance is also unique per (job, row).

reject_all runs in two passes: every chunk is validated first (phase "validate": rejections are
recorded, the RDKit results kept in import_chunks.results, nothing registered); the chunk that
completes validation either fails the job (any rejection) or publishes one "commit" message, whose
handler registers every chunk from the kept results in ONE transaction. So nothing is registered
unless every row is valid, and a cancel before that transaction commits leaves nothing behind.
Keeping the results (domain/imports.encode_valid) avoids running RDKit twice; recomputing would
double the CPU of a reject_all import for about 1 MB of bytea per 5,000-row chunk saved.

Failures: a chunk that can never succeed (its byte range no longer holds the planned rows, the
file is gone) fails its job at once with the reason; any other error is retried with backoff and,
on the last delivery, fails the job the same way. A chemistry process that dies (a crash inside
RDKit) is replaced and the chunk retried. The worker itself never stops for a bad chunk.
"""

from __future__ import annotations

import asyncio
import logging
import math
import multiprocessing
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from molbridge.events.v1.envelope_pb2 import EventEnvelope
from molbridge.events.v1.molecule_pb2 import ImportChunkRequested, PredictionRequested
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from bus.consumer import Consumer, PoisonError, TransientError
from bus.envelope import unpack
from bus.streams import WORK_STREAM
from bus.subjects import work_subject
from services.molecule.domain.audit import import_ended
from services.molecule.domain.events import MOLECULES_PER_EVENT, molecules_changed
from services.molecule.domain.imports import (
    ChunkCounts,
    ColumnPlan,
    ImportJob,
    JobStatus,
    Phase,
    RowError,
    StructureRow,
    decode_valid,
    encode_valid,
    evaluate_rows,
)
from services.molecule.domain.uploads import upload_object_key
from services.molecule.service.import_jobs import CSV_QUEUE
from services.molecule.store.uow import MoleculeTransactions, MoleculeUnitOfWork
from services.runtime import csv_format
from services.runtime.errors import IntegrationError, NotFoundError
from services.runtime.storage import ObjectStorage

log = logging.getLogger("molbridge.molecule.worker")

MIGRATIONS = Path(__file__).parents[1] / "migrations"
SUB_BATCH_ROWS = 250  # rows per process-pool task: small enough to balance two chunks over the cores
IN_FLIGHT = 2  # chunks per worker: one in PostgreSQL while the next is in RDKit
ACK_WAIT_S = 10.0  # a killed worker's chunk goes to another worker after this long
MAX_DELIVER = 5
BACKOFF_S = (1.0, 5.0, 15.0, 30.0)
MAX_REASON_LENGTH = 500


def durable_name(queue: str) -> str:
    """The consumer every worker of a queue shares: "molecule-csv-chunks" for the default queue."""
    return "molecule-" + queue.replace("_", "-")


class ChunkFailure(Exception):
    """A chunk that can never be processed: its job fails at once with `reason`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _JobStopped(Exception):
    """The job ended (cancelled, failed) while the chunk was in flight: its transaction rolls back."""


class RowPool:
    """The worker's chemistry processes, created once and replaced if one of them dies."""

    def __init__(self, processes: int) -> None:
        self.processes = max(1, processes)
        # forkserver: children start from a clean process that has imported RDKit once, not from a
        # fork of this one (threads and an event loop do not survive a fork).
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(["services.molecule.domain.imports"])
        self._executor = self._new()

    def _new(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.processes, mp_context=self._context)

    async def warm(self) -> None:
        """Start every process now rather than on the first chunk."""
        loop = asyncio.get_running_loop()
        plan = ColumnPlan((0,), False, ())
        await asyncio.gather(
            *(
                loop.run_in_executor(self._executor, evaluate_rows, plan, [(1, ("C",))])
                for _ in range(self.processes)
            )
        )

    async def evaluate(
        self, plan: ColumnPlan, rows: Sequence[tuple[int, tuple[str, ...]]]
    ) -> list[StructureRow | RowError]:
        executor = self._executor
        loop = asyncio.get_running_loop()
        size = max(1, min(SUB_BATCH_ROWS, math.ceil(len(rows) / self.processes)))
        try:
            parts = await asyncio.gather(
                *(
                    loop.run_in_executor(executor, evaluate_rows, plan, rows[start : start + size])
                    for start in range(0, len(rows), size)
                )
            )
        except BrokenProcessPool:
            if self._executor is executor:  # the other chunk in flight may have replaced it already
                executor.shutdown(wait=False, cancel_futures=True)
                self._executor = self._new()
            raise TransientError("a chemistry process died; the chunk will be retried") from None
        return [result for part in parts for result in part]

    def pids(self) -> list[int]:
        """The chemistry processes running now (for operators and tests)."""
        return [process.pid for process in (self._executor._processes or {}).values() if process.pid]

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


class ChunkWorker:
    def __init__(
        self,
        uow: MoleculeTransactions,
        storage: ObjectStorage,
        pool: RowPool,
        *,
        queue: str = CSV_QUEUE,
        limits: csv_format.CsvLimits | None = None,
        max_deliver: int = MAX_DELIVER,
    ) -> None:
        self._uow = uow
        self._storage = storage
        self._pool = pool
        self._limits = limits or csv_format.CsvLimits()
        self._queue = queue
        self.subject = work_subject(queue)
        self.max_deliver = max_deliver

    async def handle(self, envelope: EventEnvelope, msg: Msg) -> None:
        """The Consumer's handler: process, and fail the job when the chunk cannot succeed."""
        try:
            request = unpack(envelope, ImportChunkRequested)
        except TypeError as error:
            raise PoisonError(str(error)) from error
        try:
            await self.process(request)
        except (ChunkFailure, PoisonError) as failure:
            await self._fail(request, str(failure))
        except Exception as error:  # transient ones too: a job must not wait forever for a chunk
            if msg.metadata.num_delivered < self.max_deliver:
                raise
            log.exception(
                "chunk %d of job %s failed on its last delivery", request.chunk_index, request.job_id
            )
            attempts = msg.metadata.num_delivered
            await self._fail(request, f"failed {attempts} times, last with {type(error).__name__}: {error}")

    async def process(self, request: ImportChunkRequested) -> None:
        """One chunk message, start to finish; running it again for the same message changes nothing."""
        try:
            phase = Phase(request.phase or Phase.REGISTER)
        except ValueError:
            raise PoisonError(f"unknown phase {request.phase!r}") from None
        async with self._uow() as uow:
            job = await uow.import_jobs.get(request.job_id)
            done = (
                job is not None
                and phase is not Phase.COMMIT
                and await uow.import_chunks.done(job.id, request.chunk_index, phase)
            )
        if job is None:
            log.warning("chunk %d of unknown job %s dropped", request.chunk_index, request.job_id)
            return
        if job.status.terminal or done:
            return
        try:
            if phase is Phase.COMMIT:
                await self._commit(job)
                return
            started = time.perf_counter()
            async with self._uow() as uow:
                await uow.import_chunks.mark_started(job.id)
            rows = await asyncio.to_thread(self._read, job, request)
            read = time.perf_counter()
            valid, rejected = await self._evaluate(job, rows)
            evaluated = time.perf_counter()
            if phase is Phase.VALIDATE:
                await self._save_validation(job, request, valid, rejected)
            else:
                await self._save_registration(job, request, valid, rejected)
            log.info(
                "job %s chunk %d (%s): %d rows in %.2f s (read %.2f, chemistry %.2f, write %.2f)",
                job.id,
                request.chunk_index,
                phase.value,
                len(rows),
                time.perf_counter() - started,
                read - started,
                evaluated - read,
                time.perf_counter() - evaluated,
            )
        except _JobStopped:
            log.info(
                "job %s ended while chunk %d was in flight; its work was discarded",
                job.id,
                request.chunk_index,
            )

    # --- steps --------------------------------------------------------------------------------------------

    def _read(
        self, job: ImportJob, request: ImportChunkRequested
    ) -> list[csv_format.Row | csv_format.RejectedRow]:
        chunk = csv_format.Chunk(
            request.chunk_index,
            request.byte_start,
            request.byte_end,
            request.first_row_number,
            request.row_count,
        )
        key = upload_object_key(job.organization_id, job.storage_key)
        try:
            with self._storage.read_range(key, chunk.byte_start, chunk.byte_end) as stream:
                return list(
                    csv_format.read_chunk(
                        stream, chunk, job.dialect, columns=len(job.headers), limits=self._limits
                    )
                )
        except csv_format.CsvFormatError as error:
            raise ChunkFailure(error.message) from error
        except NotFoundError:
            raise ChunkFailure("the uploaded file is no longer in storage") from None
        except IntegrationError as error:
            raise TransientError(error.message) from error

    async def _evaluate(
        self, job: ImportJob, rows: list[csv_format.Row | csv_format.RejectedRow]
    ) -> tuple[list[StructureRow], list[csv_format.RejectedRow]]:
        plan = ColumnPlan.of(job.headers, job.mapping)
        readable = [row for row in rows if isinstance(row, csv_format.Row)]
        results = await self._pool.evaluate(
            plan, [(row.row_number, plan.project(row.cells)) for row in readable]
        )
        cells = {row.row_number: row.cells for row in readable}
        valid = [result for result in results if isinstance(result, StructureRow)]
        rejected = [row for row in rows if isinstance(row, csv_format.RejectedRow)]
        rejected += [
            csv_format.RejectedRow(result.row_number, cells[result.row_number], result.reason)
            for result in results
            if isinstance(result, RowError)
        ]
        return valid, rejected

    async def _save_registration(
        self,
        job: ImportJob,
        request: ImportChunkRequested,
        valid: list[StructureRow],
        rejected: list[csv_format.RejectedRow],
    ) -> None:
        async with self._uow() as uow:
            if not await uow.import_chunks.claim(job.id, request.chunk_index, Phase.REGISTER):
                return
            created = await _register(uow, job, valid)
            await uow.import_chunks.save_rejections(job.id, rejected)
            counts = ChunkCounts.of(len(rejected), created)
            await uow.import_chunks.record(job.id, request.chunk_index, Phase.REGISTER, counts)
            progress = await _advance(uow, job.id, counts, chunks=1)
            if progress.chunks_done == progress.chunk_count:
                await self._complete(uow, job)

    async def _save_validation(
        self,
        job: ImportJob,
        request: ImportChunkRequested,
        valid: list[StructureRow],
        rejected: list[csv_format.RejectedRow],
    ) -> None:
        # Results are kept only while the job can still succeed: one rejection anywhere and it will fail.
        results = await asyncio.to_thread(encode_valid, valid) if not rejected else None
        async with self._uow() as uow:
            if not await uow.import_chunks.claim(job.id, request.chunk_index, Phase.VALIDATE):
                return
            await uow.import_chunks.save_rejections(job.id, rejected)
            counts = ChunkCounts.of(len(rejected), [False] * len(valid))
            await uow.import_chunks.record(job.id, request.chunk_index, Phase.VALIDATE, counts, results=results)
            progress = await _advance(uow, job.id, ChunkCounts(counts.processed, rejected=counts.rejected))
            if progress.processed_rows < progress.total_rows:
                return
            if progress.rejected:
                reason = (
                    f"{progress.rejected:,} of {progress.total_rows:,} rows were rejected; in reject_all mode"
                    " nothing is registered (see the error report)"
                )
                await _end(uow, job, JobStatus.FAILED, reason=reason)
                return
            uow.enqueue(
                self._queue,
                ImportChunkRequested(job_id=job.id, phase=Phase.COMMIT.value),
                organization_id=job.organization_id,
                actor_id=job.created_by,
            )

    async def _commit(self, job: ImportJob) -> None:
        """reject_all, second pass: every chunk from its validated results, in one transaction."""
        async with self._uow() as uow:
            total = ChunkCounts()
            for index in range(job.chunk_count):
                if not await uow.import_chunks.claim(job.id, index, Phase.REGISTER):
                    if index == 0:  # committed already, by an earlier delivery of this message
                        return
                    raise RuntimeError(f"chunk {index + 1} of job {job.id} was registered outside its commit")
                stored = await uow.import_chunks.kept_results(job.id, index)
                if stored is None:
                    raise ChunkFailure(f"the validated rows of chunk {index + 1} are missing")
                valid = await asyncio.to_thread(decode_valid, stored)
                counts = ChunkCounts.of(0, await _register(uow, job, valid))
                await uow.import_chunks.record(job.id, index, Phase.REGISTER, counts)
                total += counts
            # Rows were counted as processed by the validation pass.
            await _advance(uow, job.id, ChunkCounts(0, total.registered, total.merged), chunks=job.chunk_count)
            await self._complete(uow, job)

    async def _complete(self, uow: MoleculeUnitOfWork, job: ImportJob) -> None:
        await _end(uow, job, JobStatus.COMPLETED)
        if not job.predict:
            return
        # The structures travel with the request: the prediction service does not read this schema.
        structures = await uow.import_chunks.imported_structures(job.id)
        for start in range(0, len(structures), MOLECULES_PER_EVENT):
            part = structures[start : start + MOLECULES_PER_EVENT]
            uow.record(
                PredictionRequested(
                    organization_id=job.organization_id,
                    requested_by=job.created_by,
                    molecule_ids=[m.molecule_id for m in part],
                    properties=list(job.predict),
                    reason=f"import:{job.id}",
                    molecules=part,
                ),
                organization_id=job.organization_id,
                actor_id=job.created_by,
            )

    async def _fail(self, request: ImportChunkRequested, reason: str) -> None:
        where = (
            "the final registration"
            if request.phase == Phase.COMMIT.value
            else f"chunk {request.chunk_index + 1} (rows {request.first_row_number:,}"
            f"–{request.first_row_number + request.row_count - 1:,})"
        )
        message = f"{where}: {reason}"[:MAX_REASON_LENGTH]
        async with self._uow() as uow:
            job = await uow.import_jobs.get(request.job_id, lock=True)
            if job is not None and await _end(uow, job, JobStatus.FAILED, reason=message):
                log.error("import %s failed: %s", job.id, message)


# --- helpers -----------------------------------------------------------------------------------------------


async def _register(uow: MoleculeUnitOfWork, job: ImportJob, valid: list[StructureRow]) -> list[bool]:
    """Register a chunk's valid rows for the job (MoleculesChanged tells every replica's indexes); per row,
    whether it created its molecule."""
    result = await uow.molecules.register(
        valid, organization_id=job.organization_id, actor_id=job.created_by, job_id=job.id, library_id=job.library_id
    )
    for event in molecules_changed(job.organization_id, result.molecule_ids):
        uow.record(event, organization_id=job.organization_id, actor_id=job.created_by)
    return [outcome.registered for outcome in result.outcomes]


async def _advance(uow: MoleculeUnitOfWork, job_id: str, counts: ChunkCounts, *, chunks: int = 0) -> Any:
    """Add a chunk's counts to its job; raises _JobStopped (rolling the chunk back) if the job has ended."""
    progress = await uow.import_chunks.advance(job_id, counts, chunks=chunks)
    if progress is None:
        raise _JobStopped
    return progress


async def _end(uow: MoleculeUnitOfWork, job: ImportJob, status: JobStatus, *, reason: str = "") -> bool:
    """Ends an active job and records ImportFinished and its audit event (by its creator: the worker acts
    for whoever started the import); False if it had ended already."""
    finished = await uow.import_jobs.end(job, status, reason=reason)
    if finished is not None:
        uow.record(finished, organization_id=job.organization_id, actor_id=job.created_by)
        uow.record(import_ended(finished, reason), organization_id=job.organization_id, actor_id=job.created_by)
    return finished is not None


# --- the process ----------------------------------------------------------------------------------


def chunk_consumer(js: JetStreamContext, *, worker: ChunkWorker, queue: str) -> Consumer:
    """A consumer of the queue's one durable (shared by every worker process: a chunk goes to one of
    them); a process runs IN_FLIGHT. A Consumer rather than a Subscription: `handle` needs the delivery
    count, to fail the job when a chunk fails on its last delivery (else the job would wait forever)."""
    return Consumer(
        js,
        WORK_STREAM,
        durable_name(queue),
        worker.subject,
        worker.handle,
        max_deliver=MAX_DELIVER,
        backoff=BACKOFF_S,
        batch=1,
        ack_wait=ACK_WAIT_S,
    )
