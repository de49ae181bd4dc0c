"""The CRO service's subscriptions.

The worker (`python -m services.cro.worker`, any number run): SubmissionPackageRequested items on the
WORK stream's submission_packages queue (one durable consumer shared by all workers; enqueued by
SUBMIT) → PackageBuilder.build: the immutable package written to object storage, recorded, and the
submission's system step SUBMITTED → PENDING_REVIEW. Idempotent per submission. ResultProcessingRequested
items on the result_processing queue → ResultProcessor.process: a results CSV validated into its version
(COMPLETED or FAILED), idempotent on the version's status. Object storage or the
database being away is a reason to try again later (any error naks with backoff), never to give up
early; an item naming no submission is poison.

The server (`python -m services.cro`): the document service's DocumentStatusChanged → an NDA of a
submission that became EXPIRED or ARCHIVED hides its structures from the CRO again (NdaWatcher).

Handlers only translate between the bus and the use cases: no SQL here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from molbridge.events.v1.cro_pb2 import ResultProcessingRequested, SubmissionPackageRequested
from molbridge.events.v1.document_pb2 import DocumentStatusChanged
from molbridge.events.v1.envelope_pb2 import EventEnvelope

from services.cro.service.packages import PackageBuilder
from services.cro.service.result_processing import ResultProcessor
from services.cro.service.results import RESULT_QUEUE
from services.cro.service.structures import NDA_STATUS_DURABLE, NdaWatcher
from services.cro.service.submissions import PACKAGE_QUEUE
from services.runtime.process import PoisonError, Subscription, WorkQueue

PACKAGE_DURABLE = "cro-submission-packages"
RESULT_DURABLE = "cro-result-processing"
MAX_DELIVER = 50
BACKOFF_S = (1.0, 5.0, 30.0, 120.0, 600.0)
DOCUMENTS_SOURCE = "document"  # the document service's event source on the bus


@dataclass(frozen=True)
class PackageHandler:
    packages: PackageBuilder

    async def __call__(self, item: SubmissionPackageRequested, envelope: EventEnvelope) -> None:
        if not await self.packages.build(item):
            raise PoisonError(f"SubmissionPackageRequested {envelope.id} names no submission ({item.submission_id})")


def package_subscriptions(packages: PackageBuilder) -> list[Subscription[Any]]:
    """The worker's: one durable shared by every worker (the queue scales out)."""
    return [
        Subscription(
            WorkQueue(PACKAGE_QUEUE, SubmissionPackageRequested),
            durable=PACKAGE_DURABLE,
            handler=PackageHandler(packages),
            max_deliver=MAX_DELIVER,
            backoff=BACKOFF_S,
            batch=1,
            ack_wait=60.0,
        )
    ]


@dataclass(frozen=True)
class ResultHandler:
    results: ResultProcessor

    async def __call__(self, item: ResultProcessingRequested, envelope: EventEnvelope) -> None:
        if not await self.results.process(item):
            raise PoisonError(f"ResultProcessingRequested {envelope.id} names no result ({item.result_id})")


def result_subscriptions(results: ResultProcessor) -> list[Subscription[Any]]:
    """The worker's: one durable shared by every worker; a big file takes minutes (ack_wait per item)."""
    return [
        Subscription(
            WorkQueue(RESULT_QUEUE, ResultProcessingRequested),
            durable=RESULT_DURABLE,
            handler=ResultHandler(results),
            max_deliver=MAX_DELIVER,
            backoff=BACKOFF_S,
            batch=1,
            ack_wait=300.0,
        )
    ]


def document_subscriptions(ndas: NdaWatcher) -> list[Subscription[Any]]:
    """The server's: NDAs that ended."""
    return [
        Subscription(
            DocumentStatusChanged,
            durable=NDA_STATUS_DURABLE,
            handler=ndas.on_document_status,
            source=DOCUMENTS_SOURCE,
        )
    ]


if __name__ == "__main__":  # importing this module must not start a worker
    from services.cro.bootstrap import MIGRATIONS, CroSettings, build_worker
    from services.runtime.process import run_process

    run_process("cro-worker", build_worker, settings=CroSettings, migrations=MIGRATIONS)
