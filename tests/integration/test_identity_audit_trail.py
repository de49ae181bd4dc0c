"""The audit trail against a real PostgreSQL: verification after rows are edited, deleted or rewritten
with fresh hashes (anchors in object storage), filters, an object's history, the CSV export, and who
may read which organization's trail."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa
from molbridge.events.v1.audit_pb2 import AuditRecorded
from molbridge.events.v1.envelope_pb2 import EventEnvelope
from molbridge.identity.v1 import identity_service_pb2 as pb
from molbridge.identity.v1 import identity_service_pb2_grpc as pb_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from bus.envelope import build_envelope, unpack
from services.identity import domain
from services.identity.bootstrap import MIGRATIONS, IdentitySettings, build_server
from services.identity.domain import BreakKind
from services.identity.service import AuditTrail, IdentityService
from services.identity.store import SCHEMA, identity_transactions
from services.runtime.auth import Principal, TokenVerifier
from services.runtime.db import make_engine
from services.runtime.errors import AuthorizationError, PreconditionError, ValidationError
from services.runtime.pagination import PageRequest
from services.runtime.process import running
from services.runtime.storage import LocalStorage
from stack.ports import free_port
from tests.integration.identity_world import started_identity

ADMIN = ("root@audit.test", "Platform-Root-Pass1!")
PASSWORD = "Auditor-Pass-1234!"
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
PAGE = PageRequest.of(1, 100)


@dataclass
class World:
    service: IdentityService
    engine: AsyncEngine
    trail: AuditTrail
    storage: LocalStorage
    admin: Principal
    pharma: str = ""
    cro: str = ""

    async def person(self, organization_id: str, role: str) -> Principal:
        email = f"{role}-{uuid.uuid4().hex[:6]}@audit.test"
        await self.service.create_user(
            self.admin, email=email, full_name=role, password=PASSWORD, roles=[role],
            organization_id=organization_id, request_id="",
        )
        session = await self.service.login(email, PASSWORD)
        return await TokenVerifier(self.service.jwks).verify(session.access_token)

    async def record(
        self, action: str, organization_id: str, *, target_type: str = "submission", target_id: str = "",
        actor: str = "user-1", minutes: int = 0, details: dict[str, str] | None = None, trace_id: str = "",
    ) -> str:
        """An AuditRecorded as a service's outbox would publish it, handed to the trail's consumer."""
        event_id = str(uuid.uuid4())
        event = AuditRecorded(action=action, outcome=AuditRecorded.SUCCESS, target_type=target_type,
                              target_id=target_id or str(uuid.uuid4()), details=details or {}, trace_id=trace_id)
        await self.trail.handle(build_envelope(
            event_id=event_id, source="cro", payload=event, occurred_at=T0 + timedelta(minutes=minutes),
            organization_id=organization_id, actor_id=actor,
        ))
        return event_id

    async def sql(self, statement: str, **values: object) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(sa.text(statement), values)


@pytest.fixture
async def world(database_url: str, tmp_path: Path) -> AsyncIterator[World]:
    MIGRATIONS.upgrade(database_url)
    engine = make_engine(database_url, SCHEMA)
    storage = LocalStorage(tmp_path / "objects")
    service = await started_identity(engine, tmp_path / "mail", *ADMIN, storage=storage)
    session = await service.login(*ADMIN)
    admin = await TokenVerifier(service.jwks).verify(session.access_token)
    w = World(service, engine, AuditTrail(identity_transactions(engine)), storage, admin)
    w.pharma = (await service.create_organization(admin, "Audited Pharma", "PHARMA", "")).id
    w.cro = (await service.create_organization(admin, "Audited CRO", "CRO", "")).id
    yield w
    await engine.dispose()


async def journey(world: World) -> str:
    """A submission's life as the services record it, plus unrelated noise; returns the submission id."""
    submission = str(uuid.uuid4())
    await world.record("submission.created", world.pharma, target_id=submission, minutes=1, trace_id="ab" * 16)
    await world.record("document.created", world.pharma, target_type="document", minutes=2,
                       details={"submission_id": submission, "document_type": "MTA"})
    await world.record("molecule.updated", world.pharma, target_type="molecule", minutes=3, actor="user-2")
    await world.record("submission.submitted", world.pharma, target_id=submission, minutes=4)
    await world.record("signature.signed", world.cro, target_type="document", minutes=5, actor="cro-user",
                       details={"submission_id": submission, "meaning": "APPROVAL"})
    await world.record("submission.quoted", world.cro, target_id=submission, minutes=6, actor="cro-user")
    return submission


