"""Issue 12's journey through Envoy: a pharma organization imports molecules (CSV), predicts their
solubility and logP with the baseline model, and sends them to a CRO with a submission asking for those
two properties; at IN_PROGRESS the CRO writes a results CSV from the sample codes of its blinded view —
qualifiers (`<`, `>`, `~`), replicates, µg/mL and mg/mL mixed, and three bad rows (an unknown sample, an
impossible unit, a property nobody asked for) — previews it, processes it and watches it complete; the
error report holds exactly the bad rows; the same file again changes nothing (200, no new version). The
pharma side rejects that version with a reason, the CRO uploads a corrected one (version 2), the pharma
side accepts it: the submission is RESULTS_REVIEWED, the molecules show the EXPERIMENTAL values (canonical
units, a censored one as text) and status RESULTS. The comparison with the predictions equals an
independent computation here (numpy, from GET /predictions/{job}/results and the values written in the
file converted by hand), its plots are PNGs, and the model's accuracy lists it. The CRO never sees a
molecule id and may not compare; a third organization sees nothing.
"""

from __future__ import annotations

import csv
import io
import math
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
import numpy as np
import pytest

from tests.e2e import test_identity_gateway
from tests.e2e.cro_rest import (
    RESULTS_HEADER,
    Parties,
    eventually,
    new_service,
    predict,
    results_csv,
    sample_codes,
    start_experiment,
    wait_for_status,
)
from tests.e2e.molecule_rest import (
    assert_error,
    created,
    data,
    field_violations,
    read_events,
    start_import,
    upload_file,
    wait_for_job,
)

api = test_identity_gateway.api
admin = test_identity_gateway.admin

MODEL = "baseline"
PROPERTIES = ["solubility", "logp"]
MOLECULES = b"""SMILES,Name
CCO,ethanol
c1ccccc1O,phenol
CC(=O)Nc1ccc(O)cc1,paracetamol
Cn1cnc2c1c(=O)n(C)c(=O)n2C,caffeine
CC(=O)Oc1ccccc1C(=O)O,aspirin
"""
MG_PER_ML = {"mg/mL": 1.0, "µg/mL": 1e-3, "": 1.0}  # the units written → canonical (solubility: mg/mL)
CANONICAL_UNITS = {"solubility": "mg/mL", "logp": ""}
WITHIN = 0.5  # log units, both properties (comparison.py: LOG10 for solubility, LOG_UNITS for logP)


@dataclass(frozen=True)
class Row:
    """One line of the results file; `sample` is a position in the CRO's list of sample codes, or a code."""

    sample: int | str
    property: str
    value: str
    units: str = ""
    qualifier: str = ""
    replicate: str = ""
    notes: str = ""

    def cells(self, codes: Sequence[str]) -> list[str]:
        code = codes[self.sample] if isinstance(self.sample, int) else self.sample
        return [code, self.property, self.value, self.units, self.qualifier, self.replicate, self.notes]


GOOD = [
    Row(0, "Solubility", "12", "mg/mL", replicate="1"),
    Row(0, "Solubility", "14000", "µg/mL", replicate="2"),
    Row(1, "Solubility", "3500", "µg/mL"),
    Row(2, "Solubility", "10", "µg/mL", qualifier="<", notes="below the detection limit"),
    Row(3, "Solubility", "0.8", "mg/mL"),
    Row(4, "Solubility", "50", "mg/mL", qualifier=">"),
    Row(0, "LogP", "-0.2"),
    Row(1, "LogP", "1.4", replicate="a"),
    Row(1, "LogP", "1.6", replicate="b"),
    Row(2, "LogP", "0.5"),
    Row(3, "LogP", "1.1"),
    Row(4, "LogP", "1.2", qualifier="~"),
]
BAD = [
    Row("S-ZZZZ-99", "Solubility", "1", "mg/mL"),  # UNKNOWN_SAMPLE
    Row(1, "Solubility", "5", "kg"),  # INCOMPATIBLE_UNITS
    Row(0, "IC50", "5", "uM"),  # PROPERTY_NOT_REQUESTED
]
CORRECTION = [Row(1, "Solubility", "4.5", "mg/mL", notes="re-measured")]


@dataclass(frozen=True)
class Measured:
    qualifier: str  # "=", "~", "<" or ">"
    value: float  # canonical units; the bound when censored


