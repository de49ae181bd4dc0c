"""CSV ingestion end to end against the raw RDKit floor, and the memory of every process while it runs.

    python -m bench.ingest [--rows 100000] [--floor-sample 10000] [--processes N]
                           [--large] [--rows-large 500000] [--keep]

- Floor: chemistry.register_many (parse, standardize, canonical SMILES, InChIKey, calculated properties,
  both fingerprints: the per-molecule work of an import) over a sample of the same rows, in this process,
  no I/O: molecules/s on one core. Times the chemistry processes the worker runs (MOLBRIDGE_CSV_PROCESSES,
  default every core), that is what an import could reach if nothing else cost anything. The same sample
  on that many processes at once shows how the machine itself scales.
- End to end: a mesh of its own (bench/stack.py); a CSV of the first N molsets training SMILES with two
  numeric columns (IC50, solubility) is uploaded through the gateway over REST as a stream, the import is
  started (keep_valid) and polled until it ends. Molecules/s from the first upload byte to the job's
  finished_at, and its ratio to the floor times the cores (the issue's target: >= 0.85).
- Where the time goes: CPU seconds per process of the mesh during the import, and what else ran on the
  machine meanwhile (other load makes the ratio above meaningless: it is printed, so it can be seen).
  The floor's CPU per molecule over the whole mesh's is the ratio an otherwise idle machine would allow.
  The worker's per-chunk split (read, chemistry, write) comes from its log.
- Memory: RSS of every process of the mesh sampled every 0.2 s (PostgreSQL's backends summed, also as
  PSS, which counts shared buffers once), baseline and peak. --large repeats the import with 500,000 rows
  on a fresh mesh and prints the peak ratio per process: flat memory means a ratio near 1. The molecule
  service keeps every molecule in its in-memory search and filter indexes, so it grows with the
  organization's data by design; its growth per molecule is printed.

Nothing asserts on the figures. Issue targets: >= 0.85 of the floor x cores; memory flat as files grow.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import multiprocessing
import os
import random
import re
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.report import Figure, table
from bench.search import read_smiles
from bench.stack import CLIENT, cpu_seconds, isolated_stack, login, process_trees, say
from services.molecule.service.uploads import DEFAULT_MAX_ROWS, DEFAULT_MAX_UPLOAD_BYTES
from services.molecule.worker.chunks import IN_FLIGHT, SUB_BATCH_ROWS
from stack.mesh import Stack

TARGET_FLOOR_SHARE = 0.85
PRODUCT_TARGET_PER_MINUTE = 10_000
FLAT_RATIO = 1.25  # a peak at most this much higher for a 5x larger file counts as flat
SAMPLE_EVERY_S = 0.2
TREE_EVERY = 5  # sweeps between re-reading the process table (and sampling PSS)
POLL_EVERY_S = 0.5
STALL_S = 300.0  # no progress this long: something is broken, not slow
UPLOAD_PIECE = 256 * 1024
MAPPING = {"smiles": "smiles", "ic50_nm": "ic50", "solubility_mg_ml": "solubility"}
SUMMED = ": all processes summed"
PSS = " (PSS)"
WORKER = "molecule-worker"
MIB = 2**20
_CHUNK_LOG = re.compile(
    r"chunk \d+ \(\w+\): (\d+) rows in ([\d.]+) s \(read ([\d.]+), chemistry ([\d.]+), write ([\d.]+)\)"
)


# --- the floor ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Floor:
    molecules: int
    seconds: float
    cpu_seconds: float  # this process's CPU meanwhile: well under `seconds` means the core was shared
    invalid: int

    @property
    def per_core(self) -> float:
        return self.molecules / self.seconds

    @property
    def cpu_per_molecule(self) -> float:
        return self.cpu_seconds / self.molecules


def measure_floor(sample: Sequence[str], warmup: Sequence[str]) -> Floor:
    from services.molecule.domain import chemistry

    chemistry.register_many(warmup)
    began, cpu = time.perf_counter(), time.process_time()
    invalid = _register(sample)
    seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
    return Floor(len(sample), seconds, cpu, invalid)


def _register(smiles: Sequence[str]) -> int:
    """register_many, returning how many were invalid (the results stay in their process)."""
    from services.molecule.domain import chemistry

    return sum(isinstance(r, chemistry.InvalidStructure) for r in chemistry.register_many(smiles))


def measure_parallel_floor(sample: Sequence[str], warmup: Sequence[str], processes: int) -> float:
    """The same work on `processes` processes at once, no I/O: molecules/s. Against floor x cores it shows
    how the machine itself scales (shared caches, vCPUs that are not whole cores, other load)."""
    batches = [sample[i : i + SUB_BATCH_ROWS] for i in range(0, len(sample), SUB_BATCH_ROWS)]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        pool.map(_register, [warmup] * processes, chunksize=1)
        began = time.perf_counter()
        pool.map(_register, batches, chunksize=1)
        return len(sample) / (time.perf_counter() - began)


# --- the file -----------------------------------------------------------------------------------------------


def write_csv(path: Path, smiles: Sequence[str], seed: int = 7) -> int:
    """SMILES plus two numeric columns in their valid ranges; returns the size in bytes."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(",".join(MAPPING) + "\n")
        for text in smiles:
            out.write(f"{text},{rng.uniform(0.1, 10_000):.4g},{rng.uniform(0, 100):.2f}\n")
    return path.stat().st_size


