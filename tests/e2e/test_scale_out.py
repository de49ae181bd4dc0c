"""Scale-out on the engines we already use: two instances of each service and worker behind Envoy
(health-checked endpoints, safe retries), a three-node NATS JetStream cluster with R3 streams.

- An instance taken down mid-traffic (SIGTERM: health NOT_SERVING, then drain) costs no request;
  one killed with SIGKILL costs at most 503s with a Retry-After, never a 500.
- A NATS node killed (SIGKILL) in the middle of an import loses nothing and duplicates nothing.

A stack of its own (identity, molecule and its worker, ×2): the session's mesh runs single instances.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator

import httpx
import pytest

from bus.connection import connect
from bus.streams import EVENTS_STREAM, WORK_STREAM
from stack.mesh import Stack
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.e2e.molecule_rest import Org, data, start_import, upload_file
from tests.e2e.own_stack import browsing, core_stack
from tests.e2e.test_identity_gateway import login
from tests.integration.molecule_imports import molsets_smiles
from tests.waiting import eventually

IMPORTED = 10_000


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with core_stack(tmp_path_factory.mktemp("scale"), replicas=2) as running:
        yield running


@pytest.fixture(scope="module")
def api(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.gateway_url + "/api/v1", timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def org(api: httpx.Client) -> Org:
    return Org.create(api, login(api, ADMIN_EMAIL, ADMIN_PASSWORD))


def requests_per_endpoint(stack: Stack, cluster: str) -> dict[str, int]:
    """Envoy's admin /clusters: requests each endpoint of the cluster has answered so far."""
    text = httpx.get(stack.admin_url + "/clusters").text
    pattern = re.compile(rf"^{cluster}::([\d.]+:\d+)::rq_total::(\d+)$", re.MULTILINE)
    return {host: int(total) for host, total in pattern.findall(text)}


def healthy_endpoints(stack: Stack, cluster: str) -> set[str]:
    text = httpx.get(stack.admin_url + "/clusters").text
    pattern = re.compile(rf"^{cluster}::([\d.]+:\d+)::health_flags::(\S+)$", re.MULTILINE)
    return {host for host, flags in pattern.findall(text) if flags == "healthy"}


def test_every_instance_serves_and_one_taken_down_costs_no_request(
    stack: Stack, api: httpx.Client, org: Org
) -> None:
    assert stack.instances("molecule") == ["molecule", "molecule-2"]
    def all_healthy() -> bool:
        return all(len(healthy_endpoints(stack, c)) == 2 for c in ("svc_identity", "svc_molecule"))

    eventually(all_healthy, "both endpoints of each service healthy")

    with browsing(stack.gateway_url + "/api/v1", org.headers, threads=2) as traffic:
        traffic.go_on(60)
        # Both instances of each service answer (round robin behind Envoy).
        for cluster in ("svc_identity", "svc_molecule"):
            counts = requests_per_endpoint(stack, cluster)
            assert len(counts) == 2 and min(counts.values()) > 0, (cluster, counts)

        # Taken down the way an orchestrator does it (SIGTERM), one after the other, and back.
        for name in ("molecule", "identity", "molecule-2", "identity-2"):
            process = stack.supervisor.get(name)
            process.stop()
            traffic.go_on()
            process.start()
            eventually(all_healthy, f"{name} back in rotation")
            traffic.go_on()
        assert traffic.other == [], traffic.other[:10]

        # A crash (SIGKILL) mid-traffic: requests in flight on it may fail, but only with a retry hint.
        stack.kill("molecule-2")
        traffic.go_on(60)
        stack.supervisor.get("molecule-2").start()
        traffic.go_on()

    assert traffic.only_unavailable(), (traffic.statuses, traffic.retry_afters, traffic.other[:10])
    assert traffic.served() >= 400, traffic.statuses


async def _stream_leader(nats_url: str, stream: str) -> str:
    nats = await connect(nats_url)
    try:
        info = await nats.jetstream().stream_info(stream)
        assert info.config.num_replicas == 3, info.config
        assert info.cluster is not None and info.cluster.leader
        return str(info.cluster.leader)
    finally:
        await nats.close()


def test_a_nats_node_killed_mid_import_loses_nothing(stack: Stack, api: httpx.Client, org: Org) -> None:
    assert len(stack.nats_nodes) == 3
    assert asyncio.run(_stream_leader(stack.nats_url, EVENTS_STREAM))
    leader = asyncio.run(_stream_leader(stack.nats_url, WORK_STREAM))
    smiles = molsets_smiles(IMPORTED)
    content = ("SMILES,Name\n" + "".join(f"{s},scale-{i}\n" for i, s in enumerate(smiles))).encode()
    upload = upload_file(api, org.headers, content)
    job = start_import(api, org.headers, upload["storage_key"], {"SMILES": "smiles", "Name": "name"})

    # The node leading the work queue goes down while the chunks are being worked on.
    eventually(lambda: data(api.get(f"/molecules/imports/{job['job_id']}", headers=org.headers))["status"]
             == "processing", "the import to start")
    stack.kill(leader)
    eventually(lambda: data(api.get(f"/molecules/imports/{job['job_id']}", headers=org.headers))["status"]
             in ("completed", "failed", "cancelled"), "the import to end")
    stack.supervisor.get(leader).start()

    done = data(api.get(f"/molecules/imports/{job['job_id']}", headers=org.headers))
    assert done["status"] == "completed", done
    assert done["registered"] == IMPORTED, done
    # Each molecule instance's query index follows the changes on the bus: both catch up.
    def total() -> int:
        return int(api.get("/molecules?page_size=1", headers=org.headers).json()["meta"]["total"])

    started = time.monotonic()
    eventually(lambda: all(total() == IMPORTED for _ in range(6)), "every instance to list the import")
    print(f"indexes caught up {time.monotonic() - started:.1f} s after the import ended")
    names = set()
    for page in range(1, IMPORTED // 100 + 1):
        listed = data(api.get(f"/molecules?page_size=100&page={page}&sort_by=name", headers=org.headers))
        names |= {m["name"] for m in listed}
    assert names == {f"scale-{i}" for i in range(IMPORTED)}
