"""One way to connect to NATS, shared by relays and consumers: reconnect forever, log instead of print."""

from __future__ import annotations

import logging

import nats
from nats.aio.client import Client

log = logging.getLogger(__name__)


async def _on_error(error: Exception) -> None:
    log.warning("nats: %s", error or type(error).__name__)


async def _on_disconnected() -> None:
    # Also called on a deliberate close; a lost server shows up as errors and then "reconnected".
    log.info("nats: disconnected")


async def _on_reconnected() -> None:
    log.info("nats: reconnected")


async def connect(url: str, *, name: str | None = None) -> Client:
    """Connect to NATS (`url`: one server, or a comma list of a cluster's nodes); waits until a server
    answers, and survives restarts, moving to another node of the cluster when its own goes away.

    Publishes made while disconnected are buffered by the client (up to `pending_size`) and
    time out if no ack arrives; the relay and consumers treat that as transient and retry.
    """
    return await nats.connect(
        [server.strip() for server in url.split(",") if server.strip()],  # a cluster's nodes: any will do
        name=name,
        allow_reconnect=True,
        max_reconnect_attempts=-1,  # never give up: the bus is reliable, not best-effort
        reconnect_time_wait=0.5,
        connect_timeout=2,
        ping_interval=10,
        max_outstanding_pings=3,
        error_cb=_on_error,
        disconnected_cb=_on_disconnected,
        reconnected_cb=_on_reconnected,
    )