def file_pieces(path: Path) -> Iterator[bytes]:
    """The file as the request body, read as it is sent (httpx streams it chunked)."""
    with path.open("rb") as source:
        while piece := source.read(UPLOAD_PIECE):
            yield piece


# --- memory -------------------------------------------------------------------------------------------------


def memory_rows(trees: Mapping[str, Sequence[psutil.Process]]) -> dict[str, int]:
    """RSS in bytes per row of the report: a process with no children is one row; one with children is
    its own process, its largest child and the whole tree summed."""
    rows: dict[str, int] = {}
    for name, tree in trees.items():
        sizes = []
        for process in tree:
            with contextlib.suppress(psutil.Error):
                sizes.append(process.memory_info().rss)
        if not sizes:
            continue
        if len(tree) == 1:
            rows[name] = sizes[0]
            continue
        rows[f"{name}: main process"] = sizes[0]
        rows[f"{name}: largest child"] = max(sizes[1:], default=0)
        rows[f"{name}{SUMMED}"] = sum(sizes)
    return rows


class MemorySampler:
    """Samples memory_rows every SAMPLE_EVERY_S on a thread; `baseline` is the first sample, `peak` the
    largest seen per row."""

    def __init__(self, stack: Stack) -> None:
        self._stack = stack
        self.baseline: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def __enter__(self) -> MemorySampler:
        self._sweep(process_trees(self._stack), pss=True)
        self.baseline = dict(self.peak)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        sweeps = 0
        trees = process_trees(self._stack)
        while not self._stop.wait(SAMPLE_EVERY_S):
            sweeps += 1
            if sweeps % TREE_EVERY == 0:
                trees = process_trees(self._stack)
            self._sweep(trees, pss=sweeps % TREE_EVERY == 0)

    def _sweep(self, trees: Mapping[str, Sequence[psutil.Process]], *, pss: bool) -> None:
        sample = memory_rows(trees)
        if pss and "postgres" in trees:  # PSS reads smaps (~1 ms a process): only now and then
            total = 0
            for process in trees["postgres"]:
                with contextlib.suppress(psutil.Error):
                    total += process.memory_full_info().pss
            sample[f"postgres{SUMMED}{PSS}"] = total
        for key, value in sample.items():
            self.peak[key] = max(self.peak.get(key, 0), value)


# --- CPU ----------------------------------------------------------------------------------------------------


def cpu_rows(trees: Mapping[str, Sequence[psutil.Process]]) -> dict[str, float]:
    """CPU seconds so far: a process with children as its own and its children's (reaped ones included)."""
    rows: dict[str, float] = {}
    for name, tree in trees.items():
        total = sum(cpu_seconds(p) for p in tree)
        if len(tree) == 1:
            rows[name] = total
            continue
        own = 0.0
        with contextlib.suppress(psutil.Error):
            times = tree[0].cpu_times()
            own = times.user + times.system
        rows[f"{name}: main process"] = own
        rows[f"{name}: child processes"] = total - own
    return rows


def machine_busy_seconds() -> float:
    """CPU seconds all cores of the machine have spent on anything but idling, since boot (guest time is
    part of user time already)."""
    times = psutil.cpu_times()._asdict()
    return sum(v for k, v in times.items() if k not in ("idle", "iowait", "guest", "guest_nice"))


