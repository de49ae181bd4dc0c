"""The AI engine port's one real adapter: an HTTP client for the engine's REST job contract.

    POST /v1/jobs {"molecules": [{"id", "smiles"}], "properties": [...], "model"?} → 202 {"job_id"}
    GET  /v1/jobs/{id}          → {"job_id", "status": queued|running|completed|failed, "progress"}
    GET  /v1/jobs/{id}/results  → {"results": [...], "unsupported": [...], "failed": [{"id", "reason"}]}
    GET  /v1/models

Resilience, in layers: one pooled httpx.AsyncClient with connect/read timeouts; each HTTP attempt
passes the circuit breaker (domain/breaker.py) and reports to it; a failed attempt (transport error,
timeout, 5xx, 429) is retried `retries` times by stamina, with exponential backoff (base · 2^n) plus
jitter so that workers that failed together do not retry together. A 4xx is the request's own fault
(EngineRejected): it neither retries nor counts against the engine. When every attempt failed the
call raises EngineUnavailable; when the breaker refuses, CircuitOpen (with the seconds until the next
probe). Callers on the bus turn both into "try this batch again later".

A job that the engine forgets (it was restarted mid-job: GET answers 404) or reports as failed
raises EngineUnavailable too: the batch is resubmitted as a whole, which is safe because results
are stored idempotently.

Tracing: one INTERNAL span per engine job, and a CLIENT span per HTTP attempt whose `traceparent`
header lets the engine's own spans join the trace.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import stamina
from opentelemetry.trace import Status, StatusCode

from services.prediction.domain.breaker import CircuitBreaker, CircuitOpen
from services.prediction.domain.catalogue import Catalogue, Model, ModelProperty
from services.prediction.domain.jobs import BatchOutcome, MoleculeInput, Prediction
from services.prediction.service.ports import EngineRejected, EngineUnavailable
from services.runtime import telemetry

log = logging.getLogger("molbridge.prediction.engine")

DEFAULT_URL = "http://127.0.0.1:8090"

__all__ = [
    "CircuitOpen",
    "EngineClient",
    "EngineRejected",
    "EngineSettings",
    "EngineUnavailable",
    "parse_catalogue",
    "parse_results",
]


class _AttemptFailed(Exception):
    """One HTTP attempt failed in a way another attempt may not (what stamina retries on)."""


@dataclass(frozen=True)
class EngineSettings:
    """The client's configuration (read from the environment by bootstrap.PredictionSettings)."""

    url: str = DEFAULT_URL
    timeout: float = 10.0  # per HTTP request (connect, read, write, pool)
    retries: int = 3
    backoff: float = 0.5  # first retry after about this many seconds (plus jitter), then doubling
    breaker_threshold: int = 5
    breaker_reset: float = 60.0
    poll_interval: float = 0.2
    job_timeout: float = 600.0  # a job still running after this long is given up (and resubmitted)
    max_connections: int = 10


