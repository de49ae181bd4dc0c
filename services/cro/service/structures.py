"""Structures are shown to the CRO only while the submission's NDA is signed and not expired: when the
document service says an NDA of a submission became EXPIRED or ARCHIVED (DocumentStatusChanged), the
submission's structures are hidden again and that is recorded (AuditRecorded
"submission.structures_hidden", by the system). Once per event: the processed marker commits with the
change. The pharma side may reveal them again once a valid NDA is signed (SetStructuresRevealed checks).
"""

from __future__ import annotations

from datetime import UTC, datetime

from molbridge.events.v1.document_pb2 import DocumentStatusChanged
from molbridge.events.v1.envelope_pb2 import EventEnvelope

from services.cro.domain.vocabulary import SYSTEM_ACTOR
from services.cro.service.submissions import NDA
from services.cro.store.uow import CroTransactions
from services.runtime.audit import audit_event

NDA_STATUS_DURABLE = "cro-nda-status"
NO_LONGER_VALID = frozenset({"EXPIRED", "ARCHIVED"})  # Document.Status names that end an NDA


class NdaWatcher:
    def __init__(self, uow: CroTransactions) -> None:
        self._uow = uow

    async def on_document_status(self, event: DocumentStatusChanged, envelope: EventEnvelope) -> None:
        """The handler of the declared subscription (bootstrap.py)."""
        await self.hide_if_ended(event, envelope)

    async def hide_if_ended(self, event: DocumentStatusChanged, envelope: EventEnvelope) -> bool:
        """Hides the structures of the NDA's submission when the NDA ended; True when they were shown."""
        if event.document_type != NDA or event.to_status not in NO_LONGER_VALID or not event.submission_id:
            return False
        async with self._uow() as uow:
            if not await uow.first_delivery(NDA_STATUS_DURABLE, envelope.id):
                return False
            submission = await uow.submissions.get(event.submission_id, lock=True)
            # The NDA must be one of the submission's parties' (a submission id is only text to the documents).
            parties = (submission.organization_id, submission.cro_organization_id) if submission else ()
            if submission is None or event.organization_id not in parties or not submission.structures_revealed:
                return False
            submission.structures_revealed = False
            submission.updated_at = datetime.now(UTC)
            await uow.submissions.save(submission)
            uow.record(
                audit_event(
                    "submission.structures_hidden",
                    target_type="submission",
                    target_id=submission.id,
                    details={
                        "name": submission.name,
                        "reason": f"NDA {event.to_status.lower()}",
                        "document_id": event.document_id,
                    },
                ),
                organization_id=submission.organization_id,
                actor_id=SYSTEM_ACTOR,
            )
        return True
