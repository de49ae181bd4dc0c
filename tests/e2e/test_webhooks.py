"""Outbound webhooks through the real gateway over REST, delivered by the running notification worker to
a real local receiver that verifies every `Molbridge-Signature` with the shared domain `verify`:

- a CRO admin registers an endpoint (the secret answered once; roles, other organizations and bad URLs
  refused), sends a test event, and a submission SUBMITTED to the CRO reaches it signed;
- an endpoint that fails for a while receives the event once after it recovers; the delivery log shows
  the attempts; a redelivery sends the same event again; a rotated secret signs alongside the old one.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e import test_identity_gateway
from tests.e2e.cro_rest import Parties, eventually, new_service, signed_by, upload
from tests.e2e.molecule_rest import assert_error, created, data, field_violations
from tests.e2e.test_cli import cli_runner
from tests.e2e.test_identity_gateway import new_org
from tests.webhook_receiver import WebhookReceiver

api = test_identity_gateway.api
admin = test_identity_gateway.admin

EXIT_VALIDATION = 6
WAIT_S = 60.0  # retries back off from 10 s (with jitter): the waits end as soon as the event is there


@pytest.fixture(scope="module")
def parties(api: httpx.Client, admin: dict) -> Parties:
    return Parties(api, admin)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as started:
        yield started


def whole(response: httpx.Response, status: int = 201) -> dict:
    """The whole answer (`data` and, for a create or rotation, the `secret` beside it)."""
    assert response.status_code == status, (response.request.method, response.request.url, response.text)
    return dict(response.json())


def register(api: httpx.Client, headers: dict[str, str], receiver: WebhookReceiver, **fields: object) -> dict:
    answer = whole(api.post("/webhooks", json={"url": receiver.url, "request_id": uuid.uuid4().hex, **fields},
                              headers=headers))
    receiver.secrets = [answer["secret"]]
    return dict(answer["data"])


def deliveries(api: httpx.Client, headers: dict[str, str], webhook_id: str) -> list[dict]:
    return list(data(api.get(f"/webhooks/{webhook_id}/deliveries", headers=headers)))


def submit(api: httpx.Client, parties: Parties) -> str:
    """A submission of the pharma organization to the CRO, taken to SUBMITTED."""
    scientist = parties.scientist_headers
    service = new_service(api, parties.cro, name="Panel for webhooks")
    outcomes = created(api.post("/molecules/batch", json={"molecules": [{"smiles": "CCO"}]},
                                headers=parties.pharma.headers))
    draft = created(api.post("/submissions", json={
        "name": "Webhook panel", "cro_service_id": service["id"], "budget": "1000",
        "molecules": [{"molecule_id": outcomes[0]["molecule_id"], "concentration": "10 mM"}],
        "specifications": {"temperature": 25}, "request_id": uuid.uuid4().hex,
    }, headers=scientist))
    for document_type in ("NON_DISCLOSURE_AGREEMENT", "MATERIAL_TRANSFER_AGREEMENT"):
        signed_by(api, scientist, upload(api, scientist, draft["id"], document_type), parties.pharma)
    upload(api, scientist, draft["id"], "EXPERIMENT_SPECIFICATION")
    submitted = data(api.post(f"/submissions/{draft['id']}/actions", json={"action": "SUBMIT"}, headers=scientist))
    assert submitted["status"] == "SUBMITTED"
    return str(draft["id"])


def test_an_endpoint_receives_a_test_event_and_a_submission_signed(  # type: ignore[no-untyped-def]
    mesh, api: httpx.Client, parties: Parties, receiver: WebhookReceiver
) -> None:
    cro = parties.cro
    mails_before = len(mesh.mailbox)
    answer = whole(api.post("/webhooks", json={"url": receiver.url, "event_types": ["SUBMISSION_SUBMITTED"],
                                               "description": "LIMS", "request_id": "lims-once"},
                            headers=cro.headers))
    secret, webhook = answer["secret"], answer["data"]
    receiver.secrets = [secret]
    assert secret.startswith("whsec_") and webhook["secret_hint"] == secret[-4:]
    assert webhook["event_types"] == ["SUBMISSION_SUBMITTED"] and webhook["active"] is True
    retried = api.post("/webhooks", json={"url": receiver.url, "request_id": "lims-once"}, headers=cro.headers)
    assert retried.status_code in (200, 201), retried.text
    again = retried.json()
    assert again["data"]["id"] == webhook["id"] and not again.get("secret")  # the secret is shown once

    assert_error(api.post("/webhooks", json={"url": receiver.url}, headers=parties.technician_headers), 403,
                 "AUTHORIZATION_ERROR")
    assert_error(api.get(f"/webhooks/{webhook['id']}", headers=parties.outsider.headers), 404, "RESOURCE_NOT_FOUND")
    bad = assert_error(api.post("/webhooks", json={"url": "https://user:pw@partner.example/hook"},
                                headers=cro.headers), 400, "VALIDATION_ERROR")
    assert "url" in field_violations(bad)
    assert [w["id"] for w in data(api.get("/webhooks", headers=cro.headers))] == [webhook["id"]]

    test = created(api.post(f"/webhooks/{webhook['id']}/test", json={}, headers=cro.headers))
    assert test["test"] is True and test["status"] == "PENDING"
    [first] = asyncio.run(receiver.wait_for(1, timeout=WAIT_S))
    assert first.json()["type"] == "webhook.test" and first.json()["id"] == test["event_id"]

    submission_id = submit(api, parties)
    [_, event] = asyncio.run(receiver.wait_for(2, timeout=WAIT_S))
    body = event.json()
    assert body["type"] == "submission.submitted" and body["data"]["submission_id"] == submission_id
    assert event.headers["Molbridge-Signature"].startswith("t=") and event.verified

    log = eventually(lambda: [d for d in deliveries(api, cro.headers, webhook["id"]) if d["status"] == "DELIVERED"]
                     if len(deliveries(api, cro.headers, webhook["id"])) == 2 else None, "two delivered")
    assert {d["event_id"] for d in log} == {test["event_id"], body["id"]}
    assert all(d["attempts"] == 1 and d["last_status_code"] == 204 for d in log)
    assert len(receiver.received) == 2  # nothing else: the endpoint takes SUBMISSION_SUBMITTED only

    # The CRO's admin is emailed too (SUBMITTED is on by default), through the mesh's SMTP listener.
    mail = asyncio.run(mesh.wait_for_mail(cro.session["user"]["email"], after=mails_before, timeout=WAIT_S))
    assert str(mail["Subject"]).startswith("New submission:")
    text = mail.get_body(("plain",))
    assert text is not None and submission_id in text.get_content()


def test_a_failing_endpoint_gets_the_event_once_it_recovers_then_redelivery_and_rotation(
    api: httpx.Client, parties: Parties, receiver: WebhookReceiver
) -> None:
    headers = parties.outsider.headers  # an organization with no other activity: only these events
    webhook = register(api, headers, receiver, description="flaky partner")
    receiver.fail(2, status=503)
    test = created(api.post(f"/webhooks/{webhook['id']}/test", json={}, headers=headers))
    [received] = asyncio.run(receiver.wait_for(1, timeout=WAIT_S))
    assert received.json()["id"] == test["event_id"]
    assert [r.answered for r in receiver.received] == [503, 503, 204]
    [delivery] = eventually(
        lambda: [d for d in deliveries(api, headers, webhook["id"]) if d["status"] == "DELIVERED"], "delivered"
    )
    assert delivery["attempts"] == 3

    requeued = data(api.post(f"/webhooks/{webhook['id']}/deliveries/{delivery['id']}/redeliver", json={},
                             headers=headers))
    assert requeued["status"] == "PENDING" and requeued["attempts"] == 0
    [_, redelivered] = asyncio.run(receiver.wait_for(2, timeout=WAIT_S))
    assert redelivered.json()["id"] == test["event_id"]  # the same event: the receiver can drop it

    old_secret = receiver.secrets[0]
    rotated = whole(api.post(f"/webhooks/{webhook['id']}/rotate-secret", json={}, headers=headers), 200)
    assert rotated["secret"] != old_secret and rotated["data"]["secret_rotated_at"]
    created(api.post(f"/webhooks/{webhook['id']}/test", json={}, headers=headers))
    [*_, signed_twice] = asyncio.run(receiver.wait_for(3, timeout=WAIT_S))  # verified with the old secret
    assert signed_twice.headers["Molbridge-Signature"].count("v1=") == 2

    assert api.delete(f"/webhooks/{webhook['id']}", headers=headers).status_code == 200
    assert_error(api.get(f"/webhooks/{webhook['id']}/deliveries", headers=headers), 404, "RESOURCE_NOT_FOUND")


def test_the_cli_registers_tests_and_lists_a_webhook_and_shows_preferences(  # type: ignore[no-untyped-def]
    mesh, api: httpx.Client, admin: dict, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    org_id, _ = new_org(api, admin, "CRO")
    email = f"cli-admin-{uuid.uuid4().hex[:8]}@webhooks.test"
    data(api.post("/users", json={"email": email, "full_name": "CLI Admin", "password": mesh.admin_password,
                                  "roles": ["cro_admin"], "organization_id": org_id},
                  headers={"authorization": f"Bearer {admin['access_token']}"}), status=201)
    molbridge = cli_runner(mesh, tmp_path)
    molbridge("login", "--email", email)

    made = json.loads(molbridge("webhooks", "create", receiver.url, "--events", "submission-submitted",
                                "--description", "from the CLI", "--json").stdout)
    receiver.secrets = [made["secret"]]
    webhook_id = made["data"]["id"]
    assert "from the CLI" in molbridge("webhooks", "get", webhook_id).stdout
    assert webhook_id in molbridge("webhooks", "list").stdout

    queued = molbridge("webhooks", "test", webhook_id).stdout
    assert "queued" in queued
    asyncio.run(receiver.wait_for(1, timeout=WAIT_S))
    eventually(lambda: "delivered" in molbridge("webhooks", "deliveries", webhook_id).stdout, "delivered in the log")
    rotated = molbridge("webhooks", "rotate-secret", webhook_id).stdout
    assert "signing secret: whsec_" in rotated and "24 hours" in rotated

    assert molbridge("notifications", "unread").stdout.strip().isdigit()
    shown = molbridge("notifications", "preferences", "show").stdout
    assert "submission-submitted" in shown and "email digest: off" in shown
    changed = molbridge("notifications", "preferences", "set", "--digest", "daily", "--disable",
                        "message-posted:email").stdout
    assert "email digest: daily" in changed
    refused = molbridge("webhooks", "create", "https://user:pw@partner.example/x", ok=False)
    assert refused.returncode == EXIT_VALIDATION and "credentials" in refused.stderr
