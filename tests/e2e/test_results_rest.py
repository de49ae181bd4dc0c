"""The results routes' REST statuses through Envoy (issue 12): upload 201, preview 200, process 201, the
same processing again 200 (the servicer's `x-molbridge-not-created`), a bad mapping 400 naming the
column, the worker's COMPLETED version with blinded values for the CRO, and 404 for a third organization.
Versions, review and the worker's restart are tests/integration/test_cro_results.py's."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import date, timedelta

import httpx

from tests.e2e import test_identity_gateway
from tests.e2e.cro_rest import Parties, act, eventually, new_service, sign, signed_by, upload, wait_for_status
from tests.e2e.molecule_rest import assert_error, created, data, field_violations

api = test_identity_gateway.api
admin = test_identity_gateway.admin


def in_progress(api: httpx.Client, p: Parties) -> tuple[str, list[str]]:
    """A submission of two molecules asking for IC50, IN_PROGRESS: (id, sample codes as the CRO sees them)."""
    service = new_service(api, p.cro, name=f"Results panel {uuid.uuid4().hex[:6]}")
    molecules = created(api.post("/molecules/batch", json={"molecules": [{"smiles": "CCO"}, {"smiles": "CCN"}]},
                                 headers=p.scientist_headers))
    draft = created(api.post("/submissions", json={
        "name": "Results REST", "cro_service_id": service["id"],
        "molecules": [{"molecule_id": m["molecule_id"]} for m in molecules],
        "specifications": {"temperature": 37, "properties": ["ic50"]}, "request_id": uuid.uuid4().hex,
    }, headers=p.scientist_headers))
    submission_id = draft["id"]
    for document_type in ("NON_DISCLOSURE_AGREEMENT", "MATERIAL_TRANSFER_AGREEMENT"):
        signed_by(api, p.scientist_headers, upload(api, p.scientist_headers, submission_id, document_type), p.pharma)
    upload(api, p.scientist_headers, submission_id, "EXPERIMENT_SPECIFICATION")
    data(act(api, p.scientist_headers, submission_id, "SUBMIT", request_id=uuid.uuid4().hex))
    wait_for_status(api, p.scientist_headers, submission_id, "PENDING_REVIEW")
    data(act(api, p.cro.headers, submission_id, "PROVIDE_PRICING", price="900.00", currency="USD",
             turnaround_days=7, valid_until=(date.today() + timedelta(days=30)).isoformat()))
    data(act(api, p.pharma.headers, submission_id, "APPROVE"))
    agreement = upload(api, p.scientist_headers, submission_id, "SERVICE_AGREEMENT")
    sign(api, p.scientist_headers, agreement, [
        (p.pharma, {"user_id": p.pharma.user_id, "routing_order": 1}),
        (p.cro, {"organization_id": p.cro.id, "role": "cro_admin", "routing_order": 2}),
    ])
    started = data(act(api, p.technician_headers, submission_id, "START_EXPERIMENT"))
    assert started["status"] == "IN_PROGRESS"
    return submission_id, [m["sample_code"] for m in started["molecules"]]


def test_results_routes_answer_the_documented_statuses(api: httpx.Client, admin: dict) -> None:
    p = Parties(api, admin)
    technician, scientist, outsider = p.technician_headers, p.scientist_headers, p.outsider.headers
    submission_id, codes = in_progress(api, p)
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerows([["Sample", "Property", "Value", "Units"], [codes[0], "IC50", "0.5", "uM"],
                      [codes[0], "IC50", "700", "nM"], [codes[1], "IC50", "<10", "nM"], ["NOPE", "IC50", "1", "nM"]])

    stored = created(api.post("/results/upload", files={"file": ("plate.csv", out.getvalue().encode(), "text/csv")},
                              headers=technician))
    key = stored["storage_key"]
    assert stored["filename"] == "plate.csv" and len(stored["sha256"]) == 64
    preview = data(api.get(f"/results/upload/{key}/preview", params={"submission_id": submission_id},
                           headers=technician))
    assert preview["format"] == "LONG" and preview["requested_properties"] == ["ic50"]
    assert [e["code"] for e in preview["errors"]] == ["UNKNOWN_SAMPLE"]
    assert_error(api.get(f"/results/upload/{key}/preview", headers=outsider), 404, "RESOURCE_NOT_FOUND")

    bad = assert_error(api.post(f"/results/upload/{key}/process", json={
        "submission_id": submission_id, "mapping": {"Sample": "colour"}}, headers=technician), 400, "VALIDATION_ERROR")
    assert "mapping.Sample" in field_violations(bad)
    process = f"/results/upload/{key}/process"
    first = created(api.post(process, json={"submission_id": submission_id}, headers=technician))
    assert first["status"] == "PENDING" and first["version"] == 1
    again = api.post(process, json={"submission_id": submission_id}, headers=technician)
    assert again.status_code == 200 and data(again)["id"] == first["id"]

    def completed() -> dict | None:
        found = data(api.get(f"/results/{first['id']}", headers=technician))
        return dict(found) if found["status"] == "COMPLETED" else None

    done = eventually(completed, "the results worker's COMPLETED")
    assert (done["current"], done["qc_flag"], done["error_count"]) == (True, "WARNING", 1)
    assert data(api.get(f"/submissions/{submission_id}", headers=scientist))["status"] == "RESULTS_UPLOADED"
    cro_values = data(api.get(f"/results/{first['id']}/values", headers=technician))
    assert [(v["sample_code"], v["qualifier"], v["value"]) for v in cro_values] == [
        (codes[0], "=", 600.0), (codes[1], "<", 10.0)
    ]
    assert not any(v.get("molecule_id") or v.get("registration_number") for v in cro_values)
    assert all(v["molecule_id"] for v in data(api.get(f"/results/{first['id']}/values", headers=scientist)))
    report = api.get(f"/results/{first['id']}/errors", headers=technician)
    assert report.status_code == 200 and "UNKNOWN_SAMPLE" in report.text
    for path in (f"/results/{first['id']}", f"/results/{first['id']}/values", f"/results/{first['id']}/errors"):
        assert_error(api.get(path, headers=outsider), 404, "RESOURCE_NOT_FOUND")
    listed = data(api.get(f"/submissions/{submission_id}/results", headers=scientist))
    assert [r["id"] for r in listed] == [first["id"]]
