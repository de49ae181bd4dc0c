"""Asynchronous prediction jobs: a bounded in-memory store and a worker pool that runs them in chunks."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from engine import chem, telemetry
from engine.faults import Faults
from engine.models import Model

MAX_MOLECULES = 1000
CHUNK = 50  # progress granularity; also bounds the memory of one model call
MAX_JOBS_KEPT = 2000
# DOMAIN.md ranges: a prediction outside them is clipped so the platform can always store it.
RANGES = {"solubility": (0.0, 1000.0), "logp": (-10.0, 10.0), "logd": (-10.0, 10.0),
          "permeability": (0.0, 1.0), "clearance": (0.0, 1000.0), "half_life": (0.0, 100.0),
          "bioavailability": (0.0, 100.0)}
log = logging.getLogger("engine.jobs")


@dataclass
class Job:
    id: str
    molecules: list[dict[str, str]]
    routes: dict[str, Model]  # property → model that serves it
    unsupported: list[str]
    status: str = "queued"
    done: int = 0
    error: str | None = None
    results: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    trace_context: Any = None  # the submitting request's, so the job's spans join its trace

    def status_view(self) -> dict[str, Any]:
        view: dict[str, Any] = {"job_id": self.id, "status": self.status,
                                "progress": {"done": self.done, "total": len(self.molecules)}}
        if self.error:
            view["error"] = self.error
        return view

    def results_view(self) -> dict[str, Any]:
        return {"job_id": self.id, "results": self.results, "unsupported": self.unsupported,
                "failed": self.failed}


class Jobs:
    def __init__(self, models: dict[str, Model], faults: Faults, workers: int = 1) -> None:
        self.models = models
        self._faults = faults
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._model_locks = {name: threading.Lock() for name in models}  # torch/chemprop calls one at a time
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="engine-job")

    def route(self, properties: list[str], model: str | None) -> tuple[dict[str, Model], list[str]]:
        """Pick the model for each property: the requested one, else the loaded one with the best held-out
        reliability. Properties nobody serves are unsupported (never guessed)."""
        candidates = [self.models[model]] if model else list(self.models.values())
        routes: dict[str, Model] = {}
        unsupported: list[str] = []
        for prop in dict.fromkeys(properties):
            serving = [m for m in candidates if prop in m.properties]
            if serving:
                routes[prop] = max(serving, key=lambda m: m.properties[prop].reliability)
            else:
                unsupported.append(prop)
        return routes, unsupported

    def submit(self, molecules: list[dict[str, str]], properties: list[str], model: str | None) -> Job:
        routes, unsupported = self.route(properties, model)
        job = Job(id=uuid.uuid4().hex, molecules=molecules, routes=routes, unsupported=unsupported,
                  trace_context=telemetry.current_context())
        with self._lock:
            self._jobs[job.id] = job
            while len(self._jobs) > MAX_JOBS_KEPT:
                oldest = next(iter(self._jobs.values()))
                if oldest.status in ("queued", "running"):
                    break
                self._jobs.popitem(last=False)
        self._pool.submit(self._run, job)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def _run(self, job: Job) -> None:
        with telemetry.span("engine job", job.trace_context, **{"engine.job_id": job.id,
                                                                 "engine.molecules": len(job.molecules)}):
            self._run_job(job)

    def _run_job(self, job: Job) -> None:
        job.status = "running"
        try:
            if self._faults.take_job_failure():
                raise RuntimeError("injected job failure")
            for start in range(0, len(job.molecules), CHUNK):
                self._faults.job_delay()
                self._run_chunk(job, job.molecules[start:start + CHUNK])
                job.done = min(len(job.molecules), start + CHUNK)
            job.status = "completed"
        except Exception as exc:  # the job fails; the engine keeps serving
            log.exception("job %s failed", job.id)
            job.error = f"{type(exc).__name__}: {exc}"
            job.status = "failed"

    def _run_chunk(self, job: Job, chunk: list[dict[str, str]]) -> None:
        parsed = []
        for molecule in chunk:
            mol = chem.parent_mol(molecule["smiles"])
            if mol is None:
                job.failed.append({"id": molecule["id"], "reason": "invalid SMILES"})
            else:
                parsed.append((molecule["id"], mol))
        if not parsed:
            return
        by_model: dict[str, list[str]] = {}
        for prop, model in job.routes.items():
            by_model.setdefault(model.name, []).append(prop)
        mols = [mol for _, mol in parsed]
        for model_name, props in by_model.items():
            model = self.models[model_name]
            started = time.perf_counter()
            with self._model_locks[model_name], telemetry.span(f"predict {model_name}", **{
                    "engine.model": model_name, "engine.molecules": len(mols), "engine.properties": props}):
                predictions = model.predict(mols, props)
            log.debug("%s: %d molecules in %.3f s", model_name, len(mols), time.perf_counter() - started)
            for (mol_id, _), row in zip(parsed, predictions, strict=True):
                for prop in props:
                    pred = row.get(prop)
                    if pred is None:
                        job.failed.append({"id": mol_id, "reason": f"{model_name} returned no {prop}"})
                        continue
                    low, high = RANGES.get(prop, (float("-inf"), float("inf")))
                    job.results.append({
                        "id": mol_id, "property": prop, "value": min(high, max(low, pred.value)),
                        "units": model.properties[prop].units,
                        "confidence": round(min(1.0, max(0.0, pred.confidence)), 4),
                        "model": model.name, "model_version": model.version,
                    })
