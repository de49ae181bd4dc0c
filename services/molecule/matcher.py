"""Substructure matching in worker processes that can be killed: RDKit's matcher cannot be interrupted, and
some pairs of structures (large fused ring systems against each other) keep it busy for minutes.

StructureMatcher keeps a small pool of processes (forkserver context, RDKit preloaded, so a replacement
starts in milliseconds). A search borrows one worker for its whole scan and sends it chunks of candidate
SMILES; each chunk must be answered by the search's deadline, or the worker is killed and replaced and the
search ends `timed_out` (the API answers `truncated`). A client that gives up (cancellation) also kills the
worker it held, so nothing keeps computing for nobody.

Bounds: at most MOLBRIDGE_SEARCH_MATCH_WORKERS (2) matches run at once in the whole service, and at most
MOLBRIDGE_SEARCH_MATCH_WORKERS_PER_ORG (1) for one organization, so one organization cannot hold every
worker. Waiting for a worker counts against the search's budget. The event loop only waits: sends and
receives run on the matcher's own threads (one per worker), never on the default executor other calls use.

Health: `is_healthy()` is False while a worker could not be killed, could not be replaced, or is busy past
its deadline by more than the grace period (the kill did not happen), so the service reports NOT_SERVING.
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
# How long a killed worker may take to exit before the matcher counts it as wedged.
KILL_GRACE_S = 5.0
_PRELOAD = ["rdkit.Chem", "rdkit.Chem.rdSubstructLibrary", __name__]


class MatchTimeout(Exception):
    """The deadline passed before a worker answered (or before one was free): the worker was replaced."""


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
    RDLogger.DisableLog("rdApp.*")
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
        # Sends/receives of busy workers, spawns and joins: never the default executor other RPCs share.
        self._threads = ThreadPoolExecutor(self.limits.workers + 1, thread_name_prefix="matcher")
        self._idle: asyncio.Queue[_Worker] | None = None
        self._started = False
        self._start_lock: asyncio.Lock | None = None
        self._busy: set[_Worker] = set()
        self._per_org: dict[str, asyncio.Semaphore] = {}
        self._org_users: dict[str, int] = {}  # searches holding or waiting for the organization's semaphore
        self._wedged = 0  # workers that did not die when killed, or could not be replaced
        self._jobs = itertools.count(1)
        self.replaced = 0  # workers killed and replaced (timeouts, cancellations, crashes)

    # -- life cycle ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the workers (idempotent; the first match starts them if nobody did)."""
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._started:
                return
            self._idle = asyncio.Queue()
            for _ in range(self.limits.workers):
                self._idle.put_nowait(await self._spawn())
            self._started = True

    async def close(self) -> None:
        workers = [*self._busy]
        while self._idle is not None and not self._idle.empty():
            workers.append(self._idle.get_nowait())
        for worker in workers:
            worker.conn.close()  # the worker sees EOF and exits
            worker.process.kill()
        loop = asyncio.get_running_loop()
        for worker in workers:
            await loop.run_in_executor(self._threads, worker.process.join, self._kill_grace_s)
        self._threads.shutdown(wait=False)

    def is_healthy(self) -> bool:
        """False while a worker is wedged (not dead after a kill, not replaced) or busy well past its
        deadline: structure search cannot keep its promises, so the service should not say SERVING."""
        if self._wedged:
            return False
        late = time.monotonic() - self._kill_grace_s
        return not any(w.busy_until is not None and w.busy_until < late for w in self._busy)

    # -- matching --------------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def session(self, organization_id: str, deadline: float) -> AsyncIterator[MatchSession]:
        """A worker for one search, held until the block ends; MatchTimeout if none is free for this
        organization before the deadline (time.monotonic())."""
        await self.start()
        assert self._idle is not None
        semaphore = self._per_org.setdefault(organization_id, asyncio.Semaphore(self.limits.per_organization))
        self._org_users[organization_id] = self._org_users.get(organization_id, 0) + 1
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                await semaphore.acquire()
        except BaseException as error:  # timed out or cancelled while waiting: this search is no user
            self._leave(organization_id)
            if isinstance(error, TimeoutError):
                raise MatchTimeout from None
            raise
        try:
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    worker = await self._idle.get()
            except TimeoutError:
                raise MatchTimeout from None
            session = MatchSession(self, worker, deadline)
            self._busy.add(worker)
            try:
                yield session
            finally:
                self._busy.discard(worker)
                await self._release(session.worker, broken=session.broken)
        finally:
            semaphore.release()
            self._leave(organization_id)

    def _leave(self, organization_id: str) -> None:
        """One search of the organization is done waiting or matching; forget organizations nobody uses."""
        self._org_users[organization_id] -= 1
        if not self._org_users[organization_id]:
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
            raise MatchTimeout from None
        except BaseException:  # cancelled (the client left) or the worker died: it cannot be reused
            session.broken = True
            raise
        finally:
            worker.busy_until = None
            if session.broken:
                worker.process.kill()  # ends the exchange too (EOF on the pipe)
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(asyncio.shield(call), self._kill_grace_s)

    async def _release(self, worker: _Worker, *, broken: bool) -> None:
        assert self._idle is not None
        if not broken and worker.process.is_alive():
            self._idle.put_nowait(worker)
            return
        worker.process.kill()
        loop = asyncio.get_running_loop()
        await asyncio.shield(loop.run_in_executor(self._threads, worker.process.join, self._kill_grace_s))
        worker.conn.close()
        if worker.process.exitcode is None:
            log.error("matcher worker %s did not exit after SIGKILL: structure search is degraded", worker.process.pid)
            self._wedged += 1
            return
        try:
            replacement = await asyncio.shield(self._spawn())
        except Exception:
            log.exception("could not start a matcher worker: structure search is degraded")
            self._wedged += 1
            return
        self.replaced += 1
        self._idle.put_nowait(replacement)

    async def _spawn(self) -> _Worker:
        parent, child = self._context.Pipe()
        process = self._context.Process(target=_serve, args=(child,), name="molecule-matcher", daemon=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._threads, process.start)  # the first one starts the fork server
        child.close()
        return _Worker(process, parent)


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
        at most `wanted` (-1: all). MatchTimeout at the deadline (the worker is then replaced)."""
        if self.broken:
            raise MatchTimeout
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

