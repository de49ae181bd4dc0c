"""The gateway's cost: `GetMe` over REST through Envoy, over gRPC through Envoy and over gRPC straight to
the identity service, same request count and client concurrency for each, on a mesh started for the run.

    python -m bench.gateway_cost [--requests 3000] [--warmup 200] [--concurrency 16] [--rounds 5]
                                 [--unloaded 300] [--rest-client lean|httpx] [--json] [--keep]

REST via Envoy against gRPC direct is what the gateway costs a REST client; gRPC via Envoy against direct
is the proxy's share, REST against gRPC (both via Envoy) the transcoder's. Rounds rotate the order of the
three paths, so drift (caches warming, other load on the machine) is spread over all of them. A second,
unloaded pass (one request at a time) shows the latency Envoy adds when nothing queues for the CPUs, and
the CPU time each process spends per request shows where the time goes. Every request must succeed:
an error voids the figures (exit status 1). Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import re
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
from molbridge.identity.v1 import identity_service_pb2 as pb
from molbridge.identity.v1 import identity_service_pb2_grpc as pb_grpc

from bench.report import Figure, table
from bench.stack import ADMIN_EMAIL, isolated_stack, login, say, tree_cpu_seconds
from stack.mesh import Stack
from stack.processes import StartupError

GET_ME_PATH = "/api/v1/users/me"
# The targets, for REST via Envoy against gRPC direct.
TARGET_ADDED_P50_MS = 1.0
TARGET_THROUGHPUT_SHARE = 0.80

REST = "REST via Envoy (HTTP/1.1)"
GRPC_ENVOY = "gRPC via Envoy (h2c)"
GRPC_DIRECT = "gRPC direct to identity"

Call = Callable[[], Awaitable[object]]
Results = dict[str, "Sample"]


@dataclass
class Sample:
    """One path's measurements, summed over the rounds."""

    latencies_ns: list[int] = field(default_factory=list)  # of successful requests
    elapsed_s: float = 0.0
    cpu_s: dict[str, float] = field(default_factory=dict)  # CPU time each process used meanwhile
    errors: int = 0
    first_error: str = ""

    @property
    def requests(self) -> int:
        return len(self.latencies_ns) + self.errors

    def percentile_ms(self, q: float) -> float:
        """Nearest-rank percentile of the latencies, in ms."""
        ordered = sorted(self.latencies_ns)
        if not ordered:
            return math.nan
        return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)] / 1e6

    @property
    def throughput(self) -> float:
        return self.requests / self.elapsed_s if self.elapsed_s else math.nan


async def drive(call: Call, requests: int, concurrency: int, into: Sample) -> None:
    """`requests` calls by `concurrency` workers, each starting its next call when the last one answers."""
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            began = time.perf_counter_ns()
            try:
                await call()
            except Exception as error:  # counted and shown: any failure voids the figures
                into.errors += 1
                into.first_error = into.first_error or f"{type(error).__name__}: {error}"[:300]
            else:
                into.latencies_ns.append(time.perf_counter_ns() - began)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    into.elapsed_s += time.perf_counter() - began