async def test_an_intact_trail_verifies_and_a_row_edited_in_sql_is_named(world: World) -> None:
    await journey(world)
    result = await world.service.verify_audit_trail(world.admin)
    assert result.ok and result.entries_checked == 6 and result.head_sequence == 6

    await world.sql("UPDATE identity.audit_log SET details = '{\"meaning\": \"REVIEW\"}' WHERE sequence = 5")
    result = await world.service.verify_audit_trail(world.admin)
    found = result.first_break
    assert not result.ok and found is not None
    assert (found.kind, found.sequence) == (BreakKind.HASH_MISMATCH, 5)
    assert found.entry_id and found.stored_hash != found.expected_hash
    assert result.entries_checked == 6  # the walk goes on to the head

    # The broken entry is the CRO's: a pharma auditor learns where, not which entry.
    pharma_auditor = await world.person(world.pharma, "auditor")
    hidden = (await world.service.verify_audit_trail(pharma_auditor)).first_break
    assert hidden is not None and (hidden.sequence, hidden.entry_id) == (5, "")


async def test_an_edited_action_and_a_deleted_row_are_reported(world: World) -> None:
    await journey(world)
    await world.sql("UPDATE identity.audit_log SET action = 'submission.cancelled' WHERE sequence = 4")
    found = (await world.service.verify_audit_trail(world.admin)).first_break
    assert found is not None and (found.kind, found.sequence) == (BreakKind.HASH_MISMATCH, 4)

    await world.sql("DELETE FROM identity.audit_log WHERE sequence IN (2, 4)")
    result = await world.service.verify_audit_trail(world.admin)
    assert result.first_break is not None
    assert (result.first_break.kind, result.first_break.sequence, result.first_break.entry_id) == (
        BreakKind.MISSING_ENTRY, 2, "")
    assert result.entries_checked == 4


async def test_anchors_reveal_a_tail_rewritten_with_fresh_hashes(world: World) -> None:
    with pytest.raises(PreconditionError):  # nothing to anchor yet
        await world.service.anchor_audit_trail(world.admin)
    await journey(world)
    first = await world.service.anchor_audit_trail(world.admin)
    assert (first.sequence, first.object_key) == (6, "audit-anchors/6.json")
    assert await world.service.anchor_audit_trail(world.admin) == first  # the same head: no new anchor
    await world.record("submission.approved", world.pharma, minutes=7)
    await world.record("submission.started", world.cro, minutes=8, actor="cro-user")
    second = await world.service.write_audit_anchor()
    assert second is not None and (second.sequence, second.previous_sequence) == (8, 6)
    stored = domain.Anchor.from_json((world.storage.root / "audit-anchors" / "8.json").read_bytes())
    assert stored == second

    result = await world.service.verify_audit_trail(world.admin)
    assert result.ok and result.anchors_checked == 2

    # Someone with write access edits entry 3 and recomputes every hash after it.
    await world.sql("UPDATE identity.audit_log SET actor_id = 'someone-else' WHERE sequence = 3")
    await rehash(world)
    assert domain.verify_chain(await world.service.audit_trail()).ok  # the chain alone is consistent again
    result = await world.service.verify_audit_trail(world.admin)
    found = result.first_break
    assert found is not None and (found.kind, found.sequence) == (BreakKind.ANCHOR_MISMATCH, 6)
    assert found.expected_hash == first.hash

    # Removing the tail instead leaves the latest anchor past the head.
    await world.sql("DELETE FROM identity.audit_log WHERE sequence > 6")
    found = (await world.service.verify_audit_trail(world.admin)).first_break
    assert found is not None and found.kind is BreakKind.ANCHOR_MISMATCH  # 6 still comes first
    await world.sql("DELETE FROM identity.audit_log WHERE sequence > 2")
    await rehash(world)
    found = (await world.service.verify_audit_trail(world.admin)).first_break
    assert found is not None and (found.kind, found.sequence) == (BreakKind.ANCHOR_BEYOND_HEAD, 6)


