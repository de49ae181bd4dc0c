"""The trace of a prediction reaches the AI engine and comes back: one REST `POST /api/v1/predictions`
through Envoy is one connected trace — the gateway, the prediction server (and its BatchGetMolecules
call), the work item's outbox publish, the prediction worker, its HTTP calls to the engine, the
engine's own spans (exported over OTLP to the stack's receiver), and the PredictionCompleted event the
worker publishes, down to the molecule service's consumer that stores the values."""

from __future__ import annotations

import secrets

import httpx

from cli.trace import render_trace
from services.prediction.worker import BATCH_DURABLE
from services.runtime.telemetry import SpanRecord
from tests.e2e import test_identity_gateway as identity
from tests.e2e.test_identity_gateway import bearer, new_org
from tests.e2e.test_prediction_gateway import eventually
from tests.e2e.test_tracing import SpanCheck, missing, roots, wait_for_trace

api = identity.api  # the module's fixtures: a REST client on the gateway, the platform admin
admin = identity.admin


def is_engine_call(span: SpanRecord, route: str) -> bool:
    return span.kind == "CLIENT" and span.name == f"POST {route}" and span.service == "prediction-worker"


PREDICTION_SPANS: tuple[SpanCheck, ...] = (
    ("the gateway's span", lambda s: s.service == "gateway"),
    (
        "the prediction server span for CreatePrediction",
        lambda s: s.service == "prediction" and s.kind == "SERVER" and s.name.endswith("/CreatePrediction"),
    ),
    (
        "the molecule server span for BatchGetMolecules",
        lambda s: s.service == "molecule" and s.kind == "SERVER" and s.name.endswith("/BatchGetMolecules"),
    ),
    (
        "the batch consumer span",
        lambda s: s.kind == "CONSUMER" and s.attributes.get("messaging.consumer.group.name") == BATCH_DURABLE,
    ),
    ("the worker's engine call", lambda s: is_engine_call(s, "/v1/jobs")),
    ("the engine's server span", lambda s: s.service == "engine" and s.kind == "SERVER" and s.name == "POST /v1/jobs"),
    ("the engine's job span", lambda s: s.service == "engine" and s.name == "engine job"),
    (
        "the engine's results answer",
        lambda s: s.service == "engine" and s.kind == "SERVER" and s.name == "GET /v1/jobs/{job_id}/results",
    ),
    (
        "the molecule service consuming PredictionCompleted",
        lambda s: s.kind == "CONSUMER" and s.service == "molecule" and s.name.endswith(".prediction_completed"),
    ),
)


def ancestry(spans: list[SpanRecord], span: SpanRecord) -> list[SpanRecord]:
    """The span and its ancestors, root first."""
    by_id = {s.span_id: s for s in spans}
    path: list[SpanRecord] = []
    current: SpanRecord | None = span
    while current is not None:
        path.insert(0, current)
        current = by_id.get(current.parent_span_id or "")
    return path


def test_a_prediction_is_one_trace_from_the_gateway_to_the_engine_and_back(
    api: httpx.Client, admin: dict, mesh
) -> None:  # type: ignore[no-untyped-def]
    _, scientist = new_org(api, admin)
    auth = bearer(scientist)
    created = api.post(
        "/molecules/batch", json={"molecules": [{"smiles": "CCO"}, {"smiles": "c1ccccc1O"}]}, headers=auth
    )
    assert created.status_code == 201, created.text
    ids = [o["molecule_id"] for o in created.json()["data"]]

    trace_id, client_span_id = secrets.token_hex(16), secrets.token_hex(8)
    queued = api.post(
        "/predictions",
        json={"molecule_ids": ids, "properties": ["logp"]},
        headers={**auth, "traceparent": f"00-{trace_id}-{client_span_id}-01"},
    )
    assert queued.status_code == 201, queued.text
    job_id = queued.json()["data"]["job_id"]

    def completed() -> bool | None:
        response = api.get(f"/predictions/{job_id}/status", headers=auth)
        return True if response.status_code == 200 and response.json()["data"]["status"] == "completed" else None

    eventually(completed, "the prediction job to complete")
    spans = wait_for_trace(mesh, trace_id, PREDICTION_SPANS)
    tree = render_trace(spans) or "(no spans)"
    assert not missing(spans, PREDICTION_SPANS), f"missing {missing(spans, PREDICTION_SPANS)} in:\n{tree}"
    top = roots(spans)
    assert len(top) == 1 and top[0].service == "gateway" and top[0].parent_span_id == client_span_id, tree

    # The engine's span hangs under the worker's HTTP client span, which hangs under the batch's
    # consumer span, under the outbox publish of the request that queued it.
    engine_span = next(s for s in spans if PREDICTION_SPANS[5][1](s))
    path = ancestry(spans, engine_span)
    assert path[0] is top[0], tree
    # (The server and the workers all publish the prediction outbox: either may send a given row.)
    hops = [(s.service.replace("prediction-worker", "prediction"), s.kind) for s in path if s.kind != "INTERNAL"]
    assert hops == [
        ("gateway", "SERVER"),
        ("prediction", "SERVER"),
        ("prediction", "PRODUCER"),
        ("prediction", "CONSUMER"),
        ("prediction", "CLIENT"),
        ("engine", "SERVER"),
    ], tree
    assert path[-2].service == "prediction-worker" and path[-2].attributes.get("http.response.status_code") == 202, tree
    # And back: the values reach the molecule service in the same trace, through the prediction outbox.
    stored = next(s for s in spans if PREDICTION_SPANS[-1][1](s))
    back = [(s.service.replace("prediction-worker", "prediction"), s.kind) for s in ancestry(spans, stored)]
    assert back[-3:] == [("prediction", "CONSUMER"), ("prediction", "PRODUCER"), ("molecule", "CONSUMER")], tree
