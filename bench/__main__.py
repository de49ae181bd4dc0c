"""`make bench`: every benchmark in turn, each under a short header, then the issue's figures in one table.

    python -m bench [--only gateway,ingest,filter,search,prediction,memory] [--large] [--keep]

Default (about 7 minutes on 2 quiet cores): the gateway's cost (GetMe via Envoy against direct); ingestion of
100,000 molsets rows end to end against the RDKit floor, with every process's memory; filter + sort at
500,000 molecules; similarity and substructure search over the first 200,000 molsets molecules against
FPSim2 and SubstructLibrary (after filter + sort: the memory it frees would distort that one's RSS figure);
predictions end to end against the AI engine alone. --large (about 35 minutes more) searches all 1.58M
molecules, as the issue asks, imports 500,000 rows on a second mesh to show whether memory stays flat
as files grow, and measures the molecule service's memory as one organization grows to 500,000 and
1,000,000 molecules and after a restart at 1M (`memory`). Each one also runs alone with more options:
python -m bench.<gateway_cost|ingest|filter_sort|search|prediction|molecule_memory> -h.
Nothing asserts on timings; a benchmark that fails is reported and the others still run (exit status 1).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import time
import traceback
from collections.abc import Callable, Sequence

from bench import filter_sort, gateway_cost, ingest, molecule_memory, prediction, search
from bench.report import Figure, figures_table
from bench.stack import say

Bench = Callable[[argparse.Namespace], list[Figure]]


def run_gateway(args: argparse.Namespace) -> list[Figure]:
    options = gateway_cost.parse_args(["--keep"] if args.keep else [])
    loaded, unloaded = gateway_cost.run(options)
    print(gateway_cost.report(loaded, unloaded, options))
    errors = sum(s.errors for phase in (loaded, unloaded) for s in phase.values())
    if errors:
        raise RuntimeError(f"{errors} GetMe requests failed: the gateway figures are void")
    return gateway_cost.summary(loaded, unloaded)


def run_ingest(args: argparse.Namespace) -> list[Figure]:
    result = ingest.run(100_000, large_rows=500_000 if args.large else None, keep=args.keep)
    failed = [run for run in result.runs if not run.completed]
    if failed:
        raise RuntimeError(f"the {failed[0].rows:,}-row import ended {failed[0].status}: {failed[0].failure}")
    return ingest.summary(result)


# bench/search.py prints its figures; these read them back for the closing table.
_SEARCHED = re.compile(r"structure search over ([\d,]+) molsets molecules")
_SIMILARITY = re.compile(
    r"similarity >= ([\d.]+): SearchIndex\s+([\d.]+) ms/query.*?FPSim2\s+([\d.]+) ms/query.*?ratio ([\d.]+)"
)
_SUBSTRUCTURE = re.compile(
    r"substructure top (\d+) \(\d+ queries\), SearchIndex: p50 ([\d.]+) ms, p95 ([\d.]+) ms"
)
_SUBSTRUCTURE_RATIOS = re.compile(
    r"substructure ratios SearchIndex/SubstructLibrary: p50 ([\d.]+), p95 ([\d.]+)"
)


def run_search(args: argparse.Namespace) -> list[Figure]:
    printed: list[str] = []

    def out(line: str) -> None:
        print(line, flush=True)
        printed.append(line)

    search.run(full=args.large, out=out)
    return search_figures("\n".join(printed))


def search_figures(text: str) -> list[Figure]:
    searched = _SEARCHED.search(text)
    n = f"{searched.group(1)} mols" if searched else "?"
    figures = []
    for threshold, ours, theirs, ratio in _SIMILARITY.findall(text):
        figures.append(
            Figure(
                f"similarity >= {threshold}, {n}: SearchIndex/FPSim2 ms/query",
                f"{float(ratio):.2f} ({float(ours):.2f} vs {float(theirs):.2f} ms)",
                "<= 1.00",
                float(ratio) <= 1.0,
            )
        )
    if (found := _SUBSTRUCTURE.search(text)) is not None:
        top, p95 = found.group(1), float(found.group(3))
        name = f"substructure top {top}, {n}: SearchIndex p95"
        figures.append(Figure(name, f"{p95:.0f} ms", "< 1000 ms", p95 < 1000))
    if (found := _SUBSTRUCTURE_RATIOS.search(text)) is not None:
        ratio = float(found.group(2))
        name = f"substructure, {n}: p95 SearchIndex/SubstructLibrary"
        figures.append(Figure(name, f"{ratio:.2f}", "<= 1.5", ratio <= 1.5))
    if not figures:
        figures.append(Figure("search", "no figures found in its output"))
    return figures


def run_memory(args: argparse.Namespace) -> list[Figure]:
    result = molecule_memory.run(keep=args.keep)
    print("\n".join(molecule_memory.report(result)))
    return molecule_memory.summary(result)


def run_filter(args: argparse.Namespace) -> list[Figure]:
    molecules = 500_000
    results = filter_sort.run(molecules=molecules)
    every = [ms for timings in results.values() for ms in timings.service_ms]
    p50, p95 = filter_sort.percentile(every, 50), filter_sort.percentile(every, 95)
    target = filter_sort.TARGET_P95_MS
    name = f"filter + sort, {molecules // 1000}k molecules"
    return [
        Figure(f"{name}: p50", f"{p50:.1f} ms"),
        Figure(f"{name}: p95", f"{p95:.1f} ms", f"< {target:.0f} ms", p95 < target),
    ]


BENCHES: dict[str, tuple[str, Bench]] = {
    "gateway": ("the gateway's cost: GetMe via Envoy (REST, gRPC) against gRPC direct", run_gateway),
    "ingest": ("CSV ingestion end to end against the RDKit floor; memory of every process", run_ingest),
    "filter": ("filter + sort at 500,000 molecules", run_filter),
    "search": ("similarity (vs FPSim2) and substructure (vs SubstructLibrary) search over molsets", run_search),
    "prediction": ("predictions end to end (100 latency, 10,000 throughput) vs the engine alone", prediction.bench),
    "memory": ("the molecule service's memory at 500,000 and 1,000,000 molecules in one organization", run_memory),
}
DEFAULT = ["gateway", "ingest", "filter", "search", "prediction"]  # and memory with --large (about 25 minutes)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=(__doc__ or "").split("\n")[0])
    parser.add_argument(
        "--only",
        default="",
        help=f"comma-separated, run in this order, of {', '.join(BENCHES)} (default: {','.join(DEFAULT)}, "
        "and memory with --large)",
    )
    parser.add_argument(
        "--large", action="store_true",
        help="search all 1.58M molecules; a 500,000-row import for memory; the molecule service at 1M molecules",
    )
    parser.add_argument("--keep", action="store_true", help="keep the meshes' data dirs (logs, traces)")
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()] or [
        *DEFAULT, *(["memory"] if args.large else [])]
    unknown = [name for name in args.only if name not in BENCHES]
    if unknown or not args.only:
        parser.error(f"--only takes some of {', '.join(BENCHES)}; got {args.only}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"Molbridge benchmarks ({'large' if args.large else 'default'} mode): {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, load average at start {load}",
        flush=True,
    )
    figures: list[Figure] = []
    failed: list[str] = []
    began = time.monotonic()
    for number, name in enumerate(args.only, 1):
        title, bench = BENCHES[name]
        print(f"\n=== {number}/{len(args.only)} {name}: {title} ===\n", flush=True)
        started = time.monotonic()
        try:
            figures += bench(args)
        except KeyboardInterrupt:
            say("interrupted")
            return 130
        except Exception as error:  # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            failed.append(name)
            figures.append(Figure(name, f"FAILED: {type(error).__name__}: {error}"[:100]))
        print(f"\n({name}: {time.monotonic() - started:.0f} s)", flush=True)
    print(f"\n=== summary ({time.monotonic() - began:.0f} s in all; figures from this one run) ===\n")
    print("\n".join(figures_table(figures)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
