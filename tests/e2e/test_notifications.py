"""Notifications through the real gateway over REST, on a real submission journey: the CRO admin has a page
open on the live stream (server-sent events) when the pharma scientist submits, and sees the notification
arrive there and in the list; the technician, the pharma side and a third organization are not told.
When the CRO quotes, the submitter and the pharma admin are told, the CRO admin is not (their own
action). Only the recipient can mark a notification read (404 for anyone else); preferences round-trip.
"""

from __future__ import annotations

import functools
import uuid
from datetime import date, timedelta

import httpx
import pytest

from tests.e2e import test_identity_gateway
from tests.e2e.cro_rest import Parties, act, eventually, new_service, signed_by, upload, wait_for_status
from tests.e2e.molecule_rest import assert_error, created, data
from tests.e2e.test_cro_messages_rest import EVENT_WAIT_S, Watch
from tests.e2e.test_identity_gateway import bearer

api = test_identity_gateway.api
admin = test_identity_gateway.admin


class NotificationWatch(Watch):
    def next_notification(self) -> dict:
        """The next pushed notification, skipping heartbeats (`{}`)."""
        while True:
            event = self.events.get(timeout=EVENT_WAIT_S)
            if event.get("notification"):
                return dict(event["notification"])


@pytest.fixture
def parties(api: httpx.Client, admin: dict) -> Parties:
    return Parties(api, admin)


def notifications(api: httpx.Client, headers: dict[str, str], **params: str) -> dict:
    response = api.get("/notifications", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def told(api: httpx.Client, headers: dict[str, str], kind: str) -> list[dict]:
    return [n for n in notifications(api, headers)["data"] if n["type"] == kind]


def submit(api: httpx.Client, parties: Parties) -> str:
    """A pharma scientist's submission to the CRO, SUBMITTED (documents uploaded and signed first)."""
    pharma, scientist = parties.pharma, parties.scientist_headers
    service = new_service(api, parties.cro, name="Panel for notifications")
    outcomes = created(api.post("/molecules/batch", json={"molecules": [{"smiles": "CCO"}]}, headers=pharma.headers))
    draft = created(api.post("/submissions", json={
        "name": "Notified panel", "cro_service_id": service["id"],
        "molecules": [{"molecule_id": o["molecule_id"], "concentration": "10 mM"} for o in outcomes],
        "specifications": {"temperature": 25}, "request_id": uuid.uuid4().hex,
    }, headers=scientist))
    submission_id = str(draft["id"])
    nda = upload(api, scientist, submission_id, "NON_DISCLOSURE_AGREEMENT")
    mta = upload(api, scientist, submission_id, "MATERIAL_TRANSFER_AGREEMENT")
    upload(api, scientist, submission_id, "EXPERIMENT_SPECIFICATION")
    signed_by(api, scientist, nda, pharma)
    signed_by(api, scientist, mta, pharma)
    assert data(act(api, scientist, submission_id, "SUBMIT"))["status"] == "SUBMITTED"
    return submission_id


def test_a_submission_journey_tells_whoever_acts_next(api: httpx.Client, parties: Parties) -> None:
    cro_admin, technician = parties.cro.headers, parties.technician_headers
    scientist, pharma_admin, outsider = parties.scientist_headers, parties.pharma.headers, parties.outsider.headers
    watch = NotificationWatch(api, "/notifications/watch", cro_admin)
    try:
        assert watch.status_code == 200 and watch.content_type.startswith("text/event-stream")
        submission_id = submit(api, parties)

        pushed = watch.next_notification()
        assert (pushed["type"], pushed["subject_id"], pushed["submission_id"]) == (
            "SUBMISSION_SUBMITTED", submission_id, submission_id
        )
        assert pushed["title"] == 'New submission "Notified panel"' and pushed["link"].endswith(
            f"/submissions/{submission_id}"
        )
    finally:
        watch.close()
    listed = notifications(api, cro_admin, unread_only="true")
    assert [n["id"] for n in listed["data"]] == [pushed["id"]]
    assert listed["meta"]["total"] == 1 and listed["unread"] == 1
    assert api.get("/notifications/unread-count", headers=cro_admin).json()["unread"] == 1
    for headers in (technician, scientist, pharma_admin, outsider):
        assert told(api, headers, "SUBMISSION_SUBMITTED") == []

    # Only the recipient marks it read.
    for headers in (technician, outsider):
        assert_error(api.post(f"/notifications/{pushed['id']}/read", json={}, headers=headers), 404,
                     "RESOURCE_NOT_FOUND")
    marked = api.post(f"/notifications/{pushed['id']}/read", json={}, headers=cro_admin).json()
    assert marked["data"]["read"] is True and marked["unread"] == 0

    # The CRO quotes: the submitter and the pharma admin are told, not the CRO admin who quoted.
    wait_for_status(api, scientist, submission_id, "PENDING_REVIEW")
    valid_until = (date.today() + timedelta(days=30)).isoformat()
    quoted = act(api, cro_admin, submission_id, "PROVIDE_PRICING", price="4200.00", currency="USD",
                 turnaround_days=21, valid_until=valid_until)
    assert data(quoted)["status"] == "PRICING_PROVIDED"
    for headers in (scientist, pharma_admin):
        [quote] = eventually(functools.partial(told, api, headers, "SUBMISSION_QUOTED"), "the quote's notification")
        assert quote["subject_id"] == submission_id and "4200.00 USD" in quote["body"]
    assert told(api, cro_admin, "SUBMISSION_QUOTED") == []
    assert told(api, outsider, "SUBMISSION_QUOTED") == []
    read_all = api.post("/notifications/read-all", json={}, headers=scientist).json()
    assert read_all["marked"] >= 1 and notifications(api, scientist, unread_only="true")["data"] == []


def test_preferences_round_trip_through_the_gateway(api: httpx.Client, parties: Parties) -> None:
    headers = bearer(parties.scientist)
    defaults = data(api.get("/notifications/preferences", headers=headers))
    assert defaults["email_digest"] == "OFF"
    switch = {"type": "MESSAGE_POSTED", "channel": "EMAIL", "enabled": True}
    assert switch not in defaults["settings"]
    changed = data(api.put("/notifications/preferences", json={"settings": [switch], "email_digest": "HOURLY"},
                           headers=headers))
    assert switch in changed["settings"] and changed["email_digest"] == "HOURLY"
    refused = assert_error(
        api.put("/notifications/preferences", json={"settings": [{**switch, "channel": "WEBHOOK"}]}, headers=headers),
        400, "VALIDATION_ERROR",
    )
    assert "settings[0].channel" in str(refused)
