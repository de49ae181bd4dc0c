"""Memory of the molecule service as one organization grows to 500,000 and then 1,000,000 molecules.

    python -m bench.molecule_memory [--step 500000] [--steps 2] [--keep]

The molecule service holds every live molecule of every organization in two in-memory indexes (the
columnar query index for filter + sort, the fingerprint index for structure search), so its memory grows
with the data by design; this measures by how much. One mesh of its own (bench/stack.py); each step
imports the next `--step` molsets training SMILES into the same organization through the gateway
(bench.ingest.import_file: an upload stays within the default 500,000-row limit), waits until both
indexes serve the step's last molecule and count every molecule, lets it settle and reads the service's
RSS. Then the service is restarted (it reloads both indexes from PostgreSQL): time to ready, peak RSS
while loading and RSS once loaded. Figures per step: settled RSS, peak RSS during the import, growth per
molecule over the empty service. Nothing asserts on the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from bench.ingest import MemorySampler, import_file, stack_env, write_csv
from bench.report import Figure, table
from bench.search import read_smiles
from bench.stack import AdminAuth, isolated_stack, say
from stack.mesh import Stack

SERVICE = "molecule"
MIB = 2**20
SETTLE_S = 5.0  # idle time before the settled reading: background compaction and GC have run
READINGS = 5
READY_TIMEOUT_S = 1800.0


@dataclass
class Step:
    molecules: int  # in the organization after this step
    import_s: float = 0.0
    caught_up_s: float = 0.0  # from the job's end until both indexes have everything
    peak: int = 0  # RSS, bytes, during the import and catch-up
    settled: int = 0


@dataclass
class Restart:
    ready_s: float = 0.0
    peak: int = 0
    settled: int = 0


@dataclass
class MemoryResult:
    empty: int = 0
    steps: list[Step] = field(default_factory=list)
    restart: Restart | None = None

    def per_molecule(self, step: Step) -> float:
        return (step.settled - self.empty) / step.molecules


def service_rss(stack: Stack) -> int:
    """RSS of the molecule service's own process, in bytes: it holds both indexes. Its structure matcher
    workers (children, RDKit preloaded) get candidate SMILES per search and hold no index: not counted."""
    pid = stack.supervisor.get(SERVICE).pid
    assert pid is not None, "the molecule service is not running"
    return int(psutil.Process(pid).memory_info().rss)


def settled_rss(stack: Stack) -> int:
    """The median of a few readings after SETTLE_S of quiet."""
    time.sleep(SETTLE_S)
    readings = []
    for _ in range(READINGS):
        readings.append(service_rss(stack))
        time.sleep(0.5)
    return int(statistics.median(readings))


def indexes_hold(http: httpx.Client, molecules: int, last_smiles: str) -> bool:
    """The query index counts every molecule and the structure index finds the last one imported."""
    with contextlib.suppress(httpx.HTTPError):
        listed = http.get("/api/v1/molecules", params={"page_size": 1})
        if listed.status_code != 200 or listed.json()["meta"]["total"] != molecules:
            return False
        found = http.post("/api/v1/molecules/search/similarity", json={"smiles": last_smiles, "threshold": 0.99})
        return found.status_code == 200 and bool(found.json()["data"])
    return False


def wait_until(condition: Callable[[], bool], what: str) -> float:
    began = time.monotonic()
    while not condition():
        if time.monotonic() - began > READY_TIMEOUT_S:
            raise RuntimeError(f"{what}: not within {READY_TIMEOUT_S:.0f} s")
        time.sleep(0.5)
    return time.monotonic() - began


def peak_of(sampler: MemorySampler) -> int:
    """The service's own process (a row of its own once its matcher workers have started)."""
    return max(sampler.peak.get(SERVICE, 0), sampler.peak.get(f"{SERVICE}: main process", 0))


