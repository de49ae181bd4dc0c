"""The notification service on real PostgreSQL and NATS: identity (the real service, same database) announces
its users through its outbox, the notification server keeps its directory from them, and events published
on JetStream as the other services publish them become notifications exactly once, for the right people,
on the channels their preferences leave on; callers use the real NotificationService servicer with real
tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet
from google.protobuf.message import Message
from molbridge.events.v1.cro_pb2 import QuoteProvided, SubmissionTransitioned
from molbridge.events.v1.document_pb2 import SignatureRequested
from molbridge.events.v1.identity_pb2 import UserChanged
from molbridge.events.v1.molecule_pb2 import ImportFinished
from molbridge.notification.v1 import notification_service_pb2 as pb
from molbridge.notification.v1 import notification_service_pb2_grpc as pb_grpc
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError as ConsumerNotFound
from sqlalchemy.ext.asyncio import AsyncEngine

from bus.connection import connect
from bus.envelope import build_envelope
from bus.streams import EVENTS_STREAM, ensure_streams
from bus.subjects import event_subject
from services.identity.bootstrap import MIGRATIONS as IDENTITY_MIGRATIONS
from services.identity.service import IdentityService
from services.identity.store import SCHEMA as IDENTITY_SCHEMA
from services.notification.bootstrap import MIGRATIONS, NotificationSettings, build_parts
from services.notification.domain.recipients import Member
from services.notification.service.notifications import notification_feed
from services.notification.store import SCHEMA
from services.notification.store.tables import directory_users, email_deliveries, notifications, webhook_deliveries
from services.notification.store.tables import webhooks as webhook_table
from services.runtime.auth import Authenticator, Principal, TokenVerifier
from services.runtime.db import make_engine
from services.runtime.process import Outbox, Process, running
from services.runtime.settings import Settings
from stack.ports import free_port
from tests.integration.identity_world import started_identity

ADMIN = ("root@platform.test", "Platform-Root-Pass1!")
PASSWORD = "Member-Pass-123!"
WAIT_S = 30.0  # generous: every wait ends as soon as the condition holds
T = TypeVar("T")

PEOPLE = {  # who: (organization, role)
    "submitter": ("pharma", "pharma_scientist"),
    "scientist": ("pharma", "pharma_scientist"),
    "padmin": ("pharma", "pharma_admin"),
    "cadmin": ("cro", "cro_admin"),
    "tech": ("cro", "cro_technician"),
    "stranger": ("rival", "cro_admin"),
}
KINDS = {"pharma": "PHARMA", "cro": "CRO", "rival": "CRO"}


@dataclass
class World:
    stub: pb_grpc.NotificationServiceStub
    js: JetStreamContext
    engine: AsyncEngine
    identity: IdentityService
    admin: Principal
    users: dict[str, str]  # who → user id
    tokens: dict[str, str]
    orgs: dict[str, str]
    parts: Any

    def auth(self, who: str) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.tokens[who]}")]

    async def publish(
        self, source: str, event: Message, *, actor: str = "", event_id: str = "", at: datetime | None = None
    ) -> str:
        """Publishes as the relay does (subject, envelope, Nats-Msg-Id); answers the event id."""
        event_id = event_id or str(uuid.uuid4())
        envelope = build_envelope(
            event_id=event_id, source=source, payload=event, occurred_at=at or datetime.now(UTC),
            organization_id=getattr(event, "organization_id", "") or self.orgs.get(PEOPLE.get(actor, ("", ""))[0], ""),
            actor_id=self.users.get(actor, actor),
        )
        # A fresh message id each time: JetStream's dedupe must not hide a redelivery from the consumer.
        await self.js.publish(
            event_subject(source, event), envelope.SerializeToString(), headers={"Nats-Msg-Id": str(uuid.uuid4())}
        )
        return event_id

    async def listed(self, who: str, **filters: Any) -> pb.ListNotificationsResponse:
        return await self.stub.ListNotifications(pb.ListNotificationsRequest(**filters), metadata=self.auth(who))

    def submitted(self, submission_id: str, *, to_status: str = "SUBMITTED", from_status: str = "DRAFT") -> Message:
        return SubmissionTransitioned(
            submission_id=submission_id, organization_id=self.orgs["pharma"], cro_organization_id=self.orgs["cro"],
            from_status=from_status, to_status=to_status, action="SUBMIT", name="Kinase panel",
            created_by=self.users["submitter"],
        )


async def eventually(probe: Callable[[], Awaitable[T]], until: Callable[[T], bool]) -> T:
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while True:
        value = await probe()
        if until(value):
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {WAIT_S} s; last value: {value!r}")
        await asyncio.sleep(0.05)


async def _fresh_consumers(js: JetStreamContext, parts: Any) -> None:
    """The NATS server outlives a test's database: this test's durables start from the stream's start."""
    for subscription in parts.subscriptions:
        with contextlib.suppress(ConsumerNotFound):
            await js.delete_consumer(EVENTS_STREAM, subscription.durable)


