"""Batching, request validation against the shape and the engine's catalogue, settling a batch (with
the desirability score it announces), and the engine's documents."""

from __future__ import annotations

import uuid

import pytest

from services.prediction.bootstrap import PredictionSettings
from services.prediction.domain.catalogue import Catalogue
from services.prediction.domain.jobs import (
    BATCH_SIZE,
    Batch,
    BatchOutcome,
    Job,
    MoleculeInput,
    Prediction,
    Status,
    check_request,
    final_status,
    job_id_for_event,
    settle,
    split,
)
from services.prediction.domain.score import SCORE_MODEL, SCORE_PROPERTY, SourcedValue, desirability
from services.prediction.engine_client import EngineSettings, parse_catalogue, parse_results
from services.runtime.errors import ValidationError
from services.runtime.settings import SettingsError


def test_split_into_ordered_batches_of_at_most_the_size() -> None:
    items = list(range(230))
    parts = split(items)
    assert [len(p) for p in parts] == [BATCH_SIZE, BATCH_SIZE, 30] and sum(parts, []) == items
    assert split([]) == [] and split([1], 100) == [[1]]
    with pytest.raises(ValueError):
        split(items, 0)


def test_check_request_dedupes_and_names_each_problem() -> None:
    a = str(uuid.uuid4())
    ids, wanted = check_request([a, a.upper(), "x"], ["logp", "solubility", "logp"], "")
    assert ids == [a, "x"] and wanted == ["logp", "solubility"]
    with pytest.raises(ValidationError) as error:
        check_request([], ["Colour!", "logp"], "m" * 101)
    assert [f for f, _ in error.value.field_violations] == ["molecule_ids", "properties[0]", "model"]
    with pytest.raises(ValidationError):
        check_request([str(uuid.uuid4()) for _ in range(10_001)], ["logp"], "")


def test_event_jobs_have_stable_ids() -> None:
    assert job_id_for_event("e1") == job_id_for_event("e1") != job_id_for_event("e2")


def test_results_document_is_parsed_defensively() -> None:
    outcome = parse_results(
        {
            "results": [
                {"id": "m1", "property": "logp", "value": 1.5, "units": "–", "confidence": 1.7, "model": "baseline",
                 "model_version": "1"},
                {"id": "m2", "property": "logp", "value": None},
            ],
            "unsupported": ["ic50"],
            "failed": [{"id": "m3", "reason": "invalid SMILES"}],
        }
    )  # fmt: skip
    [p] = outcome.predictions
    assert (p.units, p.confidence, p.model_name) == ("", 1.0, "baseline")
    assert outcome.unsupported == ["ic50"] and set(outcome.failed) == {"m2", "m3"}


def test_engine_settings_are_typed_and_checked_at_start() -> None:
    settings = PredictionSettings.from_env(
        "prediction",
        {
            "AI_ENGINE_URL": "http://engine:9000/",
            "MOLBRIDGE_ENGINE_BREAKER_RESET_S": "2",
            "MOLBRIDGE_ENGINE_RETRIES": "1",
        },
    ).engine()
    assert (settings.url, settings.breaker_reset, settings.retries, settings.breaker_threshold) == (
        "http://engine:9000", 2.0, 1, 5,
    )  # fmt: skip
    assert PredictionSettings.from_env("prediction", {}).engine() == EngineSettings()
    for variable, bad in (("MOLBRIDGE_ENGINE_RETRIES", "many"), ("MOLBRIDGE_ENGINE_TIMEOUT_S", "0"),
                          ("AI_ENGINE_URL", "engine:9000")):  # fmt: skip
        with pytest.raises(SettingsError) as error:
            PredictionSettings.from_env("prediction", {variable: bad})
        assert variable in str(error.value)


CATALOGUE = parse_catalogue(
    {
        "models": [
            {"name": "baseline", "version": "1.0.0", "properties": [{"name": "solubility", "units": "mg/mL"},
                                                                     {"name": "logp", "units": "–"}]},
            {"name": "admet-ai", "version": "2.0.1", "properties": [{"name": "logd"}, {"name": "solubility"}]},
            {"version": "no name: skipped"},
        ],
        "unavailable": [],
    }
)  # fmt: skip


def test_catalogue_lists_models_and_what_each_predicts() -> None:
    assert CATALOGUE.model_names() == ["admet-ai", "baseline"]
    assert CATALOGUE.properties_of() == ["logd", "logp", "solubility"]
    assert CATALOGUE.properties_of("baseline") == ["logp", "solubility"]
    assert CATALOGUE.knows(["logp"], "") and not CATALOGUE.knows(["logd"], "baseline")
    CATALOGUE.check(["logp", "logd"], "")  # the engine picks a model per property