# --- the import ---------------------------------------------------------------------------------------------


@dataclass
class ImportRun:
    rows: int
    file_bytes: int
    processes: int
    upload_s: float = 0.0  # first byte sent → storage key answered
    start_s: float = 0.0  # StartImport call
    total_s: float = 0.0  # first upload byte → the job's finished_at
    status: str = ""
    failure: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)
    machine_busy_s: float = 0.0
    memory_baseline: dict[str, int] = field(default_factory=dict)
    memory_peak: dict[str, int] = field(default_factory=dict)
    chunks: list[tuple[int, float, float, float, float]] = field(default_factory=list)  # from the log

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    @property
    def rate(self) -> float:
        return self.rows / self.total_s if self.total_s else float("nan")

    @property
    def mesh_cpu_per_molecule(self) -> float:
        """CPU seconds per row of every process of the mesh (not this one, the load generator)."""
        return sum(seconds for name, seconds in self.cpu_s.items() if name != CLIENT) / self.rows

    @property
    def other_seconds(self) -> float:
        """CPU seconds the machine spent on anything but the mesh and this process during the import."""
        return max(self.machine_busy_s - sum(self.cpu_s.values()), 0.0)

    @property
    def other_cores(self) -> float:
        return self.other_seconds / self.total_s if self.total_s else float("nan")


def _status(job: Mapping[str, Any]) -> str:
    return str(job.get("status", ""))  # job statuses are lowercase strings (queued, completed, …)


def _timestamp(value: Any) -> float | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def import_file(stack: Stack, path: Path, rows: int, processes: int) -> ImportRun:
    """Upload (REST, streamed), start, poll until the job ends; CPU, memory and the worker's log meanwhile."""
    result = ImportRun(rows, path.stat().st_size, processes)
    token = login(stack)
    auth = {"authorization": f"Bearer {token}"}
    with (
        httpx.Client(base_url=stack.gateway_url, headers=auth, timeout=120) as http,
        MemorySampler(stack) as memory,
    ):
        cpu_before = cpu_rows(process_trees(stack))
        busy_before = machine_busy_seconds()
        began = time.time()
        say(f"uploading {path.name} ({result.file_bytes / MIB:.1f} MiB) …")
        headers = {"content-type": "text/csv", "content-disposition": f'attachment; filename="{path.name}"'}
        uploaded = http.post("/api/v1/molecules/upload/csv", content=file_pieces(path), headers=headers)
        uploaded.raise_for_status()
        result.upload_s = time.time() - began
        storage_key = uploaded.json()["data"]["storage_key"]
        body = {"mapping": MAPPING, "mode": "keep_valid", "request_id": str(uuid.uuid4())}
        started = http.post(f"/api/v1/molecules/upload/csv/{storage_key}/import", json=body)
        started.raise_for_status()
        result.start_s = time.time() - began - result.upload_s
        job = started.json()["data"]
        say(f"import {job['job_id']} started: {job['total_rows']:,} rows")
        job = _wait(http, job)
        result.status, result.failure = _status(job), job.get("failure_reason", "")
        finished = _timestamp(job.get("finished_at")) or time.time()
        result.total_s = finished - began
        result.machine_busy_s = machine_busy_seconds() - busy_before
        cpu_after = cpu_rows(process_trees(stack))
    result.cpu_s = {name: cpu_after[name] - cpu_before.get(name, 0.0) for name in cpu_after}
    result.memory_baseline, result.memory_peak = memory.baseline, memory.peak
    result.counts = {k: int(job.get(k) or 0) for k in ("total_rows", "registered", "merged", "rejected")}
    result.chunks = worker_chunks(stack.logs_dir / f"{WORKER}.log")
    return result


def _wait(http: httpx.Client, job: dict[str, Any]) -> dict[str, Any]:
    """Poll GetImport until the job ends (a stall of STALL_S without progress is an error, not a figure)."""
    progress, moved, reported = -1, time.monotonic(), time.monotonic()
    while _status(job) in ("queued", "processing"):
        time.sleep(POLL_EVERY_S)
        response = http.get(f"/api/v1/molecules/imports/{job['job_id']}")
        response.raise_for_status()
        job = response.json()["data"]
        now = time.monotonic()
        if job["processed_rows"] != progress:
            progress, moved = job["processed_rows"], now
        elif now - moved > STALL_S:
            raise RuntimeError(f"import {job['job_id']} made no progress for {STALL_S:.0f} s: {job}")
        if now - reported >= 15:
            reported = now
            say(f"  {progress:,}/{job['total_rows']:,} rows, {job['rows_per_second']:.0f} rows/s")
    return job


