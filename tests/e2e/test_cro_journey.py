"""Issue 11's whole journey through Envoy, two organizations and a third one looking in:

the pharma side imports molecules (a CSV upload over REST), generates the NDA, MTA and experiment
specification from the templates and signs them with the built-in signer, and submits; the package
worker builds the package and takes the submission to PENDING_REVIEW (the worker is restarted right
after SUBMIT: nothing is lost), the molecules become PENDING; the CRO reads the blinded package (no
SMILES) and the shared documents, and quotes; the pharma admin approves; the service agreement is
signed by both sides; the CRO starts (nats-server restarted meanwhile: nothing is lost) and the
molecules become TESTING, each status change audited exactly once; the pharma side reveals the
structures and the CRO sees SMILES; a third organization sees nothing on any route.
"""

from __future__ import annotations

import time
import uuid
from datetime import date, timedelta

import httpx

from tests.e2e import test_identity_gateway
from tests.e2e.cro_rest import Parties, eventually, new_service, sign
from tests.e2e.molecule_rest import assert_error, created, data, start_import, upload_file, wait_for_job
from tests.e2e.test_identity_gateway import bearer

api = test_identity_gateway.api
admin = test_identity_gateway.admin

CSV = b"SMILES,Name\nCCO,ethanol\nc1ccccc1O,phenol\nCC(=O)Nc1ccc(O)cc1,paracetamol\n"
SAMPLES = {
    "effective_date": "2026-06-01",
    "term_years": "3",
    "price": "4200.00",
    "currency": "USD",
    "turnaround_days": "21",
    "payment_terms_days": "30",
    "service_type": "BINDING_ASSAY",
}


def generate(api: httpx.Client, headers: dict[str, str], template: str, submission: dict) -> str:
    """A document of the submission generated from a template with its required fields filled in."""
    templates = {t["name"]: t for t in data(api.get("/document-templates", headers=headers))}
    fields = {
        f["name"]: SAMPLES.get(f["name"], f"{f['name']} value") for f in templates[template]["fields"] if f["required"]
    }
    fields |= {"submission_id": submission["id"], "submission_name": submission["name"]}
    response = api.post(
        "/documents/generate",
        json={"template": template, "fields": fields, "submission_id": submission["id"]},
        headers=headers,
    )
    return str(created(response)["id"])


def molecule_statuses(api: httpx.Client, headers: dict[str, str], ids: list[str]) -> list[str]:
    return [data(api.get(f"/molecules/{i}", headers=headers))["status"] for i in ids]


def audited(api: httpx.Client, admin: dict, action: str, target_id: str) -> list[dict]:
    page = api.get("/audit-events", params={"action": action, "target_id": target_id, "page_size": 100},
                   headers=bearer(admin))
    return list(data(page))


