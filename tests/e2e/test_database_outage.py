"""PostgreSQL crashes (kill -9) under traffic and comes back: callers see 503 SERVICE_UNAVAILABLE with a
Retry-After, never a 500; once it is back, every request succeeds again without restarting a service,
and nothing stored was lost.

A stack of its own (identity, molecule and its worker, its own PostgreSQL and NATS): the session's mesh
shares its PostgreSQL with every other test.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from stack.mesh import Stack
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.e2e.molecule_rest import Org, assert_error, data, start_import, upload_file, wait_for_job
from tests.e2e.own_stack import browsing, core_stack
from tests.e2e.test_identity_gateway import login
from tests.integration.molecule_imports import molsets_smiles
from tests.waiting import eventually

MOLECULES = 300


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with core_stack(tmp_path_factory.mktemp("outage")) as running:
        yield running


@pytest.fixture(scope="module")
def api(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.gateway_url + "/api/v1", timeout=30) as client:
        yield client


def imported(api: httpx.Client, org: Org, smiles: list[str]) -> dict:
    content = ("SMILES,Name\n" + "".join(f"{s},m{i}\n" for i, s in enumerate(smiles))).encode()
    upload = upload_file(api, org.headers, content)
    job = start_import(api, org.headers, upload["storage_key"], {"SMILES": "smiles", "Name": "name"})
    return wait_for_job(api, org.headers, job["job_id"])


def test_a_database_crash_is_a_503_with_retry_after_and_recovers_without_loss(stack: Stack, api: httpx.Client) -> None:
    admin = login(api, ADMIN_EMAIL, ADMIN_PASSWORD)
    org = Org.create(api, admin)
    job = imported(api, org, molsets_smiles(MOLECULES))
    assert job["status"] == "completed", job
    before = data(api.get("/molecules?page_size=100&sort_by=registration_number", headers=org.headers))
    total_before = api.get("/molecules?page_size=1", headers=org.headers).json()["meta"]["total"]
    assert total_before == MOLECULES

    postgres = stack.supervisor.get("postgres")
    with browsing(stack.gateway_url + "/api/v1", org.headers) as traffic:
        eventually(lambda: traffic.served() >= 10, "traffic before the crash")
        stack.kill("postgres")
        eventually(lambda: traffic.statuses[503] >= 5, "503s while the database is down")

        # While it is down: the documented envelope, the reason, and when to retry.
        down = api.get("/molecules", headers=org.headers)
        error = assert_error(down, 503, "SERVICE_UNAVAILABLE")
        assert down.headers["retry-after"] == "5"
        assert {d.get("metadata", {}).get("detail") for d in error["details"]} >= {"DATABASE_UNAVAILABLE"}
        assert_error(api.post("/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}),
                     503, "SERVICE_UNAVAILABLE")

        postgres.start()
        traffic.go_on(10)

    assert traffic.only_unavailable(), (traffic.statuses, traffic.retry_afters, traffic.other[:10])
    assert traffic.retry_afters == {"5"}, traffic.retry_afters
    assert traffic.statuses[503] >= 5 and traffic.statuses[200] >= 20, traffic.statuses

    # Nothing lost or changed; the services were never restarted, and writing works again.
    assert data(api.get("/molecules?page_size=100&sort_by=registration_number", headers=org.headers)) == before
    assert api.get("/molecules?page_size=1", headers=org.headers).json()["meta"]["total"] == MOLECULES
    more = imported(api, org, molsets_smiles(MOLECULES + 20)[MOLECULES:])
    assert more["status"] == "completed", more
    # The list's index follows the bus (eventually consistent): it catches up with the new import.
    eventually(lambda: api.get("/molecules?page_size=1", headers=org.headers).json()["meta"]["total"]
               == MOLECULES + 20, "the list to show the import made after the outage")
    assert all(stack.supervisor.get(s).running for s in ("identity", "molecule", "molecule-worker"))
