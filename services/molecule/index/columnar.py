"""The molecule query engine: filter, sort and page one organization's molecules.

Used by ListMolecules / FilterMolecules, by library listings (a query with `library_id`) and by
structure search, which restricts its candidates to `candidate_ids(...)` of a query.

Design, chosen by measurement (bench/filter_sort.py; 500,000 molecules, ~16 property rows each,
2-core machine): SQL over the EAV table took 1.2–2.2 s per filter + sort + count, and a denormalized
wide table (one column per property, maintained on write) 70–150 ms unloaded — before flags,
libraries, custom properties or concurrent load. This package keeps instead an in-memory *columnar
index* per organization: one numpy array per (property, source) with NaN for "no value", the
effective value (EXPERIMENTAL > IMPORTED > PREDICTED > CALCULATED) derived from them on demand, plus
status, timestamps, name / InChIKey / formula, the users' flags and library membership. A query is a
few vectorised comparisons, an exact count and a partial sort; PostgreSQL then reads only the page's
rows. Figures are in the module's report and printed by the benchmark.

Freshness: an organization's index is loaded from PostgreSQL on first use (or by `preload` at start)
in one REPEATABLE READ snapshot, using binary COPY of array aggregates (~seconds for 500k molecules).
After that, `refresh(org, ids)` re-reads those molecules; it is called by this service after its own
writes (read-your-writes on this replica) and for every MoleculesChanged event on the bus (imports,
library membership, predictions, other replicas). Re-reading rather than applying event contents
makes refreshes idempotent and order-insensitive; refreshes of one organization are serialised.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from molbridge.events.v1.envelope_pb2 import EventEnvelope
from molbridge.events.v1.molecule_pb2 import MoleculesChanged
from sqlalchemy.ext.asyncio import AsyncEngine

from bus.envelope import unpack
from services.molecule.domain.vocabulary import ARCHIVED, CALCULATED, PRECEDENCE, STATUSES
from services.molecule.index.ids import GONE, id_text, parse_uuid
from services.molecule.index.query import (
    DEFAULT_SORT,
    MEMORY_FIELDS,
    SQL_FIELDS,
    TIME_FIELDS,
    Condition,
    MoleculeQuery,
    Operator,
    Scalar,
    parse_number,
)
from services.molecule.store.molecule_columns import (
    ColumnBatch,
    organizations_with_molecules,
    read_columns,
    structure_matches,
)
from services.runtime.errors import ValidationError
from services.runtime.pagination import PageRequest

log = logging.getLogger("molbridge.molecule.queries")

# A partial sort pays off above this many matches; text ranks are built per query below _RANK_SUBSET_MAX.
_PARTITION_MIN = 10_000
_RANK_SUBSET_MAX = 50_000
_STATUS_CODE = {name: code for code, name in enumerate(STATUSES)}


@dataclass
class TenantStats:
    molecules: int
    columns: int
    memory_bytes: int


class TenantColumns:
    """The columns of one organization. Rows are never removed (a vanished molecule is marked gone);
    every public method takes the lock, so queries (in worker threads) and refreshes don't interleave."""

    _REINDEX_AFTER = 20_000  # rows added since the id lookup table was sorted

    def __init__(self, *, partition_min: int = _PARTITION_MIN, rank_subset_max: int = _RANK_SUBSET_MAX) -> None:
        # The fast paths' size thresholds; tests lower them to run those paths on small data.
        self.partition_min = partition_min
        self.rank_subset_max = rank_subset_max
        self.lock = threading.Lock()
        self.n = 0
        self.cap = 0
        self.hi = np.zeros(0, np.uint64)
        self.lo = np.zeros(0, np.uint64)
        self.ids = np.zeros(0, "S36")
        self.status = np.zeros(0, np.int8)
        self.created = np.zeros(0, np.float64)
        self.updated = np.zeros(0, np.float64)
        self.text: dict[str, np.ndarray] = {f: np.zeros(0, object) for f in MEMORY_FIELDS}
        self.numbers: dict[tuple[str, str], np.ndarray] = {}  # (name, source) → float64, NaN = no value
        self.texts: dict[tuple[str, str], np.ndarray] = {}  # (name, source) → object, None = no value
        self.flags: dict[tuple[str, str], set[int]] = {}  # (user, type) → rows
        self.libraries: dict[str, set[int]] = {}  # library id → rows
        # id → row: a sorted table plus the rows added since it was sorted
        self._sorted_hi = np.zeros(0, np.uint64)
        self._sorted_lo = np.zeros(0, np.uint64)
        self._sorted_rows = np.zeros(0, np.int64)
        self._recent: dict[tuple[int, int], int] = {}
        # derived, dropped on every change
        self._effective: dict[str, tuple[np.ndarray | None, np.ndarray | None]] = {}
        self._ranks: dict[str, np.ndarray] = {}
        self._masks: dict[tuple[str, ...], np.ndarray] = {}  # flag and library memberships as row masks

    # -- writing ---------------------------------------------------------------------------------------------

    def apply(self, batch: ColumnBatch) -> None:
        with self.lock:
            self._effective.clear()
            self._ranks.clear()
            self._masks.clear()
            rows = self._rows_for(batch.hi, batch.lo, create=True)
            self.status[rows] = batch.status
            self.created[rows] = batch.created
            self.updated[rows] = batch.updated
            for name in MEMORY_FIELDS:
                self.text[name][rows] = batch.text[name]
            if batch.requested is not None:  # a refresh: forget what these molecules had, then set it again
                self._clear(rows)
                known = self._rows_for(*batch.requested, create=False)
                gone = np.setdiff1d(known[known >= 0], rows)
                self.status[gone] = GONE
                self._clear(gone)
            self._column(self.numbers, ("molecular_weight", CALCULATED))[rows] = batch.molecular_weight
            for name, source, hi, lo, values in batch.numbers:
                self._column(self.numbers, (name, source))[self._rows_for(hi, lo)] = values
            for name, source, hi, lo, texts in batch.texts:
                self._column(self.texts, (name, source))[self._rows_for(hi, lo)] = texts
            for user, flag, hi, lo in batch.flags:
                self.flags.setdefault((user, flag), set()).update(self._rows_for(hi, lo).tolist())
            for library, hi, lo in batch.libraries:
                self.libraries.setdefault(library, set()).update(self._rows_for(hi, lo).tolist())

    def _clear(self, rows: np.ndarray) -> None:
        if not len(rows):
            return
        for column in self.numbers.values():
            column[rows] = np.nan
        for column in self.texts.values():
            column[rows] = None
        drop = set(rows.tolist())
        for members in (*self.flags.values(), *self.libraries.values()):
            members.difference_update(drop)

    def _column(self, columns: dict[tuple[str, str], np.ndarray], key: tuple[str, str]) -> np.ndarray:
        column = columns.get(key)
        if column is None:
            column = np.full(self.cap, np.nan) if columns is self.numbers else np.full(self.cap, None, object)
            columns[key] = column
        return column

    def _rows_for(self, hi: np.ndarray, lo: np.ndarray, *, create: bool = False) -> np.ndarray:
        """Row of each id; new rows for unknown ids when `create`, else -1 for them."""
        rows = np.full(len(hi), -1, np.int64)
        if self._sorted_rows.size and len(hi):
            if len(hi) > 1000:  # sorted probes walk the table in order: ~50x faster than random ones
                order = np.argsort(hi)
                pos = np.empty(len(hi), np.int64)
                pos[order] = np.searchsorted(self._sorted_hi, hi[order])
            else:
                pos = np.searchsorted(self._sorted_hi, hi)
            pos = np.minimum(pos, self._sorted_rows.size - 1)
            hit = (self._sorted_hi[pos] == hi) & (self._sorted_lo[pos] == lo)
            rows[hit] = self._sorted_rows[pos[hit]]
            for i in np.flatnonzero(~hit & (self._sorted_hi[pos] == hi)):  # equal high halves: rare
                p = int(pos[i])
                while p < self._sorted_hi.size and self._sorted_hi[p] == hi[i]:
                    if self._sorted_lo[p] == lo[i]:
                        rows[i] = self._sorted_rows[p]
                        break
                    p += 1
        if self._recent:
            for i in np.flatnonzero(rows < 0):
                rows[i] = self._recent.get((int(hi[i]), int(lo[i])), -1)
        if create:
            missing = np.flatnonzero(rows < 0)
            if len(missing):  # (a batch lists each molecule once)
                rows[missing] = self._append(hi[missing], lo[missing])
        return rows

    def _append(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        start, count = self.n, len(hi)
        self._reserve(start + count)
        new = np.arange(start, start + count)
        self.hi[new] = hi
        self.lo[new] = lo
        self.ids[new] = id_text(hi, lo)
        self.n += count
        if self._sorted_rows.size == 0 and not self._recent and start == 0:
            self._reindex()  # a first load: sort once
        else:
            self._recent.update(zip(zip(hi.tolist(), lo.tolist(), strict=True), new.tolist(), strict=True))
            if len(self._recent) > max(self._REINDEX_AFTER, self.n // 8):
                self._reindex()
        return new

    def _reindex(self) -> None:
        order = np.lexsort((self.lo[: self.n], self.hi[: self.n]))
        self._sorted_hi = self.hi[order]
        self._sorted_lo = self.lo[order]
        self._sorted_rows = order.astype(np.int64)
        self._recent.clear()

    def _reserve(self, size: int) -> None:
        if size <= self.cap:
            return
        cap = max(size, int(self.cap * 1.25), 1024)
        self.hi = _grown(self.hi, cap, 0)
        self.lo = _grown(self.lo, cap, 0)
        self.ids = _grown(self.ids, cap, b"")
        self.status = _grown(self.status, cap, GONE)
        self.created = _grown(self.created, cap, 0.0)
        self.updated = _grown(self.updated, cap, 0.0)
        self.text = {k: _grown(v, cap, "") for k, v in self.text.items()}
        self.numbers = {k: _grown(v, cap, np.nan) for k, v in self.numbers.items()}
        self.texts = {k: _grown(v, cap, None) for k, v in self.texts.items()}
        self.cap = cap

    # -- reading ---------------------------------------------------------------------------------------------

    def page(
        self, query: MoleculeQuery, user_id: str, sql_rows: list[np.ndarray], start: int, stop: int
    ) -> tuple[list[str], int]:
        with self.lock:
            rows = np.flatnonzero(self._mask(query, user_id, sql_rows))
            total = int(rows.size)
            if start >= total:
                return [], total
            ordered = self._ordered(
                rows,
                query.sort_by or DEFAULT_SORT,
                query.sort_desc or not query.sort_by,
                start,
                min(stop, total),
            )
            return [i.decode() for i in self.ids[ordered]], total

    def candidate_ids(self, query: MoleculeQuery, user_id: str, sql_rows: list[np.ndarray]) -> np.ndarray:
        with self.lock:
            return self.ids[np.flatnonzero(self._mask(query, user_id, sql_rows))]

    def rows_of(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        with self.lock:
            rows = self._rows_for(hi, lo)
            return rows[rows >= 0]

    def stats(self) -> TenantStats:
        with self.lock:
            arrays = [
                self.hi,
                self.lo,
                self.ids,
                self.status,
                self.created,
                self.updated,
                *self.numbers.values(),
            ]
            memory = sum(a.nbytes for a in arrays)
            # object columns: the pointer arrays plus the distinct str objects they hold
            for column in (*self.text.values(), *self.texts.values()):
                memory += column.nbytes + sum(
                    len(v) + 49 for v in {id(v): v for v in column[: self.n] if v is not None}.values()
                )
            memory += sum(len(m) for m in (*self.flags.values(), *self.libraries.values())) * 36
            return TenantStats(
                int(np.count_nonzero(self.status[: self.n] != GONE)),
                len(self.numbers) + len(self.texts),
                memory,
            )

    def _mask(self, query: MoleculeQuery, user_id: str, sql_rows: list[np.ndarray]) -> np.ndarray:
        n = self.n
        status = self.status[:n]
        if query.statuses:
            mask = np.isin(status, [_STATUS_CODE[s] for s in query.statuses])
        else:
            mask = (status != GONE) & (status != _STATUS_CODE[ARCHIVED])
        if query.flags:
            mask &= self._members(("flags", user_id, *query.flags))
        if query.library_id:
            mask &= self._members(("library", query.library_id))
        for rows in sql_rows:
            allowed = np.zeros(n, bool)
            allowed[rows[rows < n]] = True
            mask &= allowed
        for condition in query.conditions:
            if condition.property not in SQL_FIELDS:
                mask &= self._condition(condition)
        return mask

    def _members(self, key: tuple[str, ...]) -> np.ndarray:
        """("flags", user, *types) or ("library", id) as a row mask, kept until the next change."""
        mask = self._masks.get(key)
        if mask is None:
            if key[0] == "library":
                rows = self.libraries.get(key[1], set())
            else:
                rows = set().union(*(self.flags.get((key[1], flag), set()) for flag in key[2:]))
            mask = np.zeros(self.n, bool)
            if rows:
                mask[np.fromiter(rows, np.int64, len(rows))] = True
            self._masks[key] = mask
        return mask

    def _condition(self, c: Condition) -> np.ndarray:
        if c.property in MEMORY_FIELDS:
            return _text_match(self.text[c.property][: self.n], c.operator, c.value)
        numbers, texts = self._values(c.property, c.source)
        values = c.value if isinstance(c.value, tuple) else (c.value,)
        mask = np.zeros(self.n, bool)
        wanted_numbers = [v for v in values if isinstance(v, float)]
        wanted_texts = [v for v in values if isinstance(v, str)]
        # text that reads as a number also matches the number (custom values are stored typed)
        extra = (
            [x for x in map(parse_number, wanted_texts) if x is not None]
            if c.operator is not Operator.CONTAINS
            else []
        )
        if numbers is not None and (wanted_numbers or extra):
            if c.operator is Operator.IN:
                mask |= np.isin(numbers, wanted_numbers + extra)
            else:
                mask |= _number_match(numbers, c.operator, (wanted_numbers + extra)[0])
        if texts is not None and wanted_texts:
            value: Scalar | tuple[Scalar, ...] = (
                tuple(wanted_texts) if c.operator is Operator.IN else wanted_texts[0]
            )
            mask |= _text_match(texts, c.operator, value)
        return mask

    def _values(self, name: str, source: str) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The (numbers, texts) columns of a property, length n: one source's, or the effective values."""
        n = self.n
        if source:
            numbers, texts = self.numbers.get((name, source)), self.texts.get((name, source))
            return (None if numbers is None else numbers[:n]), (None if texts is None else texts[:n])
        cached = self._effective.get(name)
        if cached is None:
            cached = self._effective[name] = self._compute_effective(name)
        return cached

    def _compute_effective(self, name: str) -> tuple[np.ndarray | None, np.ndarray | None]:
        n = self.n
        present = [s for s in PRECEDENCE if (name, s) in self.numbers or (name, s) in self.texts]
        if len(present) == 1 and (name, present[0]) not in self.texts:
            return self.numbers[(name, present[0])][:n], None  # one numeric source: no copy
        numbers = np.full(n, np.nan) if any((name, s) in self.numbers for s in present) else None
        texts = np.full(n, None, object) if any((name, s) in self.texts for s in present) else None
        taken = np.zeros(n, bool)
        for source in present:
            column = self.numbers.get((name, source))
            has = np.zeros(n, bool)
            if column is not None and numbers is not None:
                has_number = ~np.isnan(column[:n])
                put = has_number & ~taken
                numbers[put] = column[:n][put]
                has |= has_number
            text_column = self.texts.get((name, source))
            if text_column is not None and texts is not None:
                has_text = _present(text_column[:n])
                put = has_text & ~taken
                texts[put] = text_column[:n][put]
                has |= has_text
            taken |= has
        return numbers, texts

    # -- ordering --------------------------------------------------------------------------------------------

    def _ordered(self, rows: np.ndarray, sort_by: str, desc: bool, start: int, stop: int) -> np.ndarray:
        """rows[start:stop] in sort order (missing values last, ties by id)."""
        sign = -1.0 if desc else 1.0
        if sort_by in TIME_FIELDS:
            keys = [sign * (self.created if sort_by == "created_at" else self.updated)[rows]]
        elif sort_by in MEMORY_FIELDS:
            keys = [sign * self._rank(sort_by, self.text[sort_by][: self.n], rows)]
        else:
            numbers, texts = self._values(sort_by, "")
            keys = self._property_keys(sort_by, numbers, texts, rows, sign)
        return _top(rows, keys, self.hi, self.lo, start, stop, self.partition_min)

    def _property_keys(
        self, name: str, numbers: np.ndarray | None, texts: np.ndarray | None, rows: np.ndarray, sign: float
    ) -> list[np.ndarray]:
        number_key = np.full(rows.size, np.inf) if numbers is None else sign * numbers[rows]
        if numbers is not None:
            number_key[np.isnan(number_key)] = np.inf  # lacking the value: last, either direction
        if texts is None:
            return [number_key]
        has_text = _present(texts[rows])
        kind = np.where(np.isfinite(number_key), 0.0, np.where(has_text, 1.0, 2.0))  # numbers, text, none
        text_key = np.zeros(rows.size)
        text_key[has_text] = sign * self._rank(f"property:{name}", texts, rows[has_text])
        return [kind, number_key, text_key]

    def _rank(self, key: str, column: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Sort ranks of column[rows]: computed for the rows alone when few, else once for the column."""
        if rows.size <= self.rank_subset_max:
            return np.unique(column[rows], return_inverse=True)[1].astype(np.float64)
        ranks = self._ranks.get(key)
        if ranks is None:
            present = np.flatnonzero(_present(column[: self.n]))
            ranks = np.zeros(self.n)
            ranks[present] = np.unique(column[present], return_inverse=True)[1]
            self._ranks[key] = ranks
        return ranks[rows]


def _present(values: np.ndarray) -> np.ndarray:
    """Which entries of an object column hold a value."""
    return np.not_equal(values, None)  # type: ignore[call-overload,no-any-return]


def _apply_owned(tenant: TenantColumns, box: list[ColumnBatch]) -> None:
    tenant.apply(box.pop())
    _release_free_memory()


def _release_free_memory() -> None:
    """Hand the heap that a load's temporaries fragmented back to the OS (glibc keeps it otherwise:
    measured ~250 MB of RSS after loading 500,000 molecules). A no-op where malloc_trim is missing."""
    with contextlib.suppress(AttributeError, OSError):
        ctypes.CDLL(None).malloc_trim(0)


def _grown(array: np.ndarray, cap: int, fill: Any) -> np.ndarray:
    out = np.full(cap, fill, dtype=array.dtype)
    out[: array.size] = array
    return out


def _number_match(values: np.ndarray, operator: Operator, x: float) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        match operator:
            case Operator.EQ:
                return values == x
            case Operator.NEQ:
                return (values != x) & ~np.isnan(values)
            case Operator.GT:
                return values > x
            case Operator.GTE:
                return values >= x
            case Operator.LT:
                return values < x
            case Operator.LTE:
                return values <= x
    return np.zeros(values.size, bool)


def _text_match(values: np.ndarray, operator: Operator, x: Scalar | tuple[Scalar, ...]) -> np.ndarray:
    present = _present(values)
    match operator:
        case Operator.EQ:
            return np.equal(values, x).astype(bool) & present
        case Operator.NEQ:
            return np.not_equal(values, x).astype(bool) & present
        case Operator.IN:
            wanted = set(x) if isinstance(x, tuple) else {x}
            return np.fromiter((v in wanted for v in values), bool, values.size) & present
        case Operator.CONTAINS:
            needle = str(x).casefold()
            return np.fromiter((v is not None and needle in v.casefold() for v in values), bool, values.size)
    return np.zeros(values.size, bool)


def _top(
    rows: np.ndarray, keys: list[np.ndarray], hi: np.ndarray, lo: np.ndarray, start: int, stop: int,
    partition_min: int = _PARTITION_MIN,
) -> np.ndarray:
    """rows ordered by keys (most significant first, ascending), then id; only [start:stop] is returned.
    With a small page of a large set, a partition on the first key keeps the full sort to its head."""
    if rows.size > 4 * stop and rows.size > partition_min:
        kth = np.partition(keys[0], stop - 1)[stop - 1]
        head = keys[0] <= kth  # every row that can be among the first `stop`, ties included
        rows, keys = rows[head], [k[head] for k in keys]
    order = np.lexsort((lo[rows], hi[rows], *reversed(keys)))
    return rows[order[start:stop]]



# ----------------------------------------------------------------------------------------------------
# The index of every organization


@dataclass
class _Slot:
    tenant: TenantColumns
    ready: asyncio.Task[None]  # the load; shared by every caller, so one caller's cancellation can't abort it
    refreshing: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def failed(self) -> bool:
        return self.ready.done() and (self.ready.cancelled() or self.ready.exception() is not None)


class QueryIndex:
    """Columnar index of every organization this replica has served; see the module docstring."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._slots: dict[str, _Slot] = {}

    async def page(
        self, organization_id: str, user_id: str, query: MoleculeQuery, page: PageRequest
    ) -> tuple[list[str], int]:
        """Ids of one page of matching molecules, in order, and the exact number of matches."""
        tenant, sql_rows = await self._prepare(organization_id, query)
        start = page.offset
        return await asyncio.to_thread(tenant.page, query, user_id, sql_rows, start, start + page.page_size)

    async def candidate_ids(self, organization_id: str, user_id: str, query: MoleculeQuery) -> np.ndarray:
        """Every matching molecule id as UTF-8 bytes (numpy S36), in no particular order: the candidate
        set a structure search accepts (search_index `candidates=`)."""
        tenant, sql_rows = await self._prepare(organization_id, query)
        return await asyncio.to_thread(tenant.candidate_ids, query, user_id, sql_rows)

    async def refresh(self, organization_id: str, molecule_ids: Iterable[str]) -> None:
        """Re-read these molecules (after a write). An organization not loaded yet reads them at its load."""
        ids = sorted({str(u) for u in map(parse_uuid, molecule_ids) if u is not None})
        slot = self._slots.get(organization_id)
        if not ids or slot is None:
            return
        try:
            await asyncio.shield(slot.ready)
        except Exception:
            return  # its next load reads everything
        async with slot.refreshing:  # in order: a later read must never be overwritten by an earlier one
            batch = await read_columns(self._engine, organization_id, ids)
            await asyncio.to_thread(slot.tenant.apply, batch)

    async def on_event(self, envelope: EventEnvelope) -> None:
        """Bus handler for MoleculesChanged."""
        event = unpack(envelope, MoleculesChanged)
        await self.refresh(event.organization_id, [*event.molecule_ids, *event.archived_ids])

    async def preload(self) -> None:
        """Load every organization that has molecules (at start, so first queries don't wait)."""
        for organization_id in await organizations_with_molecules(self._engine):
            await self.tenant(organization_id)

    async def tenant(self, organization_id: str) -> TenantColumns:
        """The organization's columns, loaded on first use (a failed load is retried by the next caller)."""
        slot = self._slots.get(organization_id)
        if slot is None or slot.failed:
            tenant = TenantColumns()
            slot = _Slot(tenant, asyncio.create_task(self._load(organization_id, tenant)))
            self._slots[organization_id] = slot
        await asyncio.shield(slot.ready)
        return slot.tenant

    async def _load(self, organization_id: str, tenant: TenantColumns) -> None:
        # The batch travels in a box the worker empties: the executor's work item would otherwise keep
        # it alive (and its memory unreleasable) until after this coroutine resumes.
        await asyncio.to_thread(_apply_owned, tenant, [await read_columns(self._engine, organization_id, None)])
        log.info("query index: organization %s loaded (%d molecules)", organization_id, tenant.n)

    def stats(self, organization_id: str) -> TenantStats | None:
        slot = self._slots.get(organization_id)
        return None if slot is None or not slot.ready.done() or slot.failed else slot.tenant.stats()

    async def _prepare(self, organization_id: str, query: MoleculeQuery) -> tuple[TenantColumns, list[np.ndarray]]:
        if parse_uuid(organization_id) is None:
            raise ValidationError("The caller has no organization")
        tenant = await self.tenant(organization_id)
        sql_rows = []
        for condition in query.conditions:
            if condition.property in SQL_FIELDS:
                hi, lo = await structure_matches(self._engine, organization_id, condition)
                sql_rows.append(await asyncio.to_thread(tenant.rows_of, hi, lo))
        return tenant, sql_rows
