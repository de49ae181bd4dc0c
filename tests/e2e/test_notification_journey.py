"""Issue 13's end-to-end proof, on one submission journey through Envoy: DRAFT → SUBMITTED → PENDING_REVIEW →
quote → APPROVED → service agreement signed by both sides → IN_PROGRESS → a message → results uploaded →
reviewed → COMPLETED, with the documents' signature requests on the way.

- Webhooks: the pharma admin's endpoint answers 503 to its first requests, the CRO admin's is healthy; each
  receives every event of its organization exactly once (by payload id), signed (the receiver verifies),
  the failing one after it recovers, and its delivery log shows the retries.
- In-app: each person is told what they must act on (SUBMITTED → the CRO admin, a quote → the submitter
  and the pharma admin, a signature request → the signer, …), never of their own action; a third
  organization's user is told nothing. Unread count and mark-all-read once.
- Email: the mesh's SMTP listener gets one email per notification whose type is emailed by default, each
  with the notification's link into the app; the technician who switched SUBMISSION_APPROVED emails off
  gets none for it.
- Audit: the submission's history lists the journey's steps in order, its documents and the signatures
  with their meaning, and the chain verifies.
"""

from __future__ import annotations

import functools
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import date, timedelta
from email.message import EmailMessage

import httpx
import pytest

from services.notification.domain.vocabulary import EMAIL_BY_DEFAULT
from tests.e2e import test_identity_gateway
from tests.e2e.cro_rest import (
    Parties,
    act,
    eventually,
    sample_codes,
    sign,
    submit,
    upload,
    upload_results,
    wait_for_status,
)
from tests.e2e.molecule_rest import created, data
from tests.e2e.notification_rest import deliveries, notifications, register
from tests.e2e.test_identity_gateway import bearer
from tests.webhook_receiver import Receivers, WebhookReceiver

api = test_identity_gateway.api
admin = test_identity_gateway.admin

FAILURES = 2  # the pharma endpoint's first answers: 503 (each retried after 1–10 s, 10–20 s with jitter)
WAIT_S = 90.0  # the failing endpoint's retries back off from 10 s: every wait ends once its condition holds

# Who is told of what on this journey (types, with how many of each). The NDA and MTA are signed by the
# pharma admin (named), the service agreement by the pharma admin then the CRO's cro_admin role; the
# scientist requested all three; the technician starts the work and posts the message.
IN_APP = {
    "cro_admin": Counter({"SUBMISSION_SUBMITTED": 1, "SUBMISSION_APPROVED": 1, "SUBMISSION_STARTED": 1,
                          "RESULTS_REVIEWED": 1, "SIGNATURE_REQUESTED": 1, "SUBMISSION_COMPLETED": 1}),
    "technician": Counter({"SUBMISSION_APPROVED": 1, "RESULTS_REVIEWED": 1, "SUBMISSION_COMPLETED": 1}),
    "scientist": Counter({"SUBMISSION_QUOTED": 1, "RESULTS_UPLOADED": 1, "MESSAGE_POSTED": 1,
                          "SIGNATURE_COMPLETED": 3}),
    # The pharma admin signed the NDA and MTA last (told nothing: it acted) and the agreement first.
    "pharma_admin": Counter({"SUBMISSION_QUOTED": 1, "RESULTS_UPLOADED": 1, "MESSAGE_POSTED": 1,
                             "SIGNATURE_REQUESTED": 3, "SIGNATURE_COMPLETED": 1}),
    "outsider": Counter[str](),
}
SUBMISSION_EVENTS = Counter({"submission.submitted": 1, "submission.quoted": 1, "submission.approved": 1,
                             "submission.started": 1, "submission.results_uploaded": 1,
                             "submission.results_reviewed": 1, "message.posted": 1, "submission.completed": 1})
# Both parties' endpoints get the submission's events; the documents are the pharma organization's, and a
# signer's organization hears of its own request and of the agreement it co-signed being complete.
WEBHOOK_EVENTS = {
    "pharma": SUBMISSION_EVENTS + Counter({"signature.requested": 4, "signature.completed": 3}),
    "cro": SUBMISSION_EVENTS + Counter({"signature.requested": 1, "signature.completed": 1}),
}
OPTED_OUT = "SUBMISSION_APPROVED"  # the technician's email switch turned off
STEPS = ["submission.created", "submission.submitted", "submission.package_built", "submission.priced",
         "submission.approved", "submission.started", "submission.results_uploaded",
         "submission.results_reviewed", "submission.completed"]


@pytest.fixture
def receivers() -> Iterator[Receivers]:
    started = Receivers()
    yield started
    started.close()


def all_notifications(api: httpx.Client, headers: dict[str, str]) -> list[dict]:
    return list(notifications(api, headers, page_size="100")["data"])


def told_as_expected(api: httpx.Client, headers: dict[str, str], expected: Counter[str]) -> list[dict] | None:
    """The user's notifications once they are the expected types (each dispatch tells all its recipients
    in one transaction: once these are there, nothing more of these events comes)."""
    found = all_notifications(api, headers)
    return found if Counter(n["type"] for n in found) == expected else None


