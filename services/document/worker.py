"""The document service's subscription to its own work queue, run inside the server process
(`python -m services.document`): SignatureSyncRequested items on the WORK stream's signature_sync
queue → SignatureService.sync (read the DocuSign envelope; on completion store its document once).

DocuSign being unreachable is a reason to try again later (TransientError), never to give up early;
an item naming no DocuSign request is poison. Handlers only translate between the bus and the use
case: no SQL here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from molbridge.events.v1.document_pb2 import SignatureSyncRequested
from molbridge.events.v1.envelope_pb2 import EventEnvelope

from services.document.service.signatures import SYNC_QUEUE, SignatureService
from services.runtime.errors import IntegrationError
from services.runtime.process import PoisonError, Subscription, TransientError, WorkQueue

SYNC_DURABLE = "document-signature-sync"
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


def subscriptions(signatures: SignatureService) -> list[Subscription[Any]]:
    return [
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
