"""The e2e harness itself: the mesh fixture's gateway, restarts and extra gateways."""

from __future__ import annotations

import httpx
import psycopg

from tests.conftest import Mesh


def test_mesh_serves_health_through_the_gateway(mesh: Mesh) -> None:
    response = httpx.get(f"{mesh.gateway_url}/api/v1/health")
    assert response.status_code == 200
    assert response.json()["data"]["services"] == {
        "cro": "SERVING",
        "document": "SERVING",
        "identity": "SERVING",
        "molecule": "SERVING",
        "notification": "SERVING",
        "prediction": "SERVING",
    }
    assert mesh.grpc_target == mesh.gateway_url.removeprefix("http://")
    with psycopg.connect(mesh.env["DATABASE_URL"]) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert mesh.env["MOLBRIDGE_IDENTITY_ADDR"] == mesh.service_addr("identity")
    assert mesh.env["MOLBRIDGE_ADMIN_EMAIL"] == mesh.admin_email


def test_a_restarted_service_serves_again_on_its_address(mesh: Mesh) -> None:
    address = mesh.service_addr("identity")
    mesh.restart_service("identity")  # returns once the service says SERVING again
    assert mesh.service_addr("identity") == address
    assert httpx.get(f"{mesh.gateway_url}/api/v1/health").status_code == 200


def test_an_extra_gateway_applies_its_own_settings(mesh: Mesh) -> None:
    # Health allows 600/min with a burst of 60; scaled by 0.05 the bucket holds 3.
    strict = mesh.extra_gateway("strict", {"MOLBRIDGE_RATE_LIMIT_SCALE": "0.05"})
    statuses = [httpx.get(f"{strict}/api/v1/health").status_code for _ in range(5)]
    assert statuses[0] == 200 and statuses[-1] == 429
    assert httpx.get(f"{mesh.gateway_url}/api/v1/health").status_code == 200