def worker_chunks(log_path: Path) -> list[tuple[int, float, float, float, float]]:
    """(rows, total, read, chemistry, write) seconds of every chunk the worker logged."""
    if not log_path.exists():
        return []
    found = _CHUNK_LOG.findall(log_path.read_text(encoding="utf-8", errors="replace"))
    return [(int(n), float(t), float(r), float(c), float(w)) for n, t, r, c, w in found]


def stack_env(rows: int, file_bytes: int, processes: int) -> dict[str, str]:
    env = {"MOLBRIDGE_CSV_PROCESSES": str(processes)}
    if rows > DEFAULT_MAX_ROWS:
        env["MOLBRIDGE_MAX_IMPORT_ROWS"] = str(rows)
    if file_bytes > DEFAULT_MAX_UPLOAD_BYTES:
        env["MOLBRIDGE_MAX_UPLOAD_BYTES"] = str(file_bytes)
    return env


def run_import(smiles: Sequence[str], processes: int, work: Path, keep: bool) -> ImportRun:
    path = work / f"molsets-{len(smiles)}.csv"
    size = write_csv(path, smiles)
    with isolated_stack(extra_env=stack_env(len(smiles), size, processes), keep=keep) as stack:
        return import_file(stack, path, len(smiles), processes)


# --- reporting ----------------------------------------------------------------------------------------------


@dataclass
class IngestResult:
    floor: Floor
    parallel_floor: float  # molecules/s of `cores` processes at once
    cores: int
    runs: list[ImportRun]

    @property
    def ceiling(self) -> float:
        return self.floor.per_core * self.cores


def import_lines(result: IngestResult, run: ImportRun) -> list[str]:
    counts = run.counts
    lines = [
        f"end to end, {run.rows:,} rows ({run.file_bytes / MIB:.1f} MiB), {run.processes} chemistry processes: "
        f"{run.status}{' — ' + run.failure if run.failure else ''}",
        f"  registered {counts.get('registered', 0):,}, merged {counts.get('merged', 0):,}, "
        f"rejected {counts.get('rejected', 0):,}",
        f"  upload {run.upload_s:.1f} s, start {run.start_s:.2f} s, upload start → completed {run.total_s:.1f} s",
        f"  {run.rate:,.0f} molecules/s ({run.rate * 60:,.0f}/min; product target "
        f"{PRODUCT_TARGET_PER_MINUTE:,}/min) = {run.rate / result.ceiling:.2f} of the floor x {result.cores} "
        f"cores (target >= {TARGET_FLOOR_SHARE})",
    ]
    wall = run.total_s
    cores = os.cpu_count() or 1
    rows = [
        [name, f"{seconds:.1f}", f"{seconds / wall:.2f}", f"{seconds * 1000 / run.rows:.2f}"]
        for name, seconds in sorted(run.cpu_s.items(), key=lambda item: -item[1])
        if seconds >= 0.05
    ]
    rows.append(["(other processes on the machine)", f"{run.other_seconds:.1f}", f"{run.other_cores:.2f}", ""])
    lines += [
        "",
        f"  CPU during the import ({wall:.1f} s wall x {cores} cores = {wall * cores:.0f} CPU-s available; "
        f"machine busy {run.machine_busy_s / (wall * cores):.0%}):",
        *("    " + line for line in table(["process", "CPU s", "cores", "ms/molecule"], rows)),
    ]
    mesh, chemistry = run.mesh_cpu_per_molecule, run.cpu_s.get(f"{WORKER}: child processes", 0.0) / run.rows
    floor_cpu = result.floor.cpu_per_molecule
    lines.append(
        f"  CPU per molecule: the mesh {mesh * 1e3:.2f} ms (chemistry processes {chemistry * 1e3:.2f}, the rest "
        f"{(mesh - chemistry) * 1e3:.2f}), the floor {floor_cpu * 1e3:.2f} ms: {floor_cpu / mesh:.2f} of the "
        "floor's efficiency, the share of floor x cores this import could reach on an otherwise idle machine"
    )
    if run.chunks:
        n = len(run.chunks)
        mean = [sum(chunk[i] for chunk in run.chunks) / n for i in range(1, 5)]
        lines += [
            "",
            f"  worker log, mean of {n} chunks of ~{run.chunks[0][0]:,} rows ({IN_FLIGHT} in flight, sharing the "
            f"chemistry processes): {mean[0]:.2f} s = read {mean[1]:.2f} + chemistry {mean[2]:.2f} "
            f"+ write {mean[3]:.2f} (PostgreSQL: registration, properties, provenance, counters)",
        ]
    return lines


