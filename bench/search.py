"""Structure search over molsets (ZINC, drug-like): the molecule service's index against FPSim2 and RDKit.

    python -m bench.search [--molecules 200000 | --full] [--queries 100] [--no-postgres]

- Similarity: ms/query on one core for Tanimoto >= 0.7 and >= 0.5 (every hit, sorted), SearchIndex.similar
  against FPSim2's in-memory engine (n_workers=1) on the same fingerprints: the Morgan radius 2, 2048-bit
  fingerprints the registration stores, written into an FPSim2 file as they are. Queries are molecules of the
  molsets test split (not in the searched set); both answers are compared.
- Substructure: top 100 hits, p50/p95 over a set of SMARTS from common to rare, SearchIndex.substructure
  (no time budget) against RDKit's SubstructLibrary with a PatternHolder of the same pattern fingerprints and
  the same CachedTrustedSmilesMolHolder, one thread each. Then the same queries the way the service runs
  them: the index's screen, then matching in a StructureMatcher worker process (killable at the budget;
  the candidates' SMILES are sent to it chunk by chunk), to show what that isolation costs.
- Start-up: with PostgreSQL (embedded, in a temporary directory), the molecules are written to the molecule
  schema and the service's loader (search_sync.SearchIndexSync.load_all) times the load into a new index.

The default is the first 200,000 molecules of the training set (`make bench` time); --full takes all 1.58M.
Molecules are described once (canonical SMILES and fingerprints, on every core) and cached under
$MOLBRIDGE_DATA_DIR/bench/. Figures and ratios are printed; nothing asserts on them. Issue targets:
similarity no slower than FPSim2; substructure p95 < 1 s and within 1.5x of SubstructLibrary.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import importlib.util
import io
import multiprocessing
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from services.molecule.index.search_index import FP_BYTES, SearchIndex
from services.runtime.settings import REPO_ROOT

T = TypeVar("T")
ORGANIZATION = "0b5e55ed-0000-4000-8000-0000000005ea"
MOLSETS_TRAIN = 1_584_663
SIMILARITY_THRESHOLDS = (0.7, 0.5)
TOP_HITS = 100
# Substructure queries, common to rare (rare ones make both engines check every screened molecule).
SUBSTRUCTURES = [
    "c1ccccc1",
    "C(=O)N",
    "[#7;R]",
    "c1ccncc1",
    "C(=O)[OH]",
    "[F,Cl,Br,I]",
    "S(=O)(=O)N",
    "c1ccc2[nH]ccc2c1",
    "C1CCNCC1",
    "N1CCNCC1",
    "c1ccsc1",
    "[r5]",
    "C#N",
    "c1ccc2ccccc2c1",
    "[N+](=O)[O-]",
    "C(F)(F)F",
    "O=C1CCCN1",
    "c1ncncn1",
    "[#6]~[#7]~[#7]~[#7]",
    "C1CC1",
    "[Si]",
    "c1ccc2c(c1)oc1ccccc12",
    "P(=O)(O)O",
    "[Se]",
]


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -----------------------------------------------------------------------------------------------------------
# Data: molsets SMILES, described once and cached


@dataclass
class Dataset:
    smiles: list[str]  # RDKit canonical SMILES (what the index's holder needs)
    morgan: np.ndarray  # uint8[n, 256], chemistry's packing
    pattern: np.ndarray  # uint8[n, 256]

    @property
    def n(self) -> int:
        return len(self.smiles)

    def ids(self) -> np.ndarray:
        return np.array([str(uuid.UUID(int=i + 1)) for i in range(self.n)], dtype="S36")


def molsets_file(name: str) -> Path:
    spec = importlib.util.find_spec("moses")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("molsets is missing: .venv/bin/pip install --no-deps molsets==0.3.1")
    return Path(next(iter(spec.submodule_search_locations))) / "dataset" / "data" / name


def read_smiles(name: str, limit: int | None = None) -> list[str]:
    out: list[str] = []
    with gzip.open(molsets_file(name), "rt") as lines:
        next(lines)  # header
        for line in lines:
            out.append(line.split(",", 1)[0].strip())
            if limit is not None and len(out) == limit:
                break
    return out


def _describe(smiles: list[str]) -> tuple[list[str], bytes, bytes]:
    """Worker: canonical SMILES and the registration's two fingerprints (unparsable input is skipped)."""
    from rdkit import Chem, rdBase

    from services.molecule.domain import chemistry

    canonical, morgan, pattern = [], [], []
    with rdBase.BlockLogs():
        for text in smiles:
            mol = Chem.MolFromSmiles(text)
            if mol is None:
                continue
            canonical.append(Chem.MolToSmiles(mol))
            morgan.append(chemistry.morgan_fingerprint(mol))
            pattern.append(chemistry.pattern_fingerprint(mol))
    return canonical, b"".join(morgan), b"".join(pattern)


