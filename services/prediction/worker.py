"""The prediction worker: `python -m services.prediction.worker`. Any number run.

Each takes PredictionBatchRequested items from the WORK stream's prediction_batches queue (one
durable consumer shared by all workers), sends the batch's molecules to the AI engine, waits for the
engine's job, and stores the outcome in one transaction that starts by claiming the batch
(`done_at`): results, failures, the job's counters and status, and a PredictionCompleted event. A
redelivered batch finds it claimed and changes nothing, so every prediction is stored exactly once.

The engine being down is never a reason to give up: while the breaker is open the batch is nakked
with the breaker's own wait (TransientError(delay=…)), after failed attempts with the consumer's
backoff, and max deliveries is effectively unbounded. A 4xx from the engine (the request itself is
wrong) fails the batch's molecules with the reason instead.

It also consumes PredictionRequested events (CSV imports with `predict`) and turns each into a job
whose id derives from the event id, so a redelivered event creates nothing new.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from molbridge.events.v1.envelope_pb2 import EventEnvelope
from molbridge.events.v1.molecule_pb2 import PredictionRequested
from molbridge.events.v1.prediction_pb2 import PredictedValue, PredictionBatchRequested, PredictionCompleted
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from bus.connection import connect
from bus.consumer import Consumer, PoisonError, TransientError
from bus.envelope import unpack
from bus.outbox import add_event
from bus.relay import OutboxRelay
from bus.streams import EVENTS_STREAM, WORK_STREAM, ensure_streams
from bus.subjects import event_subject, work_subject
from services.prediction.engine_client import (
    BatchOutcome,
    CircuitOpen,
    EngineClient,
    EngineRejected,
    EngineSettings,
    EngineUnavailable,
)
from services.prediction.jobs import (
    COMPLETED,
    EVENT_SOURCE,
    FAILED,
    PROCESSING,
    QUEUE,
    check_request,
    enqueue,
    job_id_for_event,
)
from services.prediction.store import SCHEMA, batches, jobs, results
from services.runtime import migrations, telemetry
from services.runtime.db import UnitOfWork, make_engine
from services.runtime.errors import ValidationError
from services.runtime.logs import configure_logging
from services.runtime.settings import Settings

log = logging.getLogger("molbridge.prediction.worker")

MIGRATIONS = Path(__file__).parent / "migrations"
BATCH_DURABLE = "prediction-batches"
REQUEST_DURABLE = "prediction-requests"
IN_FLIGHT = 2  # batches per worker (engine jobs run concurrently inside the engine)
MAX_DELIVER = 1_000_000  # a batch waits for the engine as long as it takes: never terminated for that
BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)
ACK_WAIT_S = 30.0  # the consumer keeps long engine jobs alive with in_progress()


class BatchWorker:
    def __init__(self, uow: UnitOfWork, engine: EngineClient) -> None:
        self._uow = uow
        self._engine = engine
        self.subject = work_subject(QUEUE)

    async def handle(self, envelope: EventEnvelope, msg: Msg) -> None:
        try:
            request = unpack(envelope, PredictionBatchRequested)
        except TypeError as error:
            raise PoisonError(str(error)) from error
        await self.process(request.job_id, request.batch_index)

    async def process(self, job_id: str, batch_index: int) -> None:
        async with self._uow() as session:
            job = (await session.execute(sa.select(jobs).where(jobs.c.id == job_id))).first()
            batch = (
                await session.execute(
                    sa.select(batches).where(batches.c.job_id == job_id, batches.c.batch_index == batch_index)
                )
            ).first()
        if job is None or batch is None:
            raise PoisonError(f"batch {batch_index} of unknown job {job_id}")
        if batch.done_at is not None:
            return
        molecules = [(str(m[0]), str(m[1])) for m in batch.molecules]
        try:
            outcome = await self._engine.predict(molecules, job.properties, job.model)
        except CircuitOpen as error:
            raise TransientError(str(error), delay=max(1.0, error.retry_after)) from error
        except EngineUnavailable as error:
            raise TransientError(str(error)) from error
        except EngineRejected as error:
            outcome = BatchOutcome(failed={molecule_id: str(error) for molecule_id, _ in molecules})
        await self._save(job, batch_index, molecules, outcome)

    async def _save(self, job: Any, batch_index: int, molecules: list[tuple[str, str]], outcome: BatchOutcome) -> None:
        requested = set(job.properties)
        in_batch = {molecule_id for molecule_id, _ in molecules}
        # Only what was asked, for molecules of this batch (an engine answering more is not trusted).
        predictions = [p for p in outcome.predictions if p.molecule_id in in_batch and p.property in requested]
        failures = {k: v for k, v in outcome.failed.items() if k in in_batch}
        failed = len(failures)
        async with self._uow() as session:
            claimed = await session.scalar(
                batches.update()
                .where(
                    batches.c.job_id == job.id,
                    batches.c.batch_index == batch_index,
                    batches.c.done_at.is_(None),
                )
                .values(done_at=sa.func.now(), failures=failures, unsupported=list(outcome.unsupported))
                .returning(batches.c.batch_index)
            )
            if claimed is None:
                return  # another delivery of this batch committed first
            if predictions:
                await session.execute(
                    insert(results).on_conflict_do_nothing(),
                    [
                        {
                            "job_id": job.id,
                            "molecule_id": p.molecule_id,
                            "property": p.property,
                            "organization_id": job.organization_id,
                            "value": p.value,
                            "units": p.units,
                            "confidence": p.confidence,
                            "model_name": p.model_name,
                            "model_version": p.model_version,
                        }
                        for p in predictions
                    ],
                )
            progress = (
                await session.execute(
                    jobs.update()
                    .where(jobs.c.id == job.id)
                    .values(
                        completed=jobs.c.completed + len(molecules) - failed,
                        failed=jobs.c.failed + failed,
                        batches_done=jobs.c.batches_done + 1,
                        status=PROCESSING,
                        updated_at=sa.func.now(),
                    )
                    .returning(jobs.c.batches_done, jobs.c.batch_count, jobs.c.failed, jobs.c.total)
                )
            ).one()
            if progress.batches_done == progress.batch_count:
                final = FAILED if progress.failed == progress.total else COMPLETED
                await session.execute(jobs.update().where(jobs.c.id == job.id).values(status=final))
            if predictions:
                await add_event(
                    session,
                    source=EVENT_SOURCE,
                    payload=PredictionCompleted(
                        organization_id=str(job.organization_id),
                        job_id=str(job.id),
                        batch_index=batch_index,
                        values=[
                            PredictedValue(
                                molecule_id=p.molecule_id,
                                property=p.property,
                                value=p.value,
                                units=p.units,
                                confidence=p.confidence,
                                model_name=p.model_name,
                                model_version=p.model_version,
                            )
                            for p in predictions
                        ],
                    ),
                    organization_id=str(job.organization_id),
                    actor_id=job.requested_by,
                    schema=SCHEMA,
                )
        log.info(
            "job %s batch %d: %d predictions, %d molecules failed, unsupported %s",
            job.id,
            batch_index,
            len(predictions),
            failed,
            outcome.unsupported,
        )


class RequestConsumer:
    """PredictionRequested (from the molecule service's imports) → a job, once per event."""

    def __init__(self, uow: UnitOfWork) -> None:
        self._uow = uow

    async def handle(self, envelope: EventEnvelope, msg: Msg) -> None:
        try:
            request = unpack(envelope, PredictionRequested)
        except TypeError as error:
            raise PoisonError(str(error)) from error
        structures = [(m.molecule_id, m.smiles) for m in request.molecules]
        try:
            check_request([m for m, _ in structures], list(request.properties), "")
        except ValidationError as error:
            raise PoisonError(f"unusable PredictionRequested {envelope.id}: {error.message}") from error
        async with self._uow() as session:
            await enqueue(
                session,
                job_id=job_id_for_event(envelope.id),
                organization_id=request.organization_id,
                requested_by=request.requested_by,
                structures=structures,
                properties=list(dict.fromkeys(request.properties)),
                model="",
                reason=request.reason,
            )


def runners(js: JetStreamContext, engine: AsyncEngine, client: EngineClient) -> list[Consumer | OutboxRelay]:
    """Everything a worker process runs: batch consumers, the request consumer, the outbox relay."""
    uow = UnitOfWork(engine)
    worker = BatchWorker(uow, client)
    requests = RequestConsumer(uow)
    batch_consumers = [
        Consumer(
            js,
            WORK_STREAM,
            BATCH_DURABLE,
            worker.subject,
            worker.handle,
            max_deliver=MAX_DELIVER,
            backoff=BACKOFF_S,
            batch=1,
            ack_wait=ACK_WAIT_S,
        )
        for _ in range(IN_FLIGHT)
    ]
    request_consumer = Consumer(
        js, EVENTS_STREAM, REQUEST_DURABLE, event_subject("molecule", PredictionRequested), requests.handle
    )
    return [*batch_consumers, request_consumer, OutboxRelay(engine, SCHEMA, js)]


async def run(settings: Settings, stopping: asyncio.Event) -> None:
    """Consume batches and requests (and publish the schema's outbox) until `stopping` is set."""
    engine = make_engine(settings.database_url, SCHEMA, pool_size=IN_FLIGHT + 3)
    telemetry.instrument_engine(engine)
    client = EngineClient(EngineSettings.from_env(settings.env))
    nats = await connect(settings.nats_url, name="prediction-worker")
    try:
        js = nats.jetstream()
        await ensure_streams(js)
        parts = runners(js, engine, client)
        tasks = [asyncio.create_task(part.run()) for part in parts]
        log.info("prediction worker: engine %s, queue %s", client.settings.url, work_subject(QUEUE))
        await stopping.wait()
        for part in parts:
            part.stop()
        await asyncio.gather(*tasks)
    finally:
        await nats.close()
        await client.close()
        await engine.dispose()


def main() -> None:
    settings = Settings.from_env("prediction")
    configure_logging("prediction-worker", settings.log_level)
    telemetry.configure_tracing("prediction-worker", settings.data_dir, settings.otlp_endpoint)
    migrations.upgrade(settings.database_url, SCHEMA, MIGRATIONS)

    async def serve() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
        await run(settings, stopping)

    try:
        asyncio.run(serve())
    finally:
        telemetry.shutdown_tracing()


if __name__ == "__main__":
    main()
