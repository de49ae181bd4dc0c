"""bench/load/stats.py: the percentiles, route table, verdicts and per-service time of a load run."""

from __future__ import annotations

import math

from bench.load.stats import Sample, percentile, request_window, route_table, time_by_service, verdicts
from services.runtime.telemetry import SpanRecord


def sample(route: str, ms: float, ok: bool = True) -> Sample:
    return Sample(route, 0.0, ms, 200 if ok else 503, ok, "0" * 32)


def span(span_id: str, service: str, start_ms: int, end_ms: int, **attributes: object) -> SpanRecord:
    return SpanRecord("a" * 32, span_id, None, "x", service, "SERVER", start_ms * 10**6, end_ms * 10**6, "OK",
                      dict(attributes))


def test_percentile_is_nearest_rank() -> None:
    values = [float(n) for n in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 99)) == (50.0, 95.0, 99.0)
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))


def test_route_table_lists_busiest_route_first_then_all_routes() -> None:
    samples = [sample("GET /a", 10), sample("GET /a", 30, ok=False), sample("GET /b", 5)]
    header, first, second, total = route_table(samples)
    assert header.split()[:3] == ["route", "requests", "failures"]
    assert first.split() == ["GET", "/a", "2", "1", "10", "30", "30", "30"]
    assert second.split()[:4] == ["GET", "/b", "1", "0"]
    assert total.split()[:4] == ["all", "routes", "3", "1"]


def test_verdicts_judge_domain_targets_and_the_aim_at_twice_the_users() -> None:
    fast = [sample("GET /a", 100)] * 99 + [sample("GET /a", 100, ok=False)]
    at_50 = verdicts(50, fast, base_users=50)
    assert [f.met for f in at_50] == [True, False]  # p95 100 ms; 1 % errors is not below 1 %
    at_100 = verdicts(100, [sample("GET /a", 300)] * 10, base_users=50)
    assert [f.met for f in at_100] == [True, True, False]  # the 200 ms aim is missed


def test_time_by_service_counts_nested_spans_once_and_shows_the_database_apart() -> None:
    spans = [span("1", "gateway", 0, 100), span("2", "molecule", 10, 90), span("3", "molecule", 20, 50),
             span("4", "molecule", 80, 95), span("5", "molecule", 30, 40, **{"db.system": "postgresql"})]
    assert time_by_service(spans) == {"gateway": 100.0, "molecule": 85.0, "postgresql": 10.0}


def test_time_by_service_within_the_request_leaves_out_what_events_did_after_the_answer() -> None:
    spans = [span("1", "gateway", 0, 100), span("2", "cro", 10, 60), span("3", "notification", 90, 300)]
    window = request_window(spans)
    assert window == (0, 100 * 10**6)
    assert time_by_service(spans, window) == {"gateway": 100.0, "cro": 50.0, "notification": 10.0}