async def rehash(world: World) -> None:
    previous = domain.GENESIS_HASH
    for entry in await world.service.audit_trail():
        fresh = domain.audit_hash(previous, entry)
        await world.sql("UPDATE identity.audit_log SET hash = :hash WHERE sequence = :sequence",
                        hash=fresh, sequence=entry.sequence)
        previous = fresh


async def test_filters_by_actor_target_type_and_time(world: World) -> None:
    submission = await journey(world)

    async def actions(**filters: str) -> list[str]:
        found, total = await world.service.list_audit_events(world.admin, PAGE, **filters)
        assert total == len(found)
        return [e.action for e in found]

    assert await actions(actor_id="user-2") == ["molecule.updated"]
    assert await actions(target_type="document") == ["signature.signed", "document.created"]
    assert await actions(target_id=submission, action="submission.") == [
        "submission.quoted", "submission.submitted", "submission.created"]
    assert await actions(occurred_after=(T0 + timedelta(minutes=3)).isoformat(),
                         occurred_before="2026-03-01T09:05:00Z") == ["submission.submitted", "molecule.updated"]
    assert await actions(organization_id=world.cro) == ["submission.quoted", "signature.signed"]
    traced = await world.service.list_audit_events(world.admin, PAGE, action="submission.created")
    assert traced[0][0].trace_id == "ab" * 16
    with pytest.raises(ValidationError):
        await actions(occurred_after="last tuesday")


async def test_organization_auditors_and_admins_see_their_own_trail_only(world: World) -> None:
    await journey(world)
    cro_admin = await world.person(world.cro, "cro_admin")
    for reader in (await world.person(world.pharma, "auditor"), await world.person(world.pharma, "pharma_admin")):
        found, total = await world.service.list_audit_events(reader, PAGE)
        assert total == 4 and {e.organization_id for e in found} == {world.pharma}
        with pytest.raises(AuthorizationError):
            await world.service.list_audit_events(reader, PAGE, organization_id=world.cro)
    assert (await world.service.list_audit_events(cro_admin, PAGE))[1] == 2
    with pytest.raises(AuthorizationError):
        await world.service.list_audit_events(await world.person(world.pharma, "pharma_scientist"), PAGE)
    platform_auditor = await world.person(world.admin.organization_id, "auditor")
    assert (await world.service.list_audit_events(platform_auditor, PAGE))[1] == 6


async def test_auditors_belong_to_any_kind_of_organization_and_hold_no_other_role(world: World) -> None:
    auditor = await world.person(world.cro, "auditor")
    assert auditor.roles == frozenset({"auditor"}) and auditor.organization_kind == "CRO"
    with pytest.raises(ValidationError) as refused:
        await world.service.create_user(
            world.admin, email="both@audit.test", full_name="Both", password=PASSWORD,
            roles=["auditor", "pharma_scientist"], organization_id=world.pharma, request_id="",
        )
    assert any("read-only" in problem for _, problem in refused.value.field_violations)


