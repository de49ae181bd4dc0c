"""Substructure matching in worker processes that can be killed: RDKit's matcher cannot be interrupted, and
some pairs of structures (large fused ring systems against each other) keep it busy for minutes.

StructureMatcher keeps a small pool of processes (forkserver context, RDKit preloaded, so a replacement
starts in milliseconds). A search borrows one worker for its whole scan and sends it chunks of candidate
SMILES; each chunk must be answered by the search's deadline, or the worker is killed and replaced and the
search ends `timed_out` (the API answers `truncated`); a worker that crashed is replaced the same way. A
client that gives up (cancellation) also kills the worker it held, so nothing keeps computing for nobody.
Killed workers are reaped and replaced in the background: the answer does not wait for that.

Bounds: at most MOLBRIDGE_SEARCH_MATCH_WORKERS (2) matches run at once in the whole service, and at most
MOLBRIDGE_SEARCH_MATCH_WORKERS_PER_ORG (1) for one organization, so one organization cannot hold every
worker. Waiting for a worker counts against the search's budget. The event loop only waits: sends and
receives run on the matcher's own threads (one per worker), never on the default executor other calls use.

Health: `problem()` (a liveness check; `is_healthy()` is `problem() is None`) reports a killed worker not
exited or replaced within the grace period (KILL_GRACE_S), a worker busy past its deadline by more than that
(the kill did not happen), or FAILURES_BEFORE_UNHEALTHY workers in a row dying while matching: the service
then reports NOT_SERVING. It is healthy again once the worker is gone and replaced (or a chunk is answered).

Workers are multiprocessing children: like any, they import the parent's main module unless it is a
package's `__main__` (`python -m services.molecule`, `python -m pytest`), so a script that starts a matcher
needs the `if __name__ == "__main__":` guard.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import multiprocessing.connection
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.process import BaseProcess

import numpy as np
from rdkit import Chem, RDLogger
from rdkit.Chem import rdSubstructLibrary

from services.molecule.index.search_index import SubstructureResult, SubstructureScan

log = logging.getLogger("molbridge.molecule.matcher")

DEFAULT_WORKERS = 2
DEFAULT_WORKERS_PER_ORG = 1
# How long a killed worker may take to exit and be replaced before the matcher counts as wedged.
KILL_GRACE_S = 5.0
STARTUP_TIMEOUT_S = 60.0  # a worker not ready by then is killed and another started
READY = "ready"
# Workers dying while matching, with no chunk answered in between, before the matcher counts as broken.
FAILURES_BEFORE_UNHEALTHY = 3
_PRELOAD = ["rdkit.Chem", "rdkit.Chem.rdSubstructLibrary", __name__]


class MatchInterrupted(Exception):
    """No answer by the deadline (or no free worker by then), or the worker died: the search stops there.
    A worker that was matching has been killed and is being replaced."""


@dataclass(frozen=True)
class MatcherLimits:
    workers: int = DEFAULT_WORKERS
    per_organization: int = DEFAULT_WORKERS_PER_ORG

    def __post_init__(self) -> None:
        if self.workers < 1 or self.per_organization < 1:
            raise ValueError("a matcher needs at least one worker, and one per organization")
        # An organization can never hold more workers than there are.
        object.__setattr__(self, "per_organization", min(self.per_organization, self.workers))


# -- the worker process -------------------------------------------------------------------------------------


def _serve(conn: multiprocessing.connection.Connection) -> None:
    """Worker loop: (job id, query mol binary, SMILES one a line, wanted) -> (job id, positions of matches)."""
    RDLogger.DisableLog("rdApp.*")  # type: ignore[attr-defined]
    # RDKit initialises lazily: a first match here, not in a search.
    Chem.MolFromSmiles("c1ccccc1O").HasSubstructMatch(Chem.MolFromSmarts("[c;R]~[#8]"))
    conn.send(READY)
    queries: dict[bytes, Chem.Mol] = {}
    while True:
        try:
            job, query_binary, smiles, wanted = conn.recv()
        except EOFError:
            return
        query = queries.get(query_binary)
        if query is None:  # a search sends the same query for every chunk
            queries.clear()
            query = queries[query_binary] = Chem.Mol(query_binary)
        holder = rdSubstructLibrary.CachedTrustedSmilesMolHolder()
        for s in smiles.split(b"\n"):
            holder.AddSmiles(s.decode())
        library = rdSubstructLibrary.SubstructLibrary(holder)
        params = Chem.SubstructMatchParameters()
        found = library.GetMatches(query, 0, len(holder), params, 1, wanted)
        conn.send((job, list(found)))


# -- the pool ----------------------------------------------------------------------------------------------


class _Worker:
    def __init__(self, process: BaseProcess, conn: multiprocessing.connection.Connection) -> None:
        self.process = process
        self.conn = conn
        self.busy_until: float | None = None  # deadline of the chunk it works on
        self.organization_id = ""  # whose search holds it (while busy)

    def wait_ready(self, timeout: float) -> None:
        """Wait (on a matcher thread) for the worker's first word. EOFError if it died starting."""
        if not self.conn.poll(timeout):
            raise TimeoutError(f"matcher worker {self.process.pid} not ready after {timeout:g} s")
        word = self.conn.recv()
        if word != READY:
            raise RuntimeError(f"matcher worker {self.process.pid} said {word!r} instead of {READY!r}")

    def exchange(self, message: tuple, job: int) -> list[int]:
        """Send a job and wait for its answer (on a matcher thread). EOFError/OSError once killed."""
        self.conn.send(message)
        answered, found = self.conn.recv()
        if answered != job:
            raise RuntimeError(f"worker answered job {answered} for job {job}")
        return found


