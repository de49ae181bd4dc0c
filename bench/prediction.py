"""Predictions end to end through the mesh against the AI engine called directly.

    python -m bench.prediction [--small 100] [--large 10000] [--admet] [--keep]

- A mesh of its own (bench/stack.py: rate limits out of reach) with the reference engine; an organization
  and a pharma scientist; molsets training SMILES registered over REST (POST /molecules/batch).
- Small: one prediction request for `--small` molecules, from POST /api/v1/predictions until its status
  reads completed (polled every 50 ms), against the engine's own time for the same molecules and
  properties in one job (POST /v1/jobs until GET /v1/jobs/{id} reads completed). Product target: < 5 s.
- Large: `--large` other molecules in one request: molecules/s end to end, against the engine's raw
  throughput for the same molecules and properties sent as the prediction worker sends them (batches of
  BATCH_SIZE, IN_FLIGHT at a time): the ratio is what the mesh keeps of the engine.
Properties: solubility and logp (the baseline model); --admet loads admet-ai too and asks for every
property it serves. A warm-up request (4 molecules) runs first on both paths. Nothing asserts on time.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.report import Figure
from bench.search import read_smiles
from bench.stack import ADMIN_EMAIL, ADMIN_PASSWORD, RATE_LIMIT_SCALE, isolated_stack, login, say
from services.prediction.domain.jobs import BATCH_SIZE
from services.prediction.worker import IN_FLIGHT
from stack.mesh import Stack, StackSettings

TARGET_SMALL_S = 5.0
BASELINE_PROPERTIES = ("solubility", "logp")
ADMET_PROPERTIES = ("solubility", "logp", "logd", "permeability", "clearance", "half_life", "bioavailability")
REGISTER_CHUNK = 1000  # BatchCreateMolecules' limit
WARMUP = 4
STALL_S = 600.0


@dataclass(frozen=True)
class Result:
    properties: tuple[str, ...]
    small: int
    small_mesh_s: float
    small_engine_s: float
    large: int
    large_mesh_s: float
    large_engine_s: float
    large_failed: int

    @property
    def small_ratio(self) -> float:
        return self.small_mesh_s / self.small_engine_s

    @property
    def large_mesh_rate(self) -> float:
        return self.large / self.large_mesh_s

    @property
    def large_engine_rate(self) -> float:
        return self.large / self.large_engine_s


@contextlib.contextmanager
def admet_stack(keep: bool) -> Iterator[Stack]:
    """isolated_stack() with admet-ai loaded in the engine too (the isolated settings load the baseline)."""
    data_dir = Path(tempfile.mkdtemp(prefix="molbridge-bench-"))
    env = {"MOLBRIDGE_ADMIN_EMAIL": ADMIN_EMAIL, "MOLBRIDGE_ADMIN_PASSWORD": ADMIN_PASSWORD,
           "MOLBRIDGE_RATE_LIMIT_SCALE": str(RATE_LIMIT_SCALE)}
    settings = dataclasses.replace(StackSettings.isolated(data_dir, extra_env=env), engine_models="baseline,admet")
    stack = Stack(settings, say=say)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
        if not keep:
            shutil.rmtree(data_dir, ignore_errors=True)


def scientist(stack: Stack) -> dict[str, str]:
    """Headers of a pharma scientist in a fresh organization (the roles that may request predictions)."""
    admin = {"authorization": f"Bearer {login(stack)}"}
    api = f"{stack.gateway_url}/api/v1"
    org = httpx.post(f"{api}/organizations", json={"name": f"Bench {uuid.uuid4().hex[:8]}",
                                                   "kind": "PHARMA"}, headers=admin, timeout=30)
    org.raise_for_status()
    org_id = org.json()["data"]["id"]
    email = f"scientist-{org_id[:8]}@bench.test"
    user = {"email": email, "full_name": "Bench Scientist", "password": ADMIN_PASSWORD,
            "roles": ["pharma_scientist"], "organization_id": org_id}
    httpx.post(f"{api}/users", json=user, headers=admin, timeout=30).raise_for_status()
    session = httpx.post(f"{api}/auth/login", json={"email": email, "password": ADMIN_PASSWORD}, timeout=30)
    session.raise_for_status()
    return {"authorization": f"Bearer {session.json()['data']['access_token']}"}


def register(http: httpx.Client, smiles: Sequence[str]) -> list[tuple[str, str]]:
    """(molecule id, SMILES) of every registered molecule, distinct ids, in order."""
    out: dict[str, str] = {}
    for start in range(0, len(smiles), REGISTER_CHUNK):
        chunk = smiles[start : start + REGISTER_CHUNK]
        response = http.post("/molecules/batch", json={"molecules": [{"smiles": s} for s in chunk]})
        response.raise_for_status()
        for outcome in response.json()["data"]:
            if outcome.get("molecule_id"):
                out.setdefault(outcome["molecule_id"], chunk[outcome.get("index", 0)])
    return list(out.items())


def wait(probe: Callable[[], dict[str, Any] | None], every: float, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + STALL_S
    while time.monotonic() < deadline:
        if (found := probe()) is not None:
            return found
        time.sleep(every)
    raise RuntimeError(f"timed out waiting for {what}")


def through_mesh(http: httpx.Client, ids: Sequence[str], properties: Sequence[str], every: float) -> tuple[float, int]:
    """Seconds from the request until the job reads completed, and its failed molecules."""
    began = time.perf_counter()
    queued = http.post("/predictions", json={"molecule_ids": list(ids), "properties": list(properties)})
    queued.raise_for_status()
    job_id = queued.json()["data"]["job_id"]

    def done() -> dict[str, Any] | None:
        response = http.get(f"/predictions/{job_id}/status")
        if response.status_code == 429:
            return None
        response.raise_for_status()
        data: dict[str, Any] = response.json()["data"]
        if data["status"] == "failed":
            raise RuntimeError(f"prediction job {job_id} failed: {data}")
        return data if data["status"] == "completed" else None

    status = wait(done, every, f"prediction job {job_id}")
    return time.perf_counter() - began, int(status.get("failed", 0))


def engine_job(engine: httpx.Client, molecules: Sequence[tuple[str, str]], properties: Sequence[str],
               every: float) -> None:
    """One engine job from submission to completed."""
    body = {"molecules": [{"id": i, "smiles": s} for i, s in molecules], "properties": list(properties)}
    response = engine.post("/v1/jobs", json=body)
    response.raise_for_status()
    job_id = response.json()["job_id"]

    def done() -> dict[str, Any] | None:
        status = engine.get(f"/v1/jobs/{job_id}")
        status.raise_for_status()
        data: dict[str, Any] = status.json()
        if data["status"] == "failed":
            raise RuntimeError(f"engine job {job_id} failed: {data}")
        return data if data["status"] == "completed" else None

    wait(done, every, f"engine job {job_id}")


def engine_direct(url: str, molecules: Sequence[tuple[str, str]], properties: Sequence[str],
                  in_flight: int, every: float) -> float:
    """Seconds for the engine to predict `molecules` in batches of BATCH_SIZE, `in_flight` jobs at a time."""
    batches = [molecules[start : start + BATCH_SIZE] for start in range(0, len(molecules), BATCH_SIZE)]
    with httpx.Client(base_url=url, timeout=60) as engine, ThreadPoolExecutor(in_flight) as pool:
        began = time.perf_counter()
        list(pool.map(lambda batch: engine_job(engine, batch, properties, every), batches))
        return time.perf_counter() - began


def run(small: int = 100, large: int = 10_000, *, admet: bool = False, keep: bool = False) -> Result:
    properties = ADMET_PROPERTIES if admet else BASELINE_PROPERTIES
    smiles = read_smiles("train.csv.gz", limit=int((WARMUP + small + large) * 1.02) + 50)
    with admet_stack(keep) if admet else isolated_stack(keep=keep) as stack:
        headers = scientist(stack)
        with httpx.Client(base_url=f"{stack.gateway_url}/api/v1", headers=headers, timeout=120) as http:
            say(f"registering {len(smiles):,} molsets molecules")
            molecules = register(http, smiles)
            if len(molecules) < WARMUP + small + large:
                raise RuntimeError(f"only {len(molecules)} molecules registered")
            warm, rest = molecules[:WARMUP], molecules[WARMUP:]
            first, second = rest[:small], rest[small : small + large]
            say("warm-up (both paths)")
            through_mesh(http, [i for i, _ in warm], properties, 0.05)
            engine_direct(stack.ai_engine_url, warm, properties, 1, 0.01)

            say(f"{small} molecules: through the mesh, then the engine directly")
            small_mesh_s, _ = through_mesh(http, [i for i, _ in first], properties, 0.05)
            small_engine_s = engine_direct(stack.ai_engine_url, first, properties, 1, 0.01)

            say(f"{large:,} molecules: through the mesh, then the engine directly ({IN_FLIGHT} jobs in flight)")
            large_mesh_s, failed = through_mesh(http, [i for i, _ in second], properties, 0.5)
            large_engine_s = engine_direct(stack.ai_engine_url, second, properties, IN_FLIGHT, 0.05)
    return Result(tuple(properties), small, small_mesh_s, small_engine_s, large, large_mesh_s, large_engine_s,
                  failed)


def report(result: Result) -> list[str]:
    props = ", ".join(result.properties)
    verdict = "met" if result.small_mesh_s < TARGET_SMALL_S else "missed"
    return [
        f"Predictions ({props}); rate limits scaled x{RATE_LIMIT_SCALE:,}",
        f"{result.small} molecules, request -> completed: mesh {result.small_mesh_s:.2f} s, engine alone "
        f"{result.small_engine_s:.2f} s, ratio {result.small_ratio:.2f} "
        f"(product target < {TARGET_SMALL_S:.0f} s end to end: {verdict})",
        f"{result.large:,} molecules: mesh {result.large_mesh_rate:.0f} molecules/s ({result.large_mesh_s:.1f} s, "
        f"{result.large_failed} failed), engine alone {result.large_engine_rate:.0f} molecules/s "
        f"({result.large_engine_s:.1f} s; batches of {BATCH_SIZE}, {IN_FLIGHT} in flight as the worker sends "
        f"them), ratio {result.large_mesh_rate / result.large_engine_rate:.2f}",
    ]


def summary(result: Result) -> list[Figure]:
    return [
        Figure(f"predict {result.small} molecules end to end", f"{result.small_mesh_s:.2f} s",
               f"< {TARGET_SMALL_S:.0f} s", result.small_mesh_s < TARGET_SMALL_S),
        Figure(f"predict {result.small}: mesh/engine time", f"{result.small_ratio:.2f}"),
        Figure(f"predict {result.large:,}: molecules/s (engine alone)",
               f"{result.large_mesh_rate:.0f} ({result.large_engine_rate:.0f})"),
        Figure(f"predict {result.large:,}: mesh/engine throughput",
               f"{result.large_mesh_rate / result.large_engine_rate:.2f}"),
    ]


def bench(args: argparse.Namespace) -> list[Figure]:
    """`python -m bench`'s entry (its BENCHES): the default sizes, baseline properties; prints the report."""
    result = run(keep=bool(getattr(args, "keep", False)))
    print("\n".join(report(result)), flush=True)
    if result.large_failed:
        raise RuntimeError(f"{result.large_failed} molecules failed to predict: the throughput figure is void")
    return summary(result)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.prediction", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--small", type=int, default=100, help="molecules of the latency request")
    parser.add_argument("--large", type=int, default=10_000, help="molecules of the throughput request")
    parser.add_argument("--admet", action="store_true", help="load admet-ai too and predict its properties")
    parser.add_argument("--keep", action="store_true", help="keep the mesh's data dir (logs, traces)")
    args = parser.parse_args(argv)
    result = run(args.small, args.large, admet=args.admet, keep=args.keep)
    print("\n".join(report(result)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
