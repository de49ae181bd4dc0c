"""The engine's REST contract, against the real engine process running in its own venv (.venv-engine)."""

from __future__ import annotations

import socket
import urllib.error
from collections.abc import Iterator

import pytest

from tests.engine.engine_process import EngineMissing, EngineProcess

ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"
CAFFEINE = "CN1C=NC2=C1C(=O)N(C(=O)N2C)C"
PACLITAXEL = ("CC1=C2[C@@]([C@]([C@H]([C@@H]3[C@]4([C@H](OC4)C[C@@H]([C@]3(C(=O)[C@@H]2OC(=O)C)C)O)OC(=O)C)"
              "OC(=O)c5ccccc5)(C[C@@H]1OC(=O)[C@H](O)[C@@H](NC(=O)c6ccccc6)c7ccccc7)O)(C)C")
RESULT_KEYS = {"id", "property", "value", "units", "confidence", "model", "model_version"}
ALL_PROPERTIES = ["solubility", "logp", "logd", "permeability", "clearance", "half_life", "bioavailability"]


@pytest.fixture(scope="module")
def engine() -> Iterator[EngineProcess]:
    proc = EngineProcess(models="baseline,admet", faults=True)
    try:
        proc.start()
    except EngineMissing as exc:
        pytest.fail(str(exc))  # the Makefile builds .venv-engine before the tests: missing is a failure
    yield proc
    proc.stop()


@pytest.fixture(autouse=True)
def clear_faults(engine: EngineProcess) -> Iterator[None]:
    yield
    assert engine.request("DELETE", "/v1/_faults")[0] == 200


def run_job(engine: EngineProcess, molecules: list[dict[str, str]], properties: list[str],
            model: str | None = None) -> dict:
    body: dict = {"molecules": molecules, "properties": properties}
    if model:
        body["model"] = model
    status, accepted = engine.request("POST", "/v1/jobs", body)
    assert status == 202, accepted
    final = engine.wait_job(accepted["job_id"])
    assert final["status"] == "completed", final
    status, results = engine.request("GET", f"/v1/jobs/{accepted['job_id']}/results")
    assert status == 200, results
    return results


def test_health(engine: EngineProcess) -> None:
    status, body = engine.request("GET", "/healthz")
    assert status == 200
    assert body["status"] == "ok"
    assert set(body["models"]) == {"baseline", "admet-ai"}


def test_models_list_properties_units_and_held_out_metrics(engine: EngineProcess) -> None:
    status, body = engine.request("GET", "/v1/models")
    assert status == 200
    assert body["unavailable"] == []
    models = {m["name"]: m for m in body["models"]}
    assert set(models) == {"baseline", "admet-ai"}
    baseline = {p["name"]: p for p in models["baseline"]["properties"]}
    assert set(baseline) == {"solubility", "logp"}
    sol = baseline["solubility"]
    assert sol["units"] == "mg/mL"
    assert sol["metrics"]["n"] == 257 and "held out" in sol["metrics"]["dataset"]
    assert 0.5 < sol["metrics"]["r2"] <= 1 and sol["metrics"]["mae"] > 0
    admet = {p["name"]: p for p in models["admet-ai"]["properties"]}
    assert {p["name"]: p["units"] for p in admet.values()} == {
        "solubility": "mg/mL", "logd": "–", "permeability": "cm/s", "clearance": "mL/min/kg", "half_life": "h",
        "bioavailability": "%"}
    for model in models.values():
        assert model["version"]
        for prop in model["properties"]:
            assert prop["metrics"]["n"] > 0
            assert prop["metrics"]["r2"] is not None or prop["metrics"]["auroc"] is not None
            assert 0 <= prop["reliability"] <= 1


def test_job_lifecycle_and_results_shape(engine: EngineProcess) -> None:
    status, accepted = engine.request("POST", "/v1/jobs", {
        "molecules": [{"id": "m1", "smiles": ASPIRIN}, {"id": "m2", "smiles": CAFFEINE},
                      {"id": "broken", "smiles": "C1CC(("}],
        "properties": ["solubility", "logp", "ic50", "not_a_property"]})
    assert status == 202
    job_id = accepted["job_id"]
    assert accepted["status"] in ("queued", "running", "completed")
    final = engine.wait_job(job_id)
    assert final == {"job_id": job_id, "status": "completed", "progress": {"done": 3, "total": 3}}
    status, body = engine.request("GET", f"/v1/jobs/{job_id}/results")
    assert status == 200
    assert body["unsupported"] == ["ic50", "not_a_property"]
    assert body["failed"] == [{"id": "broken", "reason": "invalid SMILES"}]
    assert {(r["id"], r["property"]) for r in body["results"]} == {
        ("m1", "solubility"), ("m1", "logp"), ("m2", "solubility"), ("m2", "logp")}
    for r in body["results"]:
        assert set(r) == RESULT_KEYS
        assert 0.0 <= r["confidence"] <= 1.0
        assert r["model"] == "baseline"  # best held-out R² for solubility; the only logp model
    by_key = {(r["id"], r["property"]): r for r in body["results"]}
    assert by_key[("m1", "logp")]["value"] == pytest.approx(1.31, abs=0.01)  # Crippen logP of aspirin
    # Aspirin dissolves at ~4.6 mg/mL (25 °C): a real model lands within an order of magnitude.
    assert 0.46 < by_key[("m1", "solubility")]["value"] < 46
    assert by_key[("m1", "solubility")]["units"] == "mg/mL"


