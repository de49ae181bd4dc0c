"""Subject naming: the one place that decides what a subject on the bus looks like.

Events (facts, fanned out to any number of consumers): `molbridge.events.<source>.<type_name>`,
e.g. `molbridge.events.identity.audit_recorded` for a molbridge.events.v1.AuditRecorded emitted by
identity. Work (tasks, each taken by one worker): `molbridge.work.<queue>`, e.g. `molbridge.work.csv_chunks`.
"""

from __future__ import annotations

import re

from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

EVENTS_PREFIX = "molbridge.events"
WORK_PREFIX = "molbridge.work"
ALL_EVENTS = f"{EVENTS_PREFIX}.>"
ALL_WORK = f"{WORK_PREFIX}.>"

# One subject token: lower snake case, so subjects never contain wildcards, dots or spaces by accident.
_TOKEN = re.compile(r"^[a-z][a-z0-9_]*$")
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def snake_case(name: str) -> str:
    """`AuditRecorded` → `audit_recorded`, `CSVChunkReady` → `csv_chunk_ready`."""
    return _CAMEL_BOUNDARY.sub("_", name).lower()


def _token(value: str, what: str) -> str:
    if not _TOKEN.match(value):
        raise ValueError(f"{what} must be lower snake case (a single subject token), got {value!r}")
    return value


def event_type_name(event: Message | type[Message] | Descriptor) -> str:
    """The subject token for an event type: its proto message name in snake case."""
    descriptor = event if isinstance(event, Descriptor) else event.DESCRIPTOR
    return snake_case(descriptor.name)


def event_subject(source: str, event: Message | type[Message] | Descriptor) -> str:
    return f"{EVENTS_PREFIX}.{_token(source, 'source')}.{event_type_name(event)}"


def source_events(source: str) -> str:
    """Filter subject for every event one service emits."""
    return f"{EVENTS_PREFIX}.{_token(source, 'source')}.>"


def work_subject(queue: str) -> str:
    return f"{WORK_PREFIX}.{_token(queue, 'queue')}"
