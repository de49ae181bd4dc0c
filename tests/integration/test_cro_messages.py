"""Message threads through the real MessageService servicer: two in-process replicas of the CRO service on
one PostgreSQL and one NATS, callers with real tokens of the real identity service (same database).

A watcher on replica A must see a message posted through replica B: the event goes B's outbox → relay →
JetStream → A's own feed consumer → A reads the message from the database.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa
from molbridge.cro.v1 import cro_service_pb2 as pb
from molbridge.cro.v1 import cro_service_pb2_grpc as pb_grpc
from molbridge.events.v1.audit_pb2 import AuditRecorded
from molbridge.events.v1.cro_pb2 import SubmissionMessagePosted
from molbridge.events.v1.envelope_pb2 import EventEnvelope
from sqlalchemy.ext.asyncio import AsyncEngine

from bus import outbox_table, unpack
from services.cro.bootstrap import MIGRATIONS as CRO_MIGRATIONS
from services.cro.domain.submissions import ServiceFacts, Submission
from services.cro.domain.vocabulary import SubmissionStatus
from services.cro.server.messages import MessageServicer
from services.cro.service.messages import MessageService, message_feed
from services.cro.store import SCHEMA as CRO_SCHEMA
from services.cro.store import transactions
from services.cro.store.tables import cro_services
from services.identity.bootstrap import MIGRATIONS as IDENTITY_MIGRATIONS
from services.identity.service import IdentityService
from services.identity.store import SCHEMA as IDENTITY_SCHEMA
from services.runtime.auth import Authenticator, Principal, TokenVerifier
from services.runtime.db import make_engine
from services.runtime.feeds import Feed
from services.runtime.process import Outbox, Process, running
from services.runtime.settings import Settings
from stack.ports import free_port
from tests.integration.identity_world import started_identity

ADMIN = ("root@platform.test", "Platform-Root-Pass1!")
PASSWORD = "Scientist-Pass-123!"
HEARTBEAT_S = 0.2
EVENT_WAIT_S = 30.0  # generous: the wait ends as soon as the event is there


class NoDocuments:
    """The integration tests post no document references (the e2e test does, through the real service)."""

    async def submission_of(self, document_id: str, credentials: object) -> str | None:
        return None


@dataclass
class World:
    a: pb_grpc.MessageServiceStub  # replica A
    b: pb_grpc.MessageServiceStub  # replica B
    tokens: dict[str, str]  # "pharma", "pharma_admin", "cro", "stranger"
    submitted: str  # a SUBMITTED submission of pharma → cro
    draft: str  # a DRAFT one
    engine: AsyncEngine
    feed_a: Feed  # replica A's watchers

    def auth(self, who: str) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.tokens[who]}")]


async def _people(identity: IdentityService, verifier: TokenVerifier) -> tuple[dict[str, str], dict[str, str]]:
    admin = await verifier.verify((await identity.login(*ADMIN)).access_token)
    tokens, orgs = {}, {}
    members = {
        "pharma": ("PHARMA", "pharma_scientist"),
        "pharma_admin": ("PHARMA", "pharma_admin"),
        "cro": ("CRO", "cro_technician"),
        "stranger": ("CRO", "cro_admin"),
    }
    for who, (kind, role) in members.items():
        org = "pharma" if who.startswith("pharma") else who
        if org not in orgs:
            orgs[org] = (await identity.create_organization(admin, f"{org} {uuid.uuid4().hex[:6]}", kind, "")).id
        email = f"{who}@{org}.test"
        await identity.create_user(
            admin, email=email, full_name=who, password=PASSWORD, roles=[role], organization_id=orgs[org], request_id=""
        )
        tokens[who] = (await identity.login(email, PASSWORD)).access_token
    return tokens, orgs


async def write_submission(
    engine: AsyncEngine, pharma_org: str, cro_org: str, status: SubmissionStatus, scientist: Principal
) -> str:
    """A submission in `status` (with its CRO service), written by the service's own repository: the journey
    to SUBMITTED (molecules, signed documents, gates) is the submission tests' business."""
    service_id = str(uuid.uuid4())
    uow_factory = transactions(engine)
    async with uow_factory() as uow:
        await uow.session.execute(
            sa.insert(cro_services).values(
                id=service_id, organization_id=cro_org, name="ADME panel", service_type="ADME", base_price=100,
                currency="EUR", turnaround_days=10, created_by="test",
            )
        )
        submission, _ = Submission.create(
            scientist, service=ServiceFacts(service_id, cro_org, "ADME", "EUR"), name="thread test",
            sample_prefix="7F3K", at=datetime.now(UTC),
        )
        submission.status = status
        await uow.submissions.add(submission)
        return submission.id