def describe(smiles: Sequence[str], chunk: int = 5000) -> Dataset:
    parts = [list(smiles[i : i + chunk]) for i in range(0, len(smiles), chunk)]
    canonical: list[str] = []
    morgan, pattern = bytearray(), bytearray()
    with multiprocessing.get_context("spawn").Pool(os.cpu_count() or 1) as pool:
        for done, (c, m, p) in enumerate(pool.imap(_describe, parts), 1):
            canonical += c
            morgan += m
            pattern += p
            if done % 40 == 0:
                say(f"  described {len(canonical):,} molecules")
    return Dataset(
        canonical,
        np.frombuffer(bytes(morgan), np.uint8).reshape(-1, FP_BYTES),
        np.frombuffer(bytes(pattern), np.uint8).reshape(-1, FP_BYTES),
    )


def molsets(n: int, cache_dir: Path) -> Dataset:
    """The first n molecules of the training set, from the cache when a large enough one exists."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    for path in sorted(cache_dir.glob("molsets-*.npz"), key=lambda p: int(p.stem.split("-")[1])):
        if int(path.stem.split("-")[1]) >= n:
            with np.load(path) as data:
                return Dataset(
                    [s.decode() for s in data["smiles"][:n].tolist()],
                    np.ascontiguousarray(data["morgan"][:n]),
                    np.ascontiguousarray(data["pattern"][:n]),
                )
    say(f"describing {n:,} molsets molecules (once; cached in {cache_dir})")
    data = describe(read_smiles("train.csv.gz", n))
    path = cache_dir / f"molsets-{data.n}.npz"
    smiles = np.array([s.encode() for s in data.smiles])
    np.savez(path, smiles=smiles, morgan=data.morgan, pattern=data.pattern)
    return data


# -----------------------------------------------------------------------------------------------------------
# Measuring


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def timed(call: Callable[[], T]) -> tuple[float, T]:
    started = time.perf_counter()
    result = call()
    return (time.perf_counter() - started) * 1000, result


def fpsim2_engine(data: Dataset, directory: Path) -> Any:
    """An FPSim2 in-memory engine over exactly these fingerprints (its file format, written directly)."""
    import rdkit
    import tables as tb
    from FPSim2 import FPSim2Engine
    from FPSim2.io.backends.pytables import __version__ as fpsim2_version
    from FPSim2.io.backends.pytables import create_schema, sort_db_file
    from FPSim2.io.chem import process_fp

    from services.molecule.domain import chemistry

    # FPSim2's word k holds bits 64k..64k+63 most significant first: chemistry's little-endian word k with
    # its bits reversed, i.e. every byte bit-reversed and the 8 bytes read big-endian.
    reverse = np.array([int(f"{b:08b}"[::-1], 2) for b in range(256)], np.uint8)
    words = reverse[data.morgan].view(">u8").astype(np.uint64)
    for i in (0, data.n // 2, data.n - 1):  # the layout, checked against FPSim2's own conversion
        expected = process_fp(chemistry.unpack_fingerprint(data.morgan[i].tobytes()), i)
        if list(expected[1:-1]) != words[i].tolist():
            raise RuntimeError("fingerprint layout differs from FPSim2's")
    layout = [("fp_id", "<i8"), *[(f"f{k}", "<u8") for k in range(1, 33)], ("popcnt", "<i8")]
    rows = np.zeros(data.n, dtype=layout)
    rows["fp_id"] = np.arange(data.n)
    for k in range(32):
        rows[f"f{k + 1}"] = words[:, k]
    rows["popcnt"] = np.bitwise_count(words).sum(axis=1)
    path = directory / "fpsim2.h5"
    params = {"radius": 2, "fpSize": 2048}
    with tb.open_file(path, mode="w") as h5:
        compressed = tb.Filters(complevel=1, complib="blosc2")
        table = h5.create_table(h5.root, "fps", create_schema(2048), "fps", filters=compressed)
        table.append(rows)
        config = h5.create_vlarray(h5.root, "config", atom=tb.ObjectAtom())
        for item in ("Morgan", params, rdkit.__version__, fpsim2_version):
            config.append(item)
        table.cols.popcnt.create_index(kind="full")
    sort_db_file(str(path))
    return FPSim2Engine(str(path))


def similarity(index: SearchIndex, data: Dataset, queries: list[bytes], out: Callable[[str], None]) -> None:
    from services.molecule.domain import chemistry

    with tempfile.TemporaryDirectory(prefix="molbridge-fpsim2-") as directory:
        engine = fpsim2_engine(data, Path(directory))
        ids = data.ids()
        for threshold in SIMILARITY_THRESHOLDS:
            ours, theirs, differ, hits = [], [], 0, 0
            bitvects = [chemistry.unpack_fingerprint(q) for q in queries]
            index.similar(ORGANIZATION, queries[0], threshold, None)  # warm both up once
            engine.similarity(bitvects[0], threshold, n_workers=1)
            for query, bv in zip(queries, bitvects, strict=True):
                ms, result = timed(partial(index.similar, ORGANIZATION, query, threshold, None))
                ours.append(ms)
                ms, found = timed(partial(engine.similarity, bv, threshold, n_workers=1))
                theirs.append(ms)
                mine = {i for i, _ in result.hits}
                other = {ids[j].decode() for j in found["mol_id"].tolist()}
                differ += mine != other
                hits += len(mine)
            a, b = float(np.mean(ours)), float(np.mean(theirs))
            out(
                f"similarity >= {threshold}: SearchIndex {a:7.2f} ms/query (p95 {percentile(ours, 95):.2f}), "
                f"FPSim2 {b:7.2f} ms/query (p95 {percentile(theirs, 95):.2f}); ratio {a / b:.2f} "
                f"(< 1: faster); {hits / len(queries):.1f} hits/query, {differ} answers differ"
            )


def substructure(index: SearchIndex, data: Dataset, out: Callable[[str], None]) -> None:
    from rdkit import rdBase
    from rdkit.Chem import rdSubstructLibrary

    from services.molecule.domain import chemistry

    holder = rdSubstructLibrary.CachedTrustedSmilesMolHolder()
    patterns = rdSubstructLibrary.PatternHolder(2048)
    for smiles, fp in zip(data.smiles, data.pattern, strict=True):
        holder.AddSmiles(smiles)
        patterns.AddFingerprint(chemistry.unpack_fingerprint(fp.tobytes()))
    library = rdSubstructLibrary.SubstructLibrary(holder, patterns)
    ours, theirs, counts, differ = [], [], [], 0
    with rdBase.BlockLogs():
        queries = [chemistry.substructure_query(s, kind="smarts") for s in SUBSTRUCTURES]
        for query in queries:
            fp = chemistry.pattern_fingerprint(query)
            ms, result = timed(partial(index.substructure, ORGANIZATION, query, fp, TOP_HITS, None, None))
            ours.append(ms)
            ms, found = timed(partial(library.GetMatches, query, numThreads=1, maxResults=TOP_HITS))
            theirs.append(ms)
            counts.append(len(result.hits))
            differ += len(result.hits) != len(found)
    isolated, isolated_counts = asyncio.run(_through_matcher(index, queries))
    for label, values in (("SearchIndex", ours), ("SubstructLibrary", theirs), ("StructureMatcher", isolated)):
        out(
            f"substructure top {TOP_HITS} ({len(SUBSTRUCTURES)} queries), {label}: p50 "
            f"{percentile(values, 50):.1f} ms, p95 {percentile(values, 95):.1f} ms, max {max(values):.1f} ms"
        )
    slowest = sorted(zip(ours, theirs, SUBSTRUCTURES, counts, strict=True), reverse=True)[:3]
    out(
        "  slowest: "
        + "; ".join(f"{q} {a:.0f} vs {b:.0f} ms ({c} hits)" for a, b, q, c in slowest)
        + " (a weak pattern-fingerprint screen leaves both engines to match most molecules)"
    )
    p50_ratio = percentile(ours, 50) / percentile(theirs, 50)
    p95_ratio = percentile(ours, 95) / percentile(theirs, 95)
    out(
        f"substructure ratios SearchIndex/SubstructLibrary: p50 {p50_ratio:.2f}, p95 {p95_ratio:.2f} "
        f"(target <= 1.5; p95 target < 1000 ms); hit counts differ for {differ} queries; "
        f"queries with fewer than {TOP_HITS} hits: {sum(c < TOP_HITS for c in counts)}"
    )
    out(
        f"substructure ratios StructureMatcher/SearchIndex (the cost of matching in a killable process): "
        f"p50 {percentile(isolated, 50) / percentile(ours, 50):.2f}, "
        f"p95 {percentile(isolated, 95) / percentile(ours, 95):.2f}; "
        f"hit counts differ for {sum(a != b for a, b in zip(counts, isolated_counts, strict=True))} queries"
    )


async def _through_matcher(index: SearchIndex, queries: list[Any]) -> tuple[list[float], list[int]]:
    """ms per query as SearchService.substructure matches: the screen here, matching in a worker process."""
    from services.molecule.domain import chemistry
    from services.molecule.index.matcher import MatcherLimits, StructureMatcher

    matcher = StructureMatcher(MatcherLimits(workers=1, per_organization=1))
    await matcher.start()
    times, counts = [], []
    try:
        for query in queries:
            fp = chemistry.pattern_fingerprint(query)
            started = time.perf_counter()
            scan = index.substructure_scan(ORGANIZATION, fp, TOP_HITS, None, time.monotonic() + 3600)
            result = await matcher.run_scan(ORGANIZATION, scan, query)
            times.append((time.perf_counter() - started) * 1000)
            counts.append(len(result.hits))
    finally:
        await matcher.close()
    return times, counts


def startup_from_postgres(data: Dataset, out: Callable[[str], None]) -> None:
    """Write the molecules to the molecule schema, then time the service's loader into a fresh index."""
    from services.molecule.domain import chemistry
    from services.molecule.index.search_sync import SearchIndexSync
    from services.molecule.store.tables import SCHEMA
    from services.runtime import migrations
    from services.runtime.db import make_engine
    from stack.postgres import PostgresServer

    root = Path(tempfile.mkdtemp(prefix="molbridge-bench-search-"))
    root.chmod(0o711)  # the embedded server may run as another user
    postgres = PostgresServer(root / "pgdata", log_path=root / "postgres.log", ephemeral=True)
    postgres.start()
    try:
        url = postgres.create_database()
        migrations.upgrade(url, SCHEMA, Path(chemistry.__file__).parents[1] / "migrations")
        started = time.perf_counter()
        _copy_molecules(url, data)
        out(f"(wrote {data.n:,} molecules to PostgreSQL in {time.perf_counter() - started:.0f} s)")

        index = SearchIndex()

        async def load() -> tuple[float, int]:
            engine = make_engine(url, SCHEMA, pool_size=2)
            try:
                sync = SearchIndexSync(engine, index, "nats://unused")  # load_all needs no bus
                began = time.perf_counter()
                await sync.load_all()
                return time.perf_counter() - began, sync.stats.molecules_loaded
            finally:
                await engine.dispose()

        seconds, loaded = asyncio.run(load())
        memory = index.stats(ORGANIZATION).memory_bytes / 2**20
        out(
            f"start-up load from PostgreSQL (SearchIndexSync): {loaded:,} molecules in {seconds:.1f} s "
            f"({loaded / seconds:,.0f} molecules/s), index {memory:,.0f} MB"
        )
    finally:
        postgres.stop()
        shutil.rmtree(root, ignore_errors=True)


