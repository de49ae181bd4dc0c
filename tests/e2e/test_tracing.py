"""Tracing across the real mesh: one REST login through Envoy is one connected trace, from the gateway
through the identity server, its database statements and outbox, to the audit-trail consumer; and
gRPC reflection through the gateway port lists the whole API."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence

import grpc
import httpx
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from cli.trace import load_trace, render_trace
from gateway.envoy import protoset
from services.identity.service import CONSUMER_NAME as AUDIT_CONSUMER
from services.runtime.telemetry import SpanRecord
from stack.mesh import DESCRIPTOR_PATH

TRACE_WAIT_SECONDS = 20.0  # the gateway's spans come through its OTLP exporter, flushed every second

SpanCheck = tuple[str, Callable[[SpanRecord], bool]]


def is_database(span: SpanRecord) -> bool:
    return span.attributes.get("db.system") == "postgresql"


# What a login's trace must contain, each with the check that finds it.
LOGIN_SPANS: tuple[SpanCheck, ...] = (
    ("the gateway's span", lambda s: s.service == "gateway"),
    (
        "the identity server span for Login",
        lambda s: s.service == "identity" and s.kind == "SERVER" and s.name.endswith("IdentityService/Login"),
    ),
    ("a database span", is_database),
    ("the outbox publish span", lambda s: s.kind == "PRODUCER" and s.name.startswith("outbox publish ")),
    (
        "the audit-trail consumer span",
        lambda s: (
            s.kind == "CONSUMER" and s.attributes.get("messaging.consumer.group.name") == AUDIT_CONSUMER
        ),
    ),
)


def missing(spans: Sequence[SpanRecord], checks: Sequence[SpanCheck]) -> list[str]:
    return [what for what, found in checks if not any(found(s) for s in spans)]


def roots(spans: Sequence[SpanRecord]) -> list[SpanRecord]:
    """Spans whose parent is not in the trace."""
    ids = {s.span_id for s in spans}
    return [s for s in spans if s.parent_span_id not in ids]


def wait_for_trace(mesh, trace_id: str, checks: Sequence[SpanCheck]) -> list[SpanRecord]:  # type: ignore[no-untyped-def]
    """The trace's spans once every check finds one and the tree has a single root (spans are flushed in
    batches, so a child can be on disk before its parent); the last state seen after the deadline."""
    deadline = time.monotonic() + TRACE_WAIT_SECONDS
    while True:
        spans = load_trace(mesh.traces_dir, trace_id)
        if (not missing(spans, checks) and len(roots(spans)) == 1) or time.monotonic() > deadline:
            return spans
        time.sleep(0.2)


def test_a_login_produces_one_connected_trace(mesh) -> None:  # type: ignore[no-untyped-def]
    trace_id, client_span_id = secrets.token_hex(16), secrets.token_hex(8)
    response = httpx.post(
        f"{mesh.gateway_url}/api/v1/auth/login",
        json={"email": mesh.admin_email, "password": mesh.admin_password},
        headers={"traceparent": f"00-{trace_id}-{client_span_id}-01"},
        timeout=30,
    )
    assert response.status_code == 200, response.text

    spans = wait_for_trace(mesh, trace_id, LOGIN_SPANS)
    tree = render_trace(spans) or "(no spans)"
    assert not missing(spans, LOGIN_SPANS), f"missing {missing(spans, LOGIN_SPANS)} in:\n{tree}"
    # One tree: its only root is the gateway's span, a child of the client's traceparent span.
    top = roots(spans)
    assert len(top) == 1, f"not one connected tree ({len(top)} roots):\n{tree}"
    assert top[0].service == "gateway" and top[0].parent_span_id == client_span_id, tree
    # The hops nest as the request flowed: gateway → Login → outbox publish → audit consumer.
    by_id = {s.span_id: s for s in spans}
    span: SpanRecord | None = next(s for s in spans if LOGIN_SPANS[-1][1](s))
    path: list[SpanRecord] = []
    while span is not None:
        path.insert(0, span)
        span = by_id.get(span.parent_span_id or "")
    assert path[0] is top[0], tree
    assert [s.kind for s in path if s.service != "gateway"] == ["SERVER", "PRODUCER", "CONSUMER"], tree
    # Both the request and the worker run their statements inside their own spans.
    login, consumer = path[-3], path[-1]
    for parent in (login, consumer):
        assert any(s.parent_span_id == parent.span_id and is_database(s) for s in spans), tree


def reflection_request(
    channel: grpc.Channel, request: reflection_pb2.ServerReflectionRequest
) -> reflection_pb2.ServerReflectionResponse:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    [answer] = list(stub.ServerReflectionInfo(iter([request]), timeout=10))
    return answer


def test_reflection_through_the_gateway_lists_every_molbridge_service(mesh) -> None:  # type: ignore[no-untyped-def]
    # No token: discovering the API is public, like `grpcurl -plaintext host:port list`.
    with grpc.insecure_channel(mesh.grpc_target) as channel:
        listed = reflection_request(channel, reflection_pb2.ServerReflectionRequest(list_services=""))
        names = {s.name for s in listed.list_services_response.service}
        expected = set(protoset.services(protoset.load(DESCRIPTOR_PATH)))  # every service the gateway routes
        assert {"molbridge.identity.v1.IdentityService", "molbridge.health.v1.HealthService"} <= expected
        assert expected <= names, f"not listed: {sorted(expected - names)}"

        # The listing is usable: the descriptors behind a service come back too.
        files = reflection_request(
            channel,
            reflection_pb2.ServerReflectionRequest(
                file_containing_symbol="molbridge.identity.v1.IdentityService"
            ),
        ).file_descriptor_response.file_descriptor_proto
        services = set()
        for raw in files:
            proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
            services |= {f"{proto.package}.{s.name}" for s in proto.service}
        assert "molbridge.identity.v1.IdentityService" in services