class StructureMatcher:
    """Pool of killable RDKit substructure-matching processes, bounded per organization (see module doc)."""

    def __init__(self, limits: MatcherLimits | None = None, *, kill_grace_s: float = KILL_GRACE_S) -> None:
        self.limits = limits or MatcherLimits()
        self._kill_grace_s = kill_grace_s
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(_PRELOAD)
        # Sends/receives of busy workers, reaping and spawning: never the default executor other calls share.
        self._threads = ThreadPoolExecutor(2 * self.limits.workers + 2, thread_name_prefix="matcher")
        self._idle: asyncio.Queue[_Worker] = asyncio.Queue()
        self._started = False
        self._workers: set[_Worker] = set()  # every worker started and not yet reaped
        self._busy: set[_Worker] = set()
        self._per_org: dict[str, asyncio.Semaphore] = {}
        self._org_users: dict[str, int] = {}  # searches holding or waiting for the organization's semaphore
        # Workers being started, or killed and not yet replaced (a placeholder at start) -> since (monotonic)
        self._replacing: dict[object, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._jobs = itertools.count(1)
        self.replaced = 0  # workers killed and replaced (timeouts, cancellations, crashes)
        self._failures_in_a_row = 0  # workers that died while matching, since a chunk was last answered

    # -- life cycle ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the workers in the background (idempotent; the first search starts them if nobody did, and
        waits for one within its budget)."""
        if self._started:
            return
        self._started = True
        for _ in range(self.limits.workers):
            self._staff(object())

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for worker in self._workers:
            worker.conn.close()
            worker.process.kill()
        self._threads.shutdown(wait=False, cancel_futures=True)

    def is_healthy(self) -> bool:
        return self.problem() is None

    def problem(self) -> str | None:
        """None when healthy, else why not (a liveness check: the service then reports NOT_SERVING). A
        killed worker neither gone nor replaced after the grace period, or a worker busy past its deadline
        by more than that: structure search cannot keep its promises."""
        late = time.monotonic() - self._kill_grace_s
        stuck = sum(since < late for since in self._replacing.values())
        if stuck:
            return f"structure matcher: {stuck} worker(s) not started, or killed and not exited or replaced"
        overdue = sum(w.busy_until is not None and w.busy_until < late for w in self._busy)
        if overdue:
            return f"structure matcher: {overdue} worker(s) busy past their deadline"
        if self._failures_in_a_row >= FAILURES_BEFORE_UNHEALTHY:
            return f"structure matcher: the last {self._failures_in_a_row} workers died while matching"
        return None

    @property
    def pids(self) -> list[int]:
        """Every worker process (idle, busy, or killed and not yet replaced)."""
        return [w.process.pid for w in self._workers if w.process.pid is not None]

    @property
    def idle_workers(self) -> int:
        return self._idle.qsize()

    def busy_pids(self, organization_id: str | None = None) -> list[int]:
        """Workers matching now (for one organization's searches, if given)."""
        return [
            w.process.pid
            for w in self._busy
            if w.process.pid is not None and organization_id in (None, w.organization_id)
        ]

    # -- matching --------------------------------------------------------------------------------------------

    async def run_scan(self, organization_id: str, scan: SubstructureScan, query: Chem.Mol) -> SubstructureResult:
        """Match a search's screened molecules (SearchIndex.substructure_scan) in one worker, chunk by chunk,
        until the scan is over or its deadline passes (then the worker is killed and the result says
        timed out)."""
        if not scan.screened:
            return scan.result()
        if scan.deadline is None:
            raise ValueError("a scan matched in a worker needs a deadline")
        query_binary = query.ToBinary()
        try:
            async with self.session(organization_id, scan.deadline) as worker:
                while (chunk := scan.next_chunk()) is not None:
                    started = time.monotonic()
                    found = await worker.match(query_binary, scan.smiles(chunk), chunk.wanted)
                    scan.record(chunk, chunk.rows[np.asarray(found, np.int64)], time.monotonic() - started)
        except MatchInterrupted:
            scan.time_out()
        return scan.result()

    @contextlib.asynccontextmanager
    async def session(self, organization_id: str, deadline: float) -> AsyncIterator[MatchSession]:
        """A worker for one search, held until the block ends; MatchInterrupted if none is free for this
        organization before the deadline (a time.monotonic() value)."""
        await self.start()
        semaphore = self._per_org.setdefault(organization_id, asyncio.Semaphore(self.limits.per_organization))
        self._org_users[organization_id] = self._org_users.get(organization_id, 0) + 1
        try:
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    await semaphore.acquire()
            except TimeoutError:
                raise MatchInterrupted from None
            try:
                try:
                    async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                        worker = await self._idle.get()
                        while not worker.process.is_alive():  # died idle (OOM killer, …): replace, take another
                            self._release(worker, broken=True)
                            worker = await self._idle.get()
                except TimeoutError:
                    raise MatchInterrupted from None
                session = MatchSession(self, worker, deadline)
                worker.organization_id = organization_id
                self._busy.add(worker)
                try:
                    yield session
                finally:
                    self._busy.discard(worker)
                    self._release(worker, broken=session.broken)
            finally:
                semaphore.release()
        finally:
            self._org_users[organization_id] -= 1
            if not self._org_users[organization_id]:  # forget organizations nobody is searching
                del self._org_users[organization_id], self._per_org[organization_id]

    async def _match(self, session: MatchSession, query: bytes, smiles: bytes, wanted: int) -> list[int]:
        worker = session.worker
        job = next(self._jobs)
        loop = asyncio.get_running_loop()
        worker.busy_until = session.deadline
        call = loop.run_in_executor(self._threads, worker.exchange, (job, query, smiles, wanted), job)
        try:
            async with asyncio.timeout(max(0.0, session.deadline - time.monotonic())):
                found = await asyncio.shield(call)
            self._failures_in_a_row = 0
            return found
        except TimeoutError:
            session.broken = True
            raise MatchInterrupted from None
        except (EOFError, OSError, RuntimeError) as error:  # the worker died (or spoke out of turn)
            log.warning("matcher worker %s failed: %r; replacing it", worker.process.pid, error)
            self._failures_in_a_row += 1
            session.broken = True
            raise MatchInterrupted from None
        except BaseException:  # cancelled: the client left; the worker is still matching for nobody
            session.broken = True
            raise
        finally:
            worker.busy_until = None
            if session.broken:
                worker.process.kill()  # also ends the exchange (EOF on the pipe)

    def _release(self, worker: _Worker, *, broken: bool) -> None:
        if not broken and worker.process.is_alive():
            self._idle.put_nowait(worker)
            return
        worker.process.kill()
        self._staff(worker)

    def _staff(self, vacancy: object) -> None:
        """Fill a vacancy (a killed worker, or a placeholder at start) with a new worker, in the background:
        answers do not wait for it."""
        self._replacing[vacancy] = time.monotonic()
        task = asyncio.get_running_loop().create_task(self._replace(vacancy))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _replace(self, vacancy: object) -> None:
        loop = asyncio.get_running_loop()
        try:
            if isinstance(vacancy, _Worker):  # reap it first: a worker that does not die is not replaced
                while True:
                    await loop.run_in_executor(self._threads, vacancy.process.join, self._kill_grace_s)
                    if vacancy.process.exitcode is not None:
                        break
                    log.error("matcher worker %s has not exited after SIGKILL", vacancy.process.pid)
                vacancy.conn.close()
                self._workers.discard(vacancy)
            while True:
                try:
                    worker = await self._spawn()
                    break
                except Exception:
                    log.exception("could not start a matcher worker; retrying")
                    await asyncio.sleep(self._kill_grace_s)
            if isinstance(vacancy, _Worker):
                self.replaced += 1
            self._idle.put_nowait(worker)
        finally:
            del self._replacing[vacancy]

    async def _spawn(self) -> _Worker:
        """A started worker, ready to match (its RDKit warmed up)."""
        parent, child = self._context.Pipe()
        process = self._context.Process(target=_serve, args=(child,), name="molecule-matcher", daemon=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._threads, process.start)  # the first one starts the fork server
        child.close()
        worker = _Worker(process, parent)
        self._workers.add(worker)
        try:
            await loop.run_in_executor(self._threads, worker.wait_ready, STARTUP_TIMEOUT_S)
        except BaseException:
            process.kill()
            parent.close()
            self._workers.discard(worker)
            raise
        return worker


class MatchSession:
    """One search's hold on a worker (from StructureMatcher.session)."""

    def __init__(self, matcher: StructureMatcher, worker: _Worker, deadline: float) -> None:
        self._matcher = matcher
        self.worker = worker
        self.deadline = deadline
        self.broken = False

    @property
    def pid(self) -> int | None:
        return self.worker.process.pid

    async def match(self, query: bytes, smiles: bytes, wanted: int) -> list[int]:
        """Positions in `smiles` (one a line) of the molecules containing `query` (a Chem.Mol's ToBinary()),
        in order;
        at most `wanted` (-1: all). MatchInterrupted at the deadline or if the worker died (it is then replaced)."""
        if self.broken:
            raise MatchInterrupted
        return await self._matcher._match(self, query, smiles, wanted)  # noqa: SLF001