def _copy_molecules(url: str, data: Dataset) -> None:
    import psycopg

    with psycopg.connect(url, options="-c search_path=molecule,public") as connection:
        with connection.cursor() as cursor:
            columns = (
                "id, organization_id, inchi_key, registration_number, smiles, canonical_smiles, formula, "
                "molecular_weight, "
                "morgan_fp, pattern_fp, created_by"
            )
            with cursor.copy(f"COPY molecules ({columns}) FROM STDIN") as copy:
                buffer = io.StringIO()
                for i, text in enumerate(data.smiles):
                    key = f"{i:014d}-BENCHMARKSA-N"  # unique per organization; the loader only reads it
                    smiles = text.replace("\\", "\\\\")  # COPY's text format escapes backslashes
                    buffer.write(
                        f"{uuid.UUID(int=i + 1)}\t{ORGANIZATION}\t{key}\tMOL-{i + 1:06d}\t{smiles}\t{smiles}\tX\t0\t"
                        f"\\\\x{data.morgan[i].tobytes().hex()}\t\\\\x{data.pattern[i].tobytes().hex()}"
                        "\tbench\n"
                    )
                    if buffer.tell() > 1 << 22:
                        copy.write(buffer.getvalue())
                        buffer = io.StringIO()
                copy.write(buffer.getvalue())
        connection.commit()
        connection.autocommit = True
        connection.execute("VACUUM ANALYZE molecules")


