"""PostgreSQL crashes (kill -9) under traffic and comes back: callers see 503 SERVICE_UNAVAILABLE with a
Retry-After, never a 500; once it is back, every request succeeds again without restarting a service,
and nothing stored was lost.

A stack of its own (identity, molecule and its worker, its own PostgreSQL and NATS): the session's mesh
shares its PostgreSQL with every other test.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from stack.mesh import SERVICES, Stack, StackSettings
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.e2e.molecule_rest import Org, assert_error, data, start_import, upload_file, wait_for_job
from tests.e2e.test_identity_gateway import login
from tests.integration.molecule_imports import molsets_smiles

RECOVERY_SECONDS = 60.0  # a bound for a hang, not a performance figure
MOLECULES = 300


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    settings = StackSettings.isolated(
        tmp_path_factory.mktemp("outage"),
        env=os.environ,
        extra_env={"MOLBRIDGE_ADMIN_EMAIL": ADMIN_EMAIL, "MOLBRIDGE_ADMIN_PASSWORD": ADMIN_PASSWORD,
                   "MOLBRIDGE_RATE_LIMIT_SCALE": "100"},
    )
    settings.ai_engine_url = "http://127.0.0.1:9"  # not used here: no engine started
    services = [s for s in SERVICES if s.name in ("identity", "molecule", "molecule-worker")]
    running = Stack(settings, services=services).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def api(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.gateway_url + "/api/v1", timeout=30) as client:
        yield client


def imported(api: httpx.Client, org: Org, smiles: list[str]) -> dict:
    content = ("SMILES,Name\n" + "".join(f"{s},m{i}\n" for i, s in enumerate(smiles))).encode()
    upload = upload_file(api, org.headers, content)
    job = start_import(api, org.headers, upload["storage_key"], {"SMILES": "smiles", "Name": "name"})
    return wait_for_job(api, org.headers, job["job_id"])


class Traffic:
    """Reads from a thread while the database goes away and comes back: every answer's status, and
    the 503s' Retry-After headers."""

    def __init__(self, base_url: str, headers: dict[str, str]) -> None:
        self.statuses: Counter[int] = Counter()
        self.retry_afters: set[str | None] = set()
        self.bad: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(base_url, headers), daemon=True)

    def _run(self, base_url: str, headers: dict[str, str]) -> None:
        with httpx.Client(base_url=base_url, timeout=30, headers=headers) as client:
            while not self._stop.is_set():
                for path in ("/molecules?page_size=5", "/users/me"):
                    response = client.get(path)
                    self.statuses[response.status_code] += 1
                    if response.status_code == 503:
                        self.retry_afters.add(response.headers.get("retry-after"))
                    elif response.status_code != 200:
                        self.bad.append(f"{path}: {response.status_code} {response.text[:300]}")
                time.sleep(0.02)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def wait_for(check, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + RECOVERY_SECONDS
    while not check():
        assert time.monotonic() < deadline, f"{what} not within {RECOVERY_SECONDS} s"
        time.sleep(0.2)


def test_a_database_crash_is_a_503_with_retry_after_and_recovers_without_loss(stack: Stack, api: httpx.Client) -> None:
    admin = login(api, ADMIN_EMAIL, ADMIN_PASSWORD)
    org = Org.create(api, admin)
    job = imported(api, org, molsets_smiles(MOLECULES))
    assert job["status"] == "completed", job
    before = data(api.get("/molecules?page_size=100&sort_by=registration_number", headers=org.headers))
    total_before = api.get("/molecules?page_size=1", headers=org.headers).json()["meta"]["total"]
    assert total_before == MOLECULES

    postgres = stack.supervisor.get("postgres")
    with Traffic(stack.gateway_url + "/api/v1", org.headers) as traffic:
        wait_for(lambda: traffic.statuses[200] >= 10, "traffic before the crash")
        stack.kill("postgres")
        wait_for(lambda: traffic.statuses[503] >= 5, "503s while the database is down")

        # While it is down: the documented envelope, the reason, and when to retry.
        down = api.get("/molecules", headers=org.headers)
        error = assert_error(down, 503, "SERVICE_UNAVAILABLE")
        assert down.headers["retry-after"] == "5"
        assert {d.get("metadata", {}).get("detail") for d in error["details"]} >= {"DATABASE_UNAVAILABLE"}
        assert_error(api.post("/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}),
                     503, "SERVICE_UNAVAILABLE")

        postgres.start()
        seen_after_restart = traffic.statuses[200]
        wait_for(lambda: traffic.statuses[200] >= seen_after_restart + 10, "success after the restart")

    assert traffic.bad == [], traffic.bad  # only 200 and 503, never a 500
    assert traffic.retry_afters == {"5"}, traffic.retry_afters
    assert traffic.statuses[503] >= 5 and traffic.statuses[200] >= 20, traffic.statuses

    # Nothing lost or changed; the services were never restarted, and writing works again.
    assert data(api.get("/molecules?page_size=100&sort_by=registration_number", headers=org.headers)) == before
    assert api.get("/molecules?page_size=1", headers=org.headers).json()["meta"]["total"] == MOLECULES
    more = imported(api, org, molsets_smiles(MOLECULES + 20)[MOLECULES:])
    assert more["status"] == "completed", more
    assert api.get("/molecules?page_size=1", headers=org.headers).json()["meta"]["total"] == MOLECULES + 20
    assert all(stack.supervisor.get(s).running for s in ("identity", "molecule", "molecule-worker"))
