"""Retention of the bus's tables: published outbox rows and processed-event markers are deleted once
they can no longer matter, in small batches, by every process that relays an outbox (several
replicas may sweep at once: each batch claims its rows with SKIP LOCKED, so they share the work).

Why the defaults:
- a published outbox row has done its job once JetStream acked it; it is kept 7 days only so that an
  operator can see what went out when. An unpublished row (published_at NULL) is never selected.
- a processed-events marker must outlive every delivery its event can still get. An unacked message
  is redelivered within minutes (bus.consumer: max_deliver 5, nak delays up to 120 s, ack wait 30 s);
  a relay that republishes after the 10-minute duplicate window (PostgreSQL lost between the publish
  and the commit) stores a second copy, and a durable consumer deleted and re-created replays the
  stream from its start. All of these are bounded by how long EVENTS keeps a message (max_age,
  bus.streams.StreamPolicy, 30 days by default), so markers are kept longer than that: 45 days, and
  the settings refuse a retention not above the stream's max_age. (The document service's expiry
  warning markers are needed at most 30 days, until the document's expiry date.)
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Table, delete, func, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncEngine

from bus.streams import DAY_S
from bus.tables import PROCESSED_EVENTS, outbox_table, processed_events_table

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetentionPolicy:
    outbox_s: float = 7 * DAY_S  # published outbox rows
    processed_events_s: float = 45 * DAY_S  # processed-event markers
    interval_s: float = 3600.0  # between sweeps (each replica; jittered)
    batch: int = 1000  # rows per DELETE, one short transaction each


@dataclass(frozen=True)
class Swept:
    outbox: int
    processed_events: int
    batches: int


class RetentionSweep:
    """`await sweep.sweep()` once, or `await sweep.run()` forever (the runtime supervises it)."""

    def __init__(self, engine: AsyncEngine, schema: str, policy: RetentionPolicy) -> None:
        self._engine = engine
        self._schema = schema
        self.policy = policy
        self.last: Swept | None = None  # for operators and tests

    async def run(self) -> None:
        while True:
            swept = await self.sweep()
            if swept.outbox or swept.processed_events:
                log.info(
                    "retention %s: deleted %d published outbox rows and %d processed-event markers in %d batches",
                    self._schema,
                    swept.outbox,
                    swept.processed_events,
                    swept.batches,
                )
            # Jitter so that replicas started together do not sweep in lockstep.
            await asyncio.sleep(self.policy.interval_s * random.uniform(0.9, 1.1))

    async def sweep(self) -> Swept:
        outbox = outbox_table(self._schema)
        outbox_rows, outbox_batches = await self._drain(
            outbox,
            (outbox.c.id,),
            outbox.c.published_at,
            self.policy.outbox_s,
            outbox.c.published_at.is_not(None),  # never an unpublished row, whatever the clock says
        )
        processed_rows = processed_batches = 0
        if await self._exists(PROCESSED_EVENTS):  # identity consumes no events: it has no ledger
            processed = processed_events_table(self._schema)
            processed_rows, processed_batches = await self._drain(
                processed, (processed.c.consumer, processed.c.event_id), processed.c.processed_at,
                self.policy.processed_events_s,
            )
        self.last = Swept(outbox_rows, processed_rows, outbox_batches + processed_batches)
        return self.last

    async def _drain(self, table: Table, key, stamp, age_s: float, *conditions) -> tuple[int, int]:  # type: ignore[no-untyped-def]
        """Delete rows whose `stamp` is older than `age_s`, `batch` at a time, each batch committed on its
        own so no lock is held long; rows another sweeper has claimed are skipped, not waited for."""
        deleted = batches = 0
        while True:
            claimed = (
                select(*key)
                .where(stamp < func.now() - timedelta(seconds=age_s), *conditions)
                .order_by(stamp)
                .limit(self.policy.batch)
                .with_for_update(skip_locked=True)
            )
            async with self._engine.begin() as conn:
                result = await conn.execute(delete(table).where(tuple_(*key).in_(claimed)))
            batches += 1
            deleted += result.rowcount
            if result.rowcount < self.policy.batch:
                return deleted, batches

    async def _exists(self, name: str) -> bool:
        async with self._engine.connect() as conn:
            found = await conn.execute(text("SELECT to_regclass(:name)"), {"name": f'"{self._schema}".{name}'})
            return found.scalar_one() is not None


__all__ = ["RetentionPolicy", "RetentionSweep", "Swept"]