def memory_lines(runs: Sequence[ImportRun]) -> list[str]:
    names = sorted({name for run in runs for name in run.memory_peak}, key=_memory_order)
    headers = ["process (RSS, MiB)"]
    for run in runs:
        headers += [f"{run.rows // 1000}k base", f"{run.rows // 1000}k peak"]
    if len(runs) > 1:
        headers += [f"peak {runs[-1].rows // 1000}k/{runs[0].rows // 1000}k", ""]
    rows = []
    for name in names:
        row = [name]
        for run in runs:
            row += [_mib(run.memory_baseline.get(name)), _mib(run.memory_peak.get(name))]
        if len(runs) > 1:
            ratio = peak_ratios(runs[0], runs[-1]).get(name, float("nan"))
            row += [f"{ratio:.2f}", "flat" if ratio <= FLAT_RATIO else "grows"]
        rows.append(row)
    lines = [f"Memory, sampled every {SAMPLE_EVERY_S} s (PSS of PostgreSQL every {SAMPLE_EVERY_S * TREE_EVERY:g} s):"]
    lines += ["  " + line for line in table(headers, rows)]
    lines.append(
        "  (PostgreSQL's summed RSS counts a shared buffer once for every backend that touched it; PSS once.)"
    )
    if len(runs) > 1:
        service = "molecule"
        grown = runs[-1].memory_peak.get(service, 0) - runs[0].memory_peak.get(service, 0)
        molecules = _molecules(runs[-1]) - _molecules(runs[0])
        if molecules > 0:
            lines.append(
                f"  molecule service: +{grown / MIB:,.0f} MiB for {molecules:,} more molecules "
                f"({grown / molecules:,.0f} bytes/molecule: its in-memory search and filter indexes hold every "
                "molecule of the organization, by design)"
            )
    return lines


def peak_ratios(small: ImportRun, large: ImportRun) -> dict[str, float]:
    """Peak memory of the larger import over the smaller one's, per row."""
    return {
        name: large.memory_peak[name] / peak
        for name, peak in small.memory_peak.items()
        if peak and name in large.memory_peak
    }


def _judged(name: str) -> bool:
    """Rows that should stay flat as the file grows: not the molecule service (its indexes hold the data),
    not this process, and PostgreSQL's tree by PSS (summed RSS counts its shared buffers once per backend)."""
    return name.split(":")[0] not in ("molecule", CLIENT) and name != f"postgres{SUMMED}"


def _molecules(run: ImportRun) -> int:
    return run.counts.get("registered", 0)


def _memory_order(name: str) -> tuple[int, str]:
    order = [WORKER, "molecule", "postgres", "envoy", "nats", "identity", "trace-receiver", CLIENT]
    head = name.split(":")[0]
    return (order.index(head) if head in order else len(order), name)


def _mib(value: int | None) -> str:
    return f"{value / MIB:,.0f}" if value else "-"


def report(result: IngestResult) -> list[str]:
    floor = result.floor
    lines = [
        f"floor: chemistry.register_many on {floor.molecules:,} molecules in one process: {floor.seconds:.1f} s, "
        f"{floor.per_core:,.0f} molecules/s per core (CPU/wall {floor.cpu_seconds / floor.seconds:.2f}; "
        f"{floor.invalid} invalid) x {result.cores} cores = {result.ceiling:,.0f} molecules/s",
        f"  (the same on {result.cores} processes at once: {result.parallel_floor:,.0f} molecules/s, "
        f"{result.parallel_floor / result.ceiling:.2f} of floor x cores: how this machine scales)",
    ]
    for run in result.runs:
        lines += ["", *import_lines(result, run)]
    lines += ["", *memory_lines(result.runs)]
    return lines


