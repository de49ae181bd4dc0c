"""OpenTelemetry tracing for every process of the mesh: gRPC server and client spans, database spans,
and the JSON-lines span format shared by the local file exporter, the stack's OTLP receiver and the
`molbridge trace` command.

Spans go to OTLP/gRPC when an endpoint is configured, else to one JSON-lines file per process under
`<data_dir>/traces/` (one writer per file, so processes never need to lock each other out).
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import json
import logging
import os
import re
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from services.runtime.settings import GRPC_BALANCED, grpc_target

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)

TRACES_DIRNAME = "traces"
INSTRUMENTATION_NAME = "molbridge"
# Long statements are cut: the shape of the query is what an operator needs, not a 50 kB IN list.
MAX_STATEMENT_CHARS = 2000


# --- The span record: one JSON object per line --------------------------------------------------


@dataclass(frozen=True)
class SpanRecord:
    """One finished span, as written to (and read from) the JSON-lines trace files.

    Ids are lowercase hex (trace 32 chars, span 16); kind is SERVER/CLIENT/INTERNAL/PRODUCER/CONSUMER;
    status is UNSET/OK/ERROR; times are Unix epoch nanoseconds.
    """

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    service: str
    kind: str
    start_unix_nano: int
    end_unix_nano: int
    status: str
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def duration_ms(self) -> float:
        return (self.end_unix_nano - self.start_unix_nano) / 1e6

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False, default=str)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> SpanRecord:
        return cls(
            trace_id=str(raw["trace_id"]).lower(),
            span_id=str(raw["span_id"]).lower(),
            parent_span_id=str(raw["parent_span_id"]).lower() if raw.get("parent_span_id") else None,
            name=str(raw["name"]),
            service=str(raw.get("service") or "unknown"),
            kind=str(raw.get("kind") or "INTERNAL"),
            start_unix_nano=int(raw["start_unix_nano"]),
            end_unix_nano=int(raw["end_unix_nano"]),
            status=str(raw.get("status") or "UNSET"),
            attributes=dict(raw.get("attributes") or {}),
        )

    @classmethod
    def from_sdk(cls, span: ReadableSpan, service: str | None = None) -> SpanRecord:
        ctx = span.get_span_context()
        assert ctx is not None  # finished SDK spans always carry a context
        parent = span.parent
        return cls(
            trace_id=trace.format_trace_id(ctx.trace_id),
            span_id=trace.format_span_id(ctx.span_id),
            parent_span_id=trace.format_span_id(parent.span_id) if parent and parent.is_valid else None,
            name=span.name,
            service=service or str(span.resource.attributes.get(SERVICE_NAME, "unknown")),
            kind=span.kind.name,
            start_unix_nano=span.start_time or 0,
            end_unix_nano=span.end_time or 0,
            status=span.status.status_code.name,
            attributes={k: _jsonable(v) for k, v in (span.attributes or {}).items()},
        )


def _jsonable(value: Any) -> Any:
    if isinstance(value, str | bool | int | float) or value is None:
        return value
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, Iterable):
        return [_jsonable(v) for v in value]
    return str(value)


def traces_dir(data_dir: Path) -> Path:
    return Path(data_dir) / TRACES_DIRNAME


def safe_file_stem(name: str) -> str:
    """A service name made safe to use in a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "unknown"


