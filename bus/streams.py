"""JetStream streams: EVENTS (facts, kept for replay up to an age and a size) and WORK (tasks, removed once done)."""

from __future__ import annotations

from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError

from bus.subjects import ALL_EVENTS, ALL_WORK

EVENTS_STREAM = "EVENTS"
WORK_STREAM = "WORK"

# Within this window JetStream drops a message whose Nats-Msg-Id it has already stored, which is what
# turns the relay's at-least-once publishing into exactly-once storage.
DUPLICATE_WINDOW_SECONDS = 600.0
_STREAM_NAME_IN_USE = 10058  # JetStream API error: a stream of that name exists with another config

DAY_S = 86_400.0
GIB = 1 << 30


@dataclass(frozen=True)
class StreamPolicy:
    """How JetStream keeps the streams: `replicas` copies of each (3 on a three-node cluster, so one node
    may fail; MOLBRIDGE_STREAM_REPLICAS), and how much of EVENTS, the oldest events going first when
    either limit is reached.

    The defaults sit far above every window in which an event still has work to do: the duplicate
    window (10 minutes), a consumer's redeliveries (max_deliver 5 with nak delays up to 120 s and a
    30 s ack wait: minutes) and the notification horizon (7 days). 30 days lets a consumer that was
    down for weeks catch up without losing an unprocessed event; 10 GiB holds millions of envelopes (a
    few hundred bytes to a few KiB each) yet bounds the disk should something flood the stream. WORK has no
    limits: a work queue deletes each item once it is done, and an item must never be dropped undone.
    """

    max_age_s: float = 30 * DAY_S
    max_bytes: int = 10 * GIB
    replicas: int = 1

    def __post_init__(self) -> None:
        # JetStream refuses a duplicate window longer than max_age; we want it far shorter.
        if self.max_age_s <= DUPLICATE_WINDOW_SECONDS or self.max_bytes <= 0:
            raise ValueError(
                f"EVENTS limits must exceed the {DUPLICATE_WINDOW_SECONDS:g} s duplicate window and be positive"
            )


# name, subjects, retention, description, limited (EVENTS gets StreamPolicy's limits)
_STREAMS = [
    (EVENTS_STREAM, ALL_EVENTS, RetentionPolicy.LIMITS, "Molbridge domain events: molbridge.events.<src>.<type>", True),
    (WORK_STREAM, ALL_WORK, RetentionPolicy.WORK_QUEUE, "Molbridge work queues: molbridge.work.<queue>", False),
]


def stream_configs(
    *, policy: StreamPolicy | None = None, duplicate_window: float = DUPLICATE_WINDOW_SECONDS
) -> list[StreamConfig]:
    policy = policy or StreamPolicy()
    return [
        StreamConfig(
            name=name,
            description=description,
            subjects=[subjects],
            retention=retention,
            storage=StorageType.FILE,
            duplicate_window=duplicate_window,
            # 0 / -1: no limit (what WORK must keep; an update also lifts limits set by hand).
            max_age=policy.max_age_s if limited else 0,
            max_bytes=policy.max_bytes if limited else -1,
            discard=DiscardPolicy.OLD,
            num_replicas=policy.replicas,
        )
        for name, subjects, retention, description, limited in _STREAMS
    ]


async def ensure_streams(
    js: JetStreamContext, *, policy: StreamPolicy | None = None, duplicate_window: float = DUPLICATE_WINDOW_SECONDS
) -> None:
    """Create the streams, or bring an existing one to this configuration (limits and replicas included:
    JetStream scales a stream's replicas in place); safe to run on every start. Every process must pass
    the same policy, or each start would undo the last."""
    for config in stream_configs(policy=policy, duplicate_window=duplicate_window):
        try:
            # Creating with an identical configuration is a no-op, which makes concurrent starts safe.
            await js.add_stream(config)
        except BadRequestError as error:
            if error.err_code != _STREAM_NAME_IN_USE:
                raise
            await js.update_stream(config)
