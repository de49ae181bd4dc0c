"""Batching, request validation and the engine's results document."""

from __future__ import annotations

import uuid

import pytest

from services.prediction.engine_client import EngineSettings, parse_results
from services.prediction.jobs import BATCH_SIZE, check_request, job_id_for_event, split
from services.runtime.errors import ValidationError


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
        check_request([], ["colour", "logp"], "m" * 101)
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


def test_engine_settings_from_env() -> None:
    settings = EngineSettings.from_env(
        {
            "AI_ENGINE_URL": "http://engine:9000/",
            "MOLBRIDGE_ENGINE_BREAKER_RESET_S": "2",
            "MOLBRIDGE_ENGINE_RETRIES": "1",
        }
    )
    assert (settings.url, settings.breaker_reset, settings.retries, settings.breaker_threshold) == (
        "http://engine:9000", 2.0, 1, 5,
    )  # fmt: skip