async def test_a_role_change_is_audited_with_its_before_and_after(world: World) -> None:
    scientist = await world.person(world.pharma, "pharma_scientist")
    await world.service.update_user(world.admin, scientist.subject, full_name="", roles=["pharma_admin"], unlock=False)
    query = sa.text("SELECT payload FROM identity.outbox ORDER BY created_at")
    async with world.engine.connect() as connection:
        envelopes = [EventEnvelope.FromString(p) for p in (await connection.execute(query)).scalars()]
    audits = [unpack(e, AuditRecorded) for e in envelopes if e.payload.Is(AuditRecorded.DESCRIPTOR)]
    [updated] = [a for a in audits if a.action == "user.updated" and a.target_id == scientist.subject]
    assert dict(updated.details) == {
        "fields": "roles", "roles.before": "pharma_scientist", "roles.after": "pharma_admin"}


async def test_an_objects_history_includes_the_events_that_name_it(world: World) -> None:
    submission = await journey(world)
    found, total = await world.service.audit_history(world.admin, PAGE, "submission", submission)
    assert [e.action for e in found] == [
        "submission.created", "document.created", "submission.submitted", "signature.signed", "submission.quoted"]
    assert total == 5
    pharma_side, _ = await world.service.audit_history(await world.person(world.pharma, "auditor"), PAGE,
                                                       "submission", submission)
    assert [e.action for e in pharma_side] == ["submission.created", "document.created", "submission.submitted"]
    with pytest.raises(ValidationError):
        await world.service.audit_history(world.admin, PAGE, "submission", " ")


async def test_export_streams_the_filtered_trail_as_safe_csv(world: World) -> None:
    submission = await journey(world)
    await world.record("=cmd|' /C calc'!A0", world.pharma, target_id=submission, minutes=9)
    export = await world.service.export_audit_events(world.admin, target_id=submission)
    text = "".join([chunk async for chunk in export.chunks])
    lines = text.splitlines()
    assert export.filename == "audit-events.csv"
    assert lines[0].split(",")[:5] == ["sequence", "occurred_at", "organization_id", "source", "action"]
    assert [line.split(",")[0] for line in lines[1:]] == ["1", "4", "6", "7"]  # oldest first
    assert "'=cmd|" in lines[-1]
    with pytest.raises(AuthorizationError):
        await world.service.export_audit_events(await world.person(world.cro, "auditor"), organization_id=world.pharma)


async def test_the_identity_process_anchors_periodically_and_serves_the_trail_over_grpc(
    world: World, database_url: str, nats_server, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    settings = IdentitySettings.from_env("identity", {
        "DATABASE_URL": database_url, "NATS_URL": nats_server.url, "MOLBRIDGE_DATA_DIR": str(tmp_path / "data"),
        "MOLBRIDGE_IDENTITY_ADDR": f"127.0.0.1:{free_port()}", "MOLBRIDGE_AUDIT_ANCHOR_INTERVAL_S": "0.2",
    })
    submission = await journey(world)
    latest = settings.data_dir / "objects" / "audit-anchors" / "latest.json"
    token = (await world.service.login(*ADMIN)).access_token
    auth = [("authorization", f"Bearer {token}")]
    async with running("identity", build_server(settings), settings), \
            grpc.aio.insecure_channel(settings.listen_addr) as channel:
        for _ in range(300):
            if latest.exists():
                break
            await asyncio.sleep(0.05)
        assert domain.Anchor.from_json(latest.read_bytes()).sequence >= 6
        stub = pb_grpc.IdentityServiceStub(channel)
        verified = (await stub.VerifyAuditTrail(pb.VerifyAuditTrailRequest(), metadata=auth)).data
        assert verified.ok and verified.anchors_checked >= 1 and verified.entries_checked >= 6
        assert not verified.HasField("first_break")
        call = stub.ExportAuditEvents(pb.ExportAuditEventsRequest(target_id=submission), metadata=auth)
        chunks = [message async for message in call]
        assert chunks[0].content_type.startswith("text/csv")
        assert 'filename="audit-events.csv"' in dict(await call.initial_metadata())["content-disposition"]
        assert len(b"".join(c.data for c in chunks).decode().splitlines()) == 4  # the header and 3 entries
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.ListAuditEvents(pb.ListAuditEventsRequest(occurred_before="soon"), metadata=auth)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