@pytest.fixture
async def world(database_url: str, nats_server, tmp_path: Path) -> AsyncIterator[World]:  # type: ignore[no-untyped-def]
    IDENTITY_MIGRATIONS.upgrade(database_url)
    MIGRATIONS.upgrade(database_url)
    identity_engine = make_engine(database_url, IDENTITY_SCHEMA)
    engine = make_engine(database_url, SCHEMA)
    identity = await started_identity(identity_engine, tmp_path / "mail", *ADMIN)
    verifier = TokenVerifier(identity.jwks)
    admin = await verifier.verify((await identity.login(*ADMIN)).access_token)
    settings = NotificationSettings.from_env("notification", {
        "MOLBRIDGE_NOTIFICATION_ADDR": f"127.0.0.1:{free_port()}", "MOLBRIDGE_DATA_DIR": str(tmp_path / "n"),
        "NATS_URL": nats_server.url, "MOLBRIDGE_APP_URL": "https://app.test",
        "MOLBRIDGE_WEBHOOK_SECRET_KEY": Fernet.generate_key().decode(),
    })
    parts = build_parts(settings, engine)
    server = Process(
        servicers=parts.servicers,
        authenticator=Authenticator(verifier, identity),
        subscriptions=parts.subscriptions,
        outbox=Outbox(engine, SCHEMA),
        consumers=[notification_feed(parts.notifications.feed, f"notification-{uuid.uuid4().hex[:6]}")],
    )
    relay_settings = Settings.from_env("identity-relay", {"NATS_URL": nats_server.url,
                                                          "MOLBRIDGE_DATA_DIR": str(tmp_path / "i")})
    nc = await connect(nats_server.url)
    js = nc.jetstream()
    await ensure_streams(js)
    await _fresh_consumers(js, parts)
    try:
        async with (
            running("identity-relay", Process(outbox=Outbox(identity_engine, IDENTITY_SCHEMA)), relay_settings),
            running("notification", server, settings),
            grpc.aio.insecure_channel(settings.listen_addr) as channel,
        ):
            users, tokens, orgs = {}, {}, {}
            for org, kind in KINDS.items():
                orgs[org] = (await identity.create_organization(admin, f"{org} {uuid.uuid4().hex[:6]}", kind, "")).id
            for who, (org, role) in PEOPLE.items():
                email = f"{who}@{org}.test"
                user = await identity.create_user(admin, email=email, full_name=who.title(), password=PASSWORD,
                                                  roles=[role], organization_id=orgs[org], request_id="")
                users[who] = user.id
                tokens[who] = (await identity.login(email, PASSWORD)).access_token
            world = World(pb_grpc.NotificationServiceStub(channel), js, engine, identity, admin, users, tokens,
                          orgs, parts)
            await eventually(lambda: _directory(world), lambda rows: set(users.values()) <= set(rows))
            yield world
    finally:
        await nc.close()
        await engine.dispose()
        await identity_engine.dispose()


async def _directory(world: World) -> dict[str, Any]:
    async with world.engine.connect() as connection:
        rows = await connection.execute(sa.select(directory_users))
        return {row.user_id: row for row in rows}


async def _rows(world: World, table: sa.Table, **where: Any) -> list[Any]:
    async with world.engine.connect() as connection:
        query = sa.select(table).where(*(table.c[k] == v for k, v in where.items()))
        return list(await connection.execute(query))