def test_requested_model_limits_the_properties(engine: EngineProcess) -> None:
    body = run_job(engine, [{"id": "a", "smiles": ASPIRIN}], ["logd", "logp"], model="baseline")
    assert body["unsupported"] == ["logd"]
    assert [(r["property"], r["model"]) for r in body["results"]] == [("logp", "baseline")]


def test_admet_ai_predicts_drugs_in_domain_units(engine: EngineProcess) -> None:
    body = run_job(engine, [{"id": "aspirin", "smiles": ASPIRIN}, {"id": "caffeine", "smiles": CAFFEINE}],
                   ALL_PROPERTIES, model="admet-ai")
    assert body["unsupported"] == ["logp"]  # admet-ai's logP is Crippen's: the baseline serves it
    assert body["failed"] == []
    values = {(r["id"], r["property"]): r for r in body["results"]}
    assert len(values) == 2 * 6
    for r in body["results"]:
        assert r["model"] == "admet-ai" and r["model_version"] == "2.0.1"
        assert 0.0 <= r["confidence"] <= 1.0
    assert 0 < values[("aspirin", "permeability")]["value"] < 1
    assert 0 <= values[("caffeine", "bioavailability")]["value"] <= 100
    assert -3 < values[("caffeine", "logd")]["value"] < 3
    assert 0.46 < values[("aspirin", "solubility")]["value"] < 46
    assert 0 <= values[("caffeine", "clearance")]["value"] <= 20.7  # hepatic: never above liver blood flow


def test_confidence_falls_outside_the_training_domain(engine: EngineProcess) -> None:
    body = run_job(engine, [{"id": "pentane", "smiles": "CCCCC"}, {"id": "taxol", "smiles": PACLITAXEL}],
                   ["solubility"], model="baseline")
    conf = {r["id"]: r["confidence"] for r in body["results"]}
    assert conf["pentane"] > 0.5  # a training-set neighbour, trees agree
    assert conf["taxol"] < conf["pentane"] / 2  # nothing like it in the training set


@pytest.mark.parametrize(("body", "raw"), [
    (None, b"{not json"),
    ({"molecules": [], "properties": ["logp"]}, None),
    ({"molecules": [{"id": "a", "smiles": "C"}] * 1001, "properties": ["logp"]}, None),
    ({"molecules": [{"id": "a", "smiles": "C" * 1001}], "properties": ["logp"]}, None),
    ({"molecules": [{"id": "a"}], "properties": ["logp"]}, None),
    ({"molecules": [{"id": "a", "smiles": "C"}], "properties": []}, None),
    ({"molecules": [{"id": "a", "smiles": "C"}], "properties": ["logp"], "model": "oracle"}, None),
    (["not", "an", "object"], None),
])
def test_bad_requests_are_json_400s(engine: EngineProcess, body: object, raw: bytes | None) -> None:
    status, answer = engine.request("POST", "/v1/jobs", body, raw=raw)
    assert status == 400
    assert isinstance(answer["error"], str) and answer["error"]


def test_unknown_job_is_404(engine: EngineProcess) -> None:
    assert engine.request("GET", "/v1/jobs/" + "0" * 32)[0] == 404
    assert engine.request("GET", "/v1/jobs/" + "0" * 32 + "/results")[0] == 404


def test_results_of_a_running_job_are_409(engine: EngineProcess) -> None:
    engine.request("POST", "/v1/_faults", {"job_delay_seconds": 1.0})
    status, accepted = engine.request("POST", "/v1/jobs", {"molecules": [{"id": "a", "smiles": "CCO"}],
                                                           "properties": ["logp"]})
    assert status == 202
    status, body = engine.request("GET", f"/v1/jobs/{accepted['job_id']}/results")
    assert status == 409 and body["status"] in ("queued", "running")
    engine.request("DELETE", "/v1/_faults")
    assert engine.wait_job(accepted["job_id"])["status"] == "completed"


def test_fault_fail_next_answers_the_injected_status(engine: EngineProcess) -> None:
    status, state = engine.request("POST", "/v1/_faults", {"fail_next": 2, "status": 503})
    assert status == 200 and state["fail_next"] == 2
    job = {"molecules": [{"id": "a", "smiles": "CCO"}], "properties": ["logp"]}
    assert engine.request("POST", "/v1/jobs", job)[0] == 503
    assert engine.request("GET", "/v1/jobs/" + "0" * 32)[0] == 503
    assert engine.request("GET", "/healthz")[0] == 200  # health is never faulted
    assert engine.request("POST", "/v1/jobs", job)[0] == 202


def test_fault_hang_outlasts_a_client_timeout(engine: EngineProcess) -> None:
    engine.request("POST", "/v1/_faults", {"hang_next": 1, "hang_seconds": 3})
    with pytest.raises((TimeoutError, socket.timeout, urllib.error.URLError)):
        engine.request("GET", "/v1/jobs/" + "0" * 32, timeout=0.5)
    assert engine.request("GET", "/v1/jobs/" + "0" * 32)[0] == 404  # only the next request hung


def test_fault_failed_job_reports_its_error(engine: EngineProcess) -> None:
    engine.request("POST", "/v1/_faults", {"fail_jobs_next": 1})
    status, accepted = engine.request("POST", "/v1/jobs", {"molecules": [{"id": "a", "smiles": "CCO"}],
                                                           "properties": ["logp"]})
    assert status == 202
    final = engine.wait_job(accepted["job_id"])
    assert final["status"] == "failed" and "injected" in final["error"]


def test_fault_endpoint_rejects_unknown_fields(engine: EngineProcess) -> None:
    assert engine.request("POST", "/v1/_faults", {"explode": True})[0] == 400
