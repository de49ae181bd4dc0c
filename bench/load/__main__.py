"""`make load`: the product's own load scenarios against a local mesh, at 50 and 100 concurrent users.

    python -m bench.load [--users "50 100"] [--seconds 60] [--molecules 3000] [--slowest 5] [--keep]

Starts a mesh of its own (bench/stack.py, a temporary data dir, the gateway's per-user rate limits scaled
by MOLBRIDGE_RATE_LIMIT_SCALE out of reach: a load test that hits 429s measures nothing), seeds it through
the gateway (two pharma organizations and a CRO with users, molsets molecules imported by CSV, a submission
IN_PROGRESS), then for each user count runs virtual users (bench/load/users.py: scientists browsing,
filtering, searching, opening molecules, uploading CSVs and asking for predictions; both sides of the
submission exchanging messages) for the given seconds after a ramp of 10 users/s. Prints per route the
requests, failures and p50/p95/p99, the DOMAIN.md targets judged (p95 < 500 ms, errors < 1 %; the aim
p95 < 200 ms at twice the users) and, for the slowest requests, their trace ids and the time each service
held them (from the span files). Figures are printed, never asserted. The load generator is one Python
process on the same machine as the mesh: on a small machine it competes with the mesh for the CPUs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
from collections.abc import Sequence

import httpx
import psutil

from bench.load.seed import World, seed
from bench.load.stats import Sample, error_rate, failure_kinds, route_table, slowest_lines, verdicts
from bench.load.users import Recorder, cast
from bench.report import Figure, figures_table
from bench.search import read_smiles
from bench.stack import CLIENT, RATE_LIMIT_SCALE, isolated_stack, say, tree_cpu_seconds
from services.runtime.telemetry import SpanRecord, read_span_records
from stack.mesh import Stack

SPAWN_PER_S = 10
USERS_PER_ORG = 8  # accounts per organization the virtual users share
TRACE_FLUSH_S = 5.0  # the exporters flush every second or so


async def phase(stack: Stack, world: World, users: int, seconds: float) -> list[Sample]:
    """`users` virtual users started at SPAWN_PER_S, all running for `seconds` once started."""
    limits = httpx.Limits(max_connections=users + 20, max_keepalive_connections=users + 20)
    async with httpx.AsyncClient(base_url=stack.gateway_url + "/api/v1", limits=limits, timeout=60) as client:
        recorder = Recorder(client)
        tasks = []
        for user in cast(recorder, world, users):
            tasks.append(asyncio.create_task(user.run()))
            if len(tasks) % SPAWN_PER_S == 0:
                await asyncio.sleep(1)
        await asyncio.sleep(seconds)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in tasks:  # a user that died of a bug in this file must not pass silently
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        return recorder.samples


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent not idle (every process, ours or not)."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def cpu_line(used: dict[str, float], machine: float, elapsed: float, requests: int) -> str:
    """Where the CPUs went during a phase: each mesh process's CPU milliseconds per request, and how busy
    the machine was (a phase at ~100 % is CPU-bound: latency is queueing, not any one slow query)."""
    cores = psutil.cpu_count() or 1
    mesh = sum(used.values())
    per_request = ", ".join(f"{name} {spent / max(requests, 1) * 1000:.1f}"
                            for name, spent in sorted(used.items(), key=lambda kv: -kv[1]) if spent >= 0.02 * mesh)
    return (f"CPU: the machine was {machine / (elapsed * cores):.0%} busy ({cores} cores), the mesh used "
            f"{mesh / (elapsed * cores):.0%}, others {(machine - mesh) / (elapsed * cores):.0%} (load generator "
            f"included); CPU ms per request by process: {per_request}")


def spans_of(stack: Stack, trace_ids: set[str]) -> dict[str, list[SpanRecord]]:
    """The spans of these traces, one pass over the span files (a span written twice counts once)."""
    found: dict[str, dict[str, SpanRecord]] = {}
    for record in read_span_records(stack.traces_dir):
        if record.trace_id in trace_ids:
            found.setdefault(record.trace_id, {}).setdefault(record.span_id, record)
    return {trace_id: list(spans.values()) for trace_id, spans in found.items()}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--users", default="50 100", help='user counts, one phase each (default "50 100")')
    parser.add_argument("--seconds", type=float, default=60, help="each phase's duration after its ramp")
    parser.add_argument("--molecules", type=int, default=3000, help="molecules imported into each pharma org")
    parser.add_argument("--slowest", type=int, default=5, help="slowest requests shown with their traces")
    parser.add_argument("--keep", action="store_true", help="keep the mesh's data dir (logs, traces)")
    parser.add_argument("--replicas", type=int, default=1,
                        help="instances of every service and worker (MOLBRIDGE_REPLICAS; above 1, a NATS cluster)")
    args = parser.parse_args(argv)
    try:
        args.users = [int(n) for n in args.users.replace(",", " ").split()]
    except ValueError:
        parser.error(f"--users takes numbers, e.g. \"50 100\"; got {args.users!r}")
    if not args.users or min(args.users) < 1:
        parser.error("--users needs at least one positive count")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"Molbridge load test: {os.cpu_count()} CPUs, Python {platform.python_version()}, load average at start "
          f"{load}; users {args.users}, {args.seconds:.0f} s each; gateway rate limits scaled x{RATE_LIMIT_SCALE:,} "
          f"(MOLBRIDGE_RATE_LIMIT_SCALE) so no user is throttled; {args.replicas} instance(s) of every service",
          flush=True)
    smiles = read_smiles("train.csv.gz", 2 * args.molecules + 2000)
    figures: list[Figure] = []
    with isolated_stack(keep=args.keep, replicas=args.replicas) as stack:
        world = seed(stack, smiles, per_org=args.molecules, users_per_org=USERS_PER_ORG)
        slow: list[tuple[int, list[Sample]]] = []
        for users in args.users:
            with httpx.Client(base_url=stack.gateway_url + "/api/v1", timeout=60) as api:
                for account in world.accounts():
                    account.relogin(api)
            say(f"{users} users: ramping up at {SPAWN_PER_S}/s, then {args.seconds:.0f} s …")
            began, cpu_before, machine_before = time.monotonic(), tree_cpu_seconds(stack), busy_seconds()
            samples = asyncio.run(phase(stack, world, users, args.seconds))
            elapsed = time.monotonic() - began
            used = {name: spent - cpu_before.get(name, 0.0) for name, spent in tree_cpu_seconds(stack).items()}
            machine = busy_seconds() - machine_before
            client_share = used.pop(CLIENT, 0.0) / elapsed
            print(f"\n=== {users} concurrent users: {len(samples):,} requests in {elapsed:.0f} s "
                  f"({len(samples) / elapsed:.1f}/s), error rate {error_rate(samples):.2%}, load average "
                  f"{os.getloadavg()[0]:.1f}; the load generator used {client_share:.0%} of a CPU ===\n")
            print("\n".join(route_table(samples)))
            print("\n" + cpu_line(used, machine, elapsed, len(samples)))
            if kinds := failure_kinds(samples):
                print("\nfailures: " + ", ".join(f"{kind} x{count}" for kind, count in list(kinds.items())[:8]))
            figures += verdicts(users, samples, base_users=min(args.users))
            slow.append((users, sorted(samples, key=lambda s: -s.ms)[:args.slowest]))
        time.sleep(TRACE_FLUSH_S)
        traces = spans_of(stack, {s.trace_id for _, group in slow for s in group})
        for users, group in slow:
            print(f"\n=== where the time went: the {len(group)} slowest requests at {users} users ===\n")
            print("\n".join(slowest_lines(group, traces)))
        kept = f"--data-dir {stack.data_dir}" if args.keep else "--data-dir <the data dir of a run with --keep>"
        print(f"\n(any one of them in full: molbridge trace <trace id> {kept})")
    print("\n=== targets (DOMAIN.md) ===\n")
    print("\n".join(figures_table(figures)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