async def test_the_directory_follows_identity(world: World) -> None:
    rows = await _directory(world)
    tech = rows[world.users["tech"]]
    assert (tech.organization_id, tech.organization_kind, tech.roles, tech.email, tech.display_name) == (
        world.orgs["cro"], "CRO", ["cro_technician"], "tech@cro.test", "Tech"
    )
    assert tech.active and not tech.deleted

    await world.identity.update_user(world.admin, world.users["tech"], full_name="", roles=["cro_admin"],
                                     unlock=False)
    await world.identity.delete_user(world.admin, world.users["stranger"])
    rows = await eventually(
        lambda: _directory(world),
        lambda r: r[world.users["tech"]].roles == ["cro_admin"] and r[world.users["stranger"]].deleted,
    )
    assert not rows[world.users["stranger"]].active

    # A directory lost (or a consumer new to an existing deployment) is filled again by announce-users.
    async with world.engine.begin() as connection:
        await connection.execute(sa.delete(directory_users))
    assert await world.identity.announce_users() == len(PEOPLE) + 1  # and the platform admin
    rows = await eventually(lambda: _directory(world), lambda r: set(world.users.values()) <= set(r))
    assert rows[world.users["stranger"]].deleted and rows[world.users["tech"]].roles == ["cro_admin"]

    # A late, older announcement changes nothing; a newer one does.
    stale = Member(world.users["tech"], world.orgs["cro"], frozenset({"cro_technician"}))
    assert not await world.parts.directory.user_changed(stale, "CRO", datetime.now(UTC) - timedelta(days=1))
    assert (await _directory(world))[world.users["tech"]].roles == ["cro_admin"]


async def test_a_submission_tells_the_cro_admins_exactly_once(world: World) -> None:
    submission = str(uuid.uuid4())
    event_id = await world.publish("cro", world.submitted(submission), actor="submitter")
    listed = await eventually(lambda: world.listed("cadmin"), lambda r: r.meta.total >= 1)
    [notice] = listed.data
    assert notice.type == pb.Notification.SUBMISSION_SUBMITTED
    assert (notice.title, notice.subject_id, notice.submission_id, notice.event_id) == (
        'New submission "Kinase panel"', submission, submission, event_id
    )
    assert notice.link == f"https://app.test/submissions/{submission}"
    assert not notice.read and listed.unread == 1

    # The same event again (a redelivery): nothing new. A later event shows it was processed meanwhile.
    await world.publish("cro", world.submitted(submission), actor="submitter", event_id=event_id)
    await world.publish("molecule", ImportFinished(job_id="job-1", status="completed", registered=3),
                        actor="submitter", event_id="marker-" + event_id)
    await eventually(lambda: world.listed("submitter"), lambda r: r.meta.total == 1)
    assert len(await _rows(world, notifications, event_id=event_id)) == 1
    for who in ("tech", "submitter", "padmin", "stranger", "scientist"):
        kinds = [n.type for n in (await world.listed(who)).data]
        assert pb.Notification.SUBMISSION_SUBMITTED not in kinds, who

    # Email queued once for the admin (on by default for submissions).
    [email] = await _rows(world, email_deliveries, notification_id=notice.id)
    assert (email.email, email.status, email.digest, email.attempts) == ("cadmin@cro.test", "PENDING", "OFF", 0)


async def test_history_past_the_horizon_tells_nobody(world: World) -> None:
    old = await world.publish("cro", world.submitted(str(uuid.uuid4())), actor="submitter",
                              at=datetime.now(UTC) - timedelta(days=8))
    recent = await world.publish("cro", world.submitted(str(uuid.uuid4())), actor="submitter",
                                 at=datetime.now(UTC) - timedelta(days=6))
    await eventually(lambda: _rows(world, notifications, event_id=recent), lambda rows: len(rows) == 1)
    assert await _rows(world, notifications, event_id=old) == []


async def test_only_the_recipient_reads_and_marks(world: World) -> None:
    await world.publish("cro", world.submitted(str(uuid.uuid4())), actor="submitter")
    await world.publish("cro", world.submitted(str(uuid.uuid4())), actor="submitter")
    listed = await eventually(lambda: world.listed("cadmin"), lambda r: r.meta.total == 2)
    first = listed.data[1]
    for who in ("tech", "stranger"):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await world.stub.MarkNotificationRead(pb.MarkNotificationReadRequest(id=first.id), metadata=world.auth(who))
        assert refused.value.code() is grpc.StatusCode.NOT_FOUND
    for bad in ("not-a-uuid", str(uuid.uuid4())):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await world.stub.MarkNotificationRead(pb.MarkNotificationReadRequest(id=bad), metadata=world.auth("cadmin"))
        assert refused.value.code() is grpc.StatusCode.NOT_FOUND

    marked = await world.stub.MarkNotificationRead(pb.MarkNotificationReadRequest(id=first.id),
                                                   metadata=world.auth("cadmin"))
    assert marked.data.read and marked.unread == 1
    unread = await world.listed("cadmin", unread_only=True)
    assert [n.id for n in unread.data] == [listed.data[0].id] and unread.meta.total == 1
    all_read = await world.stub.MarkAllNotificationsRead(pb.MarkAllNotificationsReadRequest(),
                                                         metadata=world.auth("cadmin"))
    assert all_read.marked == 1
    count = await world.stub.GetUnreadCount(pb.GetUnreadCountRequest(), metadata=world.auth("cadmin"))
    assert count.unread == 0
    by_type = await world.listed("cadmin", type=pb.Notification.SUBMISSION_QUOTED)
    assert by_type.meta.total == 0


