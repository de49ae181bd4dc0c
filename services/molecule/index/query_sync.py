"""Keeps this replica's query index fresh from the bus: every MoleculesChanged re-reads its molecules."""

from __future__ import annotations

import asyncio
import logging

from molbridge.events.v1.envelope_pb2 import EventEnvelope
from molbridge.events.v1.molecule_pb2 import MoleculesChanged
from nats.js.api import DeliverPolicy

from bus.connection import connect
from bus.streams import StreamPolicy, ensure_streams
from bus.subjects import event_subject
from services.molecule.domain.vocabulary import EVENT_SOURCE
from services.molecule.index.columnar import QueryIndex

log = logging.getLogger("molbridge.molecule.server")

CHANGES_SUBJECT = event_subject(EVENT_SOURCE, MoleculesChanged)
_RETRY_DELAYS_S = (0.5, 2.0, 5.0, 15.0, 30.0)


async def follow_changes(index: QueryIndex, nats_url: str, policy: StreamPolicy | None = None) -> None:
    """Keep the index fresh from the bus, then load every organization. Each replica reads every
    MoleculesChanged (an ordered consumer of its own, from now on: what came before, the load reads)."""
    nats = await connect(nats_url, name="molecule-query-index")
    try:
        js = nats.jetstream()
        await ensure_streams(js, policy=policy)
        subscription = await js.subscribe(
            CHANGES_SUBJECT, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW
        )
        await index.preload()
        async for message in subscription.messages:
            await _apply_change(index, message.data)
    finally:
        await nats.close()


async def _apply_change(index: QueryIndex, data: bytes) -> None:
    for delay in _RETRY_DELAYS_S:
        try:
            await index.on_event(EventEnvelope.FromString(data))
            return
        except (TypeError, ValueError) as error:  # not a MoleculesChanged: nothing to retry
            log.warning("query index: unreadable change event skipped (%s)", error)
            return
        except Exception as error:  # PostgreSQL unreachable: the refresh is retried
            log.warning("query index: refresh failed (%r), retrying in %.1f s", error, delay)
            await asyncio.sleep(delay)
    log.error(
        "query index: a change could not be applied; the organization's list may be stale until restart"
    )
