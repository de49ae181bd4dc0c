"""Identity use cases against a real PostgreSQL (service layer + servicer in-process)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path
from typing import Literal

import grpc
import jwt
import pyotp
import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher
from molbridge.events.v1.audit_pb2 import AuditRecorded
from molbridge.events.v1.envelope_pb2 import EventEnvelope
from molbridge.identity.v1 import identity_service_pb2 as pb
from molbridge.identity.v1 import identity_service_pb2_grpc as pb_grpc

from services.identity import domain
from services.identity.bootstrap import MIGRATIONS
from services.identity.domain import Session
from services.identity.server import PUBLIC_METHODS, IdentityServicer
from services.identity.service import IdentityService
from services.identity.store import SCHEMA, identity_transactions
from services.identity.store.signing_keys import KeyRing
from services.runtime.auth import Authenticator, Principal, TokenVerifier
from services.runtime.db import make_engine
from services.runtime.email import FolderSender
from services.runtime.errors import (
    AuthenticationError,
    AuthorizationError,
    ConflictError,
    IntegrationError,
    NotFoundError,
    PreconditionError,
    ValidationError,
)
from services.runtime.identity_client import SIGNER_NOT_CONFIRMED, RemoteIdentity, SignerIdentity
from services.runtime.pagination import PageRequest
from services.runtime.process import Process, running
from services.runtime.settings import Settings
from stack.ports import free_port

ADMIN = ("root@platform.test", "Platform-Root-Pass1!")
PASSWORD = "Scientist-Pass-123!"


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


class World:
    def __init__(self, service: IdentityService, clock: Clock, mail_dir: Path, engine) -> None:  # type: ignore[no-untyped-def]
        self.service, self.clock, self.mail_dir, self.engine = service, clock, mail_dir, engine
        self.admin: Principal
        self.verifier = TokenVerifier(service.jwks)

    async def principal(self, email: str, password: str) -> Principal:
        session = await self.service.login(email, password)
        return await self.verifier.verify(session.access_token)

    async def organization_with_admin(self, name: str, kind: str = "PHARMA") -> tuple[str, Principal]:
        organization = await self.service.create_organization(self.admin, name, kind, "")
        email = f"admin@{name.lower().replace(' ', '-')}.test"
        await self.service.create_user(
            self.admin, email=email, full_name=f"{name} admin", password=PASSWORD,
            roles=[f"{kind.lower()}_admin"], organization_id=organization.id, request_id="",
        )
        return organization.id, await self.principal(email, PASSWORD)

    def mail_count(self) -> int:
        return len(list(self.mail_dir.glob("*.eml")))

    async def reset_mail(self, email: str):  # type: ignore[no-untyped-def]
        """Requests a reset and waits for its email (sent after the answer, so the answer's timing
        does not depend on whether the address exists)."""
        before = self.mail_count()
        await self.service.request_password_reset(email)
        for _ in range(200):
            if self.mail_count() > before:
                break
            await asyncio.sleep(0.02)
        newest = max(self.mail_dir.glob("*.eml"), key=lambda p: p.stat().st_mtime_ns)
        return message_from_bytes(newest.read_bytes(), policy=policy.default)


@pytest.fixture
async def world(database_url: str, tmp_path: Path) -> AsyncIterator[World]:
    MIGRATIONS.upgrade(database_url)
    engine = make_engine(database_url, SCHEMA)
    clock = Clock()
    # Cheap Argon2id parameters: the tests exercise our rules, not the hash's cost.
    hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    service = IdentityService(
        identity_transactions(engine), KeyRing(""), FolderSender(tmp_path / "mail"), public_url="http://gw.test",
        clock=clock, hasher=hasher,
    )
    await service.ensure_signing_key()
    await service.bootstrap_admin(*ADMIN)
    w = World(service, clock, tmp_path / "mail" / "outbox" / "email", engine)
    w.mail_dir = tmp_path / "mail"
    w.admin = await w.principal(*ADMIN)
    yield w
    await engine.dispose()


async def test_bootstrap_creates_one_system_admin_once(world: World) -> None:
    assert world.admin.is_system_admin and world.admin.organization_kind == "PLATFORM"
    again = await world.service.bootstrap_admin("other@x.test", "Another-Pass-123!")
    assert not again.created


async def test_login_issues_eddsa_tokens_the_jwks_verifies(world: World) -> None:
    session = await world.service.login(*ADMIN)
    header = jwt.get_unverified_header(session.access_token)
    assert header["alg"] == "EdDSA" and header["kid"]
    jwks = await world.service.jwks()
    assert header["kid"] in {k["kid"] for k in jwks["keys"]}
    assert all("d" not in k for k in jwks["keys"])  # never the private part
    assert session.expires_in == 900 and session.refresh_token.startswith("rt_")
    with pytest.raises(AuthenticationError) as error:
        await world.service.login(ADMIN[0], "Wrong-Pass-123!")
    assert error.value.detail == "INVALID_CREDENTIALS"
    with pytest.raises(AuthenticationError):
        await world.service.login("nobody@x.test", "Wrong-Pass-123!")


async def test_five_failures_lock_the_account_for_thirty_minutes(world: World) -> None:
    _, admin = await world.organization_with_admin("Lockout Pharma")
    email = "admin@lockout-pharma.test"
    for _ in range(5):
        with pytest.raises(AuthenticationError):
            await world.service.login(email, "Wrong-Pass-123!")
    with pytest.raises(AuthenticationError) as error:
        await world.service.login(email, PASSWORD)  # right password, still refused
    # Answered like a wrong password: a locked account must not show that the email exists.
    assert (error.value.detail, error.value.message) == ("INVALID_CREDENTIALS", "Wrong email or password")
    world.clock.advance(timedelta(minutes=31))
    assert (await world.service.login(email, PASSWORD)).access_token


async def test_refresh_rotates_and_reuse_revokes_the_family(world: World) -> None:
    first = await world.service.login(*ADMIN)
    second = await world.service.refresh(first.refresh_token)
    assert second.refresh_token != first.refresh_token
    third = await world.service.refresh(second.refresh_token)
    with pytest.raises(AuthenticationError) as error:
        await world.service.refresh(first.refresh_token)  # spent: theft suspected
    assert error.value.detail == "REFRESH_REUSED"
    with pytest.raises(AuthenticationError):
        await world.service.refresh(third.refresh_token)  # the whole family is gone
    other = await world.service.login(*ADMIN)  # another login is another family
    assert (await world.service.refresh(other.refresh_token)).access_token


async def test_refresh_token_expires_after_seven_days(world: World) -> None:
    session = await world.service.login(*ADMIN)
    world.clock.advance(timedelta(days=7, seconds=1))
    with pytest.raises(AuthenticationError):
        await world.service.refresh(session.refresh_token)


async def test_logout_revokes_the_session(world: World) -> None:
    session = await world.service.login(*ADMIN)
    assert await world.service.logout(world.admin, session.refresh_token) == 1
    with pytest.raises(AuthenticationError):
        await world.service.refresh(session.refresh_token)


async def test_password_change_rejects_weak_and_recent_passwords(world: World) -> None:
    with pytest.raises(ValidationError) as weak:
        await world.service.change_password(world.admin, ADMIN[1], "weakpass")
    assert weak.value.detail == "WEAK_PASSWORD"
    with pytest.raises(ValidationError) as wrong:
        await world.service.change_password(world.admin, "Not-The-Pass-1!", "Brand-New-Pass-1!")
    assert wrong.value.detail == "WRONG_PASSWORD"
    await world.service.change_password(world.admin, ADMIN[1], "Brand-New-Pass-1!")
    with pytest.raises(ValidationError) as reused:
        await world.service.change_password(world.admin, "Brand-New-Pass-1!", ADMIN[1])
    assert reused.value.detail == "PASSWORD_REUSED"


async def test_password_reset_by_email_is_single_use_and_ends_sessions(world: World) -> None:
    old = await world.service.login(*ADMIN)
    mail = await world.reset_mail(ADMIN[0])
    assert mail["To"] == ADMIN[0]
    token = re.search(r"reset token: (\S+)", mail.get_content()).group(1)  # type: ignore[union-attr]
    await world.service.confirm_password_reset(token, "Reset-New-Pass-9!")
    with pytest.raises(ValidationError):
        await world.service.confirm_password_reset(token, "Reset-Other-Pass-9!")
    with pytest.raises(AuthenticationError):
        await world.service.refresh(old.refresh_token)
    assert (await world.service.login(ADMIN[0], "Reset-New-Pass-9!")).access_token
    # Unknown emails get the same silent answer and no mail.
    count = world.mail_count()
    await world.service.request_password_reset("nobody@nowhere.test")
    assert world.mail_count() == count


async def test_reset_token_expires(world: World) -> None:
    mail = await world.reset_mail(ADMIN[0])
    token = re.search(r"reset token: (\S+)", mail.get_content()).group(1)  # type: ignore[union-attr]
    world.clock.advance(timedelta(minutes=31))
    with pytest.raises(ValidationError):
        await world.service.confirm_password_reset(token, "Reset-New-Pass-9!")


async def test_totp_mfa_challenges_login_and_codes_are_single_use(world: World) -> None:
    secret, uri = await world.service.enroll_mfa(world.admin)
    assert uri.startswith("otpauth://totp/")
    totp = pyotp.TOTP(secret)
    with pytest.raises(ValidationError):
        await world.service.confirm_mfa(world.admin, "000000" if totp.at(world.clock.now) != "000000" else "111111")
    user = await world.service.confirm_mfa(world.admin, totp.at(world.clock.now))
    assert user.mfa_enabled
    world.clock.advance(timedelta(seconds=30))
    challenge = await world.service.login(*ADMIN)
    assert challenge.mfa_required and not challenge.access_token
    code = totp.at(world.clock.now)
    session = await world.service.verify_mfa(challenge.mfa_token, code)
    assert session.access_token
    again = await world.service.login(*ADMIN)
    with pytest.raises(AuthenticationError):
        await world.service.verify_mfa(again.mfa_token, code)  # same code twice
    with pytest.raises(AuthenticationError):
        await world.service.verify_mfa(session.access_token, code)  # an access token is no MFA challenge


async def test_api_keys_act_for_their_organization_until_revoked(world: World) -> None:
    org_id, pharma_admin = await world.organization_with_admin("Keyed Pharma")
    created = await world.service.create_api_key(pharma_admin, "LIMS sync", ["pharma_scientist"])
    assert created.secret.startswith("mbk_") and created.api_key.prefix == created.secret[:12]
    principal = await world.service.resolve_api_key(created.secret)
    assert (principal.organization_id, principal.roles, principal.via) == (
        org_id, frozenset({"pharma_scientist"}), "api_key",
    )
    keys, total = await world.service.list_api_keys(pharma_admin, PageRequest.of(1, 10))
    assert total == 1 and keys[0].id == created.api_key.id
    await world.service.revoke_api_key(pharma_admin, created.api_key.id)
    with pytest.raises(AuthenticationError):
        await world.service.resolve_api_key(created.secret)
    with pytest.raises(AuthorizationError):
        await world.service.get_me(principal)  # a key is not a user


async def test_organizations_never_see_each_other(world: World) -> None:
    org_a, admin_a = await world.organization_with_admin("Alpha Pharma")
    org_b, admin_b = await world.organization_with_admin("Beta Labs", "CRO")
    scientist = await world.service.create_user(
        admin_a, email="sci@alpha.test", full_name="Sci", password=PASSWORD, roles=[], organization_id="",
        request_id="",
    )
    assert scientist.roles == ("pharma_scientist",)
    with pytest.raises(NotFoundError):
        await world.service.get_user(admin_b, scientist.id)
    with pytest.raises(NotFoundError):
        await world.service.get_organization(admin_b, org_a)
    with pytest.raises(NotFoundError):
        await world.service.list_users(admin_b, PageRequest.of(1, 50), org_a, "")
    with pytest.raises(NotFoundError):
        await world.service.delete_user(admin_b, scientist.id)
    users_b, total_b = await world.service.list_users(admin_b, PageRequest.of(1, 50), "", "")
    assert total_b == 1 and {u.organization_id for u in users_b} == {org_b}
    orgs, total = await world.service.list_organizations(admin_a, PageRequest.of(1, 50))
    assert total == 1 and orgs[0].id == org_a
    _, everything = await world.service.list_organizations(world.admin, PageRequest.of(1, 50))
    assert everything == 3
    sci = await world.principal("sci@alpha.test", PASSWORD)
    with pytest.raises(Exception) as denied:
        await world.service.create_user(
            sci, email="x@alpha.test", full_name="X", password=PASSWORD, roles=[], organization_id="", request_id=""
        )
    assert type(denied.value).__name__ == "AuthorizationError"


async def test_creates_are_idempotent_and_unique(world: World) -> None:
    first = await world.service.create_organization(world.admin, "Gamma Bio", "PHARMA", "req-1")
    again = await world.service.create_organization(world.admin, "Gamma Bio", "PHARMA", "req-1")
    assert again.id == first.id
    with pytest.raises(ConflictError):
        await world.service.create_organization(world.admin, "Gamma Bio", "PHARMA", "req-2")
    with pytest.raises(ValidationError) as invalid:
        await world.service.create_organization(world.admin, "", "NOPE", "")
    assert {f for f, _ in invalid.value.field_violations} == {"name", "kind"}


async def test_deleted_user_can_no_longer_log_in_or_refresh(world: World) -> None:
    _, admin = await world.organization_with_admin("Delta Pharma")
    user = await world.service.create_user(
        admin, email="leaver@delta.test", full_name="Leaver", password=PASSWORD, roles=[], organization_id="",
        request_id="",
    )
    session = await world.service.login("leaver@delta.test", PASSWORD)
    deleted = await world.service.delete_user(admin, user.id)
    assert not deleted.active
    with pytest.raises(AuthenticationError):
        await world.service.login("leaver@delta.test", PASSWORD)
    with pytest.raises(AuthenticationError):
        await world.service.refresh(session.refresh_token)
    with pytest.raises(PreconditionError):
        await world.service.delete_user(admin, admin.subject)


async def test_key_rotation_keeps_old_tokens_valid_and_signs_with_the_new_key(world: World) -> None:
    before = await world.service.login(*ADMIN)
    old_kid = jwt.get_unverified_header(before.access_token)["kid"]
    new_kid = await world.service.rotate_signing_key(timedelta(minutes=5))
    assert new_kid in {k["kid"] for k in (await world.service.jwks())["keys"]}  # published at once
    still_old = await world.service.login(*ADMIN)
    assert jwt.get_unverified_header(still_old.access_token)["kid"] == old_kid  # not used before its time
    world.clock.advance(timedelta(minutes=6))
    after = await world.service.login(*ADMIN)
    assert jwt.get_unverified_header(after.access_token)["kid"] == new_kid
    verifier = TokenVerifier(world.service.jwks)
    assert (await verifier.verify(before.access_token)).subject == world.admin.subject
    world.clock.advance(timedelta(minutes=20))
    await world.service.rotate_signing_key(timedelta(0))
    kids = {k["kid"] for k in (await world.service.jwks())["keys"]}
    assert old_kid not in kids  # retired once every token it signed has expired


async def test_every_action_writes_an_audit_event_to_the_outbox(world: World) -> None:
    with pytest.raises(AuthenticationError):
        await world.service.login(ADMIN[0], "Wrong-Pass-123!")
    actions = [(a.action, a.outcome) for a in await outbox_audits(world)]
    names = [a for a, _ in actions]
    assert names[:2] == ["user.created", "auth.login_succeeded"]
    assert names[-1] == "auth.login_failed" and actions[-1][1] == AuditRecorded.FAILURE


async def outbox_audits(world: World) -> list[AuditRecorded]:
    """The audit events identity wrote to its outbox, oldest first."""
    async with world.engine.connect() as connection:
        query = sa.text("SELECT payload FROM identity.outbox ORDER BY created_at")
        payloads = list((await connection.execute(query)).scalars())
    audits = []
    for payload in payloads:
        audit = AuditRecorded()
        if EventEnvelope.FromString(payload).payload.Unpack(audit):
            audits.append(audit)
    return audits


def identity_process(world: World) -> tuple[Process, Settings]:
    """The identity gRPC server over the world's service, on a free port (run it with `running`)."""
    settings = Settings.from_env("identity", {"MOLBRIDGE_IDENTITY_ADDR": f"127.0.0.1:{free_port()}"})
    process = Process(
        servicers=[(pb_grpc.add_IdentityServiceServicer_to_server, IdentityServicer(world.service))],
        authenticator=Authenticator(TokenVerifier(world.service.jwks), world.service),
        public_methods=PUBLIC_METHODS,
    )
    return process, settings


