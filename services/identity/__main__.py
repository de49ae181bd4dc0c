"""Composition root of the identity service: builds everything, then serves.

`python -m services.identity` serves; `python -m services.identity rotate-keys [--publish-ahead-s N]`
publishes a new signing key (used for signing after N seconds, default 600 — longer than the
gateway's JWKS cache).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from datetime import timedelta
from functools import partial
from pathlib import Path

from molbridge.events.v1.audit_pb2 import AuditRecorded
from molbridge.health.v1 import health_service_pb2_grpc
from molbridge.identity.v1 import identity_service_pb2_grpc

from bus.consumer import Consumer
from bus.runner import run_bus
from bus.streams import EVENTS_STREAM
from bus.subjects import EVENTS_PREFIX, event_type_name
from services.identity.audit import CONSUMER_NAME as AUDIT_CONSUMER
from services.identity.audit import AuditTrail
from services.identity.keys import KeyRing
from services.identity.server import PUBLIC_METHODS, IdentityServicer
from services.identity.service import IdentityService
from services.identity.store import SCHEMA
from services.runtime import migrations, server, telemetry
from services.runtime.auth import Authenticator, TokenVerifier
from services.runtime.db import UnitOfWork, make_engine
from services.runtime.email import make_email_sender
from services.runtime.logs import configure_logging
from services.runtime.mesh_health import HealthServicer
from services.runtime.settings import Settings

MIGRATIONS = Path(__file__).parent / "migrations"
log = logging.getLogger("molbridge.identity")


def initial_credentials_path(data_dir: Path) -> Path:
    """Where a generated first admin password is kept (mode 0600) until the operator deletes it."""
    return data_dir / "initial-admin-credentials"
AUDIT_SUBJECT = f"{EVENTS_PREFIX}.*.{event_type_name(AuditRecorded)}"  # from every service


def build(settings: Settings) -> tuple[IdentityService, server.ServiceApp]:
    engine = make_engine(settings.database_url, SCHEMA)
    telemetry.instrument_engine(engine)
    uow = UnitOfWork(engine)
    service = IdentityService(
        uow,
        KeyRing(settings.get("MOLBRIDGE_KEY_PASSPHRASE")),
        make_email_sender(settings.get("SMTP_URL"), settings.data_dir),
        public_url=settings.get("MOLBRIDGE_PUBLIC_URL", f"http://127.0.0.1:{settings.get('GATEWAY_PORT', '8080')}"),
    )
    health = HealthServicer(settings)

    trail = AuditTrail(uow)

    async def bus_work() -> None:
        """Publish our outbox and keep the audit trail."""
        audit = partial(Consumer, stream=EVENTS_STREAM, durable=AUDIT_CONSUMER, filter_subject=AUDIT_SUBJECT,
                        handler=trail.handle)
        await run_bus(settings.nats_url, name="identity", engine=engine, schema=SCHEMA, consumers=[audit])

    app = server.ServiceApp(
        settings=settings,
        servicers=[
            (identity_service_pb2_grpc.add_IdentityServiceServicer_to_server, IdentityServicer(service)),
            (health_service_pb2_grpc.add_HealthServiceServicer_to_server, health),
        ],
        authenticator=Authenticator(TokenVerifier(service.jwks), service),
        public_methods=PUBLIC_METHODS,
        background=[bus_work],
        on_stop=[health.close, engine.dispose],
    )
    return service, app


async def serve(settings: Settings) -> None:
    service, app = build(settings)
    await service.ensure_signing_key()
    bootstrap = await service.bootstrap_admin(
        settings.get("MOLBRIDGE_ADMIN_EMAIL"), settings.get("MOLBRIDGE_ADMIN_PASSWORD")
    )
    if bootstrap.generated_password:
        # Never into a log: a file only root and the operator can read, shown once by `make run`.
        path = initial_credentials_path(settings.data_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(f"{bootstrap.email}\n{bootstrap.generated_password}\n")
        log.warning("first start: system admin %s created; password saved in %s", bootstrap.email, path)
    await server.run(app)


async def rotate_keys(settings: Settings, publish_ahead: timedelta) -> None:
    service, app = build(settings)
    kid = await service.rotate_signing_key(publish_ahead)
    print(f"new signing key {kid}, signing from now + {int(publish_ahead.total_seconds())} s")
    for hook in app.on_stop:
        await hook()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m services.identity")
    sub = parser.add_subparsers(dest="command")
    rotate = sub.add_parser("rotate-keys", help="publish a new signing key")
    rotate.add_argument("--publish-ahead-s", type=int, default=600)
    args = parser.parse_args()

    settings = Settings.from_env("identity")
    configure_logging("identity", settings.log_level)
    telemetry.configure_tracing("identity", settings.data_dir, settings.otlp_endpoint)
    migrations.upgrade(settings.database_url, SCHEMA, MIGRATIONS)
    try:
        if args.command == "rotate-keys":
            asyncio.run(rotate_keys(settings, timedelta(seconds=args.publish_ahead_s)))
        else:
            asyncio.run(serve(settings))
    finally:
        telemetry.shutdown_tracing()


if __name__ == "__main__":
    main()
