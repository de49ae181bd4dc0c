"""The prediction worker's subscriptions: `python -m services.prediction.worker`. Any number run.

- PredictionBatchRequested items on the WORK stream's prediction_batches queue (one durable consumer
  shared by all workers) → BatchProcessor.process: the batch to the engine and its outcome stored.
- PredictionRequested events (CSV imports with `predict`) → a job whose id derives from the event
  id, so a redelivered event creates nothing new.

The engine being down is never a reason to give up: while the breaker is open the batch is nakked
with the breaker's own wait (TransientError(delay=…)), after failed attempts with the consumer's
backoff, and max deliveries is effectively unbounded. The runtime unpacks payloads (a wrong type is
poison), acks and naks; handlers only translate between the bus and the use cases: no SQL here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from molbridge.events.v1.envelope_pb2 import EventEnvelope
from molbridge.events.v1.molecule_pb2 import PredictionRequested
from molbridge.events.v1.prediction_pb2 import PredictionBatchRequested

from services.prediction.domain.breaker import CircuitOpen
from services.prediction.domain.jobs import QUEUE
from services.prediction.service.batches import BatchProcessor, UnknownBatch
from services.prediction.service.ports import EngineUnavailable
from services.prediction.service.predictions import RequestedPredictions
from services.runtime.errors import ValidationError
from services.runtime.molecule_client import MoleculeRecord, NumericValue, source_name
from services.runtime.process import PoisonError, Subscription, TransientError, WorkQueue

BATCH_DURABLE = "prediction-batches"
REQUEST_DURABLE = "prediction-requests"
IN_FLIGHT = 2  # batches per worker (engine jobs run concurrently inside the engine)
MAX_DELIVER = 1_000_000  # a batch waits for the engine as long as it takes: never terminated for that
BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)
ACK_WAIT_S = 30.0  # the consumer keeps long engine jobs alive with in_progress()


@dataclass(frozen=True)
class BatchHandler:
    processor: BatchProcessor

    async def __call__(self, item: PredictionBatchRequested, envelope: EventEnvelope) -> None:
        try:
            await self.processor.process(item.job_id, item.batch_index)
        except UnknownBatch as error:
            raise PoisonError(str(error)) from error
        except CircuitOpen as error:
            raise TransientError(str(error), delay=max(1.0, error.retry_after)) from error
        except EngineUnavailable as error:
            raise TransientError(str(error)) from error


@dataclass(frozen=True)
class RequestHandler:
    requests: RequestedPredictions

    async def __call__(self, request: PredictionRequested, envelope: EventEnvelope) -> None:
        molecules = [
            MoleculeRecord(
                m.molecule_id, m.smiles, tuple(NumericValue(v.name, source_name(v.source), v.value) for v in m.values)
            )
            for m in request.molecules
        ]
        try:
            await self.requests.create(
                envelope.id,
                organization_id=request.organization_id,
                requested_by=request.requested_by,
                molecules=molecules,
                properties=list(request.properties),
                reason=request.reason,
            )
        except ValidationError as error:
            raise PoisonError(f"unusable PredictionRequested {envelope.id}: {error.message}") from error


def subscriptions(batches: BatchProcessor, requests: RequestedPredictions) -> list[Subscription[Any]]:
    """IN_FLIGHT batch consumers sharing one durable (so any number of workers share the queue), and
    the import requests."""
    return [
        Subscription(
            WorkQueue(QUEUE, PredictionBatchRequested),
            durable=BATCH_DURABLE,
            handler=BatchHandler(batches),
            concurrency=IN_FLIGHT,
            max_deliver=MAX_DELIVER,
            backoff=BACKOFF_S,
            batch=1,
            ack_wait=ACK_WAIT_S,
        ),
        Subscription(PredictionRequested, durable=REQUEST_DURABLE, handler=RequestHandler(requests), source="molecule"),
    ]


if __name__ == "__main__":  # importing this module must not start a worker
    from services.prediction.bootstrap import MIGRATIONS, PredictionSettings, build_worker
    from services.runtime.process import run_process

    run_process("prediction-worker", build_worker, settings=PredictionSettings, migrations=MIGRATIONS)
