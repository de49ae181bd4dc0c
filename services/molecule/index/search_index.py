"""In-memory search index of the molecule service: similarity, substructure and exact lookups per
organization.

Each organization (tenant) has its own list of immutable segments; nothing is shared between organizations,
so a query for one organization can only ever see that organization's molecules.

A segment stores its rows sorted by Morgan popcount (then id) and keeps both fingerprints *bit-sliced*: plane
``j`` is one uint64 word per 64 rows holding bit ``j`` of every row's fingerprint. That layout makes the two
hot loops a handful of whole-array numpy operations over only the bits the query has set:

- similarity: the intersection count ``|q & x|`` of every row is the sum of the planes of the query's bits,
  computed with carry-save adders on 64 rows per word; only rows whose popcount is within the Tanimoto bounds
  ``[ceil(t*|q|), floor(|q|/t)]`` are touched, and only rows whose count reaches ``t*|q|`` are decoded;
- substructure screen: ``(x & q) == q`` for every row is the AND of the planes of the query's bits.

Survivors of the screen are matched with RDKit's SubstructLibrary (C++, releases the GIL) over a
CachedTrustedSmilesMolHolder, in chunks, so a query stops at its time budget and says so.

Fingerprints arrive packed as the chemistry module stores them: 2048 bits, 256 bytes, bit ``i`` of the RDKit
ExplicitBitVect is bit ``i % 8`` of byte ``i // 8`` (``numpy.packbits(bitorder="little")``). SMILES must be
RDKit canonical SMILES of the registered parent (they are parsed without sanitization, "trusted").

Concurrency: writers (add, remove, bulk_load, clear) are serialised by a lock and publish a new tuple of
segments per organization; readers take no lock and work on the tuple they found (copy-on-write), so any
number of searches can run alongside one writer. All methods are CPU-bound: call them from worker threads
(``asyncio.to_thread``); numpy and RDKit release the GIL for most of the work, so two searches use two
cores. Writes rebuild segments (geometric merging: O(log n) segments, each row rebuilt O(log n) times); a
merge of the largest segment of a big organization takes seconds, during which other writers wait and
readers do not.

Memory: about 700 bytes per molecule (measured on molsets): 512 for the two fingerprints, ~80 for the SMILES
kept twice (a blob used to rebuild segments, and RDKit's holder used for matching), 48 for the id (UTF-8
bytes, hash, permutation), and a few more for popcounts and offsets. InChIKeys add 27 when given.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from rdkit import Chem
from rdkit.Chem import rdSubstructLibrary

FP_BITS = 2048
FP_BYTES = FP_BITS // 8
_FP_WORDS = FP_BITS // 64
_ALL_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)
# Words (64 rows each) per similarity step: big enough to amortise numpy call overhead, small enough to
# stay in cache and to check the time budget often.
_SIM_CHUNK_WORDS = 2048
# Blocks of 64 rows bit-transposed at once when building or decoding segments (~8 MB of temporaries).
_TRANSPOSE_BLOCKS = 512
# Approximate C++ cost of one molecule in a CachedTrustedSmilesMolHolder besides its SMILES characters.
_HOLDER_OVERHEAD_BYTES = 48
# Substructure matching runs in chunks sized to the measured cost per molecule, within these bounds.
_MIN_MATCH_CHUNK = 64
_MAX_MATCH_CHUNK = 8192


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One molecule as the index needs it."""

    id: str
    morgan_fp: bytes  # Morgan radius 2, 2048 bits, packed little-endian within bytes
    pattern_fp: bytes  # RDKit PatternFingerprint, 2048 bits, same packing
    smiles: str  # RDKit canonical SMILES of the registered parent
    inchi_key: str = ""


@dataclass(frozen=True, slots=True)
class SimilarityResult:
    hits: list[tuple[str, float]]  # best first, ties by id
    searched: int  # molecules whose similarity was computed (those within the popcount bounds)
    truncated: bool  # the time budget ran out before every candidate was compared: hits may miss better ones


@dataclass(frozen=True, slots=True)
class SubstructureResult:
    # At most `limit`, in search order: fewer Morgan bits (roughly, smaller molecules) first.
    hits: list[str]
    total_matched: int  # exact when not truncated; otherwise a lower bound
    screened: int  # molecules that passed the fingerprint screen: an upper bound of the true total
    checked: int  # molecules matched with RDKit
    truncated: bool  # not every screened molecule was checked (limit reached or time budget spent)
    timed_out: bool  # the search stopped because of its time budget


@dataclass(frozen=True, slots=True)
class IndexStats:
    molecules: int
    segments: int
    memory_bytes: int  # numpy arrays and SMILES exactly, the RDKit holder estimated