def test_an_unknown_model_is_refused_naming_the_field_and_the_accepted_models() -> None:
    with pytest.raises(ValidationError) as error:
        CATALOGUE.check(["logp"], "gpt-chem")
    assert error.value.field_violations == [("model", "unknown model 'gpt-chem'; one of: admet-ai, baseline")]
    assert error.value.message.startswith("Invalid model: unknown model 'gpt-chem'")


def test_an_unknown_property_is_refused_listing_what_the_chosen_model_predicts() -> None:
    with pytest.raises(ValidationError) as error:
        CATALOGUE.check(["logp", "colour", "logd"], "baseline")
    assert [field for field, _ in error.value.field_violations] == ["properties[1]", "properties[2]"]
    assert "one of: logp, solubility" in error.value.field_violations[0][1]
    with pytest.raises(ValidationError) as anywhere:
        CATALOGUE.check(["ic50"], "")
    assert anywhere.value.field_violations == [
        ("properties[0]", "'ic50' is not predicted by any model of the engine; one of: logd, logp, solubility")
    ]
    with pytest.raises(ValidationError):
        Catalogue(()).check(["logp"], "")  # an engine with nothing loaded accepts nothing


def prediction(molecule_id: str, name: str, value: float, confidence: float = 0.8) -> Prediction:
    return Prediction(molecule_id, name, value, "", confidence, "baseline", "1.0.0")


def test_settling_keeps_what_was_asked_and_announces_a_score_per_predicted_molecule() -> None:
    job = Job("j", "org", "alice", ("logp", "solubility"), "")
    known = (
        SourcedValue("molecular_weight", "CALCULATED", 300.0),
        SourcedValue("logp", "CALCULATED", 4.0),
        SourcedValue("logp", "PREDICTED", 6.0),  # an older prediction: replaced by the new one
        SourcedValue("tpsa", "EXPERIMENTAL", 60.0),
        SourcedValue("tpsa", "CALCULATED", 200.0),  # experimental wins
    )
    batch = Batch("j", 0, (MoleculeInput("m1", "CCO", known), MoleculeInput("m2", "C1CC(")), False)
    outcome = BatchOutcome(
        predictions=[
            prediction("m1", "logp", 2.0, 0.9),
            prediction("m1", "solubility", 1.0, 0.6),
            prediction("m1", "ic50", 5.0),  # not asked
            prediction("stranger", "logp", 1.0),  # not in the batch
        ],
        unsupported=["ic50"],
        failed={"m2": "invalid SMILES", "stranger": "x"},
    )
    settled = settle(job, batch, outcome)
    assert [(p.molecule_id, p.property) for p in settled.predictions] == [("m1", "logp"), ("m1", "solubility")]
    assert settled.failures == {"m2": "invalid SMILES"} and settled.unsupported == ["ic50"]
    assert settled.progress(2) == (1, 1)
    [score] = [p for p in settled.announced if p.property == SCORE_PROPERTY]
    expected = desirability({"molecular_weight": 300.0, "logp": 2.0, "tpsa": 60.0, "solubility": 1.0})
    assert (score.molecule_id, score.value, score.model_name) == ("m1", expected, SCORE_MODEL)
    assert score.confidence == 0.6  # the least confident prediction it used
    assert settled.announced[:2] == settled.predictions


def test_a_molecule_without_predictions_gets_no_score_and_bus_molecules_score_from_predictions() -> None:
    job = Job("j", "org", "alice", ("logp",), "")
    batch = Batch("j", 0, (MoleculeInput("m1", "CCO"), MoleculeInput("m2", "CCN")), False)
    settled = settle(job, batch, BatchOutcome(predictions=[prediction("m1", "logp", 4.0)]))
    assert [(p.molecule_id, p.property, p.value) for p in settled.announced] == [
        ("m1", "logp", 4.0),
        ("m1", SCORE_PROPERTY, 0.5),
    ]


def test_a_job_ends_when_its_last_batch_does() -> None:
    assert final_status(batches_done=1, batch_count=3, failed=0, total=300) is Status.PROCESSING
    assert final_status(batches_done=3, batch_count=3, failed=10, total=300) is Status.COMPLETED
    assert final_status(batches_done=3, batch_count=3, failed=300, total=300) is Status.FAILED