def measured(rows: Sequence[Row], codes: Sequence[str]) -> dict[tuple[str, str], Measured]:
    """(sample code, property) → the value the file says, converted by hand: replicates averaged, a
    censored value kept as its bound."""
    grouped: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for row in rows:
        grouped[(row.cells(codes)[0], row.property.lower())].append(row)
    out = {}
    for key, group in grouped.items():
        numbers = [float(r.value) * MG_PER_ML[r.units] for r in group]
        qualifiers = {r.qualifier or "=" for r in group}
        assert len(qualifiers) == 1 or qualifiers == {"=", "~"}
        qualifier = "~" if "~" in qualifiers else qualifiers.pop()
        out[key] = Measured(qualifier, float(np.mean(numbers)))
    return out


@dataclass(frozen=True)
class Expected:
    n: int
    mae: float
    rmse: float
    r2: float
    bias: float
    within: int
    censored_consistent: int
    censored_inconsistent: int


def expected_scores(prop: str, predicted: dict[str, float], values: dict[str, Measured]) -> Expected:
    """The scores of comparison.py's docstring, computed independently: errors on log10 for solubility,
    as they are for logP; censored values out of the metrics and classified against their bound."""
    def scaled(x: float) -> float:
        return math.log10(x) if prop == "solubility" else x

    pairs = [(scaled(predicted[c]), scaled(m.value)) for c, m in values.items() if m.qualifier in ("=", "~")]
    p, m = np.array([a for a, _ in pairs]), np.array([b for _, b in pairs])
    e = p - m
    consistent = sum(1 for c, v in values.items()
                     if (v.qualifier == "<" and predicted[c] <= v.value)
                     or (v.qualifier == ">" and predicted[c] >= v.value))
    censored = sum(1 for v in values.values() if v.qualifier in ("<", ">"))
    return Expected(
        n=len(pairs), mae=float(np.mean(np.abs(e))), rmse=float(np.sqrt(np.mean(e**2))),
        r2=float(1 - np.sum(e**2) / np.sum((m - m.mean()) ** 2)), bias=float(np.mean(e)),
        within=int(np.sum(np.abs(e) <= WITHIN + 1e-9)), censored_consistent=consistent,
        censored_inconsistent=censored - consistent,
    )


def stored_results(api: httpx.Client, headers: dict[str, str], content: bytes, name: str) -> str:
    uploaded = api.post("/results/upload", files={"file": (name, content, "text/csv")}, headers=headers)
    stored = created(uploaded)
    assert stored["filename"] == name and int(stored["size_bytes"]) == len(content), stored  # int64: a JSON string
    return str(stored["storage_key"])


def watched(api: httpx.Client, headers: dict[str, str], result_id: str) -> dict:
    """GET /results/{id}/watch (server-sent events) until the stream ends; the final state."""
    stream = read_events(api, f"/results/{result_id}/watch", headers)
    assert stream.status_code == 200 and stream.content_type.startswith("text/event-stream"), stream
    assert stream.events and stream.events[-1].get("final") is True, stream.events
    assert not any(e.get("final") for e in stream.events[:-1])
    return dict(stream.events[-1]["data"])