class EngineClient:
    def __init__(self, settings: EngineSettings, *, breaker: CircuitBreaker | None = None) -> None:
        self.settings = settings
        self.breaker = breaker or CircuitBreaker(settings.breaker_threshold, settings.breaker_reset)
        self._http = httpx.AsyncClient(
            base_url=settings.url,
            timeout=httpx.Timeout(settings.timeout),
            limits=httpx.Limits(
                max_connections=settings.max_connections, max_keepalive_connections=settings.max_connections
            ),
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def catalogue(self) -> Catalogue:
        return parse_catalogue(await self._call("GET", "/v1/models"))

    async def predict(
        self, molecules: Sequence[MoleculeInput], properties: Sequence[str], model: str = ""
    ) -> BatchOutcome:
        """Run one engine job for the molecules and wait for it; the caller decides the batch size."""
        body: dict[str, Any] = {
            "molecules": [{"id": m.id, "smiles": m.smiles} for m in molecules],
            "properties": list(properties),
        }
        if model:
            body["model"] = model
        with telemetry.tracer().start_as_current_span(
            "ai-engine job", attributes={"molbridge.engine.molecules": len(molecules)}
        ) as span:
            job_id = str((await self._call("POST", "/v1/jobs", body))["job_id"])
            span.set_attribute("molbridge.engine.job_id", job_id)
            deadline = time.monotonic() + self.settings.job_timeout
            while True:
                status = (await self._call("GET", f"/v1/jobs/{job_id}", route="/v1/jobs/{job_id}", lost_job=True)).get(
                    "status"
                )
                if status == "completed":
                    break
                if status == "failed":
                    raise EngineUnavailable(f"the AI engine failed job {job_id}")
                if time.monotonic() > deadline:
                    raise EngineUnavailable(f"job {job_id} still {status} after {self.settings.job_timeout:.0f} s")
                await asyncio.sleep(self.settings.poll_interval)
            results = await self._call(
                "GET", f"/v1/jobs/{job_id}/results", route="/v1/jobs/{job_id}/results", lost_job=True
            )
            return parse_results(results)

    async def _call(
        self, method: str, path: str, body: Any = None, *, route: str | None = None, lost_job: bool = False
    ) -> Any:
        attempts = self.settings.retries + 1
        try:
            async for attempt in stamina.retry_context(
                on=_AttemptFailed,
                attempts=attempts,
                timeout=None,  # bounded by attempts × the HTTP timeout
                wait_initial=self.settings.backoff,
                wait_jitter=self.settings.backoff,
                wait_max=max(self.settings.backoff, 30.0),
            ):
                with attempt:
                    return await self._attempt(method, path, body, route or path, lost_job)
        except _AttemptFailed as error:
            raise EngineUnavailable(f"the AI engine failed {attempts} times on {method} {path}: {error}") from error
        raise AssertionError("unreachable: stamina either returns or raises")  # pragma: no cover

    async def _attempt(self, method: str, path: str, body: Any, route: str, lost_job: bool) -> Any:
        self.breaker.allow()  # CircuitOpen goes to the caller: no point retrying into an open breaker
        with telemetry.http_client_span(method, f"{self.settings.url}{path}", route) as (span, headers):
            try:
                response = await self._http.request(method, path, json=body, headers=headers)
            except httpx.HTTPError as error:  # connect refused, timeouts, protocol errors
                problem = f"{type(error).__name__}: {error}"
                span.set_attribute("error.type", type(error).__name__)
                span.set_status(Status(StatusCode.ERROR, problem[:200]))
            else:
                telemetry.set_http_status(span, response.status_code)
                if response.status_code < 400:
                    self.breaker.success()
                    return response.json()
                if lost_job and response.status_code == 404:
                    self.breaker.success()  # the engine answers; it lost the job (restarted)
                    raise EngineUnavailable(f"the AI engine no longer knows {path}")
                if response.status_code < 500 and response.status_code != 429:
                    self.breaker.success()
                    raise EngineRejected(response.status_code, response.text[:500])
                problem = f"HTTP {response.status_code}"
        self.breaker.failure()
        log.info("AI engine %s %s failed: %s", method, path, problem)
        raise _AttemptFailed(problem)


def _units(given: object) -> str:
    """DOMAIN.md writes dimensionless units as "–"; the catalogue (and everything stored) uses ""."""
    units = str(given or "").strip()
    return "" if units in ("–", "-", "—") else units


def parse_results(payload: Mapping[str, Any]) -> BatchOutcome:
    """The results document; malformed entries (no numeric value) are reported as failed molecules."""
    predictions: list[Prediction] = []
    failed: dict[str, str] = {}
    for item in payload.get("results") or []:
        try:
            predictions.append(
                Prediction(
                    molecule_id=str(item["id"]),
                    property=str(item["property"]),
                    value=float(item["value"]),
                    units=_units(item.get("units")),
                    confidence=min(1.0, max(0.0, float(item.get("confidence") or 0.0))),
                    model_name=str(item.get("model") or ""),
                    model_version=str(item.get("model_version") or ""),
                )
            )
        except (KeyError, TypeError, ValueError):
            failed[str(item.get("id", ""))] = f"malformed result from the engine: {item!r}"[:300]
    for item in payload.get("failed") or []:
        failed[str(item.get("id", ""))] = str(item.get("reason") or "failed")
    unsupported = [
        str(p.get("property", p)) if isinstance(p, dict) else str(p) for p in payload.get("unsupported") or []
    ]
    return BatchOutcome(predictions, unsupported, failed)


def parse_catalogue(payload: Any) -> Catalogue:
    """The engine's /v1/models document ({"models": [...]} or a list); malformed entries are skipped."""
    items = payload.get("models", []) if isinstance(payload, Mapping) else payload or []
    models: list[Model] = []
    for item in items:
        if not isinstance(item, Mapping) or not item.get("name"):
            continue
        properties = tuple(
            ModelProperty(str(p.get("name") or p.get("property") or ""), str(p.get("units") or ""))
            if isinstance(p, Mapping)
            else ModelProperty(str(p))
            for p in item.get("properties") or []
        )
        models.append(
            Model(
                name=str(item["name"]),
                version=str(item.get("version") or ""),
                properties=tuple(p for p in properties if p.name),
                description=str(item.get("description") or ""),
            )
        )
    return Catalogue(tuple(models))