@pytest.fixture
async def world(database_url: str, nats_server, tmp_path: Path) -> AsyncIterator[World]:  # type: ignore[no-untyped-def]
    IDENTITY_MIGRATIONS.upgrade(database_url)
    CRO_MIGRATIONS.upgrade(database_url)
    identity_engine = make_engine(database_url, IDENTITY_SCHEMA)
    identity = await started_identity(identity_engine, tmp_path / "mail", *ADMIN)
    verifier = TokenVerifier(identity.jwks)
    tokens, orgs = await _people(identity, verifier)
    scientist = await verifier.verify(tokens["pharma"])
    engine = make_engine(database_url, CRO_SCHEMA)
    submitted = await write_submission(engine, orgs["pharma"], orgs["cro"], SubmissionStatus.SUBMITTED, scientist)
    draft = await write_submission(engine, orgs["pharma"], orgs["cro"], SubmissionStatus.DRAFT, scientist)

    feeds: dict[str, Feed] = {}

    def replica(name: str) -> tuple[Process, Settings]:
        settings = Settings.from_env("cro", {
            "MOLBRIDGE_CRO_ADDR": f"127.0.0.1:{free_port()}", "MOLBRIDGE_DATA_DIR": str(tmp_path / name),
            "NATS_URL": nats_server.url,
        })
        feed = feeds[name] = Feed()
        service = MessageService(transactions(engine), NoDocuments(), feed, heartbeat_s=HEARTBEAT_S)
        process = Process(
            servicers=[(pb_grpc.add_MessageServiceServicer_to_server, MessageServicer(service))],
            authenticator=Authenticator(verifier, identity),
            outbox=Outbox(engine, CRO_SCHEMA),
            consumers=[message_feed(feed, f"cro-{name}")],
        )
        return process, settings

    (process_a, settings_a), (process_b, settings_b) = replica("a"), replica("b")
    try:
        async with (
            running("cro", process_a, settings_a),
            running("cro", process_b, settings_b),
            grpc.aio.insecure_channel(settings_a.listen_addr) as channel_a,
            grpc.aio.insecure_channel(settings_b.listen_addr) as channel_b,
        ):
            yield World(
                pb_grpc.MessageServiceStub(channel_a), pb_grpc.MessageServiceStub(channel_b), tokens, submitted,
                draft, engine, feeds["a"],
            )
    finally:
        await engine.dispose()
        await identity_engine.dispose()


async def post(stub: pb_grpc.MessageServiceStub, world: World, who: str, text: str, **fields: str) -> pb.Message:
    reply = await stub.PostMessage(
        pb.PostMessageRequest(id=world.submitted, text=text, **fields), metadata=world.auth(who)
    )
    return reply.data


async def unread(world: World, who: str) -> tuple[dict[str, int], int]:
    reply = await world.a.GetUnreadCounts(pb.GetUnreadCountsRequest(), metadata=world.auth(who))
    return {c.submission_id: c.unread for c in reply.data}, reply.total


async def test_both_sides_post_and_read_the_thread_and_unread_counts_follow(world: World) -> None:
    first = await post(world.a, world, "pharma", "  Can you run this at 37 °C?  ")
    assert (first.text, first.side, first.submission_id) == ("Can you run this at 37 °C?", "PHARMA", world.submitted)
    second = await post(world.b, world, "cro", "Yes, 37 °C is our default.")
    third = await post(world.a, world, "pharma_admin", "Thanks.")
    assert second.side == "CRO"

    listed = await world.b.ListMessages(pb.ListMessagesRequest(id=world.submitted), metadata=world.auth("cro"))
    assert [m.id for m in listed.data] == [first.id, second.id, third.id]
    assert (listed.meta.total, listed.meta.page, listed.meta.page_size) == (3, 1, 50)
    page_two = await world.a.ListMessages(
        pb.ListMessagesRequest(id=world.submitted, page=2, page_size=2), metadata=world.auth("pharma")
    )
    assert [m.id for m in page_two.data] == [third.id]

    # Unread: messages by others after the caller's mark.
    assert await unread(world, "cro") == ({world.submitted: 2}, 2)
    assert await unread(world, "pharma") == ({world.submitted: 2}, 2)
    assert await unread(world, "pharma_admin") == ({world.submitted: 2}, 2)
    marked = await world.a.MarkMessagesRead(
        pb.MarkMessagesReadRequest(id=world.submitted, up_to_message_id=first.id), metadata=world.auth("cro")
    )
    assert marked.unread == 1
    # Monotonic: marking everything, then an older message again, never un-reads.
    everything = await world.b.MarkMessagesRead(
        pb.MarkMessagesReadRequest(id=world.submitted), metadata=world.auth("cro")
    )
    assert everything.unread == 0
    again = await world.a.MarkMessagesRead(
        pb.MarkMessagesReadRequest(id=world.submitted, up_to_message_id=first.id), metadata=world.auth("cro")
    )
    assert again.unread == 0
    assert await unread(world, "cro") == ({}, 0)
    await post(world.b, world, "pharma", "One more thing.")
    assert await unread(world, "cro") == ({world.submitted: 1}, 1)

    # The audit trail and the event went to the outbox with the message.
    async with world.engine.connect() as connection:
        rows = (await connection.execute(sa.select(outbox_table(CRO_SCHEMA).c.payload))).scalars().all()
    envelopes = [EventEnvelope.FromString(row) for row in rows]
    posted = [unpack(e, SubmissionMessagePosted) for e in envelopes if e.payload.Is(SubmissionMessagePosted.DESCRIPTOR)]
    audits = [unpack(e, AuditRecorded) for e in envelopes if e.payload.Is(AuditRecorded.DESCRIPTOR)]
    assert {p.message_id for p in posted} >= {first.id, second.id, third.id}
    assert {a.action for a in audits} == {"submission.message_posted"}


