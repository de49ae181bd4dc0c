"""A service's bus work over one NATS connection: publish its outbox and run its consumers.

Superseded by services.runtime.process (Process.outbox + Process.subscriptions); remove once the
molecule and prediction services run on run_process."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncEngine

from bus.connection import connect
from bus.consumer import Consumer
from bus.relay import OutboxRelay
from bus.streams import ensure_streams

ConsumerFactory = Callable[[JetStreamContext], Consumer]


async def run_bus(
    nats_url: str,
    *,
    name: str,
    engine: AsyncEngine,
    schema: str,
    consumers: Sequence[ConsumerFactory] = (),
) -> None:
    """Runs until cancelled; meant as a ServiceApp background job."""
    nats = await connect(nats_url, name=name)
    try:
        js = nats.jetstream()
        await ensure_streams(js)
        await asyncio.gather(
            OutboxRelay(engine, schema, js).run(),
            *(make(js).run() for make in consumers),
        )
    finally:
        await nats.close()