# ----------------------------------------------------------------------------------------------------------
# Bit-level helpers


_TRANSPOSE_MASKS = (
    (32, np.uint64(0x00000000FFFFFFFF)),
    (16, np.uint64(0x0000FFFF0000FFFF)),
    (8, np.uint64(0x00FF00FF00FF00FF)),
    (4, np.uint64(0x0F0F0F0F0F0F0F0F)),
    (2, np.uint64(0x3333333333333333)),
    (1, np.uint64(0x5555555555555555)),
)


def _transpose64(a: np.ndarray) -> None:
    """Transpose in place each 64x64 bit block on the last axis: bit b of a[..., r] <-> bit r of a[..., b]."""
    lead = a.shape[:-1]
    for j, mask in _TRANSPOSE_MASKS:
        v = a.reshape(*lead, 64 // (2 * j), 2, j)
        lo = v[..., 0, :]
        hi = v[..., 1, :]
        t = ((lo >> np.uint64(j)) ^ hi) & mask
        hi ^= t
        lo ^= t << np.uint64(j)


def _rows_to_planes(rows: np.ndarray) -> np.ndarray:
    """uint8[n, 256] packed fingerprints -> uint64[2048, ceil(n/64)] bit planes (padding rows are zero)."""
    n = rows.shape[0]
    n_words = -(-n // 64)
    planes = np.empty((_FP_WORDS, 64, n_words), np.uint64)
    words = rows.view("<u8")
    for w0 in range(0, n_words, _TRANSPOSE_BLOCKS):
        w1 = min(n_words, w0 + _TRANSPOSE_BLOCKS)
        block = np.zeros(((w1 - w0) * 64, _FP_WORDS), np.uint64)
        part = words[w0 * 64 : w1 * 64]
        block[: part.shape[0]] = part
        # [word, block, row]
        a = np.ascontiguousarray(block.reshape(w1 - w0, 64, _FP_WORDS).transpose(2, 0, 1))
        _transpose64(a)  # -> [word, block, bit]
        planes[:, :, w0:w1] = a.transpose(0, 2, 1)
    return planes.reshape(FP_BITS, n_words)


def _planes_to_rows(planes: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Packed fingerprints (uint8[len(rows), 256]) of the given rows (ascending), decoded from bit planes."""
    out = np.empty((len(rows), FP_BYTES), np.uint8)
    out_words = out.view("<u8")
    by_bit = planes.reshape(_FP_WORDS, 64, planes.shape[1])
    words_needed = np.unique(rows // 64)
    for i in range(0, len(words_needed), _TRANSPOSE_BLOCKS):
        wsel = words_needed[i : i + _TRANSPOSE_BLOCKS]
        a = np.ascontiguousarray(by_bit[:, :, wsel].transpose(0, 2, 1))  # [word, block, bit]
        _transpose64(a)  # -> [word, block, row]
        decoded = a.transpose(1, 2, 0).reshape(len(wsel) * 64, _FP_WORDS)
        take = np.arange(np.searchsorted(rows, wsel[0] * 64), np.searchsorted(rows, wsel[-1] * 64 + 64))
        local = np.searchsorted(wsel, rows[take] // 64) * 64 + rows[take] % 64
        out_words[take] = decoded[local]
    return out


def _bitsliced_sum(planes: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Per bit position, the number of planes with that bit set, as bit planes of the count (least significant
    first), using carry-save adders: about five word operations per input plane."""
    out: list[np.ndarray] = []
    level = list(planes)
    while level:
        carries: list[np.ndarray] = []
        while len(level) >= 3:
            a, b, c = level.pop(), level.pop(), level.pop()
            x = a ^ b
            level.append(x ^ c)
            carries.append((a & b) | (x & c))
        if len(level) == 2:
            a, b = level
            level = [a ^ b]
            carries.append(a & b)
        out.append(level[0])
        level = carries
    return out


def _count_at_least(count_bits: list[np.ndarray], minimum: int, width: int) -> np.ndarray:
    """Bit mask of the positions whose bit-sliced count is >= minimum."""
    if minimum <= 0:
        return np.full(width, _ALL_ONES)
    if minimum >= 1 << len(count_bits):
        return np.zeros(width, np.uint64)
    greater = np.zeros(width, np.uint64)
    equal = np.full(width, _ALL_ONES)
    for k in range(len(count_bits) - 1, -1, -1):
        if (minimum >> k) & 1:
            equal &= count_bits[k]
        else:
            greater |= equal & count_bits[k]
            equal &= ~count_bits[k]
    return greater | equal


def _set_positions(words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(word index, bit index) of every set bit of a uint64 array, in ascending order."""
    nz = np.flatnonzero(words)
    bits = np.unpackbits(words[nz].view(np.uint8), bitorder="little").reshape(len(nz), 64)
    wi, bi = np.nonzero(bits)
    return nz[wi], bi.astype(np.uint64)


def _nth_set_rows(mask: np.ndarray, cumulative: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Rows of the set bits numbered start..stop-1 (in ascending order) of a row mask, given the cumulative
    popcount of its words; touches only the words holding them."""
    w0 = int(np.searchsorted(cumulative, start, "right"))
    w1 = int(np.searchsorted(cumulative, stop - 1, "right")) + 1
    words, bits = _set_positions(mask[w0:w1])
    before = int(cumulative[w0 - 1]) if w0 else 0
    rows = (words.astype(np.int64) + w0) * 64 + bits.astype(np.int64)
    return rows[start - before : stop - before]


def _rows_mask(rows: np.ndarray, n_words: int) -> np.ndarray:
    """uint64 bit mask with the given row indices set."""
    flags = np.zeros(n_words * 64, np.uint8)
    flags[rows] = 1
    return np.packbits(flags, bitorder="little").view("<u8")


def _fp_bits(fp: bytes) -> np.ndarray:
    if len(fp) != FP_BYTES:
        raise ValueError(f"fingerprint must be {FP_BYTES} bytes, got {len(fp)}")
    return np.flatnonzero(np.unpackbits(np.frombuffer(fp, np.uint8), bitorder="little"))


def _fp_rows(fps: np.ndarray | Sequence[bytes], n: int, what: str) -> np.ndarray:
    if isinstance(fps, np.ndarray):
        rows = np.ascontiguousarray(fps, dtype=np.uint8)
    else:
        rows = np.frombuffer(b"".join(fps), np.uint8)
    if rows.size != n * FP_BYTES:
        raise ValueError(f"{what}: expected {n} fingerprints of {FP_BYTES} bytes")
    return rows.reshape(n, FP_BYTES)


def _encode(values: np.ndarray | Iterable[str]) -> list[bytes]:
    items = values.tolist() if isinstance(values, np.ndarray) else values
    return [v if isinstance(v, bytes) else str(v).encode() for v in items]


def _fixed_width(raw: list[bytes]) -> np.ndarray:
    """Byte strings -> numpy fixed-width bytes: compact, sortable, comparable in bulk."""
    return np.array(raw, dtype="S") if raw else np.zeros(0, "S1")


# Ids are looked up by a 64-bit hash of their UTF-8 bytes (then compared in full, so collisions are harmless).
# Python's hash (the default) is salted per process, which is fine for an index that lives in one process.
IdHash = Callable[[bytes], int]


def _encode_ids(values: np.ndarray | Iterable[str], id_hash: IdHash) -> tuple[np.ndarray, np.ndarray]:
    """Ids -> (fixed-width UTF-8 bytes, int64 hashes), in input order. A numpy bytes array (dtype S) is the
    cheapest input."""
    raw = _encode(values)
    fixed = values if isinstance(values, np.ndarray) and values.dtype.kind == "S" else _fixed_width(raw)
    return fixed, np.fromiter(map(id_hash, raw), np.int64, len(raw))


# ----------------------------------------------------------------------------------------------------------
# Segments


@dataclass(frozen=True, slots=True, eq=False)
class _Segment:
    """Immutable block of molecules sorted by Morgan popcount then id. Removal swaps in a new `alive` mask."""

    n: int
    n_alive: int
    alive: np.ndarray  # uint64[words]: bit r set when row r is live
    popcount: np.ndarray  # uint16[n], ascending
    morgan: np.ndarray  # uint64[2048, words] bit planes
    pattern: np.ndarray  # uint64[2048, words] bit planes
    ids: np.ndarray  # S[n], by row
    id_hash: np.ndarray  # int64[n]: hashes of the ids, ascending, for lookups
    row_of_hash: np.ndarray  # int32[n]: row of id_hash[i]
    inchi_keys: np.ndarray  # S[n], by row
    smiles: bytes  # canonical SMILES of all rows, concatenated in row order
    smiles_end: np.ndarray  # int64[n]: end offset of each row's SMILES in `smiles`
    holder: rdSubstructLibrary.CachedTrustedSmilesMolHolder

    @staticmethod
    def build(
        ids: np.ndarray,
        hashes: np.ndarray,
        morgan: np.ndarray,
        pattern: np.ndarray,
        smiles: Sequence[bytes],
        inchi_keys: np.ndarray,
        by_id: np.ndarray | None = None,
    ) -> _Segment:
        """A segment of the given rows (distinct ids); `by_id` is argsort(ids) when the caller has it."""
        n = len(ids)
        popcount = np.bitwise_count(morgan.view("<u8")).sum(axis=1, dtype=np.uint16)
        if by_id is None:
            by_id = np.argsort(ids, kind="stable")
        # By popcount, then id: a deterministic hit order.
        order = by_id[np.argsort(popcount[by_id], kind="stable")]
        row_of = np.empty(n, np.int32)
        row_of[order] = np.arange(n, dtype=np.int32)
        by_hash = np.argsort(hashes, kind="stable")
        ordered_smiles = [smiles[i] for i in order]
        holder = rdSubstructLibrary.CachedTrustedSmilesMolHolder()
        for s in ordered_smiles:
            holder.AddSmiles(s.decode())
        n_words = -(-n // 64)
        return _Segment(
            n=n,
            n_alive=n,
            alive=_rows_mask(np.arange(n), n_words),
            popcount=popcount[order],
            morgan=_rows_to_planes(morgan[order]),
            pattern=_rows_to_planes(pattern[order]),
            ids=ids[order],
            id_hash=hashes[by_hash],
            row_of_hash=row_of[by_hash],
            inchi_keys=inchi_keys[order],
            smiles=b"".join(ordered_smiles),
            smiles_end=np.cumsum([len(s) for s in ordered_smiles], dtype=np.int64),
            holder=holder,
        )

    @staticmethod
    def merge(segments: Sequence[_Segment], id_hash: IdHash) -> _Segment:
        """One segment holding the live rows of all the given segments."""
        parts = [(seg, seg.live_rows()) for seg in segments]
        smiles = [s for seg, rows in parts for s in seg.smiles_of(rows)]
        ids = np.concatenate([seg.ids[rows] for seg, rows in parts])
        return _Segment.build(
            ids,
            np.fromiter(map(id_hash, ids.tolist()), np.int64, len(ids)),
            np.concatenate([_planes_to_rows(seg.morgan, rows) for seg, rows in parts]),
            np.concatenate([_planes_to_rows(seg.pattern, rows) for seg, rows in parts]),
            smiles,
            np.concatenate([seg.inchi_keys[rows] for seg, rows in parts]),
        )

    @property
    def n_words(self) -> int:
        return self.alive.shape[0]

    def live_rows(self) -> np.ndarray:
        words, bits = _set_positions(self.alive)
        return words.astype(np.int64) * 64 + bits.astype(np.int64)

    def smiles_of(self, rows: np.ndarray) -> list[bytes]:
        ends = self.smiles_end[rows]
        starts = np.where(rows > 0, self.smiles_end[np.maximum(rows - 1, 0)], 0)
        return [self.smiles[s:e] for s, e in zip(starts.tolist(), ends.tolist(), strict=True)]

    def live_rows_of(self, ids: np.ndarray, hashes: np.ndarray) -> np.ndarray:
        """Distinct live rows holding any of the given ids (as returned by _encode_ids)."""
        if not self.n or not len(ids):
            return np.zeros(0, np.int64)
        order = np.argsort(hashes)  # searching in order walks the hash table once (cache friendly)
        hashes, ids = hashes[order], ids[order]
        left = np.searchsorted(self.id_hash, hashes, "left")
        right = np.searchsorted(self.id_hash, hashes, "right")
        found = right > left
        rows = self.row_of_hash[left[found]].astype(np.int64)
        rows = rows[self.ids[rows] == ids[found]]
        # Distinct ids sharing a hash (practically never): check the rest of each run too.
        shared = np.flatnonzero(right - left > 1)
        extra = [r for i in shared for r in self.row_of_hash[left[i] + 1 : right[i]] if self.ids[r] == ids[i]]
        rows = np.sort(np.concatenate([rows, np.asarray(extra, np.int64)]))
        if len(rows):  # the input may repeat ids
            rows = rows[np.append(True, rows[1:] != rows[:-1])]
        live = (self.alive[rows // 64] >> (rows % 64).astype(np.uint64)) & np.uint64(1)
        return rows[live.astype(bool)]

    def without(self, rows: np.ndarray) -> _Segment:
        """This segment with the given (live, distinct) rows removed."""
        alive = self.alive & ~_rows_mask(rows, self.n_words)
        return replace(self, alive=alive, n_alive=self.n_alive - len(rows))

    def memory_bytes(self) -> int:
        arrays = (
            self.alive,
            self.popcount,
            self.morgan,
            self.pattern,
            self.ids,
            self.id_hash,
            self.row_of_hash,
            self.inchi_keys,
            self.smiles_end,
        )
        return sum(a.nbytes for a in arrays) + 2 * len(self.smiles) + self.n * _HOLDER_OVERHEAD_BYTES


def _compact(segments: list[_Segment], id_hash: IdHash) -> tuple[_Segment, ...]:
    """Drop empty segments, rebuild mostly-dead ones, and merge the newest while a segment is not at least
    twice the size of the next (so there are O(log n) segments and each row is rebuilt O(log n) times)."""
    kept = [seg if seg.n_alive * 2 > seg.n else _Segment.merge([seg], id_hash) for seg in segments if seg.n_alive]
    kept = [seg for seg in kept if seg.n_alive]
    while len(kept) > 1 and kept[-2].n_alive < 2 * kept[-1].n_alive:
        kept[-2:] = [_Segment.merge(kept[-2:], id_hash)]
    return tuple(kept)


# ----------------------------------------------------------------------------------------------------------
# Substructure scans


@dataclass(frozen=True, slots=True)
class MatchChunk:
    """Screened rows of one segment to match next, ascending (the search order)."""

    segment: int
    rows: np.ndarray
    wanted: int  # matches still wanted (-1: all): the matcher may stop at that many


class SubstructureScan:
    """One substructure search after the fingerprint screen: the caller asks for chunks of screened molecules,
    matches them (in this process or another) and records what matched, until `next_chunk` says the search
    is over (every screened molecule checked, `limit` hits found, or the deadline passed). Chunks are sized
    to the measured cost per molecule so the deadline is checked often. Works on the segments it was made
    from (copy-on-write), so writes meanwhile do not disturb it."""

    def __init__(
        self,
        segments: Sequence[_Segment],
        screens: list[tuple[np.ndarray, np.ndarray]],
        limit: int | None,
        count_all: bool,
        deadline: float | None,
    ) -> None:
        self._segments = segments
        self._screens = screens
        self._limit = limit or 0
        self._keep_all = limit is None
        self._count_all = count_all
        self.deadline = deadline
        self.screened = sum(int(cum[-1]) for _, cum in screens if len(cum))
        self._segment = self._pos = 0
        self._hits: list[str] = []
        self._matched = self._checked = 0
        self._timed_out = False
        self._cost_per_mol: float | None = None

    def next_chunk(self) -> MatchChunk | None:
        """The next rows to match, or None when the search is over."""
        if not self._count_all and len(self._hits) >= self._limit:
            return None
        while self._segment < len(self._screens):
            mask, cum = self._screens[self._segment]
            total = int(cum[-1]) if len(cum) else 0
            if self._pos < total:
                break
            self._segment, self._pos = self._segment + 1, 0
        else:
            return None
        now = time.monotonic()
        if self.deadline is not None and now >= self.deadline:
            self._timed_out = True
            return None
        wanted = -1 if self._count_all else self._limit - len(self._hits)
        size = _MIN_MATCH_CHUNK
        if self._cost_per_mol is not None:
            budget = (self.deadline - now) / 2 if self.deadline is not None else math.inf
            size = int(min(_MAX_MATCH_CHUNK, max(_MIN_MATCH_CHUNK, budget / max(self._cost_per_mol, 1e-7))))
        if wanted > 0 and self._checked:
            # No more rows than twice what the hit rate so far says the remaining hits need: a matcher in
            # another process gets every row of a chunk, even those after the hit it stops at.
            rate = max(self._matched, 1) / self._checked
            size = min(size, max(_MIN_MATCH_CHUNK, int(2 * wanted / rate)))
        rows = _nth_set_rows(mask, cum, self._pos, min(total, self._pos + size))
        return MatchChunk(self._segment, rows, wanted)

    def smiles(self, chunk: MatchChunk) -> bytes:
        """The chunk's canonical SMILES, in its order, one a line (for a matcher in another process)."""
        return b"\n".join(self._segments[chunk.segment].smiles_of(chunk.rows))

    def holder(self, chunk: MatchChunk) -> rdSubstructLibrary.CachedTrustedSmilesMolHolder:
        """The chunk's segment's molecules for a SubstructLibrary in this process (rows are its indices)."""
        return self._segments[chunk.segment].holder

    def record(self, chunk: MatchChunk, matched_rows: np.ndarray, seconds: float) -> None:
        """What matched in the chunk (rows of its segment, ascending) and how long matching took."""
        done = len(chunk.rows)
        # With a result cap the matcher stops at the last hit; all before it in the order was checked.
        if chunk.wanted > 0 and len(matched_rows) >= chunk.wanted:
            done = int(np.searchsorted(chunk.rows, matched_rows.max())) + 1
        self._cost_per_mol = max(seconds, 1e-9) / max(done, 1)
        self._pos += done
        self._checked += done
        self._matched += len(matched_rows)
        room = len(matched_rows) if self._keep_all else max(0, self._limit - len(self._hits))
        self._hits.extend(i.decode() for i in self._segments[chunk.segment].ids[matched_rows[:room]])

    def time_out(self) -> None:
        """The deadline passed while a chunk was being matched: that chunk counts as not checked."""
        self._timed_out = True

    def result(self) -> SubstructureResult:
        return SubstructureResult(
            hits=self._hits,
            total_matched=self._matched,
            screened=self.screened,
            checked=self._checked,
            truncated=self._checked < self.screened,
            timed_out=self._timed_out,
        )


# ----------------------------------------------------------------------------------------------------------
# The index


class SearchIndex:
    """Per-organization molecule search index. See the module docstring for layout and concurrency."""

    def __init__(self, *, id_hash: IdHash = hash) -> None:
        self._orgs: dict[str, tuple[_Segment, ...]] = {}
        self._id_hash = id_hash
        self._write_lock = threading.Lock()

    # -- writes ----------------------------------------------------------------------------------------------

    def bulk_load(
        self,
        org_id: str,
        ids: np.ndarray | Sequence[str],
        morgan_fps: np.ndarray | Sequence[bytes],
        pattern_fps: np.ndarray | Sequence[bytes],
        smiles: Sequence[str],
        inchi_keys: np.ndarray | Sequence[str] | None = None,
    ) -> int:
        """Replace an organization's molecules with the given ones (the start-up load). Fingerprints may be
        uint8[n, 256] arrays (fill a preallocated one while streaming rows, so the peak is that array plus
        the index) or sequences of 256-byte strings; ids are best given as a numpy bytes array (dtype S). A
        repeated id keeps its last row. Returns the number indexed."""
        segment = self._build(ids, morgan_fps, pattern_fps, smiles, inchi_keys)
        with self._write_lock:
            self._orgs[org_id] = (segment,) if segment.n else ()
        return segment.n

    def add(self, org_id: str, items: Iterable[IndexEntry]) -> int:
        """Add or replace (same id) molecules. Returns the number of molecules in the batch."""
        batch = {item.id: item for item in items}  # last one wins
        if not batch:
            return 0
        entries = list(batch.values())
        segment = self._build(
            [e.id for e in entries],
            [e.morgan_fp for e in entries],
            [e.pattern_fp for e in entries],
            [e.smiles for e in entries],
            [e.inchi_key for e in entries],
        )
        with self._write_lock:
            current = self._orgs.get(org_id, ())
            new_ids = segment.ids[segment.row_of_hash], segment.id_hash
            updated = [self._without_ids(seg, *new_ids) for seg in current]
            self._orgs[org_id] = _compact([*updated, segment], self._id_hash)
        return len(entries)

    def remove(self, org_id: str, ids: Iterable[str]) -> int:
        """Remove molecules by id; unknown ids are ignored. Returns the number removed."""
        keys = _encode_ids(ids, self._id_hash)
        with self._write_lock:
            current = self._orgs.get(org_id, ())
            updated = [self._without_ids(seg, *keys) for seg in current]
            removed = sum(a.n_alive - b.n_alive for a, b in zip(current, updated, strict=True))
            if removed:
                self._orgs[org_id] = _compact(updated, self._id_hash)
        return removed

    def clear(self, org_id: str) -> None:
        with self._write_lock:
            self._orgs.pop(org_id, None)

    @staticmethod
    def _without_ids(seg: _Segment, ids: np.ndarray, hashes: np.ndarray) -> _Segment:
        rows = seg.live_rows_of(ids, hashes)
        return seg.without(rows) if len(rows) else seg

    def _build(
        self,
        ids: np.ndarray | Sequence[str],
        morgan_fps: np.ndarray | Sequence[bytes],
        pattern_fps: np.ndarray | Sequence[bytes],
        smiles: Sequence[str],
        inchi_keys: np.ndarray | Sequence[str] | None,
    ) -> _Segment:
        enc_ids, hashes = _encode_ids(ids, self._id_hash)
        n = len(enc_ids)
        if len(smiles) != n or (inchi_keys is not None and len(inchi_keys) != n):
            raise ValueError("ids, smiles and inchi_keys must have the same length")
        morgan = _fp_rows(morgan_fps, n, "morgan_fps")
        pattern = _fp_rows(pattern_fps, n, "pattern_fps")
        keys = _fixed_width(_encode(inchi_keys)) if inchi_keys is not None else np.zeros(n, "S1")
        encoded_smiles = [s.encode() for s in smiles]
        by_id = np.argsort(enc_ids, kind="stable")
        sorted_ids = enc_ids[by_id]
        last = np.ones(n, bool)
        last[:-1] = sorted_ids[1:] != sorted_ids[:-1]
        if last.all():
            return _Segment.build(enc_ids, hashes, morgan, pattern, encoded_smiles, keys, by_id)
        # A repeated id keeps its last row (the stable sort keeps input order among equal ids).
        keep = np.sort(by_id[last])
        enc_ids, hashes, morgan, pattern, keys = (a[keep] for a in (enc_ids, hashes, morgan, pattern, keys))
        return _Segment.build(enc_ids, hashes, morgan, pattern, [encoded_smiles[i] for i in keep], keys)

    # -- reads -----------------------------------------------------------------------------------------------

    def size(self, org_id: str) -> int:
        return sum(seg.n_alive for seg in self._orgs.get(org_id, ()))

    def stats(self, org_id: str) -> IndexStats:
        segments = self._orgs.get(org_id, ())
        return IndexStats(
            molecules=sum(seg.n_alive for seg in segments),
            segments=len(segments),
            memory_bytes=sum(seg.memory_bytes() for seg in segments),
        )

    def exact(self, org_id: str, inchi_key: str) -> list[str]:
        """Ids of the live molecules with this InChIKey (at most one: registration keeps keys unique)."""
        key = inchi_key.encode()
        found: list[str] = []
        for seg in self._orgs.get(org_id, ()):
            rows = np.flatnonzero(seg.inchi_keys == key)
            live = (seg.alive[rows // 64] >> (rows % 64).astype(np.uint64)) & np.uint64(1)
            found.extend(i.decode() for i in seg.ids[rows[live.astype(bool)]])
        return sorted(found)

    def similar(
        self,
        org_id: str,
        query_fp: bytes,
        threshold: float = 0.7,
        limit: int | None = 100,
        candidates: Collection[str] | np.ndarray | None = None,
        time_budget_s: float | None = None,
    ) -> SimilarityResult:
        """Molecules whose Morgan Tanimoto similarity to `query_fp` is >= threshold, best first (ties by id),
        at most `limit` (None: all). `candidates` restricts the search to those ids (e.g. a filter's result;
        mapping ids costs ~0.3 us each, so for a broad filter filtering the hits afterwards is cheaper)."""
        if not 0.0 <= threshold <= 1.0:
            raise ValueError("threshold must be within [0, 1]")
        if limit is not None and limit < 1:
            raise ValueError("limit must be positive")
        deadline = None if time_budget_s is None else time.monotonic() + time_budget_s
        qbits = _fp_bits(query_fp)
        qc = len(qbits)
        segments = self._orgs.get(org_id, ())
        allowed = self._allowed(segments, candidates)
        if qc == 0 or not segments:
            return SimilarityResult(hits=[], searched=0, truncated=False)
        # Only rows with t*|q| <= |x| <= |q|/t can reach t, and a hit needs |q & x| >= t*|q| too. Both bounds
        # are loosened for float rounding; the final `sim >= threshold` test is exact.
        lo = math.ceil(threshold * qc - 1e-9)
        hi = math.floor(qc / threshold + 1e-9) if threshold > 0 else FP_BITS
        steps = []
        for s, seg in enumerate(segments):
            a = int(np.searchsorted(seg.popcount, lo, "left"))
            b = int(np.searchsorted(seg.popcount, hi, "right"))
            if a >= b:
                continue
            for w0 in range(a // 64, -(-b // 64), _SIM_CHUNK_WORDS):
                w1 = min(-(-b // 64), w0 + _SIM_CHUNK_WORDS)
                mid = int(seg.popcount[min(seg.n - 1, (w0 + w1) * 32)])
                steps.append((abs(mid - qc), s, w0, w1))
        steps.sort()  # rows with a popcount near the query's first: they hold the best hits if time runs out
        sims: list[np.ndarray] = []
        hit_ids: list[np.ndarray] = []
        searched = 0
        truncated = False
        for _, s, w0, w1 in steps:
            if deadline is not None and time.monotonic() >= deadline:
                truncated = True
                break
            seg = segments[s]
            mask = seg.alive[w0:w1] if allowed is None else seg.alive[w0:w1] & allowed[s][w0:w1]
            words = np.flatnonzero(mask)
            if not len(words):
                continue
            # Sparse (a candidate list): gather only the words holding candidates.
            if len(words) * 2 < w1 - w0:
                mask = mask[words]
                block = seg.morgan[qbits[:, None], words + w0]
                words = words + w0
            else:
                block = seg.morgan[qbits, w0:w1]
                words = np.arange(w0, w1)
            searched += int(np.bitwise_count(mask).sum())
            count_bits = _bitsliced_sum(list(block))
            passing = _count_at_least(count_bits, lo, len(mask)) & mask
            wi, bi = _set_positions(passing)
            inter = np.zeros(len(wi), np.int64)
            for k, plane in enumerate(count_bits):
                inter += ((plane[wi] >> bi) & np.uint64(1)).astype(np.int64) << k
            rows = words[wi].astype(np.int64) * 64 + bi.astype(np.int64)
            sim = inter / (seg.popcount[rows].astype(np.int64) + qc - inter)
            ok = sim >= threshold
            sims.append(sim[ok])
            hit_ids.append(seg.ids[rows[ok]])
        if not sims:
            return SimilarityResult(hits=[], searched=searched, truncated=truncated)
        all_sims = np.concatenate(sims)
        all_ids = np.concatenate(hit_ids)
        if limit is not None and len(all_sims) > limit:
            kth = np.partition(all_sims, len(all_sims) - limit)[len(all_sims) - limit]
            keep = all_sims >= kth  # ties at the cut are settled by id in the sort below
            all_sims, all_ids = all_sims[keep], all_ids[keep]
        order = np.lexsort((all_ids, -all_sims))[:limit]
        hits = [(i.decode(), float(v)) for i, v in zip(all_ids[order], all_sims[order], strict=True)]
        return SimilarityResult(hits=hits, searched=searched, truncated=truncated)

    def substructure(
        self,
        org_id: str,
        query_mol: Chem.Mol,
        query_pattern_fp: bytes,
        limit: int | None = 100,
        candidates: Collection[str] | np.ndarray | None = None,
        time_budget_s: float | None = 1.0,
        count_all: bool = False,
        threads: int = 1,
        params: Chem.SubstructMatchParameters | None = None,
    ) -> SubstructureResult:
        """Molecules containing `query_mol` (a SMARTS or SMILES mol), at most `limit` (None: all, implies
        count_all), matched in this thread. `query_pattern_fp` is the query's PatternFingerprint (2048 bits,
        packed). The search stops when `limit` hits are found (unless count_all: then it keeps counting) or
        when the time budget is spent — checked between chunks, so one molecule that keeps RDKit busy keeps
        this thread busy (the service matches in killable processes instead: SubstructureScan and
        services/molecule/index/matcher.py). Either way `truncated` is set and `total_matched` is a lower bound
        (`screened` an upper one). `threads` is passed to RDKit's GetMatches (numThreads)."""
        deadline = None if time_budget_s is None else time.monotonic() + time_budget_s
        scan = self.substructure_scan(org_id, query_pattern_fp, limit, candidates, deadline, count_all)
        params = params or Chem.SubstructMatchParameters()
        libraries: dict[int, rdSubstructLibrary.SubstructLibrary] = {}
        while (chunk := scan.next_chunk()) is not None:
            # One library object per segment and query: it carries the search order.
            library = libraries.get(chunk.segment)
            if library is None:
                library = libraries[chunk.segment] = rdSubstructLibrary.SubstructLibrary(scan.holder(chunk))
            library.SetSearchOrder(chunk.rows.tolist())
            started = time.monotonic()
            matches = library.GetMatches(query_mol, 0, len(chunk.rows), params, threads, chunk.wanted)
            scan.record(chunk, np.asarray(matches, np.int64), time.monotonic() - started)
        return scan.result()

    def substructure_scan(
        self,
        org_id: str,
        query_pattern_fp: bytes,
        limit: int | None = 100,
        candidates: Collection[str] | np.ndarray | None = None,
        deadline: float | None = None,
        count_all: bool = False,
    ) -> SubstructureScan:
        """The screened molecules of a substructure search, to be matched chunk by chunk by the caller
        (here, or in another process: see SubstructureScan). `deadline` is a time.monotonic() value."""
        if limit is not None and limit < 1:
            raise ValueError("limit must be positive")
        qbits = _fp_bits(query_pattern_fp)
        segments = self._orgs.get(org_id, ())
        allowed = self._allowed(segments, candidates)
        # Screen every segment first (cheap) so `screened` is complete; survivors are extracted lazily, chunk
        # by chunk, because a common query needs only its first few hundred.
        screens = []
        for s, seg in enumerate(segments):
            mask = seg.alive.copy() if allowed is None else seg.alive & allowed[s]
            for j in qbits:
                mask &= seg.pattern[j]
            screens.append((mask, np.cumsum(np.bitwise_count(mask), dtype=np.int64)))
        return SubstructureScan(segments, screens, limit, count_all or limit is None, deadline)

    def _allowed(
        self, segments: Sequence[_Segment], candidates: Collection[str] | np.ndarray | None
    ) -> list[np.ndarray] | None:
        """Per segment, the bit mask of rows whose id is among the candidates (None: no restriction)."""
        if candidates is None:
            return None
        keys = _encode_ids(candidates, self._id_hash)
        return [_rows_mask(seg.live_rows_of(*keys), seg.n_words) for seg in segments]