def test_a_submission_from_import_to_experiment_through_the_gateway(
    api: httpx.Client, admin: dict, mesh  # type: ignore[no-untyped-def]
) -> None:
    p = Parties(api, admin)
    pharma, cro, scientist, technician = p.pharma, p.cro, p.scientist_headers, p.technician_headers
    outsider = p.outsider.headers
    service = new_service(api, cro, name=f"Journey panel {uuid.uuid4().hex[:6]}")

    # The pharma side imports its molecules from a CSV file.
    stored = upload_file(api, scientist, CSV, "panel.csv")
    job = start_import(api, scientist, stored["storage_key"], {"SMILES": "smiles", "Name": "name"})
    assert wait_for_job(api, scientist, job["job_id"])["registered"] == 3
    listed = data(api.get("/molecules", params={"page_size": 10, "sort_by": "name"}, headers=scientist))
    ids = [m["id"] for m in listed]
    assert [m["name"] for m in listed] == ["ethanol", "paracetamol", "phenol"]
    assert set(molecule_statuses(api, scientist, ids)) == {"AVAILABLE"}

    submission = created(api.post("/submissions", json={
        "name": "Journey", "cro_service_id": service["id"], "budget": "5000",
        "molecules": [{"molecule_id": i, "concentration": "10 mM in DMSO"} for i in ids],
        "specifications": {"temperature": 37, "buffer": "PBS"}, "request_id": uuid.uuid4().hex,
    }, headers=scientist))
    submission_id = submission["id"]
    base = f"/submissions/{submission_id}"

    def act(headers: dict[str, str], action: str, **fields: object) -> httpx.Response:
        return api.post(f"{base}/actions", json={"action": action, **fields}, headers=headers)

    def status() -> str:
        return str(data(api.get(base, headers=scientist))["status"])

    # The documents, generated from the templates; the NDA and MTA signed by the pharma admin.
    me = [(pharma, {"user_id": pharma.user_id, "routing_order": 1})]
    documents = {template: generate(api, scientist, template, submission)
                 for template in ("nda", "mta", "experiment_specification")}
    for template in ("nda", "mta"):
        sign(api, scientist, documents[template], me)
    assert data(api.get(f"{base}/document-requirements", headers=scientist))["complete"] is True

    # SUBMIT; the package worker restarted at once: the queued package is built all the same.
    assert data(act(scientist, "SUBMIT", request_id=uuid.uuid4().hex))["status"] == "SUBMITTED"
    mesh.restart_service("cro-worker")
    eventually(lambda: status() == "PENDING_REVIEW", "the package worker's step to PENDING_REVIEW")
    eventually(lambda: set(molecule_statuses(api, scientist, ids)) == {"PENDING"}, "molecules PENDING")

    # The package: the whole record for the pharma side, blinded for the CRO.
    full = data(api.get(f"{base}/package", headers=scientist))
    assert full["sha256"] == data(api.get(base, headers=scientist))["package_sha256"]
    assert [m["molecule_id"] for m in full["manifest"]["molecules"]] == ids
    assert all(m["smiles"] and m["registration_number"] for m in full["manifest"]["molecules"])
    by_type = {d["document_type"]: d for d in full["manifest"]["documents"]}
    for template, kind in (("nda", "NON_DISCLOSURE_AGREEMENT"), ("mta", "MATERIAL_TRANSFER_AGREEMENT"),
                           ("experiment_specification", "EXPERIMENT_SPECIFICATION")):
        document = data(api.get(f"/documents/{documents[template]}", headers=scientist))
        packaged = by_type[kind]
        assert packaged["document_id"] == document["id"] and packaged["sha256"] == document["current"]["sha256"]
    blinded = data(api.get(f"{base}/package", headers=technician))
    assert blinded["sha256"] == full["sha256"]
    for molecule in blinded["manifest"]["molecules"]:
        assert not {"smiles", "molecule_id", "registration_number", "inchi_key"} & set(molecule), molecule
        assert molecule["sample_code"].startswith("S-") and molecule["formula"]
    seen = data(api.get(base, headers=technician))
    assert not any(m.get("smiles") for m in seen["molecules"])
    shared = data(api.get("/documents", params={"submission_id": submission_id}, headers=technician))
    assert {d["id"] for d in shared} == set(documents.values())

    # The CRO quotes, the pharma admin approves.
    assert_error(act(scientist, "PROVIDE_PRICING", price="4200.00"), 403, "AUTHORIZATION_ERROR")
    valid_until = (date.today() + timedelta(days=30)).isoformat()
    quoted = data(act(cro.headers, "PROVIDE_PRICING", price="4200.00", currency="USD", turnaround_days=21,
                      valid_until=valid_until, note="3 compounds in triplicate"))
    assert quoted["status"] == "PRICING_PROVIDED" and quoted["price"] == "4200.00"
    assert_error(act(scientist, "APPROVE"), 403, "AUTHORIZATION_ERROR")  # pharma_admin approves
    assert data(act(pharma.headers, "APPROVE"))["status"] == "APPROVED"

    # START_EXPERIMENT waits for the service agreement signed by both sides.
    assert_error(act(technician, "START_EXPERIMENT"), 409, "RESOURCE_CONFLICT")
    agreement = generate(api, scientist, "service_agreement", submission)
    both = [*me, (cro, {"organization_id": cro.id, "role": "cro_admin", "routing_order": 2})]
    sign(api, scientist, agreement, both)

    # The CRO starts while nats-server restarts: the molecules still become TESTING, once.
    started = data(act(technician, "START_EXPERIMENT", request_id=uuid.uuid4().hex))
    assert started["status"] == "IN_PROGRESS" and started["estimated_completion"]
    mesh.restart("nats")
    eventually(lambda: set(molecule_statuses(api, scientist, ids)) == {"TESTING"}, "molecules TESTING")
    def status_changes(molecule_id: str) -> list[str]:
        return sorted(c["details"]["to_status"] for c in audited(api, admin, "molecule.status_changed", molecule_id))

    eventually(lambda: all(status_changes(m) == ["PENDING", "TESTING"] for m in ids), "status changes audited")
    assert len(audited(api, admin, "submission.package_built", submission_id)) == 1
    time.sleep(1.5)  # a late duplicate would show up here
    assert all(status_changes(m) == ["PENDING", "TESTING"] for m in ids)

    # The pharma side reveals the structures: the CRO sees SMILES.
    assert_error(api.post(f"{base}/reveal-structures", json={"revealed": True}, headers=technician), 403,
                 "AUTHORIZATION_ERROR")
    revealed = data(api.post(f"{base}/reveal-structures", json={"revealed": True}, headers=scientist))
    assert revealed["structures_revealed"] is True
    seen = data(api.get(base, headers=technician))
    smiles = {m["smiles"] for m in data(api.get(base, headers=scientist))["molecules"]}
    assert {m["smiles"] for m in seen["molecules"]} == smiles and all(smiles)
    assert not any(m.get("molecule_id") or m.get("registration_number") for m in seen["molecules"])
    package = data(api.get(f"{base}/package", headers=technician))
    assert {m["smiles"] for m in package["manifest"]["molecules"]} == smiles
    assert not any("molecule_id" in m or "registration_number" in m for m in package["manifest"]["molecules"])

    # A third organization sees nothing of it.
    for path in ("", "/package", "/quotes", "/document-requirements"):
        assert_error(api.get(f"{base}{path}", headers=outsider), 404, "RESOURCE_NOT_FOUND")
    assert_error(act(outsider, "CANCEL"), 404, "RESOURCE_NOT_FOUND")
    assert submission_id not in [s["id"] for s in data(api.get("/submissions", headers=outsider))]
    for document_id in [*documents.values(), agreement]:
        assert_error(api.get(f"/documents/{document_id}", headers=outsider), 404, "RESOURCE_NOT_FOUND")
    assert_error(api.get(f"/molecules/{ids[0]}", headers=outsider), 404, "RESOURCE_NOT_FOUND")
