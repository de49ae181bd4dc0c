"""The stack's OTLP receiver as a real process: spans exported to it with the real OTLP/gRPC exporter
(as Envoy does), and over OTLP/HTTP with a chunked body (Envoy's HTTP exporter), land in the same
JSON-lines format the services' own exporter writes."""

from __future__ import annotations

import gzip
import json
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from services.runtime.settings import REPO_ROOT
from services.runtime.telemetry import SpanRecord

Receiver = tuple[subprocess.Popen[str], dict[str, Any], Path]


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    out = tmp_path / "traces"
    process = subprocess.Popen(
        [sys.executable, "-m", "stack.trace_receiver", "--port", "0", "--http-port", "0", "--out", str(out)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready = json.loads(process.stdout.readline())  # the bound ports, once it listens
        yield process, ready, out
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def make_spans(service: str, exporters: Sequence[Any]) -> list[ReadableSpan]:
    """A small request tree with every attribute type OTLP carries, sent through `exporters`."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}), shutdown_on_exit=False)
    memory = InMemorySpanExporter()
    for exporter in [memory, *exporters]:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with (
        tracer.start_as_current_span(
            "ingress", kind=SpanKind.SERVER, attributes={"http.method": "POST", "upstream_cluster": "identity"}
        ),
        tracer.start_as_current_span(
            "router identity egress",
            kind=SpanKind.CLIENT,
            attributes={"retries": 0, "ratio": 0.5, "sampled": True, "roles": ["a", "b"]},
        ) as child,
    ):
        child.set_status(Status(StatusCode.ERROR, "upstream reset"))
    provider.shutdown()
    return list(memory.get_finished_spans())


def received(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def expected(spans: Sequence[ReadableSpan]) -> list[dict[str, Any]]:
    return [json.loads(SpanRecord.from_sdk(span).to_json()) for span in spans]


def test_otlp_grpc_export_is_written_as_json_lines(receiver: Receiver) -> None:
    process, ready, out = receiver
    exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{ready['grpc_port']}", insecure=True)
    spans = make_spans("gateway", [exporter])

    lines = received(out / "gateway-receiver.jsonl")
    assert lines == expected(spans)
    child, root = lines
    assert child["parent_span_id"] == root["span_id"] and root["parent_span_id"] is None
    assert (child["kind"], child["status"], child["service"]) == ("CLIENT", "ERROR", "gateway")
    assert child["attributes"] == {"retries": 0, "ratio": 0.5, "sampled": True, "roles": ["a", "b"]}


def test_otlp_http_export_with_a_chunked_or_gzipped_body(receiver: Receiver) -> None:
    process, ready, out = receiver
    spans = make_spans("identity", [])
    body = encode_spans(spans).SerializeToString()
    url = f"http://127.0.0.1:{ready['http_port']}/v1/traces"
    with httpx.Client() as client:
        # A generator body makes httpx send Transfer-Encoding: chunked, like Envoy.
        chunked = client.post(
            url,
            content=(body[i : i + 7] for i in range(0, len(body), 7)),
            headers={"content-type": "application/x-protobuf"},
        )
        zipped = client.post(
            url,
            content=gzip.compress(body),
            headers={"content-type": "application/x-protobuf", "content-encoding": "gzip"},
        )
        wrong_path = client.post(url.replace("/v1/traces", "/v1/logs"), content=body)
        not_protobuf = client.post(url, content=b"{}", headers={"content-type": "application/json"})

    assert chunked.request.headers["transfer-encoding"] == "chunked"
    assert (chunked.status_code, chunked.headers["content-type"]) == (200, "application/x-protobuf")
    assert zipped.status_code == 200
    assert (wrong_path.status_code, not_protobuf.status_code) == (404, 415)
    assert received(out / "identity-receiver.jsonl") == expected(spans) * 2


def test_stops_cleanly_on_sigterm(receiver: Receiver) -> None:
    process, ready, out = receiver
    make_spans("gateway", [OTLPSpanExporter(endpoint=f"127.0.0.1:{ready['grpc_port']}", insecure=True)])
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0
    assert len(received(out / "gateway-receiver.jsonl")) == 2
