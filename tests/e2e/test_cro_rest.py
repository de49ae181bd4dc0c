"""The CRO service through the real gateway over REST: the catalogue (201s, filters, schema errors), and
a pharma organization sending molecules to a CRO organization — SUBMIT refused until the documents are
signed (409 naming them), then the CRO sees the submission blinded, roles refused with the rule named,
and a third organization sees nothing (404 on every route).

The package worker then takes the submission to PENDING_REVIEW; pricing, approval and START_EXPERIMENT
are test_cro_journey.py's."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.e2e import test_identity_gateway
from tests.e2e.cro_rest import Parties, eventually, new_service, signed_by, upload
from tests.e2e.molecule_rest import assert_error, created, data, field_violations

api = test_identity_gateway.api
admin = test_identity_gateway.admin


@pytest.fixture(scope="module")
def parties(api: httpx.Client, admin: dict) -> Parties:
    return Parties(api, admin)


def test_the_catalogue_is_created_filtered_and_kept_when_used(api: httpx.Client, parties: Parties) -> None:
    cro = parties.cro
    service = new_service(api, cro)
    assert service["currency"] == "USD" and service["active"] and service["organization_id"] == cro.id
    assert service["organization_name"].startswith("Org ")
    cheap = new_service(api, cro, name="Solubility", service_type="SOLUBILITY", base_price="200", turnaround_days=3)
    assert_error(api.post("/cro-services", json={"name": "x"}, headers=parties.pharma.headers), 403,
                 "AUTHORIZATION_ERROR")
    bad = assert_error(
        api.post("/cro-services", json={"name": "Bad", "service_type": "ADME", "currency": "USD", "turnaround_days": 1,
                                        "specification_schema": {"type": "colour"}}, headers=cro.headers),
        400, "VALIDATION_ERROR",
    )
    assert "specification_schema" in field_violations(bad)

    listed = api.get("/cro-services", params={"organization_id": cro.id, "max_price": "500", "sort": "-price"},
                     headers=parties.scientist_headers)
    assert [s["id"] for s in data(listed)] == [cheap["id"]]
    both = data(api.get("/cro-services", params={"organization_id": cro.id, "sort": "-price"},
                        headers=parties.scientist_headers))
    assert [s["id"] for s in both] == [service["id"], cheap["id"]]
    assert data(api.get(f"/cro-services/{service['id']}", headers=parties.scientist_headers))["name"] == "Binding panel"
    changed = data(api.put(f"/cro-services/{cheap['id']}", json={"description": "Kinetic"}, headers=cro.headers))
    assert changed["description"] == "Kinetic"
    removed = api.delete(f"/cro-services/{cheap['id']}", headers=cro.headers).json()
    assert removed["deleted"] is True
    assert_error(api.get(f"/cro-services/{cheap['id']}", headers=cro.headers), 404, "RESOURCE_NOT_FOUND")


def test_a_pharma_organization_submits_to_a_cro_which_sees_it_blinded(api: httpx.Client, parties: Parties) -> None:
    pharma, cro, scientist = parties.pharma, parties.cro, parties.scientist_headers
    service = new_service(api, cro, name="Panel for submissions")
    batch = [{"smiles": s} for s in ("CCO", "c1ccccc1O")]
    outcomes = created(api.post("/molecules/batch", json={"molecules": batch}, headers=pharma.headers))
    ids = [o["molecule_id"] for o in outcomes]

    draft = created(api.post("/submissions", json={
        "name": "First panel", "cro_service_id": service["id"], "budget": "1000",
        "molecules": [{"molecule_id": i, "concentration": "10 mM"} for i in ids],
        "specifications": {"temperature": "warm"}, "request_id": uuid.uuid4().hex,
    }, headers=scientist))
    submission_id = draft["id"]
    assert draft["status"] == "DRAFT" and [m["molecule_id"] for m in draft["molecules"]] == ids
    assert "SUBMIT" in draft["permitted_actions"]

    def act(headers: dict[str, str], action: str, **fields: object) -> httpx.Response:
        return api.post(f"/submissions/{submission_id}/actions", json={"action": action, **fields}, headers=headers)

    invalid = assert_error(act(scientist, "SUBMIT"), 400, "VALIDATION_ERROR")
    assert "specifications.temperature" in field_violations(invalid)
    data(api.put(f"/submissions/{submission_id}", json={"specifications": {"temperature": 25}}, headers=scientist))
    refused = assert_error(act(scientist, "SUBMIT"), 409, "RESOURCE_CONFLICT")
    assert "NON_DISCLOSURE_AGREEMENT" in refused["message"] and "EXPERIMENT_SPECIFICATION" in refused["message"]

    nda = upload(api, scientist, submission_id, "NON_DISCLOSURE_AGREEMENT")
    mta = upload(api, scientist, submission_id, "MATERIAL_TRANSFER_AGREEMENT")
    upload(api, scientist, submission_id, "EXPERIMENT_SPECIFICATION")
    signed_by(api, scientist, nda, pharma)
    signed_by(api, scientist, mta, pharma)
    requirements = data(api.get(f"/submissions/{submission_id}/document-requirements", headers=scientist))
    assert requirements["complete"] is True

    submitted = data(act(scientist, "SUBMIT", request_id="submit-once"))
    assert submitted["status"] == "SUBMITTED" and {s["status"] for s in submitted["step_times"]} >= {"DRAFT",
                                                                                                   "SUBMITTED"}
    again = data(act(scientist, "SUBMIT", request_id="submit-once"))  # same key: no second SUBMIT
    assert again["status"] in ("SUBMITTED", "PENDING_REVIEW")  # (the package worker may have taken its step)

    seen = data(api.get(f"/submissions/{submission_id}", headers=parties.technician_headers))
    for molecule in seen["molecules"]:
        assert not any(molecule.get(key) for key in ("molecule_id", "registration_number", "smiles")), molecule
        assert molecule["sample_code"].startswith("S-") and molecule["formula"] and molecule["molecular_weight"]
    cro_list = data(api.get("/submissions", headers=cro.headers))
    assert submission_id in [s["id"] for s in cro_list]

    approve = assert_error(act(scientist, "APPROVE"), 403, "AUTHORIZATION_ERROR")
    assert "pharma_admin" in approve["message"]
    reject = assert_error(act(parties.technician_headers, "REJECT", reason="no capacity"), 403, "AUTHORIZATION_ERROR")
    assert "cro_admin" in reject["message"]
    def reviewable() -> bool | None:
        return data(api.get(f"/submissions/{submission_id}", headers=scientist))["status"] == "PENDING_REVIEW" or None

    eventually(reviewable, "the package worker's step to PENDING_REVIEW")

    counts = {c["status"]: c["count"] for c in data(api.get("/submissions/status-counts", headers=scientist))}
    assert counts["PENDING_REVIEW"] == 1 and len(counts) == 11
    by_molecule = data(api.get(f"/molecules/{ids[0]}/submissions", headers=scientist))
    assert [s["id"] for s in by_molecule] == [submission_id]
    assert data(api.get(f"/submissions/{submission_id}/quotes", headers=cro.headers)) == []

    outsider = parties.outsider.headers
    for path in ("", "/quotes", "/package", "/document-requirements"):
        assert_error(api.get(f"/submissions/{submission_id}{path}", headers=outsider), 404, "RESOURCE_NOT_FOUND")
    assert_error(act(outsider, "CANCEL"), 404, "RESOURCE_NOT_FOUND")
    assert_error(api.put(f"/submissions/{submission_id}", json={"name": "mine"}, headers=outsider), 404,
                 "RESOURCE_NOT_FOUND")
    assert_error(api.post(f"/submissions/{submission_id}/reveal-structures", json={"revealed": True},
                          headers=outsider), 404, "RESOURCE_NOT_FOUND")
    assert data(api.get("/submissions", headers=outsider)) == []

    kept = api.delete(f"/cro-services/{service['id']}", headers=cro.headers).json()
    assert kept["deleted"] is False and kept["data"]["active"] is False
