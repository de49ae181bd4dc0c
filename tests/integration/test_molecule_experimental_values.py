"""Accepted results become EXPERIMENTAL values: ResultsAccepted events (as the CRO service's outbox relay
publishes them to JetStream) consumed by the molecule service's declared subscription, on a real
PostgreSQL and NATS. Exactly once whatever is redelivered; an older event never overwrites a newer value;
another organization's molecules are left alone; the EXPERIMENTAL value is the one the molecule shows,
filters and sorts by; a censored value keeps its qualifier and stays out of numeric ranges.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from molbridge.events.v1.audit_pb2 import AuditRecorded
from molbridge.events.v1.cro_pb2 import ExperimentalValue, ResultsAccepted
from molbridge.events.v1.envelope_pb2 import EventEnvelope
from molbridge.events.v1.molecule_pb2 import MoleculesChanged
from molbridge.events.v1.prediction_pb2 import PredictedValue, PredictionCompleted

from bus import build_envelope
from services.molecule.domain.molecules import PropertyInput
from services.molecule.index.columnar import QueryIndex
from services.molecule.index.query import Condition, MoleculeQuery, Operator
from services.molecule.service.experimental import DURABLE, RESULTS_SOURCE
from services.molecule.service.molecules import MoleculeService, NewMolecule
from services.molecule.service.predictions import store_predictions
from services.molecule.store.molecule_views import MoleculeView
from services.runtime.auth import Principal
from services.runtime.pagination import PageRequest
from tests.integration.molecule_subscriptions import Subscribed, subscribed

SMILES = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1"]
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
PAGE = PageRequest(1, 50)


@dataclass
class World(Subscribed):
    molecules: MoleculeService

    async def experimental(self, molecule_id: str) -> dict[str, Any]:
        """name → (value_num, value_text, provenance) of the molecule's EXPERIMENTAL rows."""
        async with self.sessions.begin() as session:
            rows = await session.execute(
                sa.text(
                    "SELECT name, value_num, value_text, provenance FROM molecule_properties"
                    " WHERE molecule_id = :m AND source = 'EXPERIMENTAL'"
                ),
                {"m": uuid.UUID(molecule_id)},
            )
            return {row.name: (row.value_num, row.value_text, row.provenance) for row in rows}

    async def listed(self, who: Principal, query: MoleculeQuery) -> list[MoleculeView]:
        """The molecule service's filter use case over a query index loaded now (it reads the stored values)."""
        views, _ = await MoleculeService(self.transactions, QueryIndex(self.engine)).list_molecules(who, query, PAGE)
        return views


@pytest.fixture
async def world(database_url: str, nats_server: Any) -> AsyncIterator[World]:
    async with subscribed(database_url, nats_server.url, DURABLE, RESULTS_SOURCE, ResultsAccepted) as bus:
        yield World(**bus.parts(), molecules=MoleculeService(bus.transactions, QueryIndex(bus.engine)))


def pharma() -> Principal:
    return Principal(str(uuid.uuid4()), str(uuid.uuid4()), "PHARMA", frozenset({"pharma_scientist"}))


async def register(world: World, who: Principal, molecules: list[NewMolecule]) -> list[str]:
    outcomes = await world.molecules.batch_create(who, molecules)
    return [o.molecule_id for o in outcomes]


def measured(molecule_id: str, value: float, qualifier: str = "=", *, name: str = "ic50") -> ExperimentalValue:
    return ExperimentalValue(
        molecule_id=molecule_id,
        property=name,
        value=value,
        qualifier=qualifier,
        units="nM",
        n=3,
        sd=0.5,
        sample_code=f"S-{molecule_id[:8]}",
    )


def accepted(
    who: Principal, values: list[ExperimentalValue], at: datetime, *, version: int = 1, submission: str = ""
) -> EventEnvelope:
    event = ResultsAccepted(
        submission_id=submission or str(uuid.uuid4()),
        organization_id=who.organization_id,
        result_id=str(uuid.uuid4()),
        result_version=version,
        accepted_by=who.subject,
        values=values,
    )
    event.accepted_at.FromDatetime(at)
    return build_envelope(
        event_id=str(uuid.uuid4()),
        source=RESULTS_SOURCE,
        payload=event,
        occurred_at=at,
        organization_id=who.organization_id,
        actor_id=who.subject,
    )


async def test_values_are_applied_exactly_once(world: World) -> None:
    who = pharma()
    ids = await register(world, who, [NewMolecule(s) for s in SMILES[:2]])
    event = accepted(who, [measured(ids[0], 12.5), measured(ids[1], 40.0, "~")], T0)
    await world.publish(event)
    await world.publish(event, dedupe=False)  # redelivered: another Nats-Msg-Id, the same envelope id
    await world.handled(event)
    marker = accepted(who, [measured(ids[0], 13.0)], T0 + timedelta(hours=1), version=2)
    await world.publish(marker)  # consumed after the copy, so the copy has been handled when this is
    await world.handled(marker)

    value, text, provenance = (await world.experimental(ids[0]))["ic50"]
    assert (value, text) == (13.0, None) and provenance["result_version"] == 2  # the later version replaced it
    assert (await world.experimental(ids[1]))["ic50"][:2] == (40.0, None)
    payload = ResultsAccepted()
    event.payload.Unpack(payload)
    assert (await world.experimental(ids[1]))["ic50"][2] == {
        "submission_id": payload.submission_id,
        "result_id": payload.result_id,
        "result_version": 1,
        "sample_code": f"S-{ids[1][:8]}",
        "qualifier": "~",
        "n": 3,
        "sd": 0.5,
        "accepted_at": T0.isoformat(),
        "accepted_by": who.subject,
    }
    ours = {payload.submission_id, _submission(marker)}  # other tests' events may still be handled meanwhile
    audits = [
        a
        for a in await world.recorded(AuditRecorded)
        if a.action == "molecule.experimental_values_applied" and a.target_id in ours
    ]
    assert [(a.target_id, a.details["values_applied"]) for a in audits] == [
        (payload.submission_id, "2"),
        (_submission(marker), "1"),
    ]
    changed = [m for e in await world.recorded(MoleculesChanged) for m in e.molecule_ids if m in ids]
    assert sorted(changed) == sorted([*ids, *ids, ids[0]])  # registration's + one per applying event


