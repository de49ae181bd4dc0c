"""The outbox relay: publishes committed outbox rows to JetStream, at least once, deduplicated by JetStream.

Rows are claimed with `FOR UPDATE SKIP LOCKED`, so any number of relays can run side by side; each
row is published with `Nats-Msg-Id` = its id and marked published only after JetStream's PubAck.
A crash or lost connection between publish and mark republishes the row, and JetStream drops the
copy within its duplicate window. When NATS or PostgreSQL is unreachable the relay backs off (jittered,
exponential, up to max_backoff) and keeps trying; it never skips a row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

import psycopg
from nats.js import JetStreamContext
from opentelemetry import propagate, trace
from psycopg import sql
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from bus.outbox import notify_channel
from bus.retry import retry_until_stopped
from bus.tables import outbox_table

log = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)


class OutboxRelay:
    def __init__(
        self,
        engine: AsyncEngine,
        schema: str,
        js: JetStreamContext,
        *,
        batch_size: int = 100,
        poll_interval: float = 1.0,
        publish_timeout: float = 2.0,
        max_backoff: float = 5.0,
    ) -> None:
        self._engine = engine
        self._schema = schema
        self._table = outbox_table(schema)
        self._js = js
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.publish_timeout = publish_timeout
        self.max_backoff = max_backoff
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        # Counters for operators and tests: rows published, and how many of those JetStream had already.
        self.published = 0
        self.duplicates = 0

    async def run(self) -> None:
        """Publish until stop(); returns once the batch in flight is done."""
        self._stopping.clear()
        listener = asyncio.create_task(self._listen(), name=f"outbox-listen-{self._schema}")
        try:
            while not self._stopping.is_set():
                self._wake.clear()
                # NATS or PostgreSQL unreachable: nothing is lost, retry with jittered backoff.
                published = await retry_until_stopped(
                    self.publish_batch,
                    self._stopping,
                    on=self._publish_failed,
                    wait_initial=min(self.poll_interval, self.max_backoff),
                    wait_max=self.max_backoff,
                )
                if published is not None and published < self.batch_size:
                    # Drained: sleep until a commit is notified or the poll is due.
                    await self._pause(self.poll_interval)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    def stop(self) -> None:
        self._stopping.set()

    def _publish_failed(self, error: Exception) -> bool:
        log.warning("outbox %s: publish failed (%r), retrying", self._schema, error)
        return True

    async def publish_batch(self) -> int:
        """Publish up to batch_size unpublished rows, oldest first; returns how many went out.

        Stops at the first failure (after marking what was acked) and raises it.
        """
        table = self._table
        failure: Exception | None = None
        async with self._engine.begin() as conn:
            rows = (
                await conn.execute(
                    select(table.c.id, table.c.subject, table.c.payload, table.c.headers)
                    .where(table.c.published_at.is_(None))
                    .order_by(table.c.created_at)
                    .limit(self.batch_size)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            acked: list[uuid.UUID] = []
            for row in rows:
                try:
                    await self._publish(row.id, row.subject, row.payload, row.headers or {})
                except Exception as error:
                    failure = error
                    await conn.execute(update(table).where(table.c.id == row.id).values(attempts=table.c.attempts + 1))
                    break
                acked.append(row.id)
            if acked:
                await conn.execute(
                    update(table)
                    .where(table.c.id.in_(acked))
                    .values(published_at=func.now(), attempts=table.c.attempts + 1)
                )
        if failure is not None:
            raise failure
        return len(acked)

    async def _publish(self, event_id: uuid.UUID, subject: str, payload: bytes, stored: dict[str, str]) -> None:
        # The span continues the trace of the request that wrote the row, and the message carries it on.
        with _tracer.start_as_current_span(
            f"outbox publish {subject}",
            context=propagate.extract(stored),
            kind=trace.SpanKind.PRODUCER,
            attributes={
                "messaging.system": "nats",
                "messaging.operation.type": "publish",
                "messaging.destination.name": subject,
                "messaging.message.id": str(event_id),
            },
        ) as span:
            headers = {**stored, "Nats-Msg-Id": str(event_id)}
            propagate.inject(headers)
            ack = await self._js.publish(subject, payload, headers=headers, timeout=self.publish_timeout)
            span.set_attribute("messaging.nats.duplicate", bool(ack.duplicate))
        self.published += 1
        self.duplicates += bool(ack.duplicate)

    async def _pause(self, timeout: float) -> None:
        waits = [asyncio.ensure_future(self._stopping.wait()), asyncio.ensure_future(self._wake.wait())]
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()

    async def _listen(self) -> None:
        """Wake the loop on NOTIFY so events go out right after commit; the poll covers any gap."""
        while not self._stopping.is_set():
            await retry_until_stopped(
                self._listen_once, self._stopping, on=self._listen_lost, wait_initial=0.5, wait_max=self.max_backoff
            )

    async def _listen_once(self) -> None:
        url = self._engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        listen = sql.SQL("LISTEN {}").format(sql.Identifier(notify_channel(self._schema)))
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute(listen)
            self._wake.set()  # rows may have been committed while nobody listened
            async for _ in conn.notifies():
                self._wake.set()

    def _listen_lost(self, error: Exception) -> bool:
        if not isinstance(error, psycopg.Error):
            return False
        log.info("outbox %s: LISTEN connection lost (%r); polling meanwhile", self._schema, error)
        return True
