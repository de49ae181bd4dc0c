"""Protobuf event envelopes: every message on the bus is an EventEnvelope wrapping a typed payload."""

from __future__ import annotations

from datetime import datetime
from typing import TypeVar

from google.protobuf.message import Message
from molbridge.events.v1.envelope_pb2 import EventEnvelope

M = TypeVar("M", bound=Message)


def build_envelope(
    *,
    event_id: str,
    source: str,
    payload: Message,
    occurred_at: datetime,
    organization_id: str = "",
    actor_id: str = "",
) -> EventEnvelope:
    if occurred_at.tzinfo is None:
        raise ValueError("occurred_at must be timezone-aware")
    envelope = EventEnvelope(id=event_id, source=source, organization_id=organization_id, actor_id=actor_id)
    envelope.occurred_at.FromDatetime(occurred_at)
    envelope.payload.Pack(payload)
    return envelope


def unpack(envelope: EventEnvelope, payload_type: type[M]) -> M:
    """The typed payload; a payload of another type is a programming or routing error."""
    payload = payload_type()
    if not envelope.payload.Unpack(payload):
        expected = payload_type.DESCRIPTOR.full_name
        raise TypeError(f"event {envelope.id} carries {envelope.payload.TypeName()}, not {expected}")
    return payload
