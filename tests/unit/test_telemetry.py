"""The span file format, server spans continuing a caller's trace, and `molbridge trace` rendering —
all from real spans made by the OpenTelemetry SDK."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from opentelemetry import propagate
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from cli.main import main as molbridge
from cli.trace import load_trace, render_trace, show_trace
from services.runtime.telemetry import (
    JsonLinesSpanExporter,
    SpanRecord,
    configure_tracing,
    current_trace_id,
    read_span_records,
    server_span,
    shutdown_tracing,
    traces_dir,
)

RECORD_KEYS = {
    "trace_id",
    "span_id",
    "parent_span_id",
    "name",
    "service",
    "kind",
    "start_unix_nano",
    "end_unix_nano",
    "status",
    "attributes",
}


def file_provider(service: str, path: Path) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": service}), shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(path)))
    return provider


def test_exporter_writes_one_json_object_per_span(tmp_path: Path) -> None:
    path = tmp_path / "identity-1.jsonl"
    provider = file_provider("identity", path)
    tracer = provider.get_tracer("test")
    with (
        tracer.start_as_current_span(
            "molbridge.identity.v1.IdentityService/GetMe",
            kind=SpanKind.SERVER,
            attributes={"rpc.method": "GetMe", "roles": ["a", "b"], "rpc.grpc.status_code": 0},
        ),
        tracer.start_as_current_span("SELECT identity", kind=SpanKind.CLIENT) as child,
    ):
        child.set_status(Status(StatusCode.ERROR, "boom"))
    provider.shutdown()

    lines = path.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [set(r) for r in records] == [RECORD_KEYS, RECORD_KEYS]
    child_record, parent_record = records  # a child ends (and is written) first
    for record in records:
        assert re.fullmatch("[0-9a-f]{32}", record["trace_id"])
        assert re.fullmatch("[0-9a-f]{16}", record["span_id"])
        assert record["service"] == "identity"
        assert 0 < record["start_unix_nano"] <= record["end_unix_nano"]
    assert parent_record["parent_span_id"] is None
    assert child_record["parent_span_id"] == parent_record["span_id"]
    assert child_record["trace_id"] == parent_record["trace_id"]
    assert (parent_record["kind"], parent_record["status"]) == ("SERVER", "UNSET")
    assert (child_record["kind"], child_record["status"]) == ("CLIENT", "ERROR")
    assert parent_record["attributes"] == {
        "rpc.method": "GetMe",
        "roles": ["a", "b"],
        "rpc.grpc.status_code": 0,
    }
    assert SpanRecord.from_dict(parent_record).to_json() == lines[1]


def test_server_span_continues_the_callers_trace(tmp_path: Path) -> None:
    caller_trace, caller_span = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    metadata = [("traceparent", f"00-{caller_trace}-{caller_span}-01"), ("x-bin", b"\x00\x01")]
    configure_tracing("unit-svc", tmp_path, None)
    try:
        with server_span("/molbridge.identity.v1.IdentityService/GetMe", metadata):
            inside = current_trace_id()
        with pytest.raises(ValueError), server_span("/molbridge.identity.v1.IdentityService/Login", None):
            raise ValueError("broken")
    finally:
        shutdown_tracing()

    assert inside == caller_trace
    assert current_trace_id() == ""
    assert [p.name for p in traces_dir(tmp_path).iterdir()] == [f"unit-svc-{os.getpid()}.jsonl"]
    ok, failed = sorted(read_span_records(traces_dir(tmp_path)), key=lambda r: r.start_unix_nano)
    assert (ok.trace_id, ok.parent_span_id) == (caller_trace, caller_span)
    assert (ok.name, ok.kind, ok.status, ok.service) == (
        "molbridge.identity.v1.IdentityService/GetMe",
        "SERVER",
        "UNSET",
        "unit-svc",
    )
    assert ok.attributes == {
        "rpc.system": "grpc",
        "rpc.service": "molbridge.identity.v1.IdentityService",
        "rpc.method": "GetMe",
        "rpc.grpc.status_code": 0,
    }
    # No incoming traceparent: a new trace; an unexpected exception is a server fault.
    assert failed.parent_span_id is None and failed.trace_id != caller_trace
    assert (failed.status, failed.attributes["rpc.grpc.status_code"]) == ("ERROR", 2)


def write_login_trace(directory: Path) -> str:
    """gateway → identity (two statements, one failing), written like the stack writes them: the
    gateway's spans by the receiver, identity's by its own exporter (and, once more, by the receiver,
    as when a service also exports over OTLP). Plus an unrelated trace."""
    gateway = file_provider("gateway", directory / "gateway-receiver.jsonl")
    identity = file_provider("identity", directory / "identity-4242.jsonl")
    identity.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(directory / "identity-receiver.jsonl")))
    gateway_tracer, identity_tracer = gateway.get_tracer("envoy"), identity.get_tracer("identity")

    with gateway_tracer.start_as_current_span("ingress", kind=SpanKind.SERVER) as root:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        with identity_tracer.start_as_current_span(
            "molbridge.identity.v1.IdentityService/Login",
            context=propagate.extract(carrier),
            kind=SpanKind.SERVER,
        ):
            with identity_tracer.start_as_current_span("SELECT identity", kind=SpanKind.CLIENT):
                pass
            with identity_tracer.start_as_current_span("INSERT identity", kind=SpanKind.CLIENT) as insert:
                insert.set_status(Status(StatusCode.ERROR, "duplicate key"))
    with gateway_tracer.start_as_current_span("unrelated"):
        pass
    gateway.shutdown()
    identity.shutdown()
    return format(root.get_span_context().trace_id, "032x")


def test_trace_is_rendered_as_a_tree_across_services(tmp_path: Path) -> None:
    trace_id = write_login_trace(tmp_path)
    spans = load_trace(tmp_path, trace_id.upper())
    assert [s.name for s in spans] == [
        "ingress",
        "molbridge.identity.v1.IdentityService/Login",
        "SELECT identity",
        "INSERT identity",
    ]

    lines = render_trace(spans).splitlines()
    assert lines[0].startswith(f"trace {trace_id}: 4 spans, ")
    assert lines[0].endswith("services: gateway, identity")
    assert lines[1].split() == ["start", "ms", "duration", "ms", "service", "span"]
    tree = [line[lines[1].index("service") :] for line in lines[2:]]
    assert tree == [
        "gateway   ingress",
        "identity  └─ molbridge.identity.v1.IdentityService/Login",
        "identity     ├─ SELECT identity",
        "identity     └─ INSERT identity  [ERROR]",
    ]
    assert lines[2].split()[0] == "0.00"  # offsets count from the first span


def test_a_missing_parent_starts_its_own_branch(tmp_path: Path) -> None:
    trace_id = write_login_trace(tmp_path)
    without_gateway = [s for s in load_trace(tmp_path, trace_id) if s.service != "gateway"]
    lines = render_trace(without_gateway).splitlines()[2:]
    assert lines[0].split()[-1] == "molbridge.identity.v1.IdentityService/Login"
    assert lines[0].split()[0] == "0.00"


def test_trace_command_prints_the_tree_or_says_it_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace_id = write_login_trace(traces_dir(tmp_path))
    assert molbridge(["trace", trace_id, "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out == show_trace(trace_id, tmp_path) + "\n"
    assert "└─ molbridge.identity.v1.IdentityService/Login" in out

    assert molbridge(["trace", "f" * 32, "--data-dir", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"trace {'f' * 32} not found under {traces_dir(tmp_path)}" in captured.err
    assert "Traceback" not in captured.err