class JsonLinesWriter:
    """Appends span records to one file; thread-safe within the process that owns the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._file = path.open("a", encoding="utf-8")

    def write(self, records: Iterable[SpanRecord]) -> None:
        # One write per batch, then flush, so a reader never waits for a half-buffered batch.
        text = "".join(record.to_json() + "\n" for record in records)
        if not text:
            return
        with self._lock:
            if self._file.closed:
                return
            self._file.write(text)
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()


def read_span_records(directory: Path) -> Iterator[SpanRecord]:
    """Every span in every `*.jsonl` file under `directory`; lines that do not parse (a line still being
    written, a foreign file) are skipped."""
    if not directory.is_dir():
        return
    for path in sorted(directory.rglob("*.jsonl")):
        with path.open(encoding="utf-8", errors="replace") as lines:
            for line in lines:
                try:
                    yield SpanRecord.from_dict(json.loads(line))
                except (ValueError, KeyError, TypeError):
                    continue


class JsonLinesSpanExporter(SpanExporter):
    """SpanExporter writing SpanRecord lines to a file (the default when no OTLP endpoint is set)."""

    def __init__(self, path: Path, service_name: str | None = None) -> None:
        self._writer = JsonLinesWriter(path)
        # The file belongs to one service: its name wins over the provider's resource (which, in a
        # process that reconfigured tracing, may still carry the first service's name).
        self._service_name = service_name

    @property
    def path(self) -> Path:
        return self._writer.path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            self._writer.write(SpanRecord.from_sdk(span, self._service_name) for span in spans)
        except OSError:
            log.exception("writing spans to %s failed", self._writer.path)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self._writer.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


# --- Provider setup ------------------------------------------------------------------------------


class _SwitchableProcessor(SpanProcessor):
    """Our processor on the global provider. OpenTelemetry lets a process set its global provider only
    once, so reconfiguring (tests start and stop several services in one process) swaps the processor
    behind this switch instead of the provider."""

    def __init__(self) -> None:
        self.inner: SpanProcessor | None = None

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        if (inner := self.inner) is not None:
            inner.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        if (inner := self.inner) is not None:
            inner.on_end(span)

    def shutdown(self) -> None:
        inner, self.inner = self.inner, None
        if inner is not None:
            inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        inner = self.inner
        return inner.force_flush(timeout_millis) if inner is not None else True


_switch = _SwitchableProcessor()
_switch_owner: list[TracerProvider] = []  # the provider _switch was added to (at most one)


def _global_provider(service_name: str) -> TracerProvider:
    """The process's SDK provider, made (with this service's resource) and set global on first use. One
    set by someone else (a test capturing spans) is used as it is."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    # shutdown_on_exit=False: our atexit hook flushes through the switch instead.
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}), shutdown_on_exit=False)
    trace.set_tracer_provider(provider)
    atexit.register(shutdown_tracing)
    return provider


def configure_tracing(service_name: str, data_dir: Path, otlp_endpoint: str | None) -> TracerProvider:
    """Set up tracing for this process: OTLP/gRPC export when `otlp_endpoint` is given, else JSON lines
    in `<data_dir>/traces/<service_name>-<pid>.jsonl`. Calling it again replaces the previous
    destination (after flushing it)."""
    provider = _global_provider(service_name)
    if provider not in _switch_owner:
        provider.add_span_processor(_switch)
        _switch_owner[:] = [provider]

    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint))
    else:
        path = traces_dir(data_dir) / f"{safe_file_stem(service_name)}-{os.getpid()}.jsonl"
        # A short delay so `molbridge trace` sees a request's spans right after it answers.
        processor = BatchSpanProcessor(JsonLinesSpanExporter(path, service_name), schedule_delay_millis=200)
    _switch.shutdown()
    _switch.inner = processor
    return provider


def shutdown_tracing() -> None:
    """Flush pending spans and close the exporter; spans started afterwards are dropped until the
    next configure_tracing."""
    _switch.shutdown()


@functools.cache
def tracer() -> trace.Tracer:
    """The tracer for molbridge's own spans (bus, workers and services may use it too)."""
    # A ProxyTracer when called before configure_tracing: it follows the global provider once set.
    return trace.get_tracer(INSTRUMENTATION_NAME)


def current_trace_id() -> str:
    ctx = trace.get_current_span().get_span_context()
    return trace.format_trace_id(ctx.trace_id) if ctx.is_valid else ""


def current_span_id() -> str:
    ctx = trace.get_current_span().get_span_context()
    return trace.format_span_id(ctx.span_id) if ctx.is_valid else ""


