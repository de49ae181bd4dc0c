"""What the notification end-to-end tests share: a user's notifications, and an outbound webhook registered
at a local receiver with its delivery log. Plain helpers over the gateway's `/api/v1` client (the `api`
fixture of test_identity_gateway), like cro_rest.py.
"""

from __future__ import annotations

import uuid

import httpx

from tests.e2e.molecule_rest import data
from tests.webhook_receiver import WebhookReceiver


def notifications(api: httpx.Client, headers: dict[str, str], **params: str) -> dict:
    """GET /notifications: the whole answer (`data`, `meta`, `unread`)."""
    response = api.get("/notifications", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def told(api: httpx.Client, headers: dict[str, str], kind: str) -> list[dict]:
    """The user's notifications of one type (first page)."""
    return [n for n in notifications(api, headers)["data"] if n["type"] == kind]


def whole(response: httpx.Response, status: int = 201) -> dict:
    """The whole answer (`data` and, for a create or rotation, the `secret` beside it)."""
    assert response.status_code == status, (response.request.method, response.request.url, response.text)
    return dict(response.json())


def register(api: httpx.Client, headers: dict[str, str], receiver: WebhookReceiver, **fields: object) -> dict:
    """An endpoint at `receiver` registered by an org admin; the receiver learns its secret."""
    answer = whole(api.post("/webhooks", json={"url": receiver.url, "request_id": uuid.uuid4().hex, **fields},
                              headers=headers))
    receiver.secrets = [answer["secret"]]
    return dict(answer["data"])


def deliveries(api: httpx.Client, headers: dict[str, str], webhook_id: str) -> list[dict]:
    """The endpoint's delivery log."""
    return list(data(api.get(f"/webhooks/{webhook_id}/deliveries", headers=headers)))
