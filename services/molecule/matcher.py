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

Health: `is_healthy()` is False while a killed worker has not exited or been replaced within the grace
period (KILL_GRACE_S), or a worker is busy past its deadline by more than that (the kill did not happen): the
service then reports NOT_SERVING. It turns True again once the worker is gone and replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import multiprocessing.connection
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.process import BaseProcess

from rdkit import Chem, RDLogger
from rdkit.Chem import rdSubstructLibrary

from services.runtime.settings import Settings

log = logging.getLogger("molbridge.molecule.matcher")

WORKERS_ENV = "MOLBRIDGE_SEARCH_MATCH_WORKERS"
WORKERS_PER_ORG_ENV = "MOLBRIDGE_SEARCH_MATCH_WORKERS_PER_ORG"
DEFAULT_WORKERS = 2
DEFAULT_WORKERS_PER_ORG = 1
# How long a killed worker may take to exit and be replaced before the matcher counts as wedged.
KILL_GRACE_S = 5.0
_PRELOAD = ["rdkit.Chem", "rdkit.Chem.rdSubstructLibrary", __name__]


class MatchInterrupted(Exception):
    """No answer by the deadline (or no free worker by then), or the worker died: the search stops there.
    A worker that was matching has been killed and is being replaced."""


@dataclass(frozen=True)
class MatcherLimits:
    workers: int = DEFAULT_WORKERS
    per_organization: int = DEFAULT_WORKERS_PER_ORG

    @classmethod
    def from_settings(cls, settings: Settings) -> MatcherLimits:
        workers = _positive(settings, WORKERS_ENV, DEFAULT_WORKERS)
        per_org = _positive(settings, WORKERS_PER_ORG_ENV, min(DEFAULT_WORKERS_PER_ORG, workers))
        return cls(workers=workers, per_organization=min(per_org, workers))


# -- the worker process -------------------------------------------------------------------------------------


def _serve(conn: multiprocessing.connection.Connection) -> None:
    """Worker loop: (job id, query mol binary, SMILES, wanted) -> (job id, positions of the matches)."""
    RDLogger.DisableLog("rdApp.*")  # type: ignore[attr-defined]
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
        for s in smiles:
            holder.AddSmiles(s)
        library = rdSubstructLibrary.SubstructLibrary(holder)
        params = Chem.SubstructMatchParameters()
        found = library.GetMatches(query, 0, len(smiles), params, 1, wanted)
        conn.send((job, list(found)))


# -- the pool ----------------------------------------------------------------------------------------------


class _Worker:
    def __init__(self, process: BaseProcess, conn: multiprocessing.connection.Connection) -> None:
        self.process = process
        self.conn = conn
        self.busy_until: float | None = None  # deadline of the chunk it works on
        self.organization_id = ""  # whose search holds it (while busy)

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
        self._start_lock = asyncio.Lock()
        self._workers: set[_Worker] = set()  # every worker started and not yet reaped
        self._busy: set[_Worker] = set()
        self._per_org: dict[str, asyncio.Semaphore] = {}
        self._org_users: dict[str, int] = {}  # searches holding or waiting for the organization's semaphore
        self._replacing: dict[_Worker, float] = {}  # killed workers not yet replaced -> since (monotonic)
        self._tasks: set[asyncio.Task[None]] = set()
        self._jobs = itertools.count(1)
        self.replaced = 0  # workers killed and replaced (timeouts, cancellations, crashes)

    # -- life cycle ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the workers (idempotent; the first search starts them if nobody did)."""
        async with self._start_lock:
            if self._started:
                return
            for _ in range(self.limits.workers):
                self._idle.put_nowait(await self._spawn())
            self._started = True

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
            return f"structure matcher: {stuck} killed worker(s) not exited or not replaced"
        overdue = sum(w.busy_until is not None and w.busy_until < late for w in self._busy)
        if overdue:
            return f"structure matcher: {overdue} worker(s) busy past their deadline"
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

    async def _match(self, session: MatchSession, query: bytes, smiles: Sequence[str], wanted: int) -> list[int]:
        worker = session.worker
        job = next(self._jobs)
        loop = asyncio.get_running_loop()
        worker.busy_until = session.deadline
        call = loop.run_in_executor(self._threads, worker.exchange, (job, query, list(smiles), wanted), job)
        try:
            async with asyncio.timeout(max(0.0, session.deadline - time.monotonic())):
                return await asyncio.shield(call)
        except TimeoutError:
            session.broken = True
            raise MatchInterrupted from None
        except (EOFError, OSError, RuntimeError) as error:  # the worker died (or spoke out of turn)
            log.warning("matcher worker %s failed: %r; replacing it", worker.process.pid, error)
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
        self._replacing[worker] = time.monotonic()
        task = asyncio.get_running_loop().create_task(self._replace(worker))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _replace(self, worker: _Worker) -> None:
        """Reap a killed worker and start another in its place (in the background: answers do not wait)."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                await loop.run_in_executor(self._threads, worker.process.join, self._kill_grace_s)
                if worker.process.exitcode is not None:
                    break
                log.error("matcher worker %s has not exited after SIGKILL", worker.process.pid)
            worker.conn.close()
            while True:
                try:
                    replacement = await self._spawn()
                    break
                except Exception:
                    log.exception("could not start a matcher worker; retrying")
                    await asyncio.sleep(self._kill_grace_s)
            self.replaced += 1
            self._idle.put_nowait(replacement)
        finally:
            del self._replacing[worker]
            self._workers.discard(worker)

    async def _spawn(self) -> _Worker:
        parent, child = self._context.Pipe()
        process = self._context.Process(target=_serve, args=(child,), name="molecule-matcher", daemon=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._threads, process.start)  # the first one starts the fork server
        child.close()
        worker = _Worker(process, parent)
        self._workers.add(worker)
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

    async def match(self, query: bytes, smiles: Sequence[str], wanted: int) -> list[int]:
        """Positions in `smiles` of the molecules containing `query` (a Chem.Mol's ToBinary()), in order;
        at most `wanted` (-1: all). MatchInterrupted at the deadline or if the worker died (it is then replaced)."""
        if self.broken:
            raise MatchInterrupted
        return await self._matcher._match(self, query, smiles, wanted)  # noqa: SLF001


def _positive(settings: Settings, name: str, default: int) -> int:
    raw = settings.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from None
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {raw!r}")
    return value
