"""The real engine as a child process for tests (engine contract here; prediction service fault tests).

    engine = EngineProcess(models="baseline,admet", faults=True)
    engine.start(); engine.url; engine.request("GET", "/v1/models"); engine.kill(); engine.start()  # same port
    engine.stop()

Runs `.venv-engine/bin/python -m engine` (its own venv, built by `make engine`); fails loudly if missing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from stack.ports import free_port, port_accepts

REPO = Path(__file__).resolve().parents[2]
ENGINE_PYTHON = REPO / ".venv-engine" / "bin" / "python"
ARTIFACTS = REPO / "build" / "engine"
START_LIMIT_S = 300.0  # loading torch + the admet-ai ensembles on 2 cores


class EngineMissing(RuntimeError):
    pass


class EngineProcess:
    def __init__(self, models: str = "baseline,admet", faults: bool = True, port: int | None = None,
                 workers: int = 1) -> None:
        self.models = models
        self.faults = faults
        self.port = port or free_port()
        self.workers = workers
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = Path(tempfile.mkstemp(prefix="engine-", suffix=".log")[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        if not ENGINE_PYTHON.exists():
            raise EngineMissing(f"{ENGINE_PYTHON} is missing: build the engine venv first (`make engine`)")
        if not (ARTIFACTS / "baseline.joblib").exists():
            raise EngineMissing(f"{ARTIFACTS}/baseline.joblib is missing: train it first (`make engine`)")
        cmd = [str(ENGINE_PYTHON), "-m", "engine", "--port", str(self.port), "--models", self.models,
               "--workers", str(self.workers), "--artifacts", str(ARTIFACTS)]
        if self.faults:
            cmd.append("--faults")
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        deadline = time.monotonic() + START_LIMIT_S
        while not port_accepts("127.0.0.1", self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"engine exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"engine did not listen within {START_LIMIT_S} s:\n{self.log_tail()}")
            time.sleep(0.2)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL: the engine dies mid-whatever, like a crashed external service."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def request(self, method: str, path: str, body: Any = None, raw: bytes | None = None,
                timeout: float = 60.0) -> tuple[int, Any]:
        """(HTTP status, decoded JSON body) — error statuses are returned, not raised."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def wait_job(self, job_id: str, limit_s: float = 300.0) -> dict[str, Any]:
        """Poll until the job is completed or failed (the limit only bounds a hung test)."""
        deadline = time.monotonic() + limit_s
        while True:
            status, body = self.request("GET", f"/v1/jobs/{job_id}")
            assert status == 200, body
            if body["status"] in ("completed", "failed"):
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {body['status']} after {limit_s} s")
            time.sleep(0.1)