async def test_servicer_authenticates_every_rpc_and_maps_errors(world: World) -> None:
    process, settings = identity_process(world)
    async with running("identity", process, settings), grpc.aio.insecure_channel(settings.listen_addr) as channel:
        stub = pb_grpc.IdentityServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as unauthenticated:
            await stub.GetMe(pb.GetMeRequest())
        assert unauthenticated.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as forged:
            await stub.GetMe(pb.GetMeRequest(), metadata=[("authorization", "Bearer not.a.jwt")])
        assert forged.value.code() == grpc.StatusCode.UNAUTHENTICATED
        login = await stub.Login(pb.LoginRequest(email=ADMIN[0], password=ADMIN[1]))
        auth = [("authorization", f"Bearer {login.data.access_token}")]
        me = await stub.GetMe(pb.GetMeRequest(), metadata=auth)
        assert me.data.email == ADMIN[0] and list(me.data.roles) == ["system_admin"]
        with pytest.raises(grpc.aio.AioRpcError) as weak:
            await stub.CreateUser(pb.CreateUserRequest(email="a@b.test", full_name="A", password="weak"),
                                  metadata=auth)
        assert weak.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        details = dict(weak.value.trailing_metadata() or ())
        assert "grpc-status-details-bin" in details
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.GetUser(pb.GetUserRequest(id="not-a-uuid"), metadata=auth)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_audit_trail_is_fed_from_the_bus_and_tamper_evident(world: World, nats_server) -> None:  # type: ignore[no-untyped-def]
    import asyncio
    import uuid

    from bus.connection import connect
    from bus.consumer import Consumer
    from bus.relay import OutboxRelay
    from bus.streams import EVENTS_STREAM, ensure_streams
    from services.identity.bootstrap import AUDIT_SUBJECT
    from services.identity.domain import first_broken_link
    from services.identity.service import AuditTrail

    await world.organization_with_admin("Audited Pharma")
    nats = await connect(nats_server.url)
    js = nats.jetstream()
    await ensure_streams(js)
    relay = OutboxRelay(world.engine, SCHEMA, js)
    consumer = Consumer(js, EVENTS_STREAM, f"audit-{uuid.uuid4().hex[:8]}", AUDIT_SUBJECT,
                        AuditTrail(identity_transactions(world.engine)).handle)
    tasks = [asyncio.create_task(relay.run()), asyncio.create_task(consumer.run())]
    try:
        async with world.engine.connect() as connection:
            rows = await connection.execute(sa.text("SELECT id::text, payload FROM identity.outbox"))
            # Only the audit events: the outbox carries others too (UserChanged, PrincipalRevoked).
            written = {i for i, p in rows if EventEnvelope.FromString(p).payload.Is(AuditRecorded.DESCRIPTOR)}
        for _ in range(200):
            stored = {e.id for e in await world.service.audit_trail()}
            if written <= stored:
                break
            await asyncio.sleep(0.05)
        assert written <= stored, "every audited action reaches the trail"
    finally:
        relay.stop()
        consumer.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        await nats.close()

    trail = await world.service.audit_trail()
    assert [e.sequence for e in trail] == list(range(1, len(trail) + 1))
    assert first_broken_link(trail) is None
    events, total = await world.service.list_audit_events(
        world.admin, PageRequest.of(1, 100), action="organization.", target_id="", organization_id=""
    )
    assert total >= 1 and all(e.action.startswith("organization.") for e in events)
    async with world.engine.begin() as connection:
        await connection.execute(sa.text("UPDATE identity.audit_log SET actor_id = 'mallory' WHERE sequence = 2"))
    assert first_broken_link(await world.service.audit_trail()) == 2


