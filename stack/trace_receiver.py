"""A small OTLP trace receiver for local runs without a collector.

Envoy exports only OTLP, so the stack runs this to put the gateway's spans (and any service's, when
pointed here) next to the services' own JSON-lines files, in the same format:
`<out>/<service>-receiver.jsonl`.

    python -m stack.trace_receiver --port 4319 [--http-port 4320] --out .data/traces

Listens for OTLP/gRPC (`TraceService/Export`) and, with --http-port, OTLP/HTTP protobuf
(`POST /v1/traces`, chunked or sized bodies, optionally gzip). Prints one JSON line with the bound
ports to stdout when ready (so `--port 0` can be used); stops cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import signal
import threading
from collections.abc import Iterator
from concurrent import futures
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1 import trace_pb2

from services.runtime.logs import configure_logging
from services.runtime.telemetry import JsonLinesWriter, SpanRecord, safe_file_stem

log = logging.getLogger("stack.trace_receiver")

_KIND_NAMES = {
    trace_pb2.Span.SPAN_KIND_INTERNAL: "INTERNAL",
    trace_pb2.Span.SPAN_KIND_SERVER: "SERVER",
    trace_pb2.Span.SPAN_KIND_CLIENT: "CLIENT",
    trace_pb2.Span.SPAN_KIND_PRODUCER: "PRODUCER",
    trace_pb2.Span.SPAN_KIND_CONSUMER: "CONSUMER",
}
_STATUS_NAMES = {
    trace_pb2.Status.STATUS_CODE_UNSET: "UNSET",
    trace_pb2.Status.STATUS_CODE_OK: "OK",
    trace_pb2.Status.STATUS_CODE_ERROR: "ERROR",
}


def any_value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, kind)


def span_records(request: trace_service_pb2.ExportTraceServiceRequest) -> Iterator[SpanRecord]:
    """The spans of one OTLP export, as SpanRecords."""
    for resource_spans in request.resource_spans:
        resource = {kv.key: any_value(kv.value) for kv in resource_spans.resource.attributes}
        service = str(resource.get("service.name") or "unknown")
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield SpanRecord(
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    parent_span_id=span.parent_span_id.hex() or None,
                    name=span.name,
                    service=service,
                    kind=_KIND_NAMES.get(span.kind, "INTERNAL"),
                    start_unix_nano=span.start_time_unix_nano,
                    end_unix_nano=span.end_time_unix_nano,
                    status=_STATUS_NAMES.get(span.status.code, "UNSET"),
                    attributes={kv.key: any_value(kv.value) for kv in span.attributes},
                )


class SpanSink:
    """One JSON-lines file per service under `out`, shared by the gRPC and HTTP front ends."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self._writers: dict[str, JsonLinesWriter] = {}
        self._lock = threading.Lock()

    def accept(self, request: trace_service_pb2.ExportTraceServiceRequest) -> int:
        by_service: dict[str, list[SpanRecord]] = {}
        for record in span_records(request):
            by_service.setdefault(record.service, []).append(record)
        for service, records in by_service.items():
            self._writer(service).write(records)
        return sum(len(records) for records in by_service.values())

    def _writer(self, service: str) -> JsonLinesWriter:
        with self._lock:
            writer = self._writers.get(service)
            if writer is None:
                writer = JsonLinesWriter(self.out / f"{safe_file_stem(service)}-receiver.jsonl")
                self._writers[service] = writer
            return writer

    def close(self) -> None:
        with self._lock:
            for writer in self._writers.values():
                writer.close()
            self._writers.clear()


class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, sink: SpanSink) -> None:
        self._sink = sink

    def Export(  # noqa: N802 - the generated servicer's method name
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        count = self._sink.accept(request)
        log.debug("received %d spans over gRPC", count)
        return trace_service_pb2.ExportTraceServiceResponse()


class OtlpHttpHandler(BaseHTTPRequestHandler):
    """OTLP/HTTP protobuf: `POST /v1/traces`. Envoy sends chunked bodies, which http.server does not
    decode by itself."""

    protocol_version = "HTTP/1.1"
    sink: SpanSink  # set on the subclass made by serve()

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        # Read the body before any answer: unread bytes would be parsed as the next request on
        # this keep-alive connection.
        body = self._read_body()
        if self.path.split("?", 1)[0] != "/v1/traces":
            self._answer(HTTPStatus.NOT_FOUND, b"", "text/plain")
            return
        if self.headers.get("content-encoding", "").lower() == "gzip":
            body = gzip.decompress(body)
        if not self.headers.get("content-type", "").startswith("application/x-protobuf"):
            self._answer(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, b"only application/x-protobuf", "text/plain")
            return
        request = trace_service_pb2.ExportTraceServiceRequest()
        try:
            request.ParseFromString(body)
        except Exception:  # protobuf raises DecodeError (its own hierarchy) for garbage
            self._answer(HTTPStatus.BAD_REQUEST, b"malformed OTLP payload", "text/plain")
            return
        count = self.sink.accept(request)
        log.debug("received %d spans over HTTP", count)
        response = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        self._answer(HTTPStatus.OK, response, "application/x-protobuf")

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # the CRLF after each chunk
        return self.rfile.read(int(self.headers.get("content-length") or 0))

    def _answer(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        log.debug("http: " + format, *args)


def serve(host: str, port: int, http_port: int | None, out: Path, stop: threading.Event) -> None:
    out.mkdir(parents=True, exist_ok=True)
    sink = SpanSink(out)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(sink), server)
    bound_port = server.add_insecure_port(f"{host}:{port}")
    if bound_port == 0:
        raise SystemExit(f"trace receiver: cannot listen on {host}:{port}")
    server.start()

    http_server: ThreadingHTTPServer | None = None
    if http_port is not None:
        handler = type("Handler", (OtlpHttpHandler,), {"sink": sink})
        http_server = ThreadingHTTPServer((host, http_port), handler)
        http_server.daemon_threads = True
        threading.Thread(target=http_server.serve_forever, name="otlp-http", daemon=True).start()

    ready = {"grpc_port": bound_port, "http_port": http_server.server_address[1] if http_server else None}
    print(json.dumps(ready), flush=True)
    log.info("trace receiver listening on %s (grpc %s, http %s), writing to %s", host, *ready.values(), out)
    stop.wait()
    if http_server is not None:
        http_server.shutdown()
        http_server.server_close()
    server.stop(grace=2).wait()
    sink.close()
    log.info("trace receiver stopped")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stack.trace_receiver", description="Local OTLP receiver")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="OTLP/gRPC port (0: any free port)")
    parser.add_argument("--http-port", type=int, default=None, help="also serve OTLP/HTTP on this port")
    parser.add_argument("--out", type=Path, required=True, help="directory for the JSON-lines files")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    configure_logging("trace-receiver", args.log_level)

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    serve(args.host, args.port, args.http_port, args.out, stop)


if __name__ == "__main__":
    main()
