from datetime import UTC, datetime

import pytest
from molbridge.events.v1.audit_pb2 import AuditRecorded
from molbridge.events.v1.envelope_pb2 import EventEnvelope

from bus.envelope import build_envelope, unpack


def test_envelope_carries_metadata_and_typed_payload() -> None:
    when = datetime(2026, 11, 29, 12, 0, 0, 123456, tzinfo=UTC)
    audit = AuditRecorded(action="user.created", outcome=AuditRecorded.SUCCESS, target_type="user", target_id="u1")
    envelope = build_envelope(
        event_id="e1", source="identity", payload=audit, occurred_at=when, organization_id="o1", actor_id="a1"
    )

    decoded = EventEnvelope.FromString(envelope.SerializeToString())
    assert (decoded.id, decoded.source, decoded.organization_id, decoded.actor_id) == (
        "e1",
        "identity",
        "o1",
        "a1",
    )
    assert decoded.occurred_at.ToDatetime(tzinfo=UTC) == when
    assert decoded.payload.type_url == "type.googleapis.com/molbridge.events.v1.AuditRecorded"
    assert unpack(decoded, AuditRecorded) == audit


def test_unpacking_as_the_wrong_type_is_an_error() -> None:
    envelope = build_envelope(event_id="e1", source="identity", payload=AuditRecorded(), occurred_at=datetime.now(UTC))
    with pytest.raises(TypeError, match="molbridge.events.v1.AuditRecorded"):
        unpack(envelope, EventEnvelope)


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(ValueError):
        build_envelope(event_id="e1", source="identity", payload=AuditRecorded(), occurred_at=datetime.now())