def error_report(api: httpx.Client, headers: dict[str, str], result_id: str) -> list[dict[str, str]]:
    response = api.get(f"/results/{result_id}/errors", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv"), response.headers
    return list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"))))


def row_numbers(report: list[dict[str, str]]) -> list[int]:
    column = next(name for name in report[0] if "row" in name.lower())
    return sorted(int(line[column]) for line in report)


def experimental(molecule: dict) -> dict[str, dict]:
    return {p["name"]: p for p in molecule["properties"] if p["source"] == "EXPERIMENTAL"}


def test_results_from_a_cro_csv_to_experimental_values_and_prediction_scores(
    api: httpx.Client, admin: dict
) -> None:
    p = Parties(api, admin)
    scientist, technician, outsider = p.scientist_headers, p.technician_headers, p.outsider.headers
    service = new_service(api, p.cro, name=f"Solubility panel {uuid.uuid4().hex[:6]}")

    # The pharma side imports its molecules and predicts them.
    stored = upload_file(api, scientist, MOLECULES, "series.csv")
    job = start_import(api, scientist, stored["storage_key"], {"SMILES": "smiles", "Name": "name"})
    assert wait_for_job(api, scientist, job["job_id"])["registered"] == 5
    ids = [m["id"] for m in data(api.get("/molecules", params={"page_size": 10}, headers=scientist))]
    assert len(ids) == 5
    predictions = predict(api, scientist, ids, PROPERTIES, MODEL)
    assert {(v["molecule_id"], v["property"]) for v in predictions} == {(i, q) for i in ids for q in PROPERTIES}
    versions = {v["model_version"] for v in predictions}
    assert len(versions) == 1 and {v["model_name"] for v in predictions} == {MODEL}
    model_version = versions.pop()

    # A submission asking for the predicted properties (names it knows), taken to IN_PROGRESS.
    unknown = assert_error(api.post("/submissions", json={
        "name": "Unknown property", "cro_service_id": service["id"],
        "specifications": {"temperature": 37, "properties": ["solubility", "colour"]}, "request_id": uuid.uuid4().hex,
    }, headers=scientist), 400, "VALIDATION_ERROR")
    assert "colour" in field_violations(unknown)["specifications.properties"], unknown
    submission = created(api.post("/submissions", json={
        "name": "Solubility round", "cro_service_id": service["id"], "budget": "5000",
        "molecules": [{"molecule_id": i, "concentration": "10 mM in DMSO"} for i in ids],
        "specifications": {"temperature": 37, "properties": PROPERTIES}, "request_id": uuid.uuid4().hex,
    }, headers=scientist))
    submission_id = submission["id"]
    start_experiment(api, p, submission_id)
    codes = sample_codes(api, technician, submission_id)  # what the CRO knows of the molecules
    blinded = data(api.get(f"/submissions/{submission_id}", headers=technician))["molecules"]
    assert not any(m.get("molecule_id") or m.get("registration_number") for m in blinded), blinded
    pharma_view = data(api.get(f"/submissions/{submission_id}", headers=scientist))
    molecule_of = {m["sample_code"]: m["molecule_id"] for m in pharma_view["molecules"]}
    assert sorted(codes) == sorted(molecule_of) and len(codes) == 5

    # Version 1: good rows and three bad ones, previewed first.
    first = results_csv([row.cells(codes) for row in [*GOOD, *BAD]])
    bad_rows = list(range(len(GOOD) + 1, len(GOOD) + len(BAD) + 1))  # row 1 is the first after the header
    key = stored_results(api, technician, first, "results-v1.csv")
    preview = data(api.get(f"/results/upload/{key}/preview", params={"submission_id": submission_id, "rows": 20},
                           headers=technician))
    assert preview["headers"] == list(RESULTS_HEADER) and preview["format"] == "LONG"
    assert preview["suggested_mapping"]["Sample"] == "sample_code" and preview["suggested_mapping"]["Units"] == "units"
    assert sorted(preview["requested_properties"]) == sorted(PROPERTIES)
    assert sorted({e["row_number"] for e in preview["errors"]}) == bad_rows
    assert {e["code"] for e in preview["errors"]} == {"UNKNOWN_SAMPLE", "INCOMPATIBLE_UNITS", "PROPERTY_NOT_REQUESTED"}
    assert len(preview["measurements"]) == len(GOOD)
    assert not any(m.get("molecule_id") for m in preview["measurements"])  # blinded
    converted = next(m for m in preview["measurements"] if m["row_number"] == 2)  # 14000 µg/mL
    assert (converted["value"], converted["units"]) == (pytest.approx(14.0), "mg/mL")

    processed = api.post(f"/results/upload/{key}/process", json={"submission_id": submission_id, "notes": "run 1"},
                         headers=technician)
    v1 = created(processed)
    assert v1["version"] == 1 and v1["status"] in ("PENDING", "PROCESSING", "COMPLETED"), v1
    done = watched(api, technician, v1["id"])
    assert done["status"] == "COMPLETED", done
    assert (done["total_rows"], done["rows_rejected"], done["values_accepted"], done["error_count"]) == (
        len(GOOD) + len(BAD), len(BAD), len(GOOD), len(BAD))
    assert done["qc_flag"] == "WARNING" and done["qc"]["clean"] is False
    assert data(api.get(f"/submissions/{submission_id}", headers=scientist))["status"] == "RESULTS_UPLOADED"
    report = error_report(api, technician, v1["id"])
    assert row_numbers(report) == bad_rows, report

    noted = data(api.put(f"/results/{v1['id']}", json={"notes": "plate 2 read twice"}, headers=technician))
    assert noted["notes"] == "plate 2 read twice" and noted["version"] == 1

    # The same file again: the current version, unchanged.
    again_key = stored_results(api, technician, first, "results-v1.csv")
    again = api.post(f"/results/upload/{again_key}/process", json={"submission_id": submission_id}, headers=technician)
    assert again.status_code == 200, again.text
    assert (again.json()["data"]["id"], again.json()["data"]["version"]) == (v1["id"], 1)
    assert [r["id"] for r in data(api.get(f"/submissions/{submission_id}/results", headers=technician))] == [v1["id"]]

    # The CRO's views are blinded; it may not compare; a third organization sees nothing.
    for value in data(api.get(f"/results/{v1['id']}/values", params={"page_size": 100}, headers=technician)):
        assert not value.get("molecule_id") and not value.get("registration_number"), value
        assert not any(r.get("molecule_id") for r in value["replicates"]), value
    assert_error(api.get(f"/results/{v1['id']}/compare-predictions", headers=technician), 403, "AUTHORIZATION_ERROR")
    assert_error(api.get(f"/results/{v1['id']}", headers=outsider), 404, "RESOURCE_NOT_FOUND")
    assert v1["id"] not in [r["id"] for r in data(api.get("/results", headers=outsider))]

    # The pharma side rejects version 1 with a reason; the CRO reads it and uploads a corrected version 2.
    assert_error(api.put(f"/results/{v1['id']}/status", json={"decision": "REJECTED"}, headers=scientist), 400,
                 "VALIDATION_ERROR")
    reason = "Rows 13-15 are unusable: please resend with the re-measured sample"
    rejected = data(api.put(f"/results/{v1['id']}/status", json={"decision": "REJECTED", "reason": reason},
                            headers=scientist))
    assert rejected["status"] == "REJECTED" and rejected["review"]["decision"] == "REJECTED"
    assert data(api.get(f"/results/{v1['id']}", headers=technician))["review"]["reason"] == reason
    corrected = [*GOOD, *CORRECTION]
    key = stored_results(api, technician, results_csv([row.cells(codes) for row in corrected]), "results-v2.csv")
    v2 = created(api.post(f"/results/upload/{key}/process", json={"submission_id": submission_id, "notes": "corrected"},
                          headers=technician))
    assert v2["version"] == 2 and v2["id"] != v1["id"]
    done = watched(api, technician, v2["id"])
    assert done["status"] == "COMPLETED" and done["error_count"] == 0 and done["qc_flag"] == "PASSED", done
    history = data(api.get(f"/submissions/{submission_id}/results", headers=scientist))
    assert [(r["version"], r["status"]) for r in history] == [(2, "COMPLETED"), (1, "REJECTED")]
    assert history[0]["current"] is True and history[1]["current"] is False

    # Accepted: EXPERIMENTAL values on the molecules, in canonical units; the submission RESULTS_REVIEWED.
    accepted = data(api.put(f"/results/{v2['id']}/status", json={"decision": "ACCEPTED"}, headers=scientist))
    assert accepted["review"]["decision"] == "ACCEPTED", accepted
    wait_for_status(api, scientist, submission_id, "RESULTS_REVIEWED")
    values = measured(corrected, codes)
    for code, molecule_id in molecule_of.items():
        def arrived(molecule_id: str = molecule_id) -> dict | None:
            molecule = data(api.get(f"/molecules/{molecule_id}", headers=scientist))
            shown = experimental(molecule)
            return molecule if molecule["status"] == "RESULTS" and set(PROPERTIES) <= set(shown) else None

        shown = experimental(eventually(arrived, f"molecule {molecule_id} RESULTS with EXPERIMENTAL values"))
        for prop in PROPERTIES:
            value = values[(code, prop)]
            assert shown[prop]["units"] == CANONICAL_UNITS[prop], shown[prop]
            if value.qualifier in ("<", ">"):
                assert shown[prop]["value"] == f"{value.qualifier}{value.value:g}", shown[prop]
            else:
                assert shown[prop]["value"] == pytest.approx(value.value), shown[prop]
        listed = data(api.get(f"/molecules/{molecule_id}/results", headers=scientist))
        assert {r["value"]["property"] for r in listed if r["result_id"] == v2["id"]} == set(PROPERTIES), listed
    censored = experimental(data(api.get(f"/molecules/{molecule_of[codes[2]]}", headers=scientist)))
    assert censored["solubility"]["value"] == "<0.01"  # 10 µg/mL, a bound: text, never the number

    # Predicted vs measured, against an independent computation.
    predicted = {(v["molecule_id"], v["property"]): float(v["value"]) for v in predictions}
    comparisons = data(api.get(f"/results/{v2['id']}/compare-predictions", headers=scientist))
    assert {(c["property"], c["model_name"], c["model_version"]) for c in comparisons} == {
        (prop, MODEL, model_version) for prop in PROPERTIES}
    for comparison in comparisons:
        prop = comparison["property"]
        mine = {code: v for (code, q), v in values.items() if q == prop}
        want = expected_scores(prop, {c: predicted[(molecule_of[c], prop)] for c in mine}, mine)
        got = comparison["summary"]
        assert comparison["scale"] == ("LOG10" if prop == "solubility" else "LOG_UNITS")
        assert got["n"] == want.n and got["within"] == want.within and got["within_counted"] == want.n, got
        for name in ("mae", "rmse", "r2", "bias"):
            assert got[name] == pytest.approx(getattr(want, name), rel=1e-9, abs=1e-12), (prop, name, got)
        assert got["within_share"] == pytest.approx(want.within / want.n)
        assert (got.get("censored_consistent", 0), got.get("censored_inconsistent", 0)) == (
            want.censored_consistent, want.censored_inconsistent)
        assert len(comparison["pairs"]) == len(mine)
        assert {pair["molecule_id"] for pair in comparison["pairs"]} == set(ids)
        for path in (comparison["scatter_plot_path"], comparison["residual_plot_path"]):
            plot = api.get(path.removeprefix("/api/v1"), headers=scientist)
            assert plot.status_code == 200, (path, plot.text[:200])
            assert plot.headers["content-type"] == "image/png" and plot.content.startswith(b"\x89PNG"), path
    approximate = next(c for c in comparisons if c["property"] == "logp")["summary"]
    assert approximate.get("approximate", 0) == 1  # the ~1.2

    # The model's accuracy over the organization's accepted results lists it.
    accuracy = data(api.get(f"/predictions/models/{MODEL}/accuracy", headers=scientist))
    by_property = {a["property"]: a for a in accuracy if a["model_name"] == MODEL}
    assert set(PROPERTIES) <= set(by_property), accuracy
    for prop in PROPERTIES:
        (version,) = by_property[prop]["versions"]
        want_n = next(c for c in comparisons if c["property"] == prop)["summary"]["n"]
        assert version["model_version"] == model_version and version["overall"]["n"] == want_n
        assert [r["result_id"] for r in version["results"]] == [v2["id"]]
    assert_error(api.get(f"/results/{v2['id']}/compare-predictions", headers=outsider), 404, "RESOURCE_NOT_FOUND")
    assert_error(api.delete(f"/results/{v2['id']}", headers=technician), 409, "RESOURCE_CONFLICT")  # reviewed


def test_the_openapi_document_lists_every_results_route(api: httpx.Client) -> None:
    """DOMAIN.md's "results" row, the results of a submission and of a molecule, and this issue's extra routes."""
    paths = api.get("/openapi.json").json()["paths"]
    documented = {(verb.upper(), path.removeprefix("/api/v1")) for path, ops in paths.items() for verb in ops}
    expected = {
        ("GET", "/results"), ("GET", "/results/{id}"), ("PUT", "/results/{id}"), ("DELETE", "/results/{id}"),
        ("POST", "/results/upload"), ("POST", "/results/upload/{storage_key}/process"),
        ("PUT", "/results/{id}/status"), ("GET", "/results/{id}/compare-predictions"),
        ("GET", "/molecules/{molecule_id}/results"), ("GET", "/submissions/{submission_id}/results"),
        ("GET", "/results/upload/{storage_key}/preview"), ("GET", "/results/{id}/watch"),
        ("GET", "/results/{id}/values"), ("GET", "/results/{id}/errors"),
        ("GET", "/results/{id}/compare-predictions/plot"), ("GET", "/predictions/models/{model_name}/accuracy"),
    }
    assert expected <= documented, sorted(expected - documented)
