"""Subscriptions are data: what they subscribe to follows from the topic."""

from __future__ import annotations

from molbridge.events.v1.audit_pb2 import AuditRecorded
from molbridge.events.v1.envelope_pb2 import EventEnvelope

from services.runtime.process import Subscription, WorkQueue


async def ignore(payload: AuditRecorded, envelope: EventEnvelope) -> None:
    return None


def test_an_event_subscription_listens_to_one_source_or_all() -> None:
    everyone = Subscription(AuditRecorded, durable="audit", handler=ignore)
    assert everyone.stream == "EVENTS" and everyone.subject == "molbridge.events.*.audit_recorded"
    one = Subscription(AuditRecorded, durable="audit", handler=ignore, source="identity")
    assert one.subject == "molbridge.events.identity.audit_recorded" and one.payload_type is AuditRecorded


def test_a_work_queue_subscription_takes_items_of_its_type() -> None:
    work = Subscription(WorkQueue("csv_chunks", AuditRecorded), durable="csv", handler=ignore, concurrency=4)
    assert work.stream == "WORK" and work.subject == "molbridge.work.csv_chunks"
    assert work.payload_type is AuditRecorded
