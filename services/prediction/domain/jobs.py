"""Prediction jobs' rules: what a request may ask, how a job splits into batches, what a finished
batch stores and announces, and when a job is done. Pure Python: no SQL, no grpc, no HTTP.

A request (CreatePrediction, or a PredictionRequested event from a CSV import) becomes one job and
batches of BATCH_SIZE molecules, each a PredictionBatchRequested work item on QUEUE. Status counts
molecules: `completed` those predicted (batch done, not failed), `failed` those the engine could not
predict (bad structure); a job whose every molecule failed ends "failed".
"""

from __future__ import annotations

import enum
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from services.prediction.domain.score import (
    SCORE_MODEL,
    SCORE_PROPERTY,
    SCORE_VERSION,
    SourcedValue,
    is_component,
    score_after_prediction,
)
from services.runtime.db import canonical_uuid
from services.runtime.errors import ValidationError

QUEUE = "prediction_batches"  # the WORK stream's queue of PredictionBatchRequested items
BATCH_SIZE = 100
MAX_MOLECULES = 10_000
MAX_MODEL_LENGTH = 100
WRITER_ROLES = ("pharma_scientist",)
_PROPERTY_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_JOB_NAMESPACE = uuid.UUID("0b8f3a52-5d0c-4f3e-9a57-0c5f1f0e7a11")  # job ids of bus requests

T = TypeVar("T")


class Status(enum.StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(frozen=True)
class MoleculeInput:
    """A molecule as a batch keeps it: its structure for the engine and the numeric values it had
    when the job was requested (score components only), for its desirability score."""

    id: str
    smiles: str
    known: tuple[SourcedValue, ...] = ()


@dataclass(frozen=True)
class Prediction:
    molecule_id: str
    property: str
    value: float
    units: str
    confidence: float
    model_name: str
    model_version: str


@dataclass(frozen=True)
class BatchOutcome:
    """What the engine answered for one batch."""

    predictions: list[Prediction] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)  # properties no model predicts
    failed: dict[str, str] = field(default_factory=dict)  # molecule id → reason (e.g. bad structure)


@dataclass(frozen=True)
class JobStatus:
    job_id: str
    status: Status
    total: int
    completed: int
    failed: int


@dataclass(frozen=True)
class Job:
    """What a worker needs of a job to process its batches."""

    id: str
    organization_id: str
    requested_by: str
    properties: tuple[str, ...]
    model: str


@dataclass(frozen=True)
class NewJob(Job):
    """A job as a request creates it, with its molecules already split into batches."""

    reason: str  # "api", "import:<job id>", …
    batches: tuple[tuple[MoleculeInput, ...], ...]

    @property
    def total(self) -> int:
        return sum(len(b) for b in self.batches)

    @property
    def status(self) -> Status:
        return Status.QUEUED if self.batches else Status.COMPLETED

    def queued(self) -> JobStatus:
        return JobStatus(self.id, self.status, self.total, 0, 0)


@dataclass(frozen=True)
class Batch:
    job_id: str
    index: int
    molecules: tuple[MoleculeInput, ...]
    done: bool


@dataclass(frozen=True)
class SettledBatch:
    """A finished batch: what is stored, and the values PredictionCompleted announces (the
    predictions plus each predicted molecule's desirability score)."""

    predictions: list[Prediction]
    failures: dict[str, str]
    unsupported: list[str]
    announced: list[Prediction]

    def progress(self, size: int) -> tuple[int, int]:
        """(molecules completed, molecules failed) this batch adds to its job."""
        return size - len(self.failures), len(self.failures)


def split(items: Sequence[T], size: int = BATCH_SIZE) -> list[list[T]]:
    """Consecutive batches of at most `size` items, in order."""
    if size < 1:
        raise ValueError("size must be at least 1")
    return [list(items[start : start + size]) for start in range(0, len(items), size)]


def job_id_for_event(event_id: str) -> str:
    """The job a PredictionRequested event creates: the same id on every delivery (idempotent)."""
    return str(uuid.uuid5(_JOB_NAMESPACE, event_id))


def new_job(
    *,
    job_id: str,
    organization_id: str,
    requested_by: str,
    molecules: Sequence[MoleculeInput],
    properties: Sequence[str],
    model: str,
    reason: str,
) -> NewJob:
    return NewJob(
        id=job_id,
        organization_id=organization_id,
        requested_by=requested_by,
        properties=tuple(dict.fromkeys(properties)),
        model=model,
        reason=reason,
        batches=tuple(tuple(part) for part in split(molecules)),
    )


def check_request(molecule_ids: Sequence[str], properties: Sequence[str], model: str) -> tuple[list[str], list[str]]:
    """Validated, de-duplicated molecule ids (canonical form) and property names, in request order.
    Shape only: whether the engine predicts them is the model catalogue's question."""
    violations: list[tuple[str, str]] = []
    ids = list(dict.fromkeys(canonical_uuid(i) or i for i in molecule_ids))
    if not ids:
        violations.append(("molecule_ids", "at least one molecule id is required"))
    elif len(ids) > MAX_MOLECULES:
        violations.append(("molecule_ids", f"at most {MAX_MOLECULES:,} molecules per request"))
    wanted = list(dict.fromkeys(properties))
    if not wanted:
        violations.append(("properties", "at least one property is required"))
    for index, name in enumerate(wanted):
        if not _PROPERTY_NAME.match(name):
            violations.append((f"properties[{index}]", f"{name[:70]!r} is not a property name"))
    if len(model) > MAX_MODEL_LENGTH:
        violations.append(("model", f"at most {MAX_MODEL_LENGTH} characters"))
    if violations:
        raise ValidationError(f"Invalid {violations[0][0]}: {violations[0][1]}", field_violations=violations)
    return ids, wanted


def settle(job: Job, batch: Batch, outcome: BatchOutcome) -> SettledBatch:
    """Keep only what was asked, for molecules of this batch (an engine answering more is not
    trusted), and score every molecule that got a prediction."""
    requested = set(job.properties)
    in_batch = {m.id: m for m in batch.molecules}
    predictions = [p for p in outcome.predictions if p.molecule_id in in_batch and p.property in requested]
    failures = {k: v for k, v in outcome.failed.items() if k in in_batch}
    by_molecule: dict[str, list[Prediction]] = {}
    for p in predictions:
        by_molecule.setdefault(p.molecule_id, []).append(p)
    scores = [
        score
        for molecule_id, found in by_molecule.items()
        if (score := desirability_prediction(in_batch[molecule_id], found)) is not None
    ]
    return SettledBatch(predictions, failures, list(outcome.unsupported), predictions + scores)


def desirability_prediction(molecule: MoleculeInput, predictions: Sequence[Prediction]) -> Prediction | None:
    """The molecule's desirability score with these new predictions, as one more predicted value.
    Its confidence is that of the least confident new prediction it uses (1 when it uses none)."""
    score = score_after_prediction(molecule.known, {p.property: p.value for p in predictions})
    if score is None:
        return None
    used = [p.confidence for p in predictions if is_component(p.property)]
    return Prediction(molecule.id, SCORE_PROPERTY, score, "", min(used, default=1.0), SCORE_MODEL, SCORE_VERSION)


def final_status(*, batches_done: int, batch_count: int, failed: int, total: int) -> Status:
    """A job's status after one more batch finished."""
    if batches_done < batch_count:
        return Status.PROCESSING
    return Status.FAILED if failed == total else Status.COMPLETED