# -----------------------------------------------------------------------------------------------------------


def run(
    molecules: int = 200_000,
    *,
    full: bool = False,
    queries: int = 100,
    postgres: bool = True,
    cache_dir: Path | None = None,
    out: Callable[[str], None] = print,
) -> None:
    n = MOLSETS_TRAIN if full else molecules
    cache = cache_dir or Path(os.environ.get("MOLBRIDGE_DATA_DIR", str(REPO_ROOT / ".data"))) / "bench"
    data = molsets(n, cache)
    out(f"structure search over {data.n:,} molsets molecules (one core per engine)")
    index = SearchIndex()
    ms, _ = timed(lambda: index.bulk_load(ORGANIZATION, data.ids(), data.morgan, data.pattern, data.smiles))
    stats = index.stats(ORGANIZATION)
    out(
        f"SearchIndex bulk_load: {ms / 1000:.1f} s, {stats.memory_bytes / 2**20:,.0f} MB "
        f"({stats.memory_bytes / data.n:.0f} bytes/molecule), {stats.segments} segment(s)"
    )
    query_smiles = read_smiles("test.csv.gz")
    random.Random(7).shuffle(query_smiles)
    described = _describe(query_smiles[:queries])[1]
    fingerprints = [described[i : i + FP_BYTES] for i in range(0, len(described), FP_BYTES)]
    similarity(index, data, fingerprints, out)
    substructure(index, data, out)
    if postgres:
        del index
        startup_from_postgres(data, out)


def main(argv: Sequence[str] | None = None) -> int:
    description = (__doc__ or "").split("\n")[0]
    parser = argparse.ArgumentParser(prog="python -m bench.search", description=description)
    parser.add_argument("--molecules", type=int, default=200_000, help="first N of the molsets training set")
    parser.add_argument("--full", action="store_true", help=f"all {MOLSETS_TRAIN:,} molecules")
    parser.add_argument("--queries", type=int, default=100, help="similarity queries (molsets test split)")
    parser.add_argument("--no-postgres", action="store_true", help="skip the start-up load from PostgreSQL")
    args = parser.parse_args(argv)
    run(args.molecules, full=args.full, queries=args.queries, postgres=not args.no_postgres)
    return 0


if __name__ == "__main__":
    sys.exit(main())
