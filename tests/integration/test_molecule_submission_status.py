"""Molecule status follows the submission: SubmissionTransitioned events (as the CRO service's outbox relay
publishes them to JetStream) consumed by the molecule service's declared subscription, on a real
PostgreSQL and NATS. Exactly once whatever is redelivered; an older event delivered late never
overwrites a newer status; another organization's molecules are left alone; MoleculesChanged and
AuditRecorded recorded once per change.
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
from molbridge.events.v1.cro_pb2 import SubmissionTransitioned
from molbridge.events.v1.envelope_pb2 import EventEnvelope
from molbridge.events.v1.molecule_pb2 import MoleculesChanged

from bus import build_envelope
from services.molecule.index.columnar import QueryIndex
from services.molecule.service.molecules import MoleculeService, NewMolecule
from services.molecule.service.submissions import DURABLE, SUBMISSIONS_SOURCE
from services.runtime.auth import Principal
from tests.integration.molecule_subscriptions import Subscribed, subscribed

SMILES = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1"]
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@dataclass
class World(Subscribed):
    molecules: MoleculeService

    async def statuses(self, ids: list[str]) -> dict[str, str]:
        async with self.sessions.begin() as session:
            rows = await session.execute(
                sa.text("SELECT id::text, status FROM molecules WHERE id = ANY(:ids)"),
                {"ids": [uuid.UUID(i) for i in ids]},
            )
            return {row.id: row.status for row in rows}


@pytest.fixture
async def world(database_url: str, nats_server: Any) -> AsyncIterator[World]:
    async with subscribed(database_url, nats_server.url, DURABLE, SUBMISSIONS_SOURCE, SubmissionTransitioned) as bus:
        yield World(**bus.parts(), molecules=MoleculeService(bus.transactions, QueryIndex(bus.engine)))


def pharma() -> Principal:
    return Principal(str(uuid.uuid4()), str(uuid.uuid4()), "PHARMA", frozenset({"pharma_scientist"}))


async def register(world: World, who: Principal, smiles: list[str]) -> list[str]:
    outcomes = await world.molecules.batch_create(who, [NewMolecule(s) for s in smiles])
    return [o.molecule_id for o in outcomes]


def transitioned(
    who: Principal,
    submission_id: str,
    molecule_ids: list[str],
    to_status: str,
    molecule_status: str,
    at: datetime,
    *,
    from_status: str = "",
) -> EventEnvelope:
    event = SubmissionTransitioned(
        submission_id=submission_id,
        organization_id=who.organization_id,
        cro_organization_id=str(uuid.uuid4()),
        from_status=from_status,
        to_status=to_status,
        action=to_status,
        molecule_ids=molecule_ids,
        molecule_status=molecule_status,
    )
    event.at.FromDatetime(at)
    return build_envelope(
        event_id=str(uuid.uuid4()),
        source=SUBMISSIONS_SOURCE,
        payload=event,
        occurred_at=at,
        organization_id=who.organization_id,
        actor_id=who.subject,
    )


async def test_statuses_follow_the_submission_exactly_once(world: World) -> None:
    who = pharma()
    ids = await register(world, who, SMILES)
    submission = str(uuid.uuid4())

    submitted = transitioned(who, submission, ids, "SUBMITTED", "PENDING", T0, from_status="DRAFT")
    await world.publish(submitted)
    await world.publish(submitted, dedupe=False)  # redelivered: a second copy with the same event id
    await world.handled(submitted)
    started = transitioned(who, submission, ids, "IN_PROGRESS", "TESTING", T0 + timedelta(days=3))
    await world.publish(started)
    await world.handled(started)
    # The redelivered SUBMITTED copy is consumed too (it was published before IN_PROGRESS) and changed nothing.
    assert set((await world.statuses(ids)).values()) == {"TESTING"}

    audits = [a for a in await world.recorded(AuditRecorded) if a.action == "molecule.status_changed"]
    assert sorted((a.target_id, a.details["to_status"]) for a in audits) == sorted(
        [(i, "PENDING") for i in ids] + [(i, "TESTING") for i in ids]
    )
    assert all(a.details["submission_id"] == submission for a in audits)
    changed = [m for e in await world.recorded(MoleculesChanged) if not e.archived_ids for m in e.molecule_ids]
    # registration's own MoleculesChanged + one per status change
    assert sorted(changed) == sorted(ids * 3)
    # The molecule service's read path sees the status.
    assert (await world.molecules.get(who, ids[0])).status == "TESTING"


async def test_an_older_event_delivered_late_does_not_overwrite_a_newer_status(world: World) -> None:
    who = pharma()
    ids = await register(world, who, SMILES[:2])
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    # Submission 1 is cancelled (molecules AVAILABLE again), then submission 2 takes them (PENDING) — but the
    # bus hands the molecule service submission 2's SUBMITTED first, then submission 1's older events.
    newer = transitioned(who, second, ids, "SUBMITTED", "PENDING", T0 + timedelta(hours=2))
    await world.publish(newer)
    await world.handled(newer)
    for stale in (
        transitioned(who, first, ids, "SUBMITTED", "PENDING", T0),
        transitioned(who, first, ids, "CANCELLED", "AVAILABLE", T0 + timedelta(hours=1)),
    ):
        await world.publish(stale)
        await world.handled(stale)
    assert set((await world.statuses(ids)).values()) == {"PENDING"}
    held_by = await world.scalar("SELECT array_agg(DISTINCT status_submission_id::text) FROM molecules")
    assert held_by == [second]
    # Only the newer event changed anything.
    audits = [a for a in await world.recorded(AuditRecorded) if a.action == "molecule.status_changed"]
    assert {a.details["submission_id"] for a in audits} == {second} and len(audits) == len(ids)

    later = transitioned(who, second, ids, "REJECTED", "AVAILABLE", T0 + timedelta(hours=3))
    await world.publish(later)
    await world.handled(later)
    assert set((await world.statuses(ids)).values()) == {"AVAILABLE"}


async def test_only_the_events_organization_and_a_named_status_count(world: World) -> None:
    owner, stranger = pharma(), pharma()
    mine = await register(world, owner, SMILES[:1])
    theirs = await register(world, stranger, SMILES[1:2])
    submission = str(uuid.uuid4())

    # The stranger's molecule named in the owner's event: left alone.
    event = transitioned(owner, submission, [*mine, *theirs, "not-a-uuid"], "SUBMITTED", "PENDING", T0)
    await world.publish(event)
    await world.handled(event)
    assert await world.statuses(mine + theirs) == {mine[0]: "PENDING", theirs[0]: "AVAILABLE"}

    # PENDING_REVIEW changes no molecule status (empty molecule_status): nothing recorded, nothing changed.
    review = transitioned(owner, submission, mine, "PENDING_REVIEW", "", T0 + timedelta(minutes=1))
    await world.publish(review)
    # A malformed event (no organization) is poison, and does not hold up the ones after it.
    broken = transitioned(owner, submission, mine, "IN_PROGRESS", "TESTING", T0 + timedelta(minutes=2))
    bad = SubmissionTransitioned()
    broken.payload.Unpack(bad)
    bad.organization_id = ""
    broken.payload.Pack(bad)
    await world.publish(broken)
    after = transitioned(owner, submission, mine, "CANCELLED", "AVAILABLE", T0 + timedelta(minutes=3))
    await world.publish(after)
    await world.handled(after)
    assert await world.statuses(mine) == {mine[0]: "AVAILABLE"}
    actions = [a.details["to_status"] for a in await world.recorded(AuditRecorded) if a.target_id == mine[0]]
    assert actions == ["PENDING", "AVAILABLE"]


async def test_a_release_does_not_bring_back_an_archived_molecule(world: World) -> None:
    who = pharma()
    ids = await register(world, who, SMILES[:1])
    await world.molecules.update(who, ids[0], status="ARCHIVED")
    event = transitioned(who, str(uuid.uuid4()), ids, "CANCELLED", "AVAILABLE", T0)
    await world.publish(event)
    await world.handled(event)
    assert await world.statuses(ids) == {ids[0]: "ARCHIVED"}
