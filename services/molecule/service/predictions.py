"""PredictionCompleted → PREDICTED property values (and the desirability score) on the molecules.

The prediction service publishes one PredictionCompleted per stored batch; this consumer writes the
values as source PREDICTED with provenance (prediction job, model, version, confidence), recomputes
`desirability_score` (services/prediction/score.py: a pure function of the molecule's effective
values) and records MoleculesChanged, so query and search indexes re-read the molecules: the values
filter and sort like any other property. Exactly once: the event's processed marker and the
values commit together (bus.first_delivery). Values of molecules not in the event's organization
(or archived since) are ignored; a later prediction of the same property replaces an earlier one.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence

import sqlalchemy as sa
from molbridge.events.v1.envelope_pb2 import EventEnvelope
from molbridge.events.v1.molecule_pb2 import MoleculesChanged
from molbridge.events.v1.prediction_pb2 import PredictionCompleted
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from bus.consumer import Consumer, PoisonError
from bus.envelope import unpack
from bus.idempotency import first_delivery
from bus.outbox import add_event
from bus.streams import EVENTS_STREAM
from bus.subjects import event_subject
from services.molecule.domain.vocabulary import EVENT_SOURCE, PRECEDENCE
from services.molecule.store.tables import SCHEMA, molecule_properties, molecules
from services.prediction.score import SCORE_MODEL, SCORE_PROPERTY, SCORE_VERSION, desirability
from services.runtime.db import UnitOfWork

log = logging.getLogger("molbridge.molecule.predictions")

DURABLE = "molecule-predictions"
PREDICTED = "PREDICTED"


class PredictionConsumer:
    def __init__(self, uow: UnitOfWork) -> None:
        self._uow = uow
        self.subject = event_subject("prediction", PredictionCompleted)

    def consumer(self, js: JetStreamContext) -> Consumer:
        """A bus.runner ConsumerFactory: run_bus(…, consumers=[predictions.consumer])."""
        return Consumer(js, EVENTS_STREAM, DURABLE, self.subject, self.handle)

    async def handle(self, envelope: EventEnvelope, msg: Msg) -> None:
        try:
            event = unpack(envelope, PredictionCompleted)
        except TypeError as error:
            raise PoisonError(str(error)) from error
        async with self._uow() as session:
            if await first_delivery(session, DURABLE, envelope.id, schema=SCHEMA):
                await store_predictions(session, event)


async def store_predictions(session: AsyncSession, event: PredictionCompleted) -> list[str]:
    """Write the event's values (the caller's transaction); returns the molecules changed."""
    wanted = sorted({v.molecule_id for v in event.values})
    if not wanted:
        return []
    owned = set(
        map(
            str,
            await session.scalars(
                sa.select(molecules.c.id)
                .where(
                    molecules.c.id.in_(wanted),
                    molecules.c.organization_id == event.organization_id,
                )
                .order_by(molecules.c.id)
                .with_for_update()
            ),
        )
    )
    rows = [
        {
            "molecule_id": v.molecule_id,
            "name": v.property,
            "source": PREDICTED,
            "value_num": v.value,
            "value_text": None,
            "units": v.units,
            "provenance": {
                "prediction_job_id": event.job_id,
                "model": v.model_name,
                "model_version": v.model_version,
                "confidence": v.confidence,
            },
        }
        for v in event.values
        if v.molecule_id in owned
    ]
    if not rows:
        return []
    await _upsert(session, rows)
    changed = sorted(owned)
    await _score(session, changed, event.job_id)
    await add_event(
        session,
        source=EVENT_SOURCE,
        payload=MoleculesChanged(organization_id=event.organization_id, molecule_ids=changed),
        organization_id=event.organization_id,
        schema=SCHEMA,
    )
    return changed


async def _upsert(session: AsyncSession, rows: Sequence[Mapping[str, object]]) -> None:
    statement = insert(molecule_properties)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["molecule_id", "name", "source"],
            set_={
                "value_num": statement.excluded.value_num,
                "value_text": statement.excluded.value_text,
                "units": statement.excluded.units,
                "provenance": statement.excluded.provenance,
                "updated_at": sa.func.now(),
            },
        ),
        sorted(rows, key=lambda r: (str(r["molecule_id"]), str(r["name"]))),
    )


async def _score(session: AsyncSession, molecule_ids: list[str], job_id: str) -> None:
    """Recompute each molecule's desirability score from its effective numeric values."""
    rank = {source: i for i, source in enumerate(PRECEDENCE)}
    best: dict[str, dict[str, tuple[int, float]]] = defaultdict(dict)
    for row in await session.execute(
        sa.select(
            molecule_properties.c.molecule_id,
            molecule_properties.c.name,
            molecule_properties.c.source,
            molecule_properties.c.value_num,
        ).where(
            molecule_properties.c.molecule_id.in_(molecule_ids),
            molecule_properties.c.value_num.is_not(None),
            molecule_properties.c.name != SCORE_PROPERTY,
        )
    ):
        order = rank.get(row.source, len(rank))
        current = best[str(row.molecule_id)].get(row.name)
        if current is None or order < current[0]:
            best[str(row.molecule_id)][row.name] = (order, row.value_num)
    scored = [
        {
            "molecule_id": molecule_id,
            "name": SCORE_PROPERTY,
            "source": PREDICTED,
            "value_num": score,
            "value_text": None,
            "units": "",
            "provenance": {"prediction_job_id": job_id, "model": SCORE_MODEL, "model_version": SCORE_VERSION},
        }
        for molecule_id in molecule_ids
        if (score := desirability({k: v for k, (_, v) in best[molecule_id].items()})) is not None
    ]
    if scored:
        await _upsert(session, scored)