def _submission(envelope: EventEnvelope) -> str:
    event = ResultsAccepted()
    envelope.payload.Unpack(event)
    return event.submission_id


async def test_an_older_event_never_overwrites_a_newer_value(world: World) -> None:
    who = pharma()
    ids = await register(world, who, [NewMolecule(SMILES[0])])
    newer = accepted(who, [measured(ids[0], 20.0)], T0 + timedelta(days=1), version=2)
    await world.publish(newer)
    await world.handled(newer)
    older = accepted(who, [measured(ids[0], 99.0)], T0, version=1)
    await world.publish(older)
    await world.handled(older)
    value, _, provenance = (await world.experimental(ids[0]))["ic50"]
    assert value == 20.0 and provenance["result_version"] == 2
    audit = [a for a in await world.recorded(AuditRecorded) if a.target_id == _submission(older)]
    assert [(a.details["values_applied"], a.details["skipped_older"]) for a in audit] == [("0", "1")]


async def test_another_organizations_molecule_is_untouched(world: World) -> None:
    owner, stranger = pharma(), pharma()
    mine = await register(world, owner, [NewMolecule(SMILES[0])])
    theirs = await register(world, stranger, [NewMolecule(SMILES[1])])
    event = accepted(
        owner,
        [
            measured(mine[0], 5.0),
            measured(theirs[0], 6.0),
            measured("not-a-uuid", 7.0),
            measured(str(uuid.uuid4()), 8.0),
        ],
        T0,
    )
    await world.publish(event)
    await world.handled(event)
    assert (await world.experimental(mine[0]))["ic50"][0] == 5.0
    assert await world.experimental(theirs[0]) == {}
    audit = [a for a in await world.recorded(AuditRecorded) if a.target_id == _submission(event)]
    assert [(a.details["values_applied"], a.details["skipped_foreign_or_unknown"]) for a in audit] == [("1", "3")]


async def test_the_experimental_value_is_shown_filtered_and_sorted(world: World) -> None:
    who = pharma()
    ids = await register(world, who, [NewMolecule(s, properties=[PropertyInput("ic50", 1000.0, "nM")]) for s in SMILES])
    async with world.transactions() as uow:  # PREDICTED values, as the prediction consumer stores them
        await store_predictions(
            uow,
            PredictionCompleted(
                organization_id=who.organization_id,
                job_id=str(uuid.uuid4()),
                values=[
                    PredictedValue(
                        molecule_id=i,
                        property="ic50",
                        value=2000.0,
                        units="nM",
                        confidence=0.9,
                        model_name="m",
                        model_version="1",
                    )
                    for i in ids
                ],
            ),
        )
    event = accepted(who, [measured(ids[0], 50.0), measured(ids[1], 10.0, "<"), measured(ids[2], 30.0, "~")], T0)
    await world.publish(event)
    await world.handled(event)

    shown = await world.molecules.get(who, ids[0])
    assert {(p.source, p.value) for p in shown.properties if p.name == "ic50"} == {
        ("EXPERIMENTAL", 50.0),
        ("IMPORTED", 1000.0),
        ("PREDICTED", 2000.0),
    }
    censored = await world.molecules.get(who, ids[1])
    assert [p.value for p in censored.properties if p.name == "ic50" and p.source == "EXPERIMENTAL"] == ["<10"]

    # The effective value (EXPERIMENTAL over IMPORTED/PREDICTED) filters and sorts; "<10" is not 10 and not
    # the IMPORTED 1000: a numeric range leaves the censored molecule out.
    in_range = MoleculeQuery(conditions=(Condition("ic50", Operator.LTE, 100.0),), sort_by="ic50")
    assert [v.id for v in await world.listed(who, in_range)] == [ids[2], ids[0]]
    wide = MoleculeQuery(conditions=(Condition("ic50", Operator.GTE, 0.0),), sort_by="ic50", sort_desc=True)
    assert [v.id for v in await world.listed(who, wide)] == [ids[0], ids[2]]
    # Sorted without a filter: the numbers first, the censored text value after them.
    everything = MoleculeQuery(sort_by="ic50")
    assert [v.id for v in await world.listed(who, everything)] == [ids[2], ids[0], ids[1]]
    # The IMPORTED source alone still filters on its own values.
    imported = MoleculeQuery(conditions=(Condition("ic50", Operator.GTE, 500.0, source="IMPORTED"),))
    assert {v.id for v in await world.listed(who, imported)} == set(ids)
