"""SubmissionTransitioned → the molecules' status follows their submission (DOMAIN.md: PENDING at SUBMIT,
TESTING at IN_PROGRESS, RESULTS at RESULTS_REVIEWED, AVAILABLE again on CANCELLED or REJECTED).

The CRO service says which status the molecules take (`molecule_status`, empty for none); this consumer
sets it on the event's molecules of the event's organization (others are ignored), exactly once: the
event's processed marker commits with the change, so a redelivery changes nothing. Each molecule keeps
the time of the transition that set its status, so an older event delivered late (after a newer one)
leaves it alone. Records MoleculesChanged (the query and search indexes hold the status) and one
AuditRecorded "molecule.status_changed" per molecule, acted by whoever took the submission's action.
"""

from __future__ import annotations

from datetime import UTC, datetime

from molbridge.events.v1.cro_pb2 import SubmissionTransitioned
from molbridge.events.v1.envelope_pb2 import EventEnvelope

from services.molecule.domain.events import molecules_changed
from services.molecule.domain.molecules import follows_submission
from services.molecule.store.uow import MoleculeTransactions, MoleculeUnitOfWork
from services.runtime.audit import audit_event
from services.runtime.db import canonical_uuid
from services.runtime.process import PoisonError

DURABLE = "molecule-submission-status"
SUBMISSIONS_SOURCE = "cro"  # the CRO service's event source on the bus


class SubmissionStatusConsumer:
    def __init__(self, uow: MoleculeTransactions) -> None:
        self._uow = uow

    async def on_transitioned(self, event: SubmissionTransitioned, envelope: EventEnvelope) -> None:
        """The handler of the declared subscription (bootstrap.py)."""
        await self.follow(event, envelope)

    async def follow(self, event: SubmissionTransitioned, envelope: EventEnvelope) -> list[str]:
        """Sets the event's molecule status once; returns the molecules whose status changed."""
        if not event.molecule_status or not event.molecule_ids:
            return []
        organization_id = canonical_uuid(event.organization_id)
        submission_id = canonical_uuid(event.submission_id)
        if organization_id is None or submission_id is None:
            raise PoisonError(f"SubmissionTransitioned {envelope.id} names no valid organization or submission")
        at = _when(event, envelope)
        async with self._uow() as uow:
            if not await uow.first_delivery(DURABLE, envelope.id):
                return []
            rows = await uow.molecules.lock_statuses(organization_id, event.molecule_ids)
            moving = [
                row for row in rows if follows_submission(row.status, row.status_set_at, event.molecule_status, at)
            ]
            if not moving:
                return []
            # Every moving molecule takes the event's time, also one already in the status.
            await uow.molecules.set_submission_status(
                [str(row.id) for row in moving], event.molecule_status, submission_id, at
            )
            changes = [(str(row.id), row.status) for row in moving if row.status != event.molecule_status]
            _record(uow, event, envelope, organization_id, changes)
        return [molecule_id for molecule_id, _ in changes]


def _when(event: SubmissionTransitioned, envelope: EventEnvelope) -> datetime:
    stamp = event.at if event.HasField("at") else envelope.occurred_at
    return stamp.ToDatetime(tzinfo=UTC)


def _record(
    uow: MoleculeUnitOfWork,
    event: SubmissionTransitioned,
    envelope: EventEnvelope,
    organization_id: str,
    changes: list[tuple[str, str]],
) -> None:
    for molecule_id, before in changes:
        audit = audit_event(
            "molecule.status_changed",
            target_type="molecule",
            target_id=molecule_id,
            details={
                "from_status": before,
                "to_status": event.molecule_status,
                "submission_id": event.submission_id,
                "submission_status": event.to_status,
                "submission_action": event.action,
            },
        )
        uow.record(audit, organization_id=organization_id, actor_id=envelope.actor_id)
    for changed in molecules_changed(organization_id, [molecule_id for molecule_id, _ in changes]):
        uow.record(changed, organization_id=organization_id, actor_id=envelope.actor_id)