def all_delivered(api: httpx.Client, headers: dict[str, str], webhook_id: str, count: int) -> list[dict] | None:
    """The endpoint's delivery log once it holds `count` deliveries, all DELIVERED."""
    log = deliveries(api, headers, webhook_id)
    return log if len(log) == count and all(d["status"] == "DELIVERED" for d in log) else None


def received_types(receiver: WebhookReceiver) -> Counter[str]:
    return Counter(str(r.json()["type"]) for r in receiver.delivered)


def mails_of(mailbox: list[EmailMessage], to: str, notification: dict) -> list[EmailMessage]:
    """The emails of one notification: to its recipient, its title in the subject."""
    return [m for m in mailbox
            if to.lower() in str(m.get("To", "")).lower() and notification["title"] in str(m.get("Subject", ""))]


def test_a_submission_journey_tells_the_right_people_on_every_channel_and_is_audited(  # type: ignore[no-untyped-def]
    mesh, api: httpx.Client, admin: dict, receivers: Receivers
) -> None:
    p = Parties(api, admin)
    scientist, technician = p.scientist_headers, p.technician_headers
    people = {"cro_admin": p.cro.headers, "technician": technician, "scientist": scientist,
              "pharma_admin": p.pharma.headers, "outsider": p.outsider.headers}
    emails = {"cro_admin": p.cro.session["user"]["email"], "technician": p.technician["user"]["email"],
              "scientist": p.scientist["user"]["email"], "pharma_admin": p.pharma.session["user"]["email"],
              "outsider": p.outsider.session["user"]["email"]}

    # Before anything happens: both admins register an endpoint for every type; the pharma one fails at
    # first. The technician turns one email off.
    failing, healthy = receivers.new(), receivers.new()
    failing.fail(FAILURES, status=503)
    pharma_hook = register(api, p.pharma.headers, failing, description="pharma LIMS")
    cro_hook = register(api, p.cro.headers, healthy, description="CRO ELN")
    assert pharma_hook["event_types"] == [] and cro_hook["event_types"] == []  # every type
    switched = data(api.put("/notifications/preferences",
                            json={"settings": [{"type": OPTED_OUT, "channel": "EMAIL", "enabled": False}]},
                            headers=technician))
    assert {"type": OPTED_OUT, "channel": "EMAIL", "enabled": False} in switched["settings"]

    # DRAFT → SUBMITTED (NDA and MTA signed by the pharma admin) → PENDING_REVIEW → quoted → APPROVED.
    submission_id = submit(api, p, "Notified journey")
    wait_for_status(api, scientist, submission_id, "PENDING_REVIEW")
    valid_until = (date.today() + timedelta(days=30)).isoformat()
    assert data(act(api, p.cro.headers, submission_id, "PROVIDE_PRICING", price="4200.00", currency="USD",
                    turnaround_days=21, valid_until=valid_until))["status"] == "PRICING_PROVIDED"
    assert data(act(api, p.pharma.headers, submission_id, "APPROVE"))["status"] == "APPROVED"

    # The service agreement, signed by both sides; the CRO starts and asks a question.
    agreement = upload(api, scientist, submission_id, "SERVICE_AGREEMENT")
    sign(api, scientist, agreement, [
        (p.pharma, {"user_id": p.pharma.user_id, "routing_order": 1}),
        (p.cro, {"organization_id": p.cro.id, "role": "cro_admin", "routing_order": 2}),
    ])
    assert data(act(api, technician, submission_id, "START_EXPERIMENT"))["status"] == "IN_PROGRESS"
    created(api.post(f"/submissions/{submission_id}/messages",
                     json={"text": "Which lot of DMSO did you use?", "request_id": uuid.uuid4().hex},
                     headers=technician))

    # Results uploaded by the CRO, accepted by the scientist, who completes the submission.
    codes = sample_codes(api, technician, submission_id)
    version = upload_results(api, technician, submission_id,
                             [["sample_code", "property", "value", "units"], [codes[0], "ic50", "42", "nM"]])
    assert version["status"] == "COMPLETED", version
    wait_for_status(api, scientist, submission_id, "RESULTS_UPLOADED")
    data(api.put(f"/results/{version['id']}/status", json={"decision": "ACCEPTED"}, headers=scientist))
    wait_for_status(api, scientist, submission_id, "RESULTS_REVIEWED")
    assert data(act(api, scientist, submission_id, "COMPLETE"))["status"] == "COMPLETED"

    # In-app: the right people, each told once per event, never of their own action.
    told = {who: eventually(functools.partial(told_as_expected, api, headers, IN_APP[who]),
                            f"{who}'s notifications", timeout=WAIT_S)
            for who, headers in people.items() if IN_APP[who]}
    for who, found in told.items():
        for n in found:
            assert n["submission_id"] == submission_id and n["link"].startswith("http") and not n.get("read"), n
        assert len({n["event_id"] for n in found}) == len(found), who  # one notification per event
    documents = {d["document_type"]: d["id"] for d in data(api.get("/documents", params={
        "submission_id": submission_id}, headers=scientist))}
    assert len(documents) == 4 and documents["SERVICE_AGREEMENT"] == agreement

    def asked_to_sign(who: str) -> list[str]:
        """The documents `who` was asked to sign, by their notifications' links."""
        return sorted(n["link"].rsplit("/documents/", 1)[1] for n in told[who] if n["type"] == "SIGNATURE_REQUESTED")

    assert asked_to_sign("pharma_admin") == sorted(documents[kind] for kind in (
        "NON_DISCLOSURE_AGREEMENT", "MATERIAL_TRANSFER_AGREEMENT", "SERVICE_AGREEMENT"))
    assert asked_to_sign("cro_admin") == [agreement]
    [quote] = [n for n in told["scientist"] if n["type"] == "SUBMISSION_QUOTED"]
    assert "4200.00 USD" in quote["body"]
    assert all_notifications(api, p.outsider.headers) == []  # every event is told by now (see above)
    assert api.get("/notifications/unread-count", headers=scientist).json()["unread"] == 6
    assert api.post("/notifications/read-all", json={}, headers=scientist).json()["marked"] == 6
    assert notifications(api, scientist, unread_only="true")["data"] == []
    assert api.get("/notifications/unread-count", headers=scientist).json()["unread"] == 0

    # Email: one per notification whose type is emailed by default, to its recipient, with its link.
    emailed = {who: [n for n in found if n["type"] in EMAIL_BY_DEFAULT] for who, found in told.items()}
    for who, found in emailed.items():
        for n in found:
            if who == "technician" and n["type"] == OPTED_OUT:
                continue
            [mail] = eventually(functools.partial(mails_of, mesh.mailbox, emails[who], n), f"{who}'s {n['type']} email",
                                timeout=WAIT_S)
            text = mail.get_body(("plain",))
            assert text is not None and n["link"] in text.get_content(), (who, n["type"])
    assert {n["type"] for n in emailed["pharma_admin"]} == {"SUBMISSION_QUOTED", "RESULTS_UPLOADED",
                                                            "SIGNATURE_REQUESTED"}
    # The technician's APPROVED notification was made (in-app) in the same transaction that would have
    # queued its email; their later RESULTS_REVIEWED email has arrived: the opted-out one was never queued.
    [approved] = [n for n in told["technician"] if n["type"] == OPTED_OUT]
    assert mails_of(mesh.mailbox, emails["technician"], approved) == []
    assert not [m for m in mesh.mailbox if emails["outsider"].lower() in str(m["To"]).lower()]

    # Webhooks: every event of its organization once, signed; the failing endpoint after it recovered.
    for name, receiver, hook, headers in (("pharma", failing, pharma_hook, p.pharma.headers),
                                          ("cro", healthy, cro_hook, p.cro.headers)):
        expected = WEBHOOK_EVENTS[name]
        log = eventually(functools.partial(all_delivered, api, headers, hook["id"], sum(expected.values())),
                         f"the {name} endpoint's deliveries", timeout=WAIT_S)
        # Every delivery DELIVERED: the worker sends none of them again.
        assert received_types(receiver) == expected, (name, received_types(receiver))
        ids = receiver.delivered_ids()
        assert len(ids) == len(set(ids)) == len(log) and set(ids) == {d["event_id"] for d in log}, name
        assert all(r.verified for r in receiver.received), [r.refusal for r in receiver.received]
        for r in receiver.delivered:
            body = r.json()
            assert body["data"]["submission_id"] == submission_id and body["data"]["link"].startswith("http"), body
        if receiver is failing:
            assert [r.answered for r in receiver.received[:FAILURES]] == [503] * FAILURES
            assert sum(d["attempts"] for d in log) == len(log) + FAILURES
            assert any(d["attempts"] > 1 and d["last_status_code"] == 204 for d in log), log
        else:
            assert all(d["attempts"] == 1 for d in log), log

    # Audit: the submission's history, in order, with its documents and signatures; the chain verifies.
    def history() -> list[dict] | None:
        entries = list(data(api.get(f"/audit-events/history/submission/{submission_id}",
                                    params={"page_size": 100}, headers=bearer(admin))))
        return entries if "submission.completed" in {e["action"] for e in entries} else None

    entries = eventually(history, "the submission's history", timeout=WAIT_S)
    actions = [e["action"] for e in entries]
    steps = [a for a in actions if a in STEPS]
    assert steps == STEPS, actions
    assert {e["target_id"] for e in entries if e["action"] == "document.created"} == set(documents.values())
    signed = [e for e in entries if e["action"] == "signature.signed"]
    assert len(signed) == 4 and {e["details"]["meaning"] for e in signed} == {"approved"}, signed
    assert [e["details"]["signer_organization_id"] for e in signed if e["target_id"] == agreement] == [
        p.pharma.id, p.cro.id
    ]
    sequences = [int(e["sequence"]) for e in entries]
    assert sequences == sorted(sequences)
    verified = data(api.get("/audit-events/verify", headers=bearer(admin)))
    assert verified["ok"] is True and "first_break" not in verified, verified
    assert int(verified["entries_checked"]) >= max(sequences)
