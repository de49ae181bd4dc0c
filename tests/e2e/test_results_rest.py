"""The results routes' REST statuses through Envoy (issue 12): upload 201, preview 200, process 201, the
same processing again 200 (the servicer's `x-molbridge-not-created`), a bad mapping 400 naming the
column, the worker's COMPLETED version with blinded values for the CRO, and 404 for a third organization.
Versions, review and the worker's restart are tests/integration/test_cro_results.py's."""

from __future__ import annotations

import csv
import io

import httpx

from tests.e2e import test_identity_gateway
from tests.e2e.cro_rest import Parties, eventually, in_progress
from tests.e2e.molecule_rest import assert_error, created, data, field_violations

api = test_identity_gateway.api
admin = test_identity_gateway.admin


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