# --- gRPC ----------------------------------------------------------------------------------------

MetadataLike = Sequence[tuple[str, str | bytes]]


class _MetadataGetter(Getter[MetadataLike]):
    def get(self, carrier: MetadataLike, key: str) -> list[str] | None:
        values = [v for k, v in carrier if k.lower() == key and isinstance(v, str)]
        return values or None

    def keys(self, carrier: MetadataLike) -> list[str]:
        return [k for k, _ in carrier]


class _AioMetadataSetter(Setter[grpc.aio.Metadata]):
    def set(self, carrier: grpc.aio.Metadata, key: str, value: str) -> None:
        carrier[key] = value  # replaces a stale value rather than sending two


_GETTER = _MetadataGetter()
_SETTER = _AioMetadataSetter()

# Server-side codes that mean "the server failed" (OpenTelemetry gRPC conventions); the others are the
# caller's problem (bad argument, not found, …) and leave a server span's status unset.
_SERVER_ERROR_CODES = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
_GRPC_STATUS_ATTRIBUTE = "rpc.grpc.status_code"


def _rpc_attributes(full_method: str | bytes) -> tuple[str, dict[str, Any]]:
    method = full_method.decode() if isinstance(full_method, bytes) else full_method
    name = method.lstrip("/")
    service, _, rpc_method = name.rpartition("/")
    return name, {"rpc.system": "grpc", "rpc.service": service, "rpc.method": rpc_method}


def set_span_status_from_grpc(code: grpc.StatusCode, message: str = "", span: Span | None = None) -> None:
    """Record a gRPC status on `span` (default: the current span). Server spans turn ERROR only for
    server faults; client and other spans for every non-OK code."""
    span = span if span is not None else trace.get_current_span()
    span.set_attribute(_GRPC_STATUS_ATTRIBUTE, code.value[0])
    is_server = getattr(span, "kind", None) == SpanKind.SERVER
    if code != grpc.StatusCode.OK and (not is_server or code in _SERVER_ERROR_CODES):
        span.set_status(Status(StatusCode.ERROR, f"{code.name}: {message}" if message else code.name))


def _has_grpc_status(span: Span) -> bool:
    return _GRPC_STATUS_ATTRIBUTE in (getattr(span, "attributes", None) or {})


@contextmanager
def server_span(
    full_method: str | bytes,
    metadata: MetadataLike | None,
    attributes: Mapping[str, Any] | None = None,
    *,
    context: grpc.aio.ServicerContext | None = None,
) -> Iterator[Span]:
    """The SERVER span of one RPC, continuing the caller's trace from its `traceparent` metadata.

    Its status comes from set_span_status_from_grpc if called, else from `context` (the code an abort
    or set_code left there; grpc's AbortError itself does not carry it), else OK on return; an
    unexpected exception is recorded and marks it UNKNOWN (ERROR)."""
    parent = propagate.extract(list(metadata or ()), getter=_GETTER)
    name, rpc_attributes = _rpc_attributes(full_method)
    with tracer().start_as_current_span(
        name,
        context=parent,
        kind=SpanKind.SERVER,
        attributes={**rpc_attributes, **(attributes or {})},
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except grpc.aio.AbortError:
            _status_from_context(span, context)
            raise
        except BaseException as exc:
            if not _has_grpc_status(span):
                if isinstance(exc, asyncio.CancelledError | GeneratorExit):  # the client went away
                    set_span_status_from_grpc(grpc.StatusCode.CANCELLED, span=span)
                else:
                    span.record_exception(exc)
                    set_span_status_from_grpc(grpc.StatusCode.UNKNOWN, type(exc).__name__, span=span)
            raise
        else:
            _status_from_context(span, context)
            if not _has_grpc_status(span):
                set_span_status_from_grpc(grpc.StatusCode.OK, span=span)


def _status_from_context(span: Span, context: grpc.aio.ServicerContext | None) -> None:
    if context is None or _has_grpc_status(span):
        return
    code = context.code()
    if code is not None:
        set_span_status_from_grpc(code, context.details() or "", span=span)


def _start_client_span(details: grpc.aio.ClientCallDetails, target: str | None) -> tuple[Span, Any]:
    """A CLIENT span (not made current: its end may happen in another task) and the call details with
    its trace context injected into the outgoing metadata."""
    name, attributes = _rpc_attributes(details.method)
    if target:
        host, _, port = target.rpartition(":")
        attributes["server.address"] = host or target
        if port.isdigit():
            attributes["server.port"] = int(port)
    span = tracer().start_span(name, kind=SpanKind.CLIENT, attributes=attributes)
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    propagate.inject(metadata, context=trace.set_span_in_context(span), setter=_SETTER)
    return span, details._replace(metadata=metadata)


def _fail_client_span(span: Span, exc: BaseException) -> None:
    if isinstance(exc, grpc.aio.AioRpcError):
        set_span_status_from_grpc(exc.code(), exc.details() or "", span=span)
    else:
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))