class Http1Client:
    """A lean HTTP/1.1 keep-alive client for one fixed GET: a pool of connections, each sending the same
    bytes and reading a Content-Length response. httpx spends ~2 ms of client CPU per request (more
    than Envoy does), and on a small machine that CPU is taken from the mesh being measured."""

    def __init__(self, host: str, port: int, path: str, headers: dict[str, str], connections: int) -> None:
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", *(f"{k}: {v}" for k, v in headers.items())]
        self._request = ("\r\n".join(lines) + "\r\n\r\n").encode()
        self._host, self._port = host, port
        self._idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None] = asyncio.Queue()
        for _ in range(connections):
            self._idle.put_nowait(None)  # connected on first use
        self._writers: list[asyncio.StreamWriter] = []

    async def get(self) -> tuple[int, bytes]:
        """(status, body) of one request."""
        connection = await self._idle.get()
        try:
            if connection is None:
                connection = await asyncio.open_connection(self._host, self._port)
                self._writers.append(connection[1])
            reader, writer = connection
            writer.write(self._request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            if length is None:
                raise RuntimeError(f"no Content-Length in {head[:200]!r}")
            body = await reader.readexactly(int(length.group(1)))
            if re.search(rb"(?im)^connection:\s*close", head):
                writer.close()
                connection = None
            return int(head[9:12]), body
        except BaseException:
            connection = None  # the stream is in an unknown state: reconnect next time
            raise
        finally:
            self._idle.put_nowait(connection)

    def close(self) -> None:
        for writer in self._writers:
            writer.close()


def split(total: int, parts: int) -> list[int]:
    """`total` as `parts` near-equal counts."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


async def run_paths(
    stack: Stack, calls: dict[str, Call], requests: int, concurrency: int, rounds: int
) -> Results:
    """Every path for `requests` calls, in `rounds` rounds that rotate the paths' order."""
    samples = {name: Sample() for name in calls}
    names = list(calls)
    for index, count in enumerate(split(requests, rounds)):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            before = tree_cpu_seconds(stack)
            await drive(calls[name], count, concurrency, samples[name])
            for process, used in tree_cpu_seconds(stack).items():
                cpu = samples[name].cpu_s
                cpu[process] = cpu.get(process, 0.0) + used - before.get(process, used)
    return samples


async def measure(stack: Stack, args: argparse.Namespace) -> tuple[Results, Results]:
    """(loaded, unloaded) results of the three paths."""
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    async with (
        httpx.AsyncClient(base_url=stack.gateway_url, limits=limits, timeout=30) as http,
        grpc.aio.insecure_channel(stack.grpc_target) as via_envoy,
        grpc.aio.insecure_channel(stack.service_addr("identity")) as direct,
    ):
        token = login(stack)
        headers = {"authorization": f"Bearer {token}"}
        metadata = (("authorization", f"Bearer {token}"),)
        lean = Http1Client("127.0.0.1", stack.settings.gateway_port, GET_ME_PATH, headers, args.concurrency)

        async def rest() -> bytes:
            if args.rest_client == "httpx":
                response = await http.get(GET_ME_PATH, headers=headers)
                status, body = response.status_code, response.content
            else:
                status, body = await lean.get()
            if status != 200:
                raise RuntimeError(f"HTTP {status}: {body[:200]!r}")
            return body

        def grpc_get_me(channel: grpc.aio.Channel) -> Callable[[], Awaitable[pb.GetMeResponse]]:
            stub = pb_grpc.IdentityServiceStub(channel)
            request = pb.GetMeRequest()
            return lambda: stub.GetMe(request, metadata=metadata, timeout=30)

        get_me_via_envoy, get_me_direct = grpc_get_me(via_envoy), grpc_get_me(direct)
        calls: dict[str, Call] = {REST: rest, GRPC_ENVOY: get_me_via_envoy, GRPC_DIRECT: get_me_direct}
        try:
            # The three paths do the same work: each answers with the logged-in user.
            emails = [json.loads(await rest())["data"]["email"]]
            emails += [(await get_me()).data.email for get_me in (get_me_via_envoy, get_me_direct)]
            if set(emails) != {ADMIN_EMAIL}:
                raise RuntimeError(f"GetMe answered {emails}; expected {ADMIN_EMAIL}")

            say(f"warm-up: {args.warmup} requests per path …")
            await run_paths(stack, calls, args.warmup, args.concurrency, 1)
            say(f"measuring: {args.requests} requests per path at concurrency {args.concurrency} …")
            loaded = await run_paths(stack, calls, args.requests, args.concurrency, args.rounds)
            unloaded: Results = {}
            if args.unloaded:
                say(f"measuring: {args.unloaded} requests per path one at a time …")
                unloaded = await run_paths(stack, calls, args.unloaded, 1, args.rounds)
            return loaded, unloaded
        finally:
            lean.close()


def comparison(samples: Results, slower: str, faster: str) -> tuple[float, float]:
    """(p50 added in ms, throughput share) of path `slower` against path `faster`."""
    added = samples[slower].percentile_ms(50) - samples[faster].percentile_ms(50)
    return added, samples[slower].throughput / samples[faster].throughput


def latency_table(samples: Results) -> list[str]:
    rows = [
        [
            name,
            f"{s.percentile_ms(50):.2f}",
            f"{s.percentile_ms(99):.2f}",
            f"{s.throughput:.0f}",
            str(s.errors),
        ]
        for name, s in samples.items()
    ]
    return table(["path", "p50 ms", "p99 ms", "req/s", "errors"], rows)


def cpu_table(samples: Results) -> list[str]:
    processes = [p for p in next(iter(samples.values())).cpu_s if p != "nats"]  # idle for GetMe
    rows = [
        [name, *(f"{s.cpu_s.get(p, 0.0) * 1e3 / max(s.requests, 1):.2f}" for p in processes)]
        for name, s in samples.items()
    ]
    return table(["CPU ms per request", *processes], rows)


def report(loaded: Results, unloaded: Results, args: argparse.Namespace) -> str:
    added, share = comparison(loaded, REST, GRPC_DIRECT)
    proxy_added, proxy_share = comparison(loaded, GRPC_ENVOY, GRPC_DIRECT)
    transcode_added, transcode_share = comparison(loaded, REST, GRPC_ENVOY)

    def verdict(met: bool) -> str:
        return "met" if met else "missed"

    lines = [
        f"GetMe, {args.requests} requests per path at concurrency {args.concurrency} ({args.rounds} rounds, "
        f"after {args.warmup} warm-up), REST client: {args.rest_client}; "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}",
        "",
        *latency_table(loaded),
        "",
        "Envoy's cost for a REST client (REST via Envoy against gRPC direct):",
        f"  p50 {added:+.2f} ms (target < {TARGET_ADDED_P50_MS:g} ms: "
        f"{verdict(added < TARGET_ADDED_P50_MS)}), throughput {share:.0%} of direct "
        f"(target >= {TARGET_THROUGHPUT_SHARE:.0%}: {verdict(share >= TARGET_THROUGHPUT_SHARE)})",
        f"  proxying    (gRPC via Envoy against gRPC direct): p50 {proxy_added:+.2f} ms, "
        f"throughput {proxy_share:.0%}",
        f"  transcoding (REST against gRPC, both via Envoy):  p50 {transcode_added:+.2f} ms, "
        f"throughput {transcode_share:.0%}",
    ]
    if unloaded:
        one_added, _ = comparison(unloaded, REST, GRPC_DIRECT)
        lines += [
            "",
            f"One request at a time ({args.unloaded} per path): REST via Envoy adds {one_added:+.2f} ms "
            "at p50",
            *latency_table(unloaded),
        ]
    lines += [
        "",
        *cpu_table(loaded),
        "",
        "All processes share this machine's CPUs (load generator, Envoy, identity, PostgreSQL, trace",
        "receiver); every request is traced (service spans to files, Envoy's over OTLP to the receiver).",
    ]
    for phase in (loaded, unloaded):
        for name, sample in phase.items():
            if sample.errors:
                lines.append(f"ERRORS on {name}: {sample.errors}, first: {sample.first_error}")
    return "\n".join(lines)