async def test_a_quote_tells_the_submitter_and_pharma_admins_and_webhooks_of_both_sides(world: World) -> None:
    box = world.parts.secrets
    hooks = {}
    for org in ("pharma", "cro", "rival"):
        hooks[org] = str(uuid.uuid4())
        async with world.engine.begin() as connection:
            await connection.execute(sa.insert(webhook_table).values(
                id=hooks[org], organization_id=world.orgs[org], url=f"http://127.0.0.1:9/{org}",
                secret_encrypted=box.seal("s3cret"), event_types=[] if org != "cro" else ["SUBMISSION_SUBMITTED"],
            ))
    submission = str(uuid.uuid4())
    await world.publish("cro", world.submitted(submission, to_status="PENDING_REVIEW", from_status="SUBMITTED"))
    quote = QuoteProvided(submission_id=submission, organization_id=world.orgs["pharma"],
                          cro_organization_id=world.orgs["cro"], number=1, price="1200.00", currency="EUR",
                          turnaround_days=14)
    event_id = await world.publish("cro", quote, actor="cadmin")
    for who in ("submitter", "padmin"):
        listed = await eventually(functools.partial(world.listed, who), lambda r: r.meta.total == 1)
        assert listed.data[0].type == pb.Notification.SUBMISSION_QUOTED
        assert listed.data[0].body == "Quote 1: 1200.00 EUR, 14 days."
    for who in ("scientist", "cadmin", "tech", "stranger"):
        assert (await world.listed(who)).meta.total == 0, who
    # The pharma endpoint takes every type; the CRO's only submissions; the rival is no party.
    deliveries = await _rows(world, webhook_deliveries, event_id=event_id)
    assert [(d.webhook_id, d.status, d.event_type) for d in deliveries] == [
        (hooks["pharma"], "PENDING", "SUBMISSION_QUOTED")
    ]
    payload = deliveries[0].payload
    assert payload["type"] == "submission.quoted" and payload["data"]["price"] == "1200.00"


async def test_a_quote_ahead_of_its_submission_waits_for_it(world: World) -> None:
    """Events of one submission travel on different consumers: a quote whose submission is not known yet
    is retried until the transition has told who submitted it."""
    submission = str(uuid.uuid4())
    quote = QuoteProvided(submission_id=submission, organization_id=world.orgs["pharma"],
                          cro_organization_id=world.orgs["cro"], number=1, price="10.00", currency="EUR")
    await world.publish("cro", quote, actor="cadmin")

    async def redelivered() -> int:
        return int((await world.js.consumer_info(EVENTS_STREAM, "notification-quotes")).num_redelivered)

    await eventually(redelivered, lambda count: count >= 1)  # tried, and waiting
    await world.publish("cro", world.submitted(submission, to_status="PENDING_REVIEW", from_status="SUBMITTED"))
    for who in ("submitter", "padmin"):
        listed = await eventually(functools.partial(world.listed, who), lambda r: r.meta.total == 1)
        assert listed.data[0].type == pb.Notification.SUBMISSION_QUOTED


