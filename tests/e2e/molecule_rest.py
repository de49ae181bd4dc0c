"""What the molecule REST end-to-end tests share: real HTTP through Envoy, the way a browser calls it.

Plain helpers over an `httpx.Client` whose base URL is the gateway's `/api/v1` (the `api` fixture of
test_identity_gateway); each test module makes its own organizations with `Org.create`.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from tests.e2e.test_identity_gateway import PASSWORD, bearer, login, new_org

TERMINAL = ("completed", "failed", "cancelled")
JOB_WAIT_SECONDS = 60.0


@dataclass(frozen=True)
class Org:
    """An organization with its own admin (pharma_admin), logged in."""

    id: str
    session: dict

    @classmethod
    def create(cls, api: httpx.Client, admin: dict) -> Org:
        org_id, session = new_org(api, admin)
        return cls(org_id, session)

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.session)

    @property
    def user_id(self) -> str:
        return str(self.session["user"]["id"])

    def add_user(self, api: httpx.Client, role: str = "pharma_scientist") -> dict:
        """Another user of this organization, logged in."""
        email = f"{role}-{uuid.uuid4().hex[:8]}@e2e.test"
        created = api.post(
            "/users",
            json={"email": email, "full_name": "Colleague", "password": PASSWORD, "roles": [role]},
            headers=self.headers,
        )
        assert created.status_code == 201, created.text
        return login(api, email, PASSWORD)


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    """The DOMAIN.md error envelope with this status and code; returns the `error` object."""
    assert response.status_code == status, (response.request.method, response.request.url, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert error["code"] == code and error["message"], error
    return dict(error)


def field_violations(error: dict) -> dict[str, str]:
    """google.rpc.BadRequest's violations of an error envelope, field -> description."""
    return {
        v["field"]: v["description"]
        for detail in error.get("details", [])
        for v in detail.get("field_violations", detail.get("fieldViolations", []))
    }


def data(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, (response.request.method, response.request.url, response.text)
    return response.json()["data"]


def created(response: httpx.Response) -> Any:
    """The data of a POST that created a resource (DOMAIN.md: 201)."""
    return data(response, 201)


def upload_file(api: httpx.Client, headers: dict[str, str], content: bytes, filename: str = "molecules.csv") -> dict:
    """POST /molecules/upload/csv as multipart/form-data with field `file`, as a browser's form sends it."""
    response = api.post("/molecules/upload/csv", files={"file": (filename, content, "text/csv")}, headers=headers)
    return dict(created(response))


def start_import(
    api: httpx.Client, headers: dict[str, str], storage_key: str, mapping: dict[str, str], **options: Any
) -> dict:
    response = api.post(
        f"/molecules/upload/csv/{storage_key}/import", json={"mapping": mapping, **options}, headers=headers
    )
    return dict(created(response))


def wait_for_job(api: httpx.Client, headers: dict[str, str], job_id: str) -> dict:
    """GET /molecules/imports/{job_id} until the job has ended."""
    deadline = time.monotonic() + JOB_WAIT_SECONDS
    while True:
        job = data(api.get(f"/molecules/imports/{job_id}", headers=headers))
        if job["status"] in TERMINAL:
            return dict(job)
        assert time.monotonic() < deadline, f"import {job_id} still {job['status']} after {JOB_WAIT_SECONDS} s"
        time.sleep(0.1)


@dataclass(frozen=True)
class EventStream:
    status_code: int
    content_type: str
    events: list[dict]


def read_events(api: httpx.Client, path: str, headers: dict[str, str]) -> EventStream:
    """A server-sent event stream read as it arrives (as EventSource does), until the server ends it."""
    events: list[dict] = []
    with api.stream("GET", path, headers={**headers, "accept": "text/event-stream"}) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line.removeprefix("data: ")))
            else:
                assert line == "", f"not an SSE data line: {line!r}"
        return EventStream(response.status_code, response.headers.get("content-type", ""), events)