async def test_posting_is_idempotent_and_checked(world: World) -> None:
    once = await post(world.a, world, "cro", "Sample arrived.", request_id="r-1")
    twice = await post(world.b, world, "cro", "Sample arrived.", request_id="r-1")
    assert once.id == twice.id
    listed = await world.a.ListMessages(pb.ListMessagesRequest(id=world.submitted), metadata=world.auth("cro"))
    assert [m.id for m in listed.data] == [once.id]
    for text, fields in (("", {}), ("x" * 5001, {}), ("ok", {"document_id": "not-a-document"})):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await post(world.a, world, "pharma", text, **fields)
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert len((await post(world.a, world, "pharma", "y" * 5000)).text) == 5000


async def test_strangers_see_nothing_and_the_cro_no_draft(world: World) -> None:
    calls = [
        lambda stub, sid, md: stub.ListMessages(pb.ListMessagesRequest(id=sid), metadata=md),
        lambda stub, sid, md: stub.PostMessage(pb.PostMessageRequest(id=sid, text="hello"), metadata=md),
        lambda stub, sid, md: stub.MarkMessagesRead(pb.MarkMessagesReadRequest(id=sid), metadata=md),
    ]
    for who, submission_id in (("stranger", world.submitted), ("cro", world.draft), ("cro", "not-a-uuid")):
        for call in calls:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call(world.a, submission_id, world.auth(who))
            assert refused.value.code() is grpc.StatusCode.NOT_FOUND, (who, submission_id)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async for _ in world.a.WatchMessages(pb.WatchMessagesRequest(id=submission_id), metadata=world.auth(who)):
                pass
        assert refused.value.code() is grpc.StatusCode.NOT_FOUND
    await post(world.a, world, "pharma", "for the CRO only")
    assert await unread(world, "stranger") == ({}, 0)
    # The pharma side has a DRAFT but no thread yet: posting there is a state conflict.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await world.a.PostMessage(pb.PostMessageRequest(id=world.draft, text="early"), metadata=world.auth("pharma"))
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION


async def test_a_watcher_on_one_replica_sees_what_is_posted_through_the_other(world: World) -> None:
    before = await post(world.a, world, "pharma", "before the watch")
    after_before = await post(world.a, world, "cro", "also before")
    call = world.a.WatchMessages(
        pb.WatchMessagesRequest(id=world.submitted, after_id=before.id), metadata=world.auth("pharma")
    )
    stream = aiter(call)

    async def next_message() -> pb.Message:
        while True:  # skip heartbeats
            reply = await anext(stream)
            if reply.HasField("message"):
                return reply.message

    assert (await asyncio.wait_for(next_message(), EVENT_WAIT_S)).id == after_before.id  # the backlog
    heartbeat = await asyncio.wait_for(anext(stream), EVENT_WAIT_S)  # nothing new: a heartbeat comes
    assert not heartbeat.HasField("message")

    posted = await post(world.b, world, "cro", "posted through replica B")
    live = await asyncio.wait_for(next_message(), EVENT_WAIT_S)
    assert (live.id, live.text, live.side) == (posted.id, "posted through replica B", "CRO")
    assert world.feed_a.watchers(world.submitted) == 1
    call.cancel()  # the client goes away: the server's stream ends and its watcher is gone

    async def released() -> None:
        while world.feed_a.watchers(world.submitted):
            await asyncio.sleep(0.05)

    await asyncio.wait_for(released(), EVENT_WAIT_S)


async def test_a_watch_without_after_id_gets_only_new_messages(world: World) -> None:
    await post(world.a, world, "pharma", "old news")
    call = world.b.WatchMessages(pb.WatchMessagesRequest(id=world.submitted), metadata=world.auth("cro"))
    stream = aiter(call)
    assert not (await asyncio.wait_for(anext(stream), EVENT_WAIT_S)).HasField("message")  # registered: heartbeat
    fresh = await post(world.a, world, "pharma_admin", "fresh")
    while not (reply := await asyncio.wait_for(anext(stream), EVENT_WAIT_S)).HasField("message"):
        pass
    assert reply.message.id == fresh.id
    call.cancel()