def as_json(loaded: Results, unloaded: Results, args: argparse.Namespace) -> str:
    def paths(samples: Results) -> dict[str, Any]:
        return {
            name: {
                "p50_ms": round(s.percentile_ms(50), 3),
                "p99_ms": round(s.percentile_ms(99), 3),
                "requests_per_s": round(s.throughput, 1),
                "requests": s.requests,
                "errors": s.errors,
                "cpu_ms_per_request": {p: round(v * 1e3 / max(s.requests, 1), 3) for p, v in s.cpu_s.items()},
            }
            for name, s in samples.items()
        }

    added, share = comparison(loaded, REST, GRPC_DIRECT)
    figures = {
        "concurrency": args.concurrency,
        "rest_client": args.rest_client,
        "loaded": paths(loaded),
        "unloaded": paths(unloaded),
        "rest_via_envoy_added_p50_ms": round(added, 3),
        "rest_via_envoy_throughput_share": round(share, 3),
    }
    return json.dumps(figures, indent=2)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway_cost", description=(__doc__ or "").split("\n\n")[0])
    add = parser.add_argument
    add("--requests", type=int, default=3000, help="measured requests per path (default 3000)")
    add("--warmup", type=int, default=200, help="unmeasured requests per path first (default 200)")
    add("--concurrency", type=int, default=16, help="requests in flight (default 16)")
    add("--rounds", type=int, default=5, help="rounds the requests are split into (default 5)")
    add("--unloaded", type=int, default=300, help="requests per path one at a time afterwards (0: skip)")
    add(
        "--rest-client",
        choices=("lean", "httpx"),
        default="lean",
        help="REST load generator: a minimal HTTP/1.1 client (default) or httpx (far more client CPU)",
    )
    add("--json", action="store_true", help="print the figures as JSON")
    add("--keep", action="store_true", help="keep the stack's data dir (logs, traces) and print where")
    args = parser.parse_args(argv)
    if min(args.requests, args.concurrency, args.rounds) < 1 or min(args.warmup, args.unloaded) < 0:
        parser.error("--requests, --concurrency and --rounds must be positive, --warmup and --unloaded >= 0")
    if args.rounds > min(args.requests, args.unloaded or args.requests):
        parser.error("--rounds must not exceed --requests (nor --unloaded)")
    return args


def run(args: argparse.Namespace) -> tuple[Results, Results]:
    """(loaded, unloaded) results, on a mesh started for the run and stopped afterwards."""
    with isolated_stack(keep=args.keep) as stack:
        return asyncio.run(measure(stack, args))


def summary(loaded: Results, unloaded: Results) -> list[Figure]:
    """The issue's figures, for `python -m bench`'s closing table."""
    added, share = comparison(loaded, REST, GRPC_DIRECT)
    figures = [
        Figure(
            "gateway: REST via Envoy vs gRPC direct, p50 added (c=16)",
            f"{added:+.2f} ms",
            f"< {TARGET_ADDED_P50_MS:g} ms",
            added < TARGET_ADDED_P50_MS,
        ),
        Figure(
            "gateway: REST via Envoy, share of direct throughput",
            f"{share:.0%}",
            f">= {TARGET_THROUGHPUT_SHARE:.0%}",
            share >= TARGET_THROUGHPUT_SHARE,
        ),
    ]
    if unloaded:
        one_added, _ = comparison(unloaded, REST, GRPC_DIRECT)
        target = f"< {TARGET_ADDED_P50_MS:g} ms"
        met = one_added < TARGET_ADDED_P50_MS
        figures.append(Figure("gateway: p50 added, one request at a time", f"{one_added:+.2f} ms", target, met))
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        loaded, unloaded = run(args)
    except StartupError as error:
        say(f"could not start the stack: {error}")
        return 1
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    print(as_json(loaded, unloaded, args) if args.json else report(loaded, unloaded, args))
    failed = any(s.errors for phase in (loaded, unloaded) for s in phase.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
