"""Processing one batch: send its molecules to the engine, then store the outcome in one transaction
that starts by claiming the batch (`done_at`): results, failures, the job's counters and status, and
a PredictionCompleted event carrying the predictions and each predicted molecule's desirability
score. A redelivered batch finds it claimed and changes nothing, so every prediction is stored and
announced exactly once.

The engine being down is the caller's business (CircuitOpen and EngineUnavailable propagate: the
worker retries the batch later). A 4xx from the engine (the request itself is wrong) fails the
batch's molecules with the reason instead.
"""

from __future__ import annotations

import logging

from molbridge.events.v1.prediction_pb2 import PredictedValue, PredictionCompleted, PredictionJobFinished

from services.prediction.domain.jobs import BatchOutcome, Prediction, SettledBatch, Status, final_status, settle
from services.prediction.service.ports import EngineRejected, PredictionEngine
from services.prediction.store import PredictionUnitOfWork
from services.runtime.audit import audit_event
from services.runtime.uow import Transactions

log = logging.getLogger("molbridge.prediction.batches")


class UnknownBatch(Exception):
    """A work item names a job or batch that does not exist: it can never be processed."""


class BatchProcessor:
    def __init__(self, uow: Transactions[PredictionUnitOfWork], engine: PredictionEngine) -> None:
        self._uow = uow
        self._engine = engine

    async def process(self, job_id: str, batch_index: int) -> None:
        async with self._uow() as uow:
            job = await uow.jobs.for_worker(job_id)
            batch = await uow.batches.get(job_id, batch_index)
        if job is None or batch is None:
            raise UnknownBatch(f"batch {batch_index} of unknown job {job_id}")
        if batch.done:
            return
        try:
            outcome = await self._engine.predict(batch.molecules, job.properties, job.model)
        except EngineRejected as error:
            outcome = BatchOutcome(failed={m.id: str(error) for m in batch.molecules})
        settled = settle(job, batch, outcome)
        async with self._uow() as uow:
            if not await uow.batches.claim(
                job.id, batch_index, failures=settled.failures, unsupported=settled.unsupported
            ):
                return  # another delivery of this batch committed first
            await uow.results.add(job, settled.predictions)
            completed, failed = settled.progress(len(batch.molecules))
            progress = await uow.jobs.count_batch(job.id, completed=completed, failed=failed)
            status = final_status(
                batches_done=progress.batches_done,
                batch_count=progress.batch_count,
                failed=progress.failed,
                total=progress.total,
            )
            await uow.jobs.set_status(job.id, status)
            if status is not Status.PROCESSING:  # the job's last batch: it ended (told once, by this claim)
                counts = {"total": progress.total, "completed": progress.total - progress.failed,
                          "failed": progress.failed}
                uow.record(
                    audit_event(
                        f"prediction.{status.value}", target_type="prediction_job", target_id=job.id,
                        success=status is Status.COMPLETED, details={k: str(v) for k, v in counts.items()},
                    ),
                    organization_id=job.organization_id,
                    actor_id=job.requested_by,  # the worker acts for whoever asked
                )
                uow.record(
                    PredictionJobFinished(
                        organization_id=job.organization_id,
                        job_id=job.id,
                        status=status.name,
                        requested_by=job.requested_by,
                        **counts,
                        properties=list(job.properties),
                    ),
                    organization_id=job.organization_id,
                    actor_id=job.requested_by,
                )
            if settled.announced:
                uow.record(
                    completed_event(job.organization_id, job.id, batch_index, settled),
                    organization_id=job.organization_id,
                    actor_id=job.requested_by,
                )
        log.info(
            "job %s batch %d: %d predictions, %d molecules failed, unsupported %s",
            job.id, batch_index, len(settled.predictions), failed, settled.unsupported,
        )  # fmt: skip


def completed_event(organization_id: str, job_id: str, batch_index: int, settled: SettledBatch) -> PredictionCompleted:
    return PredictionCompleted(
        organization_id=organization_id,
        job_id=job_id,
        batch_index=batch_index,
        values=[_value(p) for p in settled.announced],
    )


def _value(p: Prediction) -> PredictedValue:
    return PredictedValue(
        molecule_id=p.molecule_id,
        property=p.property,
        value=p.value,
        units=p.units,
        confidence=p.confidence,
        model_name=p.model_name,
        model_version=p.model_version,
    )
