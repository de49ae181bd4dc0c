"""The engine's REST contract over stdlib http.server (JSON in, JSON out; HTTP/1.1 keep-alive)."""

from __future__ import annotations

import json
import logging
import re
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from engine import chem, telemetry
from engine.faults import Faults
from engine.jobs import MAX_MOLECULES, Jobs
from engine.models import describe

MAX_BODY = 4 * 1024 * 1024
MAX_PROPERTIES = 50
MAX_ID_LENGTH = 200
_JOB_PATH = re.compile(r"^/v1/jobs/([0-9a-f]{32})(/results)?$")
_UNTRACED = ("/healthz", "/v1/_faults")  # probes and test controls: not part of anyone's trace
log = logging.getLogger("engine.server")


class BadRequest(Exception):
    pass


def parse_job_request(body: Any, models: set[str]) -> tuple[list[dict[str, str]], list[str], str | None]:
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    molecules = body.get("molecules")
    if not isinstance(molecules, list) or not molecules:
        raise BadRequest("molecules must be a non-empty list")
    if len(molecules) > MAX_MOLECULES:
        raise BadRequest(f"at most {MAX_MOLECULES} molecules per job")
    clean = []
    for i, item in enumerate(molecules):
        if not isinstance(item, dict):
            raise BadRequest(f"molecules[{i}] must be an object with id and smiles")
        mol_id, smiles = item.get("id"), item.get("smiles")
        if not isinstance(mol_id, str) or not mol_id or len(mol_id) > MAX_ID_LENGTH:
            raise BadRequest(f"molecules[{i}].id must be a non-empty string of at most {MAX_ID_LENGTH} chars")
        if not isinstance(smiles, str) or not smiles or len(smiles) > chem.MAX_SMILES_LENGTH:
            raise BadRequest(f"molecules[{i}].smiles must be a non-empty string of at most "
                             f"{chem.MAX_SMILES_LENGTH} chars")
        clean.append({"id": mol_id, "smiles": smiles})
    properties = body.get("properties")
    if (not isinstance(properties, list) or not properties or len(properties) > MAX_PROPERTIES
            or not all(isinstance(p, str) and p for p in properties)):
        raise BadRequest(f"properties must be a list of 1..{MAX_PROPERTIES} property names")
    model = body.get("model")
    if model is not None and model not in models:
        raise BadRequest(f"unknown model {model!r}; loaded: {sorted(models)}")
    return clean, properties, model


def route_of(path: str) -> str:
    """The route template of a path (span names must not carry ids)."""
    match = _JOB_PATH.match(path)
    if match:
        return "/v1/jobs/{job_id}/results" if match.group(2) else "/v1/jobs/{job_id}"
    return path if path in ("/v1/jobs", "/v1/models") else "unknown"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: EngineServer
    _span: Any = None  # the request's server span (None when tracing is off)

    def log_message(self, format: str, *args: Any) -> None:  # route access logs through logging
        log.debug("%s " + format, self.address_string(), *args)

    def _send(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        telemetry.set_status(self._span, status)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str) -> None:
        self._send(status, {"error": message})

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise BadRequest(f"body larger than {MAX_BODY} bytes")
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise BadRequest(f"body is not valid JSON: {exc}") from None

    def _dispatch(self, method: str) -> None:
        path = self.path.split("?", 1)[0]
        if path in _UNTRACED:
            self._span = None
            return self._handle(method, path)
        with telemetry.server_span(method, route_of(path), path, dict(self.headers.items())) as span:
            self._span = span
            self._handle(method, path)

    def _handle(self, method: str, path: str) -> None:
        try:
            body = self._body() if method in ("POST", "DELETE") else None
        except BadRequest as exc:
            self.close_connection = True  # an unread oversized body would poison the connection
            return self._error(400, str(exc))
        faults = self.server.faults
        if faults is not None and path != "/v1/_faults":
            hang, fail = faults.for_request(path)
            if hang:
                time.sleep(hang)
            if fail is not None:
                return self._error(fail, "injected fault")
        try:
            self._route(method, path, body)
        except BadRequest as exc:
            self._error(400, str(exc))
        except Exception:
            log.exception("%s %s failed", method, path)
            self._error(500, "internal error")

    def _route(self, method: str, path: str, body: Any) -> None:
        jobs = self.server.jobs
        if path == "/healthz" and method == "GET":
            return self._send(200, {"status": "ok", "models": sorted(jobs.models)})
        if path == "/v1/models" and method == "GET":
            return self._send(200, {"models": [describe(m) for m in jobs.models.values()],
                                    "unavailable": self.server.unavailable})
        if path == "/v1/jobs" and method == "POST":
            molecules, properties, model = parse_job_request(body, set(jobs.models))
            job = jobs.submit(molecules, properties, model)
            return self._send(202, {"job_id": job.id, **job.status_view()})
        match = _JOB_PATH.match(path)
        if match and method == "GET":
            job = jobs.get(match.group(1))
            if job is None:
                return self._error(404, "job not found")
            if not match.group(2):
                return self._send(200, job.status_view())
            if job.status != "completed":
                return self._send(409, {"error": f"job is {job.status}", **job.status_view()})
            return self._send(200, job.results_view())
        if path == "/v1/_faults" and self.server.faults is not None:
            if method == "GET":
                return self._send(200, self.server.faults.view())
            if method == "DELETE":
                self.server.faults.clear()
                return self._send(200, self.server.faults.view())
            if method == "POST":
                if not isinstance(body, dict):
                    raise BadRequest("body must be a JSON object")
                try:
                    return self._send(200, self.server.faults.update(body))
                except ValueError as exc:
                    raise BadRequest(str(exc)) from None
        self._error(404 if method in ("GET", "POST", "DELETE") else 405, f"no route {method} {path}")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")


class EngineServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], jobs: Jobs, faults: Faults | None,
                 unavailable: list[dict[str, str]]) -> None:
        super().__init__(address, Handler)
        self.jobs = jobs
        self.faults = faults
        self.unavailable = unavailable
