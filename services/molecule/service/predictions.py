"""PredictionCompleted → PREDICTED property values on the molecules.

The prediction service publishes one PredictionCompleted per stored batch; this consumer writes every
value it carries (the desirability score included: it arrives as an ordinary value of property
`desirability_score`) as source PREDICTED with provenance (prediction job, model, version,
confidence), and records MoleculesChanged, so query and search indexes re-read the molecules: the
values filter and sort like any other property; and an AuditRecorded "molecule.predictions_applied" per
event (target: the prediction job; a digest of the molecules). Exactly once: the event's processed marker and the
values commit together. Values of molecules not in the event's organization are ignored; a later
prediction of the same property replaces an earlier one.
"""

from __future__ import annotations

from molbridge.events.v1.envelope_pb2 import EventEnvelope
from molbridge.events.v1.molecule_pb2 import MoleculesChanged
from molbridge.events.v1.prediction_pb2 import PredictionCompleted
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from bus.consumer import Consumer, PoisonError
from bus.envelope import unpack
from bus.streams import EVENTS_STREAM
from bus.subjects import event_subject
from services.molecule.domain.audit import ids_digest
from services.molecule.store.uow import MoleculeTransactions, MoleculeUnitOfWork
from services.runtime.audit import audit_event

DURABLE = "molecule-predictions"
PREDICTIONS_SOURCE = "prediction"  # the prediction service's event source on the bus


class PredictionConsumer:
    def __init__(self, uow: MoleculeTransactions) -> None:
        self._uow = uow
        self.subject = event_subject(PREDICTIONS_SOURCE, PredictionCompleted)

    def consumer(self, js: JetStreamContext) -> Consumer:
        """The same consumer for a caller that runs its own bus (tests that start both services in one process)."""
        return Consumer(js, EVENTS_STREAM, DURABLE, self.subject, self.handle)

    async def handle(self, envelope: EventEnvelope, msg: Msg) -> None:
        try:
            event = unpack(envelope, PredictionCompleted)
        except TypeError as error:
            raise PoisonError(str(error)) from error
        await self.on_completed(event, envelope)

    async def on_completed(self, event: PredictionCompleted, envelope: EventEnvelope) -> None:
        """The handler of the declared subscription (bootstrap.py): exactly once per event."""
        async with self._uow() as uow:
            if await uow.first_delivery(DURABLE, envelope.id):
                await store_predictions(uow, event, actor_id=envelope.actor_id)


async def store_predictions(uow: MoleculeUnitOfWork, event: PredictionCompleted, *, actor_id: str = "") -> list[str]:
    """Write the event's values (the caller's unit of work); returns the molecules changed. `actor_id`: who
    asked for the predictions (the event's envelope says), the actor of the audit event."""
    wanted = sorted({v.molecule_id for v in event.values})
    if not wanted:
        return []
    owned = await uow.molecules.lock_owned(event.organization_id, wanted)
    values = [v for v in event.values if v.molecule_id in owned]
    if not values:
        return []
    await uow.molecules.write_predicted(event.job_id, values)
    changed = sorted(owned)
    uow.record(
        MoleculesChanged(organization_id=event.organization_id, molecule_ids=changed),
        organization_id=event.organization_id,
    )
    details = {"batch_index": str(event.batch_index), "values": str(len(values))} | ids_digest(changed)
    uow.record(
        audit_event(
            "molecule.predictions_applied", target_type="prediction_job", target_id=event.job_id, details=details
        ),
        organization_id=event.organization_id,
        actor_id=actor_id,
    )
    return changed
