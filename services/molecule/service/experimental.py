"""ResultsAccepted → EXPERIMENTAL property values on the pharma organization's molecules (issue 12).

The CRO service publishes one ResultsAccepted when the pharma side accepts a submission's results; this
consumer stores every value as source EXPERIMENTAL (one per molecule and property, provenance: submission,
result and version, sample code, qualifier, n, sd, accepted_at/by), exactly once: the event's processed
marker commits with the values. Only molecules of the event's organization take values (another
organization's or an unknown molecule is skipped and logged). A later result replaces an earlier value; an
older event (accepted_at before the stored value's) changes nothing. Censored values are stored as text
(domain/experimental.py). Records MoleculesChanged (the query and search indexes re-read the molecules, so
the values filter and sort like any property) and one AuditRecorded "molecule.experimental_values_applied".
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from molbridge.events.v1.cro_pb2 import ExperimentalValue, ResultsAccepted
from molbridge.events.v1.envelope_pb2 import EventEnvelope

from services.molecule.domain.events import molecules_changed
from services.molecule.domain.experimental import replaces, stored_cell
from services.molecule.store.uow import MoleculeTransactions
from services.runtime.audit import audit_event
from services.runtime.db import canonical_uuid
from services.runtime.process import PoisonError

DURABLE = "molecule-experimental-values"
RESULTS_SOURCE = "cro"  # the CRO service's event source on the bus

log = logging.getLogger(__name__)


class ExperimentalValueConsumer:
    def __init__(self, uow: MoleculeTransactions) -> None:
        self._uow = uow

    async def on_accepted(self, event: ResultsAccepted, envelope: EventEnvelope) -> None:
        """The handler of the declared subscription (bootstrap.py)."""
        await self.apply(event, envelope)

    async def apply(self, event: ResultsAccepted, envelope: EventEnvelope) -> list[str]:
        """Stores the event's values once; returns the molecules whose values changed."""
        organization_id = canonical_uuid(event.organization_id)
        if organization_id is None or not event.submission_id:
            raise PoisonError(f"ResultsAccepted {envelope.id} names no valid organization or submission")
        at = (event.accepted_at if event.HasField("accepted_at") else envelope.occurred_at).ToDatetime(tzinfo=UTC)
        async with self._uow() as uow:
            if not await uow.first_delivery(DURABLE, envelope.id):
                return []
            named = sorted({c for c in (canonical_uuid(v.molecule_id) for v in event.values) if c})
            owned = await uow.molecules.lock_owned(organization_id, named) if named else set()
            stored_at = await uow.molecules.experimental_accepted_at(sorted(owned)) if owned else {}
            rows: dict[tuple[str, str], dict[str, Any]] = {}
            skipped = {"foreign_or_unknown": 0, "invalid": 0, "older": 0}
            for value in event.values:
                molecule_id = canonical_uuid(value.molecule_id)
                if molecule_id not in owned:
                    skipped["foreign_or_unknown"] += 1
                    log.warning(
                        "ResultsAccepted %s: molecule %r is not organization %s's, value skipped",
                        envelope.id,
                        value.molecule_id,
                        organization_id,
                    )
                    continue
                cell = stored_cell(value.value, value.qualifier)
                if cell is None or not value.property:
                    skipped["invalid"] += 1
                    log.warning("ResultsAccepted %s: unusable value %s skipped", envelope.id, value)
                    continue
                if not replaces(stored_at.get((molecule_id, value.property)), at):
                    skipped["older"] += 1
                    continue
                rows[(molecule_id, value.property)] = {
                    "molecule_id": molecule_id,
                    "name": value.property,
                    "value_num": cell.value_num,
                    "value_text": cell.value_text,
                    "units": value.units,
                    "provenance": _provenance(event, value, at),
                }
            if rows:
                await uow.molecules.write_experimental(list(rows.values()))
            changed = sorted({molecule_id for molecule_id, _ in rows})
            audit = audit_event(
                "molecule.experimental_values_applied",
                target_type="submission",
                target_id=event.submission_id,
                details={
                    "result_id": event.result_id,
                    "result_version": str(event.result_version),
                    "values_applied": str(len(rows)),
                    "molecules_changed": str(len(changed)),
                    **{f"skipped_{reason}": str(count) for reason, count in skipped.items()},
                },
            )
            actor = event.accepted_by or envelope.actor_id
            uow.record(audit, organization_id=organization_id, actor_id=actor)
            for notice in molecules_changed(organization_id, changed):
                uow.record(notice, organization_id=organization_id, actor_id=actor)
        return changed


def _provenance(event: ResultsAccepted, value: ExperimentalValue, at: datetime) -> dict[str, Any]:
    return {
        "submission_id": event.submission_id,
        "result_id": event.result_id,
        "result_version": event.result_version,
        "sample_code": value.sample_code,
        "qualifier": value.qualifier or "=",
        "n": value.n,
        "sd": value.sd,
        "accepted_at": at.isoformat(),
        "accepted_by": event.accepted_by,
    }