class _ClientTracing:
    """The part the four client interceptor kinds share (grpc.aio files an interceptor object under one
    kind only, so each kind is its own class)."""

    def __init__(self, target: str | None) -> None:
        self._target = target

    async def _unary_response(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        span, details = _start_client_span(details, self._target)
        try:
            call = await continuation(details, request)
            # Waiting for the status here is free: the caller awaits the single response anyway.
            code = await call.code()
            set_span_status_from_grpc(code, await call.details() or "", span=span)
            return call
        except BaseException as exc:
            _fail_client_span(span, exc)
            raise
        finally:
            span.end()

    async def _stream_response(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        span, details = _start_client_span(details, self._target)
        try:
            call = await continuation(details, request)
        except BaseException as exc:
            _fail_client_span(span, exc)
            span.end()
            raise
        return self._follow_stream(span, call)

    @staticmethod
    async def _follow_stream(span: Span, call: Any) -> AsyncIterator[Any]:
        # The span lasts until the stream is consumed, fails, or is abandoned by the caller.
        try:
            async for response in call:
                yield response
            set_span_status_from_grpc(await call.code(), span=span)
        except BaseException as exc:
            _fail_client_span(span, exc)
            raise
        finally:
            span.end()


# grpc.aio calls these positionally (continuation, call details, request or request iterator).
class _UnaryUnaryTracing(_ClientTracing, grpc.aio.UnaryUnaryClientInterceptor):
    intercept_unary_unary = _ClientTracing._unary_response  # type: ignore[assignment]


class _StreamUnaryTracing(_ClientTracing, grpc.aio.StreamUnaryClientInterceptor):
    intercept_stream_unary = _ClientTracing._unary_response  # type: ignore[assignment]


class _UnaryStreamTracing(_ClientTracing, grpc.aio.UnaryStreamClientInterceptor):
    intercept_unary_stream = _ClientTracing._stream_response  # type: ignore[assignment]


class _StreamStreamTracing(_ClientTracing, grpc.aio.StreamStreamClientInterceptor):
    intercept_stream_stream = _ClientTracing._stream_response  # type: ignore[assignment]


def client_interceptors(target: str | None = None) -> list[grpc.aio.ClientInterceptor]:
    """Interceptors for a grpc.aio channel: a CLIENT span per call (all four call kinds), trace
    context in the outgoing metadata."""
    kinds = (_UnaryUnaryTracing, _UnaryStreamTracing, _StreamUnaryTracing, _StreamStreamTracing)
    return [kind(target) for kind in kinds]


def traced_channel(target: str) -> grpc.aio.Channel:
    """An insecure grpc.aio channel for service-to-service calls, traced; `target` is an address
    setting (one address, or a comma list of replicas: calls go round robin)."""
    return grpc.aio.insecure_channel(
        grpc_target(target), options=GRPC_BALANCED, interceptors=client_interceptors(target)
    )


# --- Database ------------------------------------------------------------------------------------

_SPAN_ATTR = "_molbridge_span"


def traced_engine(database_url: str, schema: str, *, pool_size: int = 10) -> AsyncEngine:
    """A service's engine (services.runtime.db.make_engine) whose statements are traced."""
    from services.runtime.db import make_engine

    engine = make_engine(database_url, schema, pool_size=pool_size)
    instrument_engine(engine)
    return engine


def instrument_engine(engine: AsyncEngine) -> None:
    """A CLIENT span for every statement the engine runs inside a traced operation (statements with no
    current span, such as a relay's idle polling, are not traced). The statement text is recorded,
    truncated; parameters never are (they hold password hashes, tokens, …)."""
    from sqlalchemy import event

    sync_engine = engine.sync_engine
    if getattr(sync_engine, "_molbridge_traced", False):
        return
    url = sync_engine.url
    database = url.database or ""
    base: dict[str, Any] = {"db.system": "postgresql", "db.name": database}
    if url.host:
        base["server.address"] = url.host
    if url.port:
        base["server.port"] = url.port

    def before_cursor_execute(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if context is None or not trace.get_current_span().get_span_context().is_valid:
            return
        operation = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "SQL"
        span = tracer().start_span(
            f"{operation} {database}".strip(),
            kind=SpanKind.CLIENT,
            attributes={**base, "db.operation": operation, "db.statement": statement[:MAX_STATEMENT_CHARS]},
        )
        setattr(context, _SPAN_ATTR, span)

    def after_cursor_execute(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        span = getattr(context, _SPAN_ATTR, None)
        if span is not None:
            setattr(context, _SPAN_ATTR, None)
            span.end()

    def handle_error(exception_context):  # type: ignore[no-untyped-def]
        context = exception_context.execution_context
        span = getattr(context, _SPAN_ATTR, None)
        if span is None:
            return
        setattr(context, _SPAN_ATTR, None)
        error = exception_context.original_exception
        # Only the first line: PostgreSQL's DETAIL lines quote row values.
        first_line = str(error).splitlines()[0] if str(error) else ""
        span.set_attribute("error.type", type(error).__name__)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {first_line}"[:500]))
        span.end()

    event.listen(sync_engine, "before_cursor_execute", before_cursor_execute)
    event.listen(sync_engine, "after_cursor_execute", after_cursor_execute)
    event.listen(sync_engine, "handle_error", handle_error)
    sync_engine._molbridge_traced = True  # type: ignore[attr-defined]


# --- HTTP client -----------------------------------------------------------------------------------


@contextmanager
def http_client_span(method: str, url: str, route: str) -> Iterator[tuple[Span, dict[str, str]]]:
    """The CLIENT span of one outgoing HTTP request (named `METHOD route`, e.g. `GET /v1/jobs/{job_id}`)
    and the headers that carry its trace context (`traceparent`) to the server. Record the answer with
    `set_http_status`; an exception marks the span ERROR."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    attributes: dict[str, Any] = {"http.request.method": method, "url.full": url, "http.route": route}
    if parts.hostname:
        attributes["server.address"] = parts.hostname
    if parts.port:
        attributes["server.port"] = parts.port
    with tracer().start_as_current_span(f"{method} {route}", kind=SpanKind.CLIENT, attributes=attributes) as span:
        headers: dict[str, str] = {}
        propagate.inject(headers)
        try:
            yield span, headers
        except BaseException as exc:
            span.set_attribute("error.type", type(exc).__name__)
            raise


def set_http_status(span: Span, status: int) -> None:
    """An HTTP answer on a client span: 4xx and 5xx are errors from the client's point of view."""
    span.set_attribute("http.response.status_code", status)
    if status >= 400:
        span.set_attribute("error.type", str(status))
        span.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))
