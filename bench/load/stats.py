"""What a load run measured, as tables: per route p50/p95/p99, failures, the DOMAIN.md targets judged (never
asserted), and where the slowest requests spent their time (per service, from their traces). No I/O here."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from bench.report import Figure, table
from services.runtime.telemetry import SpanRecord

# DOMAIN.md's targets under load, and the aim at twice the users.
TARGET_P95_MS = 500.0
TARGET_ERROR_RATE = 0.01
AIM_P95_MS = 200.0


@dataclass(frozen=True)
class Sample:
    """One request of a virtual user: its route template (`GET /molecules/{id}`), latency, and outcome."""

    route: str
    started: float  # time.time()
    ms: float
    status: int  # 0: no answer (connection error, timeout)
    ok: bool
    trace_id: str


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def error_rate(samples: Sequence[Sample]) -> float:
    return sum(not s.ok for s in samples) / len(samples) if samples else 0.0


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.0f}"


def route_table(samples: Sequence[Sample]) -> list[str]:
    """One row per route (busiest first), then every route together."""
    by_route: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        by_route[sample.route].append(sample)
    ordered = sorted(by_route.items(), key=lambda item: (-len(item[1]), item[0]))
    rows = [_row(route, group) for route, group in ordered] + [_row("all routes", list(samples))]
    return table(["route", "requests", "failures", "p50 ms", "p95 ms", "p99 ms", "max ms"], rows)


def _row(route: str, group: Sequence[Sample]) -> list[str]:
    ms = [s.ms for s in group]
    failures = sum(not s.ok for s in group)
    return [route, str(len(group)), str(failures), *(_ms(percentile(ms, q)) for q in (50, 95, 99)),
            _ms(max(ms, default=math.nan))]


def failure_kinds(samples: Sequence[Sample]) -> dict[str, int]:
    """`route status` -> count, for the failed requests."""
    kinds: dict[str, int] = defaultdict(int)
    for sample in samples:
        if not sample.ok:
            kinds[f"{sample.route} -> {sample.status or 'no answer'}"] += 1
    return dict(sorted(kinds.items(), key=lambda item: -item[1]))


def verdicts(users: int, samples: Sequence[Sample], *, base_users: int) -> list[Figure]:
    """DOMAIN.md: p95 < 500 ms and errors < 1 %; the aim p95 < 200 ms is judged at 2x the first user count."""
    p95 = percentile([s.ms for s in samples], 95)
    errors = error_rate(samples)
    figures = [
        Figure(f"{users} users: p95, all routes", f"{_ms(p95)} ms", f"< {TARGET_P95_MS:.0f} ms", p95 < TARGET_P95_MS),
        Figure(f"{users} users: error rate", f"{errors:.2%}", f"< {TARGET_ERROR_RATE:.0%}", errors < TARGET_ERROR_RATE),
    ]
    if users >= 2 * base_users:
        figures.append(Figure(f"{users} users (2x): p95, all routes", f"{_ms(p95)} ms", f"< {AIM_P95_MS:.0f} ms (aim)",
                              p95 < AIM_P95_MS))
    return figures


def time_by_service(spans: Sequence[SpanRecord], window: tuple[int, int] | None = None) -> dict[str, float]:
    """Milliseconds each service held the request: the union of its spans' intervals (nested and parallel
    spans of one service count once), clipped to `window` (start, end in Unix ns) when given, plus
    `postgresql` for the database statements (inside a service's time, shown apart). Biggest first."""
    intervals: dict[str, list[tuple[int, int]]] = defaultdict(list)
    low, high = window or (0, 2**63)
    for span in spans:
        start, end = max(span.start_unix_nano, low), min(span.end_unix_nano, high)
        if start >= end:
            continue
        intervals[span.service].append((start, end))
        if span.attributes.get("db.system") == "postgresql":
            intervals["postgresql"].append((start, end))
    held = {service: _covered_ns(found) / 1e6 for service, found in intervals.items()}
    return dict(sorted(held.items(), key=lambda item: -item[1]))


def request_window(spans: Sequence[SpanRecord]) -> tuple[int, int] | None:
    """The gateway's span of the request (its ingress), when recorded."""
    edge = [s for s in spans if s.service == "gateway"]
    if not edge:
        return None
    first = min(edge, key=lambda s: s.start_unix_nano)
    return first.start_unix_nano, first.end_unix_nano


def _covered_ns(intervals: list[tuple[int, int]]) -> int:
    covered, reached = 0, None
    for start, end in sorted(intervals):
        if reached is None or start > reached:
            covered += end - start
            reached = end
        elif end > reached:
            covered += end - reached
            reached = end
    return covered


def slowest_lines(slowest: Sequence[Sample], traces: dict[str, list[SpanRecord]]) -> list[str]:
    """Each slow request: its route, latency and trace id, then the time per service of its trace."""
    lines = []
    for sample in slowest:
        spans = traces.get(sample.trace_id, [])
        status = sample.status or "none"
        lines.append(f"{sample.ms:7.0f} ms  {sample.route}  (status {status})  trace {sample.trace_id}")
        if not spans:
            lines.append("           no spans recorded for this trace")
            continue
        window = request_window(spans)
        held = time_by_service(spans, window)
        lines.append("           " + ", ".join(f"{service} {ms:.0f} ms" for service, ms in held.items())
                     + f"  ({len(spans)} spans)")
        if window is not None:
            outside = sample.ms - (window[1] - window[0]) / 1e6
            lines.append(f"           outside the gateway's span (load generator, kernel, Envoy's accept queue): "
                         f"{max(outside, 0.0):.0f} ms")
            later = sorted({s.service for s in spans if s.start_unix_nano >= window[1]})
            if later:
                lines.append("           after the answer (events): " + ", ".join(later))
        longest = sorted(spans, key=lambda s: -s.duration_ms)[:3]
        lines.append("           longest spans: " + "; ".join(
            f"{s.service} {s.name} {s.duration_ms:.0f} ms" for s in longest))
    return lines
