"""Keeps this replica's structure search index (search_index.SearchIndex) equal to PostgreSQL.

Life of the index:
1. Subscribe to MoleculesChanged with an ordered (ephemeral, per-replica) JetStream consumer that
   delivers new messages only: every replica sees every change, and nothing committed after the
   subscription can be missed by the load that follows.
2. Load every organization's live (not archived) molecules in the background, smallest organization
   first, each in one REPEATABLE READ snapshot streamed through a server-side cursor into preallocated
   fingerprint arrays (the peak is those arrays plus the index being built), then `bulk_load`.
3. Apply changes: re-read the changed molecules' current rows and add/replace the live ones, remove
   the archived or vanished ones. Re-reading (rather than trusting event contents) makes it idempotent
   and order-insensitive; changes are coalesced per organization so an import's thousands of events
   become a few large index writes.

Warm-up: an organization is *ready* once its first load is done (organizations without molecules at
start are ready as soon as the list of organizations is read). Until then structure search answers
UNAVAILABLE "search index warming up" (search.SearchService): an empty result would read as "no
match". Changes for an organization whose load has not begun are dropped (its snapshot will hold them);
changes that arrive while its snapshot is read, or before the organizations are listed, are kept and
applied after its load. A restart of `run` (after a failure) reloads every organization, serving the
loaded index meanwhile: changes may have been missed while no subscription existed.

Consistency: eventual. A registration on any replica reaches this index after its outbox row is
published and its event consumed: typically well under a second. A write path of this replica may call
`after_write(org, ids)` once its transaction has committed, for read-your-writes here. Searches re-read
hits from PostgreSQL, so a molecule archived a moment ago never shows even if the index still holds it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import numpy as np
from molbridge.events.v1.envelope_pb2 import EventEnvelope
from molbridge.events.v1.molecule_pb2 import MoleculesChanged
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy
from sqlalchemy.ext.asyncio import AsyncEngine

from bus.connection import connect
from bus.envelope import unpack
from bus.streams import StreamPolicy, ensure_streams
from bus.subjects import event_subject
from services.molecule.domain.vocabulary import ARCHIVED, EVENT_SOURCE
from services.molecule.index.search_index import FP_BYTES, IndexEntry, SearchIndex

log = logging.getLogger("molbridge.molecule.search_sync")
T = TypeVar("T")

CHANGES_SUBJECT = event_subject(EVENT_SOURCE, MoleculesChanged)
FETCH_ROWS = 10_000  # rows per server-side cursor fetch while loading
MAX_REFRESH_IDS = 20_000  # molecules re-read per index write while following changes
_RETRY_DELAYS_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)

# Live molecules only: the index never holds archived ones.
_ORGANIZATIONS = """
SELECT organization_id::text, count(*) FROM molecules WHERE status <> 'ARCHIVED'
GROUP BY organization_id ORDER BY count(*), organization_id"""
_COUNT = "SELECT count(*) FROM molecules WHERE organization_id = %(org)s::uuid AND status <> 'ARCHIVED'"
_ROWS = """
SELECT id::text, inchi_key, canonical_smiles, morgan_fp, pattern_fp FROM molecules
WHERE organization_id = %(org)s::uuid AND status <> 'ARCHIVED'"""
_CHANGED = """
SELECT id::text, inchi_key, canonical_smiles, morgan_fp, pattern_fp, status FROM molecules
WHERE organization_id = %(org)s::uuid AND id = ANY(%(ids)s::uuid[])"""


@dataclass
class SyncStats:
    """For operators and tests."""

    organizations_loaded: int = 0
    molecules_loaded: int = 0
    changes_applied: int = 0  # index writes made for changes (each covers one or more events)


class SearchIndexSync:
    """Loads the index from PostgreSQL and follows MoleculesChanged; `run` is a background job."""

    def __init__(
        self, engine: AsyncEngine, index: SearchIndex, nats_url: str, policy: StreamPolicy | None = None
    ) -> None:
        self._engine = engine
        self._index = index
        self._nats_url = nats_url
        self._policy = policy  # EVENTS' limits and the replicas: creating the stream must not reset them
        self._listed = False  # the organizations to load are known
        self._unloaded: set[str] = set()  # listed, first load not done: not ready
        self._loading: set[str] = set()  # snapshot being read: changes wait in _pending
        self._known: set[str] = set()  # organizations the index has held molecules of
        self._pending: dict[str, set[str]] = {}  # changes to apply after a load
        self._waiting: dict[str, set[str]] = {}  # changes received, not yet applied (coalesced)
        self._wake = asyncio.Event()
        self._locks: dict[str, asyncio.Lock] = {}  # one index write path per organization at a time
        self.loaded = asyncio.Event()  # every listed organization has been loaded once
        self.stats = SyncStats()

    def is_ready(self, organization_id: str) -> bool:
        """The organization's search answers are complete (up to the usual lag of changes)."""
        return self._listed and organization_id not in self._unloaded

    async def run(self) -> None:
        """Subscribe, load, then follow changes until cancelled. A restart (the job supervisor restarts
        it after a failure) reloads every organization: changes may have been missed in between."""
        nats = await connect(self._nats_url, name="molecule-search-index")
        try:
            js = nats.jetstream()
            await ensure_streams(js, policy=self._policy)
            subscription = await js.subscribe(
                CHANGES_SUBJECT, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW
            )
            async with asyncio.TaskGroup() as jobs:  # one failing fails the run (then restarted whole)
                jobs.create_task(self._receive(subscription.messages))
                jobs.create_task(self._apply_changes())
                jobs.create_task(self.load_all())
        finally:
            await nats.close()

    # -- loading ---------------------------------------------------------------------------------------------

    async def load_all(self) -> None:
        """Load every organization with live molecules, smallest first (most of them are ready soonest).
        A reload also reloads organizations that no longer have any (the index may still hold some)."""
        organizations = await _retrying("listing organizations", self._organizations)
        listed = set(organizations)
        organizations += sorted(self._known - listed)
        if not self._listed:  # a reload keeps serving the loaded organizations meanwhile
            self._unloaded = listed
            self._listed = True
            for organization_id in [o for o in self._pending if o not in listed]:
                await self.changed(organization_id, self._pending.pop(organization_id))
        for organization_id in organizations:
            await _retrying(f"loading organization {organization_id}", partial(self.load, organization_id))
        self.loaded.set()
        log.info(
            "search index: %d organizations, %d molecules loaded",
            self.stats.organizations_loaded,
            self.stats.molecules_loaded,
        )

    async def load(self, organization_id: str) -> int:
        """(Re)load one organization from a snapshot; changes seen meanwhile are applied after it."""
        self._loading.add(organization_id)
        try:
            async with self._lock(organization_id):
                count = await self._read_and_load(organization_id)
        finally:
            self._loading.discard(organization_id)
        self._unloaded.discard(organization_id)
        self._known.add(organization_id)
        self.stats.organizations_loaded += 1
        self.stats.molecules_loaded += count
        pending = self._pending.pop(organization_id, set())
        if pending:
            await self.refresh(organization_id, pending)
        return count

    async def _organizations(self) -> list[str]:
        async with self._engine.connect() as connection:
            result = await connection.exec_driver_sql(_ORGANIZATIONS)
            return [row[0] for row in result]

    async def _read_and_load(self, organization_id: str) -> int:
        params = {"org": organization_id}
        async with self._engine.connect() as connection:
            snapshot = await connection.execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            )
            raw = (await snapshot.get_raw_connection()).driver_connection
            assert raw is not None
            async with snapshot.begin():
                async with raw.cursor() as cursor:
                    await cursor.execute(_COUNT, params)
                    counted = await cursor.fetchone()
                buffers = _LoadBuffers(int(counted[0]) if counted else 0)
                # Binary results: fingerprints arrive as bytes, not hex text to decode.
                async with raw.cursor(name="search_index_load", binary=True) as cursor:
                    cursor.itersize = FETCH_ROWS
                    await cursor.execute(_ROWS, params)
                    while rows := await cursor.fetchmany(FETCH_ROWS):
                        buffers.append(rows)
        # The buffers travel in a box the worker empties, so they are freed once the index is built.
        return await asyncio.to_thread(_bulk_load, self._index, organization_id, [buffers])

    # -- following changes -----------------------------------------------------------------------------------

    async def _receive(self, messages: AsyncIterator[Msg]) -> None:
        async for message in messages:
            try:
                event = unpack(EventEnvelope.FromString(message.data), MoleculesChanged)
            except Exception as error:  # not a MoleculesChanged: nothing to apply
                log.warning("search index: unreadable change event skipped (%r)", error)
                continue
            ids = [*event.molecule_ids, *event.archived_ids]
            if ids:
                self._waiting.setdefault(event.organization_id, set()).update(ids)
                self._wake.set()

    async def _apply_changes(self) -> None:
        """Apply what has been received, one index write per organization (an import's thousands of
        events become a few large writes: fewer, bigger index segments)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            waiting, self._waiting = self._waiting, {}
            for organization_id, ids in waiting.items():
                await self.changed(organization_id, ids)

    async def changed(self, organization_id: str, molecule_ids: Iterable[str]) -> None:
        """Molecules of an organization changed (an event, or this replica's own write)."""
        ids = {i for i in molecule_ids if _is_uuid(i)}
        if not ids or not _is_uuid(organization_id):
            return
        if not self._listed or organization_id in self._loading:
            self._pending.setdefault(organization_id, set()).update(ids)
            return
        if organization_id in self._unloaded:
            return  # its load has not begun: its snapshot will hold these changes
        try:
            await _retrying(f"refreshing {organization_id}", partial(self.refresh, organization_id, ids))
        except _GaveUp:
            log.error("search index: a change could not be applied; reloading %s", organization_id)
            await _retrying(f"reloading {organization_id}", partial(self.load, organization_id))

    async def after_write(self, organization_id: str, molecule_ids: Iterable[str]) -> None:
        """Read-your-writes on this replica: apply a write at once (its event applies it again, harmlessly).
        Never raises and never waits for a load: the write's MoleculesChanged covers whatever this misses."""
        ids = {i for i in molecule_ids if _is_uuid(i)}
        if not ids or not self.is_ready(organization_id) or organization_id in self._loading:
            return
        try:
            await self.refresh(organization_id, ids)
        except Exception:
            log.warning("search index: refresh after a write failed (the event will apply it)", exc_info=True)

    async def refresh(self, organization_id: str, molecule_ids: Iterable[str]) -> None:
        """Re-read molecules and make the index agree: live ones added or replaced, the others removed."""
        ordered = sorted(molecule_ids)
        for start in range(0, len(ordered), MAX_REFRESH_IDS):
            ids = ordered[start : start + MAX_REFRESH_IDS]
            async with self._lock(organization_id):
                async with self._engine.connect() as connection:
                    result = await connection.exec_driver_sql(_CHANGED, {"org": organization_id, "ids": ids})
                    rows = list(result)
                await asyncio.to_thread(_apply, self._index, organization_id, ids, rows)
            self._known.add(organization_id)
            self.stats.changes_applied += 1

    def _lock(self, organization_id: str) -> asyncio.Lock:
        return self._locks.setdefault(organization_id, asyncio.Lock())


class _GaveUp(Exception):
    pass


async def _retrying(what: str, attempt: Callable[[], Awaitable[T]]) -> T:
    """Retry (PostgreSQL trouble) with backoff; _GaveUp after the last delay."""
    for delay in _RETRY_DELAYS_S:
        try:
            return await attempt()
        except Exception as error:
            log.warning("search index: %s failed (%r), retrying in %.1f s", what, error, delay)
            await asyncio.sleep(delay)
    try:
        return await attempt()
    except Exception as error:
        raise _GaveUp(what) from error


class _LoadBuffers:
    """Rows of one organization as the index's bulk_load takes them, filled batch by batch."""

    def __init__(self, n: int) -> None:
        self.n = 0
        self.ids = np.zeros(n, "S36")
        self.morgan = np.zeros((n, FP_BYTES), np.uint8)
        self.pattern = np.zeros((n, FP_BYTES), np.uint8)
        self.inchi_keys = np.zeros(n, "S27")
        self.smiles: list[str] = []

    def append(self, rows: Sequence[Any]) -> None:
        start, stop = self.n, self.n + len(rows)  # within the count: both come from one snapshot
        self.ids[start:stop] = [r[0] for r in rows]
        self.inchi_keys[start:stop] = [r[1] for r in rows]
        self.smiles.extend(r[2] for r in rows)
        self.morgan[start:stop] = np.frombuffer(b"".join(r[3] for r in rows), np.uint8).reshape(-1, FP_BYTES)
        self.pattern[start:stop] = np.frombuffer(b"".join(r[4] for r in rows), np.uint8).reshape(-1, FP_BYTES)
        self.n = stop


def _bulk_load(index: SearchIndex, organization_id: str, box: list[_LoadBuffers]) -> int:
    b = box.pop()
    n = b.n
    return index.bulk_load(
        organization_id, b.ids[:n], b.morgan[:n], b.pattern[:n], b.smiles, b.inchi_keys[:n]
    )


def _apply(index: SearchIndex, organization_id: str, ids: Sequence[str], rows: Sequence[Any]) -> None:
    live = [
        IndexEntry(id=r[0], inchi_key=r[1], smiles=r[2], morgan_fp=bytes(r[3]), pattern_fp=bytes(r[4]))
        for r in rows
        if r[5] != ARCHIVED
    ]
    found = {entry.id for entry in live}
    gone = [i for i in ids if i not in found]
    if gone:
        index.remove(organization_id, gone)
    if live:
        index.add(organization_id, live)


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