def run(step_rows: int = 500_000, steps: int = 2, *, keep: bool = False) -> MemoryResult:
    smiles = read_smiles("train.csv.gz", step_rows * steps)
    if len(smiles) < step_rows * steps:
        raise RuntimeError(f"molsets has {len(smiles):,} training molecules, fewer than {step_rows * steps:,}")
    cores = os.cpu_count() or 1
    result = MemoryResult()
    with tempfile.TemporaryDirectory(prefix="molbridge-bench-memory-") as work:
        files = []
        for index in range(steps):
            path = Path(work) / f"molsets-{index + 1}.csv"
            files.append((path, write_csv(path, smiles[index * step_rows : (index + 1) * step_rows], seed=index)))
        largest = max(size for _, size in files)
        with isolated_stack(extra_env=stack_env(step_rows, largest, cores), keep=keep) as stack:
            result.empty = settled_rss(stack)
            say(f"molecule service, empty: {result.empty / MIB:,.0f} MiB")
            with httpx.Client(base_url=stack.gateway_url, auth=AdminAuth(stack), timeout=120) as http:
                molecules = 0
                for index, (path, _) in enumerate(files):
                    last = smiles[(index + 1) * step_rows - 1]
                    with MemorySampler(stack) as sampler:
                        run_ = import_file(stack, path, step_rows, cores)
                        if not run_.completed or run_.counts["registered"] + run_.counts["merged"] != step_rows:
                            raise RuntimeError(f"import {index + 1} ended {run_.status}: {run_.counts}")
                        # A structure already registered (molsets repeats a few after standardization) merges.
                        molecules += run_.counts["registered"]
                        step = Step(molecules=molecules, import_s=run_.total_s)
                        step.caught_up_s = wait_until(
                            lambda: indexes_hold(http, step.molecules, last), "the indexes to catch up"  # noqa: B023
                        )
                    step.peak = peak_of(sampler)
                    step.settled = settled_rss(stack)
                    result.steps.append(step)
                    say(f"{step.molecules:,} molecules: settled {step.settled / MIB:,.0f} MiB, "
                        f"peak {step.peak / MIB:,.0f} MiB")
                restart = Restart()
                final = result.steps[-1]
                with MemorySampler(stack) as sampler:
                    began = time.monotonic()
                    stack.restart(SERVICE)
                    wait_until(lambda: indexes_hold(http, final.molecules, smiles[-1]), "the reloaded indexes")
                    restart.ready_s = time.monotonic() - began
                restart.peak = peak_of(sampler)
                restart.settled = settled_rss(stack)
                result.restart = restart
    return result


def report(result: MemoryResult) -> list[str]:
    rows = [["empty", "", "", "", _mib(result.empty), "", ""]]
    for step in result.steps:
        rows.append([
            f"{step.molecules:,} molecules",
            f"{step.import_s:,.0f}",
            f"{step.caught_up_s:,.1f}",
            _mib(step.peak),
            _mib(step.settled),
            f"{result.per_molecule(step):,.0f}",
            "",
        ])
    if result.restart and result.steps:
        last = result.steps[-1]
        rows.append([
            f"{last.molecules:,}, after a restart",
            "",
            "",
            _mib(result.restart.peak),
            _mib(result.restart.settled),
            f"{(result.restart.settled - result.empty) / last.molecules:,.0f}",
            f"{result.restart.ready_s:,.1f}",
        ])
    headers = ["molecule service", "import s", "catch-up s", "peak MiB", "settled MiB", "bytes/molecule",
               "ready s"]
    return ["molecule service RSS as one organization grows (both in-memory indexes hold every molecule):",
            *table(headers, rows)]


def summary(result: MemoryResult) -> list[Figure]:
    figures = [Figure(f"molecule service RSS at {s.molecules // 1000}k molecules (settled / peak)",
                      f"{_mib(s.settled)} / {_mib(s.peak)} MiB") for s in result.steps]
    if result.restart and result.steps:
        figures.append(Figure(f"molecule service restart at {result.steps[-1].molecules // 1000}k: ready s, RSS",
                              f"{result.restart.ready_s:,.1f} s, {_mib(result.restart.settled)} MiB"))
    return figures


def _mib(value: int) -> str:
    return f"{value / MIB:,.0f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--step", type=int, default=500_000, help="molecules imported per step")
    parser.add_argument("--steps", type=int, default=2, help="imports into the same organization")
    parser.add_argument("--keep", action="store_true", help="keep the mesh's data dir")
    args = parser.parse_args(argv)
    result = run(args.step, args.steps, keep=args.keep)
    for line in report(result):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