async def test_preferences_choose_the_channels(world: World) -> None:
    defaults = await world.stub.GetPreferences(pb.GetPreferencesRequest(), metadata=world.auth("cadmin"))
    switches = {(s.type, s.channel): s.enabled for s in defaults.data.settings}
    assert switches[(pb.Notification.SUBMISSION_SUBMITTED, pb.Preferences.EMAIL)]
    assert not switches[(pb.Notification.MESSAGE_POSTED, pb.Preferences.EMAIL)]
    assert defaults.data.email_digest == pb.Preferences.OFF

    in_app_off = pb.ChannelSetting(type=pb.Notification.SUBMISSION_SUBMITTED, channel=pb.Preferences.IN_APP)
    updated = await world.stub.UpdatePreferences(
        pb.UpdatePreferencesRequest(settings=[in_app_off], email_digest=pb.Preferences.DAILY),
        metadata=world.auth("cadmin"),
    )
    assert updated.data.email_digest == pb.Preferences.DAILY
    event_id = await world.publish("cro", world.submitted(str(uuid.uuid4())), actor="submitter")
    [hidden] = await eventually(lambda: _rows(world, notifications, event_id=event_id), lambda rows: len(rows) == 1)
    assert not hidden.in_app
    [email] = await _rows(world, email_deliveries, notification_id=hidden.id)
    assert email.digest == "DAILY"
    assert (await world.listed("cadmin")).meta.total == 0

    both_off = [in_app_off, pb.ChannelSetting(type=pb.Notification.SUBMISSION_SUBMITTED, channel=pb.Preferences.EMAIL)]
    await world.stub.UpdatePreferences(pb.UpdatePreferencesRequest(settings=both_off), metadata=world.auth("cadmin"))
    quiet = await world.publish("cro", world.submitted(str(uuid.uuid4())), actor="submitter")
    marker = await world.publish("molecule", ImportFinished(job_id="j", status="failed"), actor="submitter")
    await eventually(lambda: _rows(world, notifications, event_id=marker), lambda rows: len(rows) == 1)
    assert await _rows(world, notifications, event_id=quiet) == []

    reset = await world.stub.UpdatePreferences(pb.UpdatePreferencesRequest(reset_to_defaults=True),
                                               metadata=world.auth("cadmin"))
    assert {(s.type, s.channel): s.enabled for s in reset.data.settings} == switches
    assert reset.data.email_digest == pb.Preferences.DAILY  # the digest is its own choice

    for bad in (pb.ChannelSetting(type=pb.Notification.SUBMISSION_SUBMITTED, channel=pb.Preferences.WEBHOOK),
                pb.ChannelSetting(channel=pb.Preferences.EMAIL)):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await world.stub.UpdatePreferences(pb.UpdatePreferencesRequest(settings=[bad]),
                                               metadata=world.auth("cadmin"))
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_signature_requests_reach_the_signer_only_in_their_organizations(world: World) -> None:
    by_role = SignatureRequested(request_id="sr-1", document_id="doc-1", organization_id=world.orgs["pharma"],
                                 signer_organization_id=world.orgs["pharma"], signer_role="pharma_scientist",
                                 title="NDA")
    await world.publish("document", by_role, actor="padmin")
    outsider = SignatureRequested(request_id="sr-2", document_id="doc-2", organization_id=world.orgs["pharma"],
                                  signer_user_id=world.users["stranger"], title="NDA")
    await world.publish("document", outsider, actor="padmin")
    for who in ("submitter", "scientist"):
        listed = await eventually(functools.partial(world.listed, who), lambda r: r.meta.total == 1)
        assert listed.data[0].title == "Your signature is requested: NDA"
    marker = await world.publish("molecule", ImportFinished(job_id="j", status="failed"), actor="padmin")
    await eventually(lambda: _rows(world, notifications, event_id=marker), lambda rows: len(rows) == 1)
    assert (await world.listed("padmin")).meta.total == 1  # the import only: not their own request
    assert (await world.listed("stranger")).meta.total == 0


async def test_the_watch_streams_new_notifications(world: World) -> None:
    call = world.stub.WatchNotifications(pb.WatchNotificationsRequest(), metadata=world.auth("cadmin"))
    try:
        first = await asyncio.wait_for(call.read(), WAIT_S)
        assert not first.HasField("notification")  # the opening heartbeat: registered
        submission = str(uuid.uuid4())
        await world.publish("cro", world.submitted(submission), actor="submitter")
        while True:
            pushed = await asyncio.wait_for(call.read(), WAIT_S)
            if pushed.HasField("notification"):
                break
        assert (pushed.notification.type, pushed.notification.subject_id) == (
            pb.Notification.SUBMISSION_SUBMITTED, submission
        )
    finally:
        call.cancel()
    # Resuming after it: the unread ones created later come first.
    later = str(uuid.uuid4())
    await world.publish("cro", world.submitted(later), actor="submitter")
    await eventually(lambda: world.listed("cadmin"), lambda r: r.meta.total == 2)
    resumed = world.stub.WatchNotifications(pb.WatchNotificationsRequest(after_id=pushed.notification.id),
                                            metadata=world.auth("cadmin"))
    try:
        assert not (await asyncio.wait_for(resumed.read(), WAIT_S)).HasField("notification")
        backlog = await asyncio.wait_for(resumed.read(), WAIT_S)
        assert backlog.notification.subject_id == later
    finally:
        resumed.cancel()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        stranger = world.stub.WatchNotifications(pb.WatchNotificationsRequest(after_id=pushed.notification.id),
                                                 metadata=world.auth("tech"))
        await stranger.read()
    assert refused.value.code() is grpc.StatusCode.NOT_FOUND


def test_user_changed_is_in_the_contract() -> None:
    assert "at" in UserChanged.DESCRIPTOR.fields_by_name
