"""Predictions end to end: REST through Envoy to the prediction service, its worker, the real AI engine
(the mesh starts engine/ with its baseline model), and back onto the molecules as PREDICTED values."""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Callable
from typing import TypeVar

import httpx

from tests.e2e import test_identity_gateway as identity
from tests.e2e.test_identity_gateway import bearer, new_org

T = TypeVar("T")
api = identity.api  # the module's fixtures: a REST client on the gateway, the platform admin
admin = identity.admin


def eventually(probe: Callable[[], T | None], what: str, timeout: float = 60.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found is not None:
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def completed_job(api: httpx.Client, auth: dict[str, str], smiles: list[str], properties: list[str]) -> str:
    """Register the molecules, predict the properties and wait for the job to complete; its id."""
    created = api.post("/molecules/batch", json={"molecules": [{"smiles": s} for s in smiles]}, headers=auth)
    assert created.status_code == 201, created.text
    ids = [o["molecule_id"] for o in created.json()["data"]]
    queued = api.post("/predictions", json={"molecule_ids": ids, "properties": properties}, headers=auth)
    assert queued.status_code == 201, queued.text
    job_id: str = queued.json()["data"]["job_id"]

    def done() -> bool | None:
        response = api.get(f"/predictions/{job_id}/status", headers=auth)
        if response.status_code == 429:  # the ai_prediction rate limit; wait like a client would
            return None
        assert response.status_code == 200, response.text
        return True if response.json()["data"]["status"] == "completed" else None

    eventually(done, "the prediction job to complete")
    return job_id


def test_predictions_over_rest_fill_and_rank_molecules(api: httpx.Client, admin: dict) -> None:
    _, scientist = new_org(api, admin)
    _, outsider = new_org(api, admin)
    auth = bearer(scientist)
    smiles = ["CCO", "CC(=O)Nc1ccc(O)cc1", "c1ccccc1", "CCCCCCCCCCCCCCCC(=O)O"]
    created = api.post("/molecules/batch", json={"molecules": [{"smiles": s} for s in smiles]}, headers=auth)
    assert created.status_code == 201, created.text
    ids = [o["molecule_id"] for o in created.json()["data"]]

    queued = api.post("/predictions", json={"molecule_ids": ids, "properties": ["solubility", "logp"]}, headers=auth)
    assert queued.status_code == 201, queued.text  # a prediction job was created
    job = queued.json()["data"]
    assert job["status"] in ("queued", "processing", "completed") and set(job) == {"job_id", "status"}

    def done() -> dict | None:
        response = api.get(f"/predictions/{job['job_id']}/status", headers=auth)
        if response.status_code == 429:  # the ai_prediction rate limit; wait like a client would
            return None
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        return data if data["status"] == "completed" else None

    status = eventually(done, "the prediction job to complete")
    assert status == {"job_id": job["job_id"], "status": "completed", "total": 4, "completed": 4, "failed": 0}

    results = api.get(f"/predictions/{job['job_id']}/results", headers=auth)
    assert results.status_code == 200, results.text
    items = results.json()["data"]
    assert len(items) == 8 and {(r["molecule_id"], r["property"]) for r in items} == {
        (i, p) for i in ids for p in ("solubility", "logp")
    }
    assert all(0 <= r["confidence"] <= 1 and r["model_name"] and r["model_version"] for r in items)

    per_molecule = api.get(f"/molecules/{ids[1]}/predictions", headers=auth)
    assert per_molecule.status_code == 200 and {r["property"] for r in per_molecule.json()["data"]} == {
        "solubility",
        "logp",
    }
    models = api.get("/predictions/models", headers=auth)
    assert models.status_code == 200 and "baseline" in {m["name"] for m in models.json()["data"]}

    # On the molecules: PREDICTED values and the desirability score, sortable like any property.
    def ranked() -> list[dict] | None:
        page = api.post(
            "/molecules/filter",
            json={
                "filters": [{"property": "desirability_score", "operator": "gte", "value": 0}],
                "sort_by": "desirability_score",
                "sort_desc": True,
            },
            headers=auth,
        )
        assert page.status_code == 200, page.text
        rows = page.json()["data"]
        return rows if len(rows) == 4 else None

    rows = eventually(ranked, "desirability scores on every molecule")
    scores = [next(p["value"] for p in r["properties"] if p["name"] == "desirability_score") for r in rows]
    assert scores == sorted(scores, reverse=True)
    sources = {(p["name"], p["source"]) for p in rows[0]["properties"]}
    assert {("solubility", "PREDICTED"), ("desirability_score", "PREDICTED")} <= sources

    # Another organization: not found, and cannot predict these molecules either.
    other = bearer(outsider)
    assert api.get(f"/predictions/{job['job_id']}/status", headers=other).status_code == 404
    refused = api.post("/predictions", json={"molecule_ids": ids, "properties": ["logp"]}, headers=other)
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "RESOURCE_NOT_FOUND"
    invalid = api.post("/predictions", json={"molecule_ids": ids, "properties": ["colour"]}, headers=auth)
    assert invalid.status_code == 400 and invalid.json()["error"]["code"] == "VALIDATION_ERROR"
    # The engine's catalogue decides at request time: an unknown model is a 400 naming the field and
    # listing the models there are (the mesh's engine loads only its baseline).
    unknown = api.post("/predictions", json={"molecule_ids": ids, "properties": ["logp"], "model": "x"}, headers=auth)
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "VALIDATION_ERROR", unknown.text
    assert "model" in unknown.json()["error"]["message"] and "baseline" in unknown.json()["error"]["message"]
    assert "baseline" in unknown.text and '"model"' in unknown.text  # the field violation, in the details


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")


def test_prediction_results_come_in_pages_and_as_a_streamed_csv(api: httpx.Client, admin: dict) -> None:
    _, scientist = new_org(api, admin)
    _, outsider = new_org(api, admin)
    auth = bearer(scientist)
    smiles = ["CCO", "CCN", "CCCl", "c1ccccc1O", "CC(=O)O", "CCCCCCCCCCCCCCCC(=O)O"]
    job_id = completed_job(api, auth, smiles, ["solubility", "logp"])
    results = f"/predictions/{job_id}/results"

    # Pages of 5 over 12 values, in (molecule, property) order; the default page holds them all.
    pages = [api.get(results, params={"page": n, "page_size": 5}, headers=auth) for n in (1, 2, 3, 4)]
    assert all(p.status_code == 200 for p in pages), [p.text for p in pages]
    assert [p.json()["meta"] for p in pages] == [{"page": n, "page_size": 5, "total": 12} for n in (1, 2, 3, 4)]
    assert [len(p.json()["data"]) for p in pages] == [5, 5, 2, 0]
    paged = [(r["molecule_id"], r["property"]) for p in pages for r in p.json()["data"]]
    assert paged == sorted(paged) and len(set(paged)) == 12
    whole = api.get(results, headers=auth)
    assert whole.status_code == 200 and whole.json()["meta"] == {"page": 1, "page_size": 50, "total": 12}
    assert [(r["molecule_id"], r["property"]) for r in whole.json()["data"]] == paged
    # Out-of-range paging is the caller's mistake, as on every list.
    for params, field in (({"page_size": 101}, "page_size"), ({"page": -1}, "page")):
        refused = api.get(results, params=params, headers=auth)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "VALIDATION_ERROR", refused.text
        assert field in refused.text

    # The whole set as one CSV file, streamed: the header, then one row per value in the same order.
    with api.stream("GET", f"{results}.csv", headers=auth) as download:
        assert download.status_code == 200
        assert download.headers["content-type"].startswith("text/csv")
        assert download.headers["content-disposition"].startswith(
            f'attachment; filename="prediction-{job_id}-results.csv"'
        )
        text = "".join(download.iter_text())
    table = list(csv.reader(io.StringIO(text)))
    assert table[0] == ["molecule_id", "property", "value", "units", "confidence", "model_name", "model_version"]
    assert len(table) - 1 == 12 and [(row[0], row[1]) for row in table[1:]] == paged
    by_key = {(r["molecule_id"], r["property"]): r for r in whole.json()["data"]}
    for row in table[1:]:
        shown = by_key[(row[0], row[1])]
        assert float(row[2]) == shown["value"] and row[3] == shown["units"] and row[5] == shown["model_name"]
        # No cell a spreadsheet would run: text starting with = + - @ is quoted; numbers stay numbers.
        assert all(not cell.startswith(_FORMULA_START) or _PLAIN_NUMBER.match(cell) for cell in row), row
    assert any(float(row[2]) < 0 for row in table[1:])  # negative logS values survive as plain numbers

    # Another organization's job, or none at all: the error envelope, not an empty file.
    for path, headers in ((f"{results}.csv", bearer(outsider)), ("/predictions/not-a-job/results.csv", auth)):
        missing = api.get(path, headers=headers)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "RESOURCE_NOT_FOUND", missing.text
    assert api.get(results, headers=bearer(outsider)).status_code == 404