class CountingHasher(PasswordHasher):
    """Argon2id with cheap parameters that counts verifications (the cost every login must pay)."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=1024, parallelism=1)
        self.verifications = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:  # noqa: A002
        self.verifications += 1
        return super().verify(hash, password)


async def test_failed_logins_look_alike_whatever_the_reason(world: World, database_url: str, tmp_path: Path) -> None:
    _, admin = await world.organization_with_admin("Alike Pharma")
    for email in ("locked@alike.test", "gone@alike.test", "wrong@alike.test"):
        await world.service.create_user(admin, email=email, full_name="U", password=PASSWORD, roles=[],
                                        organization_id="", request_id="")
    gone = await world.service.login("gone@alike.test", PASSWORD)
    await world.service.delete_user(admin, gone.user.id)
    for _ in range(5):
        with pytest.raises(AuthenticationError):
            await world.service.login("locked@alike.test", "Wrong-Pass-123!")
    hasher = CountingHasher()
    service = IdentityService(
        identity_transactions(world.engine), KeyRing(""), FolderSender(tmp_path / "mail2"),
        public_url="http://gw.test", clock=world.clock, hasher=hasher,
    )
    answers = {}
    for case, (email, password) in {
        "unknown email": ("nobody@alike.test", PASSWORD),
        "deleted user": ("gone@alike.test", PASSWORD),
        "locked account, right password": ("locked@alike.test", PASSWORD),
        "wrong password": ("wrong@alike.test", "Wrong-Pass-123!"),
    }.items():
        before = hasher.verifications
        with pytest.raises(AuthenticationError) as refused:
            await service.login(email, password)
        answers[case] = (refused.value.detail, refused.value.message, str(refused.value.metadata),
                         hasher.verifications - before)
    assert set(answers.values()) == {("INVALID_CREDENTIALS", "Wrong email or password", "{}", 1)}, answers


async def test_reset_emails_are_limited_per_account_and_answer_alike(world: World) -> None:
    _, admin = await world.organization_with_admin("Reset Pharma")
    email = "admin@reset-pharma.test"
    for _ in range(3):
        await world.reset_mail(email)
    sent = world.mail_count()
    await world.service.request_password_reset(email)  # the 4th within the hour: same answer
    await world.service.request_password_reset("nobody@reset-pharma.test")
    world.clock.advance(timedelta(minutes=61))
    mail = await world.reset_mail(email)  # a new hour: sent again
    assert world.mail_count() == sent + 1 and mail["To"] == email


async def test_removed_rights_end_tokens_and_keys_at_once(world: World) -> None:
    _, admin = await world.organization_with_admin("Revoking Pharma")
    verifier = TokenVerifier(world.service.jwks, world.service.revocations)

    async def member(email: str, roles: list[str]) -> tuple[str, Session]:
        user = await world.service.create_user(admin, email=email, full_name="M", password=PASSWORD, roles=roles,
                                               organization_id="", request_id="")
        return user.id, await world.service.login(email, PASSWORD)

    # A deleted admin: the old token is refused, their API key stops working.
    leaver_id, leaver = await member("leaver@revoking.test", ["pharma_admin"])
    leaver_principal = await verifier.verify(leaver.access_token)
    key = await world.service.create_api_key(leaver_principal, "sync", [])
    assert (await world.service.resolve_api_key(key.secret)).roles == frozenset({"pharma_admin"})
    world.clock.advance(timedelta(milliseconds=1))  # the service clock is frozen otherwise
    await world.service.delete_user(admin, leaver_id)
    with pytest.raises(AuthenticationError) as revoked:
        await verifier.verify(leaver.access_token)
    assert revoked.value.detail == "TOKEN_REVOKED"
    with pytest.raises(AuthenticationError):
        await world.service.resolve_api_key(key.secret)
    with pytest.raises(AuthenticationError):  # identity checks the live account, whatever the token says
        await world.service.create_api_key(leaver_principal, "again", [])

    # A demoted admin: old token refused; keys shrink to the creator's current roles; no admin keys.
    demoted_id, demoted = await member("demoted@revoking.test", ["pharma_admin"])
    demoted_principal = await verifier.verify(demoted.access_token)
    admin_key = await world.service.create_api_key(demoted_principal, "admin key", ["pharma_admin"])
    both_key = await world.service.create_api_key(demoted_principal, "both", ["pharma_admin", "pharma_scientist"])
    world.clock.advance(timedelta(milliseconds=1))
    await world.service.update_user(admin, demoted_id, full_name="", roles=["pharma_scientist"], unlock=False)
    with pytest.raises(AuthenticationError):
        await verifier.verify(demoted.access_token)
    with pytest.raises(AuthorizationError):  # the stale token's admin role no longer counts
        await world.service.create_api_key(demoted_principal, "sneaky", ["pharma_admin"])
    with pytest.raises(AuthenticationError):
        await world.service.resolve_api_key(admin_key.secret)  # nothing left of its roles
    assert (await world.service.resolve_api_key(both_key.secret)).roles == frozenset({"pharma_scientist"})
    world.clock.advance(timedelta(milliseconds=1))
    fresh = await verifier.verify((await world.service.login("demoted@revoking.test", PASSWORD)).access_token)
    assert fresh.roles == frozenset({"pharma_scientist"})  # a new login a millisecond later works
    with pytest.raises(AuthorizationError):
        await world.service.create_api_key(fresh, "admin again", ["pharma_admin"])

    # Logout ends that session's access token; another session of the same user lives on.
    _, first = await member("leaving@revoking.test", [])
    second = await world.service.login("leaving@revoking.test", PASSWORD)
    world.clock.advance(timedelta(milliseconds=1))
    await world.service.logout(await verifier.verify(first.access_token), first.refresh_token)
    with pytest.raises(AuthenticationError):
        await verifier.verify(first.access_token)
    assert (await verifier.verify(second.access_token)).subject == first.user.id


async def test_revocations_reach_other_processes_through_the_bus(  # type: ignore[no-untyped-def]
    world: World, database_url: str, nats_server
) -> None:
    from services.runtime.process import Outbox
    from services.runtime.revocation import Revocations, revocation_feed

    _, admin = await world.organization_with_admin("Bus Pharma")
    user = await world.service.create_user(admin, email="bus@bus.test", full_name="B", password=PASSWORD,
                                           roles=[], organization_id="", request_id="")
    session = await world.service.login("bus@bus.test", PASSWORD)
    settings = Settings.from_env("revocations", {"NATS_URL": nats_server.url, "DATABASE_URL": database_url})

    async def revoked_in(revocations: Revocations) -> None:
        for _ in range(500):
            if revocations.is_revoked(user.id, "", world.clock.now.timestamp() - 1):
                return
            await asyncio.sleep(0.02)

    # Another process (it relays identity's outbox here, as the identity process does).
    elsewhere = Revocations()
    other = Process(outbox=Outbox(world.engine, SCHEMA), consumers=[revocation_feed(elsewhere, "other")])
    async with running("other", other, settings):
        verifier = TokenVerifier(world.service.jwks, elsewhere)
        assert (await verifier.verify(session.access_token)).subject == user.id
        world.clock.advance(timedelta(milliseconds=1))
        await world.service.delete_user(admin, user.id)
        await revoked_in(elsewhere)
        with pytest.raises(AuthenticationError):
            await verifier.verify(session.access_token)

    # A process started afterwards replays the recent revocations.
    late = Revocations()
    async with running("late", Process(consumers=[revocation_feed(late, "late")]), settings):
        await revoked_in(late)
        with pytest.raises(AuthenticationError):
            await TokenVerifier(world.service.jwks, late).verify(session.access_token)


# ---- electronic signatures: re-authenticating the signer (21 CFR 11.200) ----------------------------

WRONG = "Wrong-Pass-123!"


async def signer_world(world: World, name: str) -> tuple[str, Principal]:
    """A scientist of a new organization, signed in: (email, principal)."""
    _, admin = await world.organization_with_admin(name)
    email = f"signer@{name.lower().replace(' ', '-')}.test"
    await world.service.create_user(admin, email=email, full_name="Ada Signer", password=PASSWORD, roles=[],
                                    organization_id="", request_id="")
    return email, await world.principal(email, PASSWORD)


async def test_signer_is_confirmed_by_the_password_and_failures_count_toward_the_lockout(world: World) -> None:
    email, signer = await signer_world(world, "Signing Pharma")
    confirmed = await world.service.confirm_signer(signer, PASSWORD, "")
    assert confirmed == domain.Signer(user_id=signer.subject, printed_name="Ada Signer", email=email,
                                      organization_id=signer.organization_id, roles=("pharma_scientist",))
    with pytest.raises(AuthenticationError) as wrong:
        await world.service.confirm_signer(signer, WRONG, "")
    assert wrong.value.detail == "SIGNER_NOT_CONFIRMED" and "lock" in wrong.value.message
    with pytest.raises(ValidationError):
        await world.service.confirm_signer(signer, "", "")  # bad input, not an attempt
    for _ in range(3):
        with pytest.raises(AuthenticationError):
            await world.service.confirm_signer(signer, WRONG, "")
    with pytest.raises(AuthenticationError) as fifth:
        await world.service.confirm_signer(signer, WRONG, "")
    assert fifth.value.detail == "ACCOUNT_LOCKED"
    with pytest.raises(AuthenticationError) as locked:
        await world.service.confirm_signer(signer, PASSWORD, "")  # right password, refused while locked
    assert locked.value.detail == "ACCOUNT_LOCKED"
    with pytest.raises(AuthenticationError):
        await world.service.login(email, PASSWORD)  # the same lock as logins
    world.clock.advance(timedelta(minutes=31))
    assert (await world.service.confirm_signer(signer, PASSWORD, "")).user_id == signer.subject

    audits = [a for a in await outbox_audits(world) if a.target_id == signer.subject]
    outcomes = [(a.action, a.outcome) for a in audits if a.action.startswith(("auth.signer", "auth.account"))]
    failed = ("auth.signer_confirmation_failed", AuditRecorded.FAILURE)
    assert outcomes == [("auth.signer_confirmed", AuditRecorded.SUCCESS), *[failed] * 5,
                        ("auth.account_locked", AuditRecorded.SUCCESS), failed,
                        ("auth.signer_confirmed", AuditRecorded.SUCCESS)]
    reasons = [a.details["reason"] for a in audits if a.action == "auth.signer_confirmation_failed"]
    assert reasons == ["wrong password"] * 5 + ["account locked"]


async def test_signer_with_mfa_needs_a_fresh_code(world: World) -> None:
    _, signer = await signer_world(world, "Mfa Signing Pharma")
    secret, _ = await world.service.enroll_mfa(signer)
    totp = pyotp.TOTP(secret)
    await world.service.confirm_mfa(signer, totp.at(world.clock.now))
    world.clock.advance(timedelta(seconds=30))  # the enrolment spent the current code
    code = totp.at(world.clock.now)
    wrong_code = "000000" if code != "000000" else "111111"
    for password, mfa_code in ((PASSWORD, ""), (PASSWORD, wrong_code), (WRONG, code)):
        with pytest.raises(AuthenticationError) as refused:
            await world.service.confirm_signer(signer, password, mfa_code)
        assert refused.value.detail == "SIGNER_NOT_CONFIRMED"
    assert (await world.service.confirm_signer(signer, PASSWORD, code)).user_id == signer.subject
    with pytest.raises(AuthenticationError):
        await world.service.confirm_signer(signer, PASSWORD, code)  # a code signs once
    reasons = [a.details["reason"] for a in await outbox_audits(world)
               if a.action == "auth.signer_confirmation_failed" and a.target_id == signer.subject]
    assert reasons == ["MFA code missing", "wrong or reused MFA code", "wrong password", "wrong or reused MFA code"]


async def test_an_api_key_cannot_sign(world: World) -> None:
    _, admin = await world.organization_with_admin("Keyed Signing Pharma")
    created = await world.service.create_api_key(admin, "LIMS", ["pharma_scientist"])
    key = await world.service.resolve_api_key(created.secret)
    with pytest.raises(AuthorizationError) as refused:
        await world.service.confirm_signer(key, PASSWORD, "")
    assert "signatures need a person" in refused.value.message


async def test_remote_identity_confirms_the_signer_over_grpc(world: World) -> None:
    email, signer = await signer_world(world, "Remote Signing Pharma")
    _, admin = await world.organization_with_admin("Remote Keys Pharma")
    key = await world.service.create_api_key(admin, "LIMS", ["pharma_scientist"])
    token = (await world.service.login(email, PASSWORD)).access_token
    process, settings = identity_process(world)
    identity = RemoteIdentity(settings.listen_addr)
    try:
        async with running("identity", process, settings):
            confirmed = await identity.confirm_signer({"authorization": f"Bearer {token}"}, PASSWORD, "")
            assert confirmed == SignerIdentity(
                user_id=signer.subject, printed_name="Ada Signer", email=email,
                organization_id=signer.organization_id, roles=frozenset({"pharma_scientist"}),
            )
            with pytest.raises(AuthenticationError) as wrong:
                await identity.confirm_signer({"authorization": f"Bearer {token}"}, WRONG, "")
            assert wrong.value.message == SIGNER_NOT_CONFIRMED and wrong.value.detail == "SIGNER_NOT_CONFIRMED"
            with pytest.raises(AuthenticationError) as no_token:
                await identity.confirm_signer({}, PASSWORD, "")
            assert no_token.value.message != SIGNER_NOT_CONFIRMED  # not a password problem: sign in again
            with pytest.raises(AuthorizationError):
                await identity.confirm_signer({"x-api-key": key.secret}, PASSWORD, "")
            with pytest.raises(ValidationError):
                await identity.confirm_signer({"authorization": f"Bearer {token}"}, "", "")
    finally:
        await identity.close()
    unreachable = RemoteIdentity(f"127.0.0.1:{free_port()}")
    try:
        with pytest.raises(IntegrationError):
            await unreachable.confirm_signer({"authorization": f"Bearer {token}"}, PASSWORD, "")
    finally:
        await unreachable.close()