def summary(result: IngestResult) -> list[Figure]:
    figures = [Figure("ingest: floor, molecules/s per core (register_many)", f"{result.floor.per_core:,.0f}")]
    for run in result.runs:
        share = run.rate / result.ceiling
        met = share >= TARGET_FLOOR_SHARE if run.completed else None
        figures.append(
            Figure(
                f"ingest {run.rows // 1000}k: molecules/s end to end ({run.status})",
                f"{run.rate:,.0f}",
                f"{PRODUCT_TARGET_PER_MINUTE / 60:.0f} (10k/min)",
                run.rate * 60 >= PRODUCT_TARGET_PER_MINUTE if run.completed else None,
            )
        )
        figures.append(
            Figure(
                f"ingest {run.rows // 1000}k: share of floor x {result.cores} cores",
                f"{share:.3f}",
                f">= {TARGET_FLOOR_SHARE}",
                met,
            )
        )
        figures.append(
            Figure(
                f"ingest {run.rows // 1000}k: floor CPU/mesh CPU per molecule (what an idle machine allows)",
                f"{result.floor.cpu_per_molecule / run.mesh_cpu_per_molecule:.3f}",
                f">= {TARGET_FLOOR_SHARE}",
                result.floor.cpu_per_molecule / run.mesh_cpu_per_molecule >= TARGET_FLOOR_SHARE,
            )
        )
        figures.append(
            Figure(f"ingest {run.rows // 1000}k: cores taken by processes outside the mesh", f"{run.other_cores:.2f}")
        )
    if len(result.runs) > 1:
        small, large = result.runs[0], result.runs[-1]
        ratios = {name: ratio for name, ratio in peak_ratios(small, large).items() if _judged(name)}
        worst = max(ratios, key=lambda name: ratios[name], default="")
        figures.append(
            Figure(
                f"ingest: peak memory {large.rows // 1000}k/{small.rows // 1000}k, worst process "
                "(molecule service aside)",
                f"{ratios[worst]:.2f} ({worst})" if worst else "-",
                f"flat (<= {FLAT_RATIO})",
                ratios[worst] <= FLAT_RATIO if worst else None,
            )
        )
    return figures


def run(
    rows: int = 100_000,
    *,
    floor_sample: int = 10_000,
    large_rows: int | None = None,
    processes: int | None = None,
    keep: bool = False,
    out: Callable[[str], None] = print,
) -> IngestResult:
    """Floor, then one import of `rows` (and one of `large_rows` on a fresh mesh, if given); prints the report."""
    cores = processes or os.cpu_count() or 1
    sizes = [rows, *([large_rows] if large_rows else [])]
    smiles = read_smiles("train.csv.gz", max(sizes))
    step = max(1, rows // floor_sample)
    sample = smiles[:rows:step][:floor_sample]
    say(f"floor: register_many on {len(sample):,} molecules in this process …")
    warmup = smiles[1:rows:step][:200]
    floor = measure_floor(sample, warmup)
    say(f"floor: the same on {cores} processes at once …")
    result = IngestResult(floor, measure_parallel_floor(sample, warmup, cores), cores, [])
    with tempfile.TemporaryDirectory(prefix="molbridge-bench-ingest-") as work:
        for size in sizes:
            result.runs.append(run_import(smiles[:size], cores, Path(work), keep))
    for line in report(result):
        out(line)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=(__doc__ or "").split("\n")[0])
    add = parser.add_argument
    add("--rows", type=int, default=100_000, help="rows of the end-to-end import (default 100000)")
    add("--floor-sample", type=int, default=10_000, help="molecules for the floor (default 10000)")
    add("--processes", type=int, default=None, help="chemistry processes of the worker (default: every core)")
    add("--large", action="store_true", help="also import --rows-large rows on a fresh mesh, for memory")
    add("--rows-large", type=int, default=500_000, help="rows of the --large import (default 500000)")
    add("--keep", action="store_true", help="keep each mesh's data dir (logs, traces) and print where")
    args = parser.parse_args(argv)
    result = run(
        args.rows,
        floor_sample=args.floor_sample,
        large_rows=args.rows_large if args.large else None,
        processes=args.processes,
        keep=args.keep,
    )
    return 0 if all(r.completed for r in result.runs) else 1


if __name__ == "__main__":
    sys.exit(main())
