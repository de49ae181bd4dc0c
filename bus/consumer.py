"""The durable pull-consumer runner: fetch, hand each envelope to a handler, then ack, nak or term.

- handler returns            → ack
- handler raises TransientError  → nak with a delay (backoff by delivery count); redelivered later
- handler raises PoisonError     → term at once: the message can never succeed, do not retry it
- handler raises anything else   → nak with backoff, like a transient error, but logged with its traceback
- the last of max_deliver deliveries fails → term, logged as poison (JetStream would not redeliver it anyway)

Delivery is at least once: a handler must make its effects idempotent (see bus.idempotency).
Several runners with the same durable name share the work; that is how a queue scales out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from google.protobuf.message import DecodeError
from molbridge.events.v1.envelope_pb2 import EventEnvelope
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig
from opentelemetry import propagate, trace

from bus.retry import retry_until_stopped

log = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)

Handler = Callable[[EventEnvelope, Msg], Awaitable[None]]

RECONNECT_MAX_S = 10.0  # longest pause between bind or fetch attempts while NATS is away


class TransientError(Exception):
    """The handler could not finish now (a dependency is down, a lock is held); try again later."""

    def __init__(self, message: str = "", *, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay  # overrides the runner's backoff for this redelivery


class PoisonError(Exception):
    """The message can never be handled (malformed, refers to nothing); retrying is pointless."""


class Consumer:
    def __init__(
        self,
        js: JetStreamContext,
        stream: str,
        durable: str,
        filter_subject: str,
        handler: Handler,
        *,
        max_deliver: int = 5,
        backoff: Sequence[float] = (1.0, 5.0, 30.0, 120.0),
        batch: int = 10,
        ack_wait: float = 30.0,
        fetch_timeout: float = 1.0,
    ) -> None:
        if max_deliver < 1 or not backoff:
            raise ValueError("max_deliver must be at least 1 and backoff must not be empty")
        self._js = js
        self.stream = stream
        self.durable = durable
        self.filter_subject = filter_subject
        self._handler = handler
        self.max_deliver = max_deliver
        self.backoff = tuple(backoff)
        self.batch = batch
        self.ack_wait = ack_wait
        self.fetch_timeout = fetch_timeout
        self._stopping = asyncio.Event()
        # Counters for operators and tests.
        self.acked = 0
        self.nakked = 0
        self.terminated = 0

    def config(self) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=self.durable,
            name=self.durable,
            filter_subject=self.filter_subject,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            max_deliver=self.max_deliver,
        )

    async def run(self) -> None:
        """Consume until stop(); the batch in hand is finished first."""
        self._stopping.clear()
        subscription = await self._subscribe()
        if subscription is None:
            return
        try:
            while not self._stopping.is_set():
                # Disconnected or server restarting: the durable consumer waits; retry with jittered backoff.
                messages = await retry_until_stopped(
                    lambda: self._fetch(subscription),
                    self._stopping,
                    on=self._fetch_failed,
                    wait_initial=self.backoff[0],
                    wait_max=RECONNECT_MAX_S,
                )
                if not messages:
                    continue
                # Every fetched message's ack timer runs from delivery, so the whole batch is kept alive
                # while its messages wait their turn.
                async with self._keep_alive(messages):
                    for message in messages:
                        await self._process(message)
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    def stop(self) -> None:
        self._stopping.set()

    async def _subscribe(self) -> JetStreamContext.PullSubscription | None:
        # Stream not created yet, NATS not reachable yet: retry with jittered backoff until stopped.
        return await retry_until_stopped(
            self._bind, self._stopping, on=self._bind_failed, wait_initial=self.backoff[0], wait_max=RECONNECT_MAX_S
        )

    async def _bind(self) -> JetStreamContext.PullSubscription:
        # Create or update the durable consumer (so config changes apply on restart), then bind to it.
        await self._js.add_consumer(self.stream, self.config())
        return await self._js.pull_subscribe_bind(durable=self.durable, stream=self.stream)

    def _bind_failed(self, error: Exception) -> bool:
        log.warning("consumer %s: cannot bind to %s (%r), retrying", self.durable, self.stream, error)
        return True

    async def _fetch(self, subscription: JetStreamContext.PullSubscription) -> list[Msg]:
        try:
            return await subscription.fetch(self.batch, timeout=self.fetch_timeout)
        except TimeoutError:  # nothing to do (nats-py's fetch timeouts all derive from it)
            return []

    def _fetch_failed(self, error: Exception) -> bool:
        log.warning("consumer %s: fetch failed (%r), retrying", self.durable, error)
        return True

    async def _process(self, msg: Msg) -> None:
        delivered = msg.metadata.num_delivered
        with _tracer.start_as_current_span(
            f"consume {msg.subject}",
            context=propagate.extract(msg.headers or {}),
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "messaging.system": "nats",
                "messaging.operation.type": "process",
                "messaging.destination.name": msg.subject,
                "messaging.consumer.group.name": self.durable,
                "messaging.message.id": (msg.headers or {}).get("Nats-Msg-Id", ""),
                "messaging.nats.delivery_count": delivered,
            },
        ) as span:
            try:
                envelope = EventEnvelope.FromString(msg.data)
                await self._handler(envelope, msg)
            except Exception as error:
                span.record_exception(error)
                span.set_status(trace.Status(trace.StatusCode.ERROR, repr(error)))
                await self._settle_failure(msg, error, delivered)
            else:
                if not msg.is_acked:  # the handler may have settled the message itself
                    await self._settle(msg.ack())
                    self.acked += 1

    async def _settle_failure(self, msg: Msg, error: Exception, delivered: int) -> None:
        poison = isinstance(error, PoisonError | DecodeError)
        if poison or delivered >= self.max_deliver:
            log.error(
                "consumer %s: terminating message %s on %s after %d deliveries: %r",
                self.durable,
                (msg.headers or {}).get("Nats-Msg-Id", "?"),
                msg.subject,
                delivered,
                error,
                exc_info=not poison and not isinstance(error, TransientError),
            )
            await self._settle(msg.term())
            self.terminated += 1
            return
        delay = error.delay if isinstance(error, TransientError) and error.delay is not None else None
        if delay is None:
            delay = self.backoff[min(delivered, len(self.backoff)) - 1]
        transient = isinstance(error, TransientError)
        log.log(
            logging.INFO if transient else logging.WARNING,
            "consumer %s: delivery %d of %s failed (%r); redelivering in %.1fs",
            self.durable,
            delivered,
            msg.subject,
            error,
            delay,
            exc_info=not transient,
        )
        await self._settle(msg.nak(delay=delay))
        self.nakked += 1

    async def _settle(self, reply: Awaitable[None]) -> None:
        try:
            await reply
        except Exception as error:  # connection lost: JetStream redelivers after ack_wait, which is safe
            log.warning("consumer %s: could not settle a message (%r)", self.durable, error)

    @contextlib.asynccontextmanager
    async def _keep_alive(self, messages: Sequence[Msg]) -> AsyncIterator[None]:
        """Tell JetStream that unsettled messages are still being worked on, so none is redelivered
        to another worker while a long handler runs."""

        async def beat() -> None:
            while True:
                await asyncio.sleep(self.ack_wait / 3)
                for msg in messages:
                    if not msg.is_acked:
                        with contextlib.suppress(Exception):
                            await msg.in_progress()

        task = asyncio.create_task(beat())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
