"""Tracing for the engine, as an external system would do it: a request's W3C `traceparent` header
makes the engine's spans part of the caller's trace, and spans go to the OTLP/gRPC endpoint in
OTEL_EXPORTER_OTLP_ENDPOINT (the stack points it at its trace receiver). Without that variable —
or without the opentelemetry packages — nothing is recorded and every helper here is a no-op.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
except ImportError:  # an engine venv built before tracing was added
    trace = None  # type: ignore[assignment]

log = logging.getLogger("engine.telemetry")
_enabled = False


def configure() -> Callable[[], None]:
    """Set up export when configured; returns the function that flushes and stops it."""
    global _enabled
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not endpoint or trace is None:
        return lambda: None
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME", "engine")}))
    # A short delay so a trace is complete soon after the request (the default waits 5 s).
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint), schedule_delay_millis=500))
    trace.set_tracer_provider(provider)
    _enabled = True
    log.info("tracing to %s", endpoint)
    return provider.shutdown


def _tracer() -> Any:
    return trace.get_tracer("molbridge.engine")


@contextlib.contextmanager
def server_span(method: str, route: str, path: str, headers: Mapping[str, str]) -> Iterator[Any]:
    """The SERVER span of one request, continuing the caller's trace; None when tracing is off."""
    if not _enabled:
        yield None
        return
    parent = propagate.extract({k.lower(): v for k, v in headers.items()})
    attributes = {"http.request.method": method, "http.route": route, "url.path": path}
    with _tracer().start_as_current_span(
        f"{method} {route}", context=parent, kind=trace.SpanKind.SERVER, attributes=attributes
    ) as span:
        yield span


def set_status(span: Any, status: int) -> None:
    """The answer's status on a server span: only 5xx are the server's errors."""
    if span is None:
        return
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(trace.Status(trace.StatusCode.ERROR, f"HTTP {status}"))


def current_context() -> Any:
    """The active trace context, to continue it in another thread (a job runs on the worker pool)."""
    return otel_context.get_current() if _enabled else None


@contextlib.contextmanager
def span(name: str, parent: Any = None, **attributes: Any) -> Iterator[Any]:
    """An INTERNAL span, under `parent` (a current_context()) when given; None when tracing is off."""
    if not _enabled:
        yield None
        return
    with _tracer().start_as_current_span(name, context=parent, attributes=attributes) as current:
        yield current  # an exception is recorded and marks the span ERROR
