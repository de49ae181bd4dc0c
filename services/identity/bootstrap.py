"""Composition root of the identity service: typed settings, adapters and the service, built once.

`python -m services.identity` serves (see services.runtime.process for the start-up steps);
`python -m services.identity rotate-keys [--publish-ahead-s N]` publishes a new signing key (used for
signing after N seconds, default 600 — longer than the gateway's JWKS cache).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from molbridge.events.v1.audit_pb2 import AuditRecorded
from molbridge.events.v1.envelope_pb2 import EventEnvelope
from molbridge.health.v1 import health_service_pb2_grpc
from molbridge.identity.v1 import identity_service_pb2_grpc
from pydantic import Field
from sqlalchemy.ext.asyncio import AsyncEngine

from bus.subjects import EVENTS_PREFIX, event_type_name
from services.identity.server import PUBLIC_METHODS, IdentityServicer
from services.identity.service import CONSUMER_NAME as AUDIT_CONSUMER
from services.identity.service import AuditTrail, IdentityService
from services.identity.store import SCHEMA, IdentityUnitOfWork, identity_transactions
from services.identity.store.signing_keys import KeyRing
from services.runtime import telemetry
from services.runtime.auth import Authenticator, TokenVerifier
from services.runtime.email import make_email_sender
from services.runtime.mesh_health import HealthServicer
from services.runtime.migrations import MigrationSpec
from services.runtime.process import Command, Outbox, Process, Subscription
from services.runtime.revocation import revocation_feed
from services.runtime.settings import Settings, initial_credentials_path
from services.runtime.storage import make_storage
from services.runtime.uow import Transactions

MIGRATIONS = MigrationSpec(SCHEMA, Path(__file__).parent / "migrations")
AUDIT_SUBJECT = f"{EVENTS_PREFIX}.*.{event_type_name(AuditRecorded)}"  # from every service
log = logging.getLogger("molbridge.identity")


class IdentitySettings(Settings):
    """Identity's own variables on top of what every process reads."""

    # Encrypts the token signing keys at rest; empty = stored unencrypted (local development only).
    key_passphrase: str = Field("", validation_alias="MOLBRIDGE_KEY_PASSPHRASE", repr=False)
    # The first system admin, created when no user exists; no password = a generated one, kept in a file.
    admin_email: str = Field("", validation_alias="MOLBRIDGE_ADMIN_EMAIL")
    admin_password: str = Field("", validation_alias="MOLBRIDGE_ADMIN_PASSWORD", repr=False)
    # How often the audit trail's head is anchored (to the log and to object storage), in seconds.
    audit_anchor_interval_s: float = Field(300.0, gt=0, validation_alias="MOLBRIDGE_AUDIT_ANCHOR_INTERVAL_S")


@dataclass(frozen=True)
class Identity:
    """The parts every identity entry point needs (server and CLI commands)."""

    engine: AsyncEngine
    uow: Transactions[IdentityUnitOfWork]
    service: IdentityService


def build_identity(settings: IdentitySettings) -> Identity:
    engine = telemetry.traced_engine(settings.database_url, SCHEMA)
    uow = identity_transactions(engine)
    service = IdentityService(
        uow,
        KeyRing(settings.key_passphrase),
        make_email_sender(settings),
        public_url=settings.public_url,
        storage=make_storage(settings),
    )
    return Identity(engine, uow, service)


def build_server(settings: IdentitySettings) -> Process:
    identity = build_identity(settings)
    service = identity.service
    mesh_health = HealthServicer(settings)
    trail = AuditTrail(identity.uow)

    async def record_audit(event: AuditRecorded, envelope: EventEnvelope) -> None:
        await trail.handle(envelope)

    async def anchor_audit_trail() -> None:
        while True:
            await asyncio.sleep(settings.audit_anchor_interval_s)
            try:
                await service.write_audit_anchor()
            except Exception:  # storage down: the next round anchors the newer head
                log.warning("audit trail anchor not written", exc_info=True)

    async def prepare() -> None:
        await service.ensure_signing_key()
        await _bootstrap_admin(settings, service)

    return Process(
        servicers=[
            (identity_service_pb2_grpc.add_IdentityServiceServicer_to_server, IdentityServicer(service)),
            (health_service_pb2_grpc.add_HealthServiceServicer_to_server, mesh_health),
        ],
        # Identity applies its own revocations at once, and other identity replicas' from the bus.
        authenticator=Authenticator(TokenVerifier(service.jwks, service.revocations), service),
        public_methods=PUBLIC_METHODS,
        subscriptions=[Subscription(AuditRecorded, durable=AUDIT_CONSUMER, handler=record_audit)],
        consumers=[revocation_feed(service.revocations, "identity")],
        outbox=Outbox(identity.engine, SCHEMA),
        jobs=[anchor_audit_trail],
        on_start=[prepare],
        on_stop=[mesh_health.close, identity.engine.dispose],
    )


async def _bootstrap_admin(settings: IdentitySettings, service: IdentityService) -> None:
    bootstrap = await service.bootstrap_admin(settings.admin_email, settings.admin_password)
    if bootstrap.generated_password:
        # Never into a log: a file only root and the operator can read, shown once by `make run`.
        path = initial_credentials_path(settings.data_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(f"{bootstrap.email}\n{bootstrap.generated_password}\n")
        log.warning("first start: system admin %s created; password saved in %s", bootstrap.email, path)


async def rotate_keys(settings: IdentitySettings, args: argparse.Namespace) -> None:
    identity = build_identity(settings)
    try:
        publish_ahead = timedelta(seconds=args.publish_ahead_s)
        kid = await identity.service.rotate_signing_key(publish_ahead)
        print(f"new signing key {kid}, signing from now + {int(publish_ahead.total_seconds())} s")
    finally:
        await identity.engine.dispose()


async def announce_users(settings: IdentitySettings, args: argparse.Namespace) -> None:
    identity = build_identity(settings)
    try:
        print(f"announced {await identity.service.announce_users()} users (UserChanged, relayed by the server)")
    finally:
        await identity.engine.dispose()


COMMANDS: dict[str, Command[IdentitySettings]] = {
    "announce-users": Command(
        help="publish UserChanged for every user (fills a new consumer's directory)",
        run=announce_users,
    ),
    "rotate-keys": Command(
        help="publish a new signing key",
        run=rotate_keys,
        arguments=lambda parser: parser.add_argument("--publish-ahead-s", type=int, default=600),
    ),
}
