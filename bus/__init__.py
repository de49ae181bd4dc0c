"""The reliable bus: protobuf events through a transactional outbox to NATS JetStream, and durable consumers.

Write side: `add_event(session, …)` in the business transaction; an `OutboxRelay` per service
publishes committed rows. Read side: a `Consumer` per durable name hands envelopes to a handler;
`first_delivery` makes the handler's effects exactly-once.
"""

from bus.connection import connect
from bus.consumer import Consumer, Handler, PoisonError, TransientError
from bus.envelope import build_envelope, unpack
from bus.idempotency import first_delivery
from bus.outbox import add_event, notify_channel
from bus.relay import OutboxRelay
from bus.streams import EVENTS_STREAM, WORK_STREAM, ensure_streams
from bus.subjects import ALL_EVENTS, ALL_WORK, event_subject, event_type_name, source_events, work_subject
from bus.tables import (
    create_outbox_table,
    create_processed_events_table,
    drop_outbox_table,
    drop_processed_events_table,
    outbox_table,
    processed_events_table,
)

__all__ = [
    "ALL_EVENTS",
    "ALL_WORK",
    "EVENTS_STREAM",
    "WORK_STREAM",
    "Consumer",
    "Handler",
    "OutboxRelay",
    "PoisonError",
    "TransientError",
    "add_event",
    "build_envelope",
    "connect",
    "create_outbox_table",
    "create_processed_events_table",
    "drop_outbox_table",
    "drop_processed_events_table",
    "ensure_streams",
    "event_subject",
    "event_type_name",
    "first_delivery",
    "notify_channel",
    "outbox_table",
    "processed_events_table",
    "source_events",
    "unpack",
    "work_subject",
]
