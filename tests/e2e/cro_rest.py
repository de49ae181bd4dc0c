"""What the CRO REST end-to-end tests share: the two organizations of a submission and a third one, a CRO
service, documents uploaded and signed, actions taken, waiting for the package worker's step, the shortest
way to IN_PROGRESS, predictions, and a CRO's results file.

Plain helpers over an `httpx.Client` whose base URL is the gateway's `/api/v1` (the `api` fixture of
test_identity_gateway), like molecule_rest.py.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Sequence
from datetime import date, timedelta

import httpx

from tests.e2e.molecule_rest import Org, created, data
from tests.e2e.test_identity_gateway import PASSWORD, new_org
from tests.pdfs import blank_pdf
from tests.waiting import eventually

SCHEMA = {
    "type": "object",
    "properties": {"temperature": {"type": "number"}, "buffer": {"type": "string"}},
    "required": ["temperature"],
}


class Parties:
    """A pharma organization (its admin, a scientist), a CRO organization (its admin, a technician) and a
    third pharma organization."""

    def __init__(self, api: httpx.Client, admin: dict) -> None:
        self.pharma = Org.create(api, admin)
        self.scientist = self.pharma.add_user(api, "pharma_scientist")
        cro_id, cro_session = new_org(api, admin, "CRO")
        self.cro = Org(cro_id, cro_session)
        self.technician = self.cro.add_user(api, "cro_technician")
        self.outsider = Org.create(api, admin)

    @property
    def scientist_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.scientist['access_token']}"}

    @property
    def technician_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.technician['access_token']}"}


def new_service(api: httpx.Client, cro: Org, **fields: object) -> dict:
    body = {"name": "Binding panel", "service_type": "BINDING_ASSAY", "base_price": "1250.00", "currency": "USD",
            "turnaround_days": 14, "specification_schema": SCHEMA, "request_id": uuid.uuid4().hex} | fields
    return dict(created(api.post("/cro-services", json=body, headers=cro.headers)))


def act(
    api: httpx.Client, headers: dict[str, str], submission_id: str, action: str, **fields: object
) -> httpx.Response:
    """POST /submissions/{id}/actions."""
    return api.post(f"/submissions/{submission_id}/actions", json={"action": action, **fields}, headers=headers)


def wait_for_status(api: httpx.Client, headers: dict[str, str], submission_id: str, status: str) -> dict:
    """GET /submissions/{id} until it is in `status` (e.g. the package worker's step to PENDING_REVIEW)."""

    def reached() -> dict | None:
        submission = data(api.get(f"/submissions/{submission_id}", headers=headers))
        return dict(submission) if submission["status"] == status else None

    return dict(eventually(reached, f"submission {submission_id} {status}"))


def upload_results(api: httpx.Client, headers: dict[str, str], submission_id: str, rows: list[list[str]]) -> dict:
    """A results CSV (`rows`, header first) uploaded and processed for the submission by the CRO; the
    version once the results worker has finished it (COMPLETED or FAILED)."""
    body = io.StringIO(newline="")
    csv.writer(body).writerows(rows)
    stored = created(api.post("/results/upload", files={"file": ("results.csv", body.getvalue().encode(), "text/csv")},
                              headers=headers))
    version = created(api.post(f"/results/upload/{stored['storage_key']}/process",
                               json={"submission_id": submission_id}, headers=headers))

    def finished() -> dict | None:
        found = data(api.get(f"/results/{version['id']}", headers=headers))
        return dict(found) if found["status"] in ("COMPLETED", "FAILED") else None

    return dict(eventually(finished, f"results {version['id']} processed"))


def sample_codes(api: httpx.Client, cro_headers: dict[str, str], submission_id: str) -> list[str]:
    """The submission's sample codes as the CRO sees them (its blinded view)."""
    return [m["sample_code"] for m in data(api.get(f"/submissions/{submission_id}", headers=cro_headers))["molecules"]]


def upload(api: httpx.Client, headers: dict[str, str], submission_id: str, document_type: str) -> str:
    """A (blank) PDF of the submission uploaded as `document_type`; its id."""
    uploaded = api.post(
        "/documents/upload",
        data={"document_type": document_type, "title": document_type.title(), "submission_id": submission_id},
        files={"file": (f"{document_type.lower()}.pdf", blank_pdf(), "application/pdf")},
        headers=headers,
    )
    return str(created(uploaded)["id"])


def sign(api: httpx.Client, requester: dict[str, str], document_id: str, signers: list[tuple[Org, dict]]) -> None:
    """Asks each signer in turn (a named user, or a role of an organization) and signs with the built-in signer."""
    created(api.post(f"/documents/{document_id}/signature", json={"signers": [s for _, s in signers]},
                     headers=requester))
    for org, _ in signers:
        signed = api.post(f"/documents/{document_id}/signature/sign",
                          json={"password": PASSWORD, "meaning": "approved"}, headers=org.headers)
        assert signed.status_code == 200, signed.text
    status = data(api.get(f"/documents/{document_id}/signature/status", headers=requester))
    assert status["status"] == "COMPLETED", status


def submit(api: httpx.Client, parties: Parties, name: str) -> str:
    """A pharma scientist's submission `name` of one molecule to the CRO, SUBMITTED (its NDA and MTA signed by
    the pharma admin, the experiment specification uploaded)."""
    scientist = parties.scientist_headers
    service = new_service(api, parties.cro, name=f"Panel for {name}")
    outcomes = created(api.post("/molecules/batch", json={"molecules": [{"smiles": "CCO"}]},
                                headers=parties.pharma.headers))
    draft = created(api.post("/submissions", json={
        "name": name, "cro_service_id": service["id"],
        "molecules": [{"molecule_id": o["molecule_id"], "concentration": "10 mM"} for o in outcomes],
        "specifications": {"temperature": 25}, "request_id": uuid.uuid4().hex,
    }, headers=scientist))
    submission_id = str(draft["id"])
    for document_type in ("NON_DISCLOSURE_AGREEMENT", "MATERIAL_TRANSFER_AGREEMENT"):
        signed_by(api, scientist, upload(api, scientist, submission_id, document_type), parties.pharma)
    upload(api, scientist, submission_id, "EXPERIMENT_SPECIFICATION")
    assert data(act(api, scientist, submission_id, "SUBMIT"))["status"] == "SUBMITTED"
    return submission_id


def signed_by(api: httpx.Client, headers: dict[str, str], document_id: str, signer: Org) -> None:
    """Signed by `signer`'s admin alone."""
    sign(api, headers, document_id, [(signer, {"user_id": signer.user_id, "routing_order": 1})])


def start_experiment(api: httpx.Client, p: Parties, submission_id: str) -> dict:
    """Takes a DRAFT submission of `p.pharma` to `p.cro` to IN_PROGRESS the shortest way the rules allow:
    the required documents (NDA and MTA signed by the pharma admin), SUBMIT, the package worker's step, a
    quote, the approval, the service agreement signed by both sides, START_EXPERIMENT. The submission as
    the pharma side then sees it."""
    scientist = p.scientist_headers
    for document_type in ("NON_DISCLOSURE_AGREEMENT", "MATERIAL_TRANSFER_AGREEMENT"):
        signed_by(api, scientist, upload(api, scientist, submission_id, document_type), p.pharma)
    upload(api, scientist, submission_id, "EXPERIMENT_SPECIFICATION")
    assert data(act(api, scientist, submission_id, "SUBMIT", request_id=uuid.uuid4().hex))["status"] == "SUBMITTED"
    wait_for_status(api, scientist, submission_id, "PENDING_REVIEW")
    valid_until = (date.today() + timedelta(days=30)).isoformat()
    quoted = act(api, p.cro.headers, submission_id, "PROVIDE_PRICING", price="4200.00", currency="USD",
                 turnaround_days=21, valid_until=valid_until)
    assert data(quoted)["status"] == "PRICING_PROVIDED"
    assert data(act(api, p.pharma.headers, submission_id, "APPROVE"))["status"] == "APPROVED"
    agreement = upload(api, scientist, submission_id, "SERVICE_AGREEMENT")
    sign(api, scientist, agreement, [
        (p.pharma, {"user_id": p.pharma.user_id, "routing_order": 1}),
        (p.cro, {"organization_id": p.cro.id, "role": "cro_admin", "routing_order": 2}),
    ])
    started = data(act(api, p.technician_headers, submission_id, "START_EXPERIMENT", request_id=uuid.uuid4().hex))
    assert started["status"] == "IN_PROGRESS", started
    return dict(data(api.get(f"/submissions/{submission_id}", headers=scientist)))


def predict(api: httpx.Client, headers: dict[str, str], molecule_ids: list[str], properties: list[str],
            model: str) -> list[dict]:
    """POST /predictions, waits for the job to complete; its values (GET /predictions/{job}/results, every page)."""
    queued = api.post("/predictions", json={"molecule_ids": molecule_ids, "properties": properties, "model": model},
                      headers=headers)
    job_id = str(created(queued)["job_id"])

    def completed() -> bool:
        status = api.get(f"/predictions/{job_id}/status", headers=headers)
        if status.status_code == 429:  # the ai_prediction rate limit: wait as a client would
            return False
        state = data(status)["status"]
        assert state != "failed", status.text
        return bool(state == "completed")

    eventually(completed, f"prediction job {job_id} completed")
    values: list[dict] = []
    page = 1
    while True:
        answer = api.get(f"/predictions/{job_id}/results", params={"page": page, "page_size": 100}, headers=headers)
        assert answer.status_code == 200, answer.text
        values.extend(answer.json()["data"])
        if len(values) >= answer.json()["meta"]["total"] or not answer.json()["data"]:
            return values
        page += 1


RESULTS_HEADER = ("Sample", "Property", "Value", "Units", "Qualifier", "Replicate", "Notes")


def results_csv(rows: Sequence[Sequence[object]]) -> bytes:
    """A CRO's results file in the long format (RESULTS_HEADER, then `rows`)."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(RESULTS_HEADER)
    writer.writerows(rows)
    return text.getvalue().encode()


def in_progress(api: httpx.Client, p: Parties, name: str = "Results REST") -> tuple[str, list[str]]:
    """A submission of two molecules asking for IC50, IN_PROGRESS: (id, sample codes as the CRO sees them)."""
    service = new_service(api, p.cro, name=f"Results panel {uuid.uuid4().hex[:6]}")
    molecules = created(api.post("/molecules/batch", json={"molecules": [{"smiles": "CCO"}, {"smiles": "CCN"}]},
                                 headers=p.scientist_headers))
    draft = created(api.post("/submissions", json={
        "name": name, "cro_service_id": service["id"],
        "molecules": [{"molecule_id": m["molecule_id"]} for m in molecules],
        "specifications": {"temperature": 37, "properties": ["ic50"]}, "request_id": uuid.uuid4().hex,
    }, headers=p.scientist_headers))
    started = start_experiment(api, p, draft["id"])
    return draft["id"], [m["sample_code"] for m in started["molecules"]]
