"""The document service's subscriptions, run inside the server process (`python -m services.document`):

- its own work queue: SignatureSyncRequested items on the WORK stream's signature_sync queue →
  SignatureService.sync (read the DocuSign envelope; on completion store its document once);
- the CRO service's SubmissionTransitioned: a submission that reaches SUBMITTED shares its documents
  with its CRO (DocumentService.share_submitted, once per event).

DocuSign being unreachable is a reason to try again later (TransientError), never to give up early;
an item naming no DocuSign request is poison. Handlers only translate between the bus and the use
case: no SQL here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from molbridge.events.v1.cro_pb2 import SubmissionTransitioned
from molbridge.events.v1.document_pb2 import SignatureSyncRequested
from molbridge.events.v1.envelope_pb2 import EventEnvelope

from services.document.service.documents import DocumentService
from services.document.service.signatures import SYNC_QUEUE, SignatureService
from services.runtime.errors import IntegrationError, ValidationError
from services.runtime.process import PoisonError, Subscription, TransientError, WorkQueue

SYNC_DURABLE = "document-signature-sync"
SHARING_DURABLE = "document-submission-sharing"
SUBMISSIONS_SOURCE = "cro"  # the CRO service's event source on the bus
SHARED_AT = "SUBMITTED"  # the submission status at which its documents are shared with the CRO
MAX_DELIVER = 50
BACKOFF_S = (1.0, 5.0, 30.0, 120.0, 600.0)


@dataclass(frozen=True)
class SyncHandler:
    signatures: SignatureService

    async def __call__(self, item: SignatureSyncRequested, envelope: EventEnvelope) -> None:
        try:
            known = await self.signatures.sync(item.request_id)
        except IntegrationError as error:
            raise TransientError(f"DocuSign sync of {item.request_id}: {error.message}") from error
        if not known:
            raise PoisonError(f"SignatureSyncRequested {envelope.id} names no DocuSign request ({item.request_id})")


@dataclass(frozen=True)
class SharingHandler:
    documents: DocumentService

    async def __call__(self, event: SubmissionTransitioned, envelope: EventEnvelope) -> None:
        if event.to_status != SHARED_AT:
            return
        try:
            await self.documents.share_submitted(
                event.submission_id,
                event.organization_id,
                event.cro_organization_id,
                event_id=envelope.id,
                consumer=SHARING_DURABLE,
                submitted_by=envelope.actor_id,
            )
        except ValidationError as error:
            raise PoisonError(f"SubmissionTransitioned {envelope.id}: {error.message}") from error


def subscriptions(signatures: SignatureService, documents: DocumentService) -> list[Subscription[Any]]:
    return [
        Subscription(
            SubmissionTransitioned,
            durable=SHARING_DURABLE,
            handler=SharingHandler(documents),
            source=SUBMISSIONS_SOURCE,
        ),
        Subscription(
            WorkQueue(SYNC_QUEUE, SignatureSyncRequested),
            durable=SYNC_DURABLE,
            handler=SyncHandler(signatures),
            max_deliver=MAX_DELIVER,
            backoff=BACKOFF_S,
            batch=1,
            ack_wait=60.0,
        )
    ]
