"""The audit trail loses nothing and duplicates nothing when nats-server restarts mid-traffic."""

from __future__ import annotations

import threading
import time

import httpx

from tests.e2e.test_identity_gateway import PASSWORD, bearer, login, new_org

LOGINS = 40


def test_audit_events_survive_a_nats_restart(mesh) -> None:  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=mesh.gateway_url + "/api/v1", timeout=30) as api:
        admin = login(api, mesh.admin_email, mesh.admin_password)
        _, org_admin = new_org(api, admin)
        user_id, email = org_admin["user"]["id"], org_admin["user"]["email"]

        done = threading.Event()

        def traffic() -> None:
            with httpx.Client(base_url=mesh.gateway_url + "/api/v1", timeout=30) as client:
                for _ in range(LOGINS):
                    login(client, email, PASSWORD)
                    time.sleep(0.02)
            done.set()

        worker = threading.Thread(target=traffic)
        worker.start()
        time.sleep(0.2)  # some logins before the outage, some during, some after
        mesh.restart("nats")
        worker.join(timeout=120)
        assert done.is_set(), "logins kept working while NATS restarted (the outbox decouples them)"

        def stored() -> int:
            page = api.get(
                "/audit-events",
                params={"action": "auth.login_succeeded", "target_id": user_id, "page_size": 100},
                headers=bearer(admin),
            )
            assert page.status_code == 200, page.text
            return int(page.json()["meta"]["total"])

        deadline = time.monotonic() + 60
        while stored() < LOGINS + 1 and time.monotonic() < deadline:  # +1: new_org's own login
            time.sleep(0.2)
        assert stored() == LOGINS + 1
        time.sleep(1.5)  # a late duplicate would show up here
        assert stored() == LOGINS + 1
