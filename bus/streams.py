"""JetStream streams: EVENTS (facts, kept for replay) and WORK (tasks, removed once done)."""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError

from bus.subjects import ALL_EVENTS, ALL_WORK

EVENTS_STREAM = "EVENTS"
WORK_STREAM = "WORK"

# Within this window JetStream drops a message whose Nats-Msg-Id it has already stored, which is what
# turns the relay's at-least-once publishing into exactly-once storage.
DUPLICATE_WINDOW_SECONDS = 600.0
_STREAM_NAME_IN_USE = 10058  # JetStream API error: a stream of that name exists with another config


# name, subjects, retention, description
_STREAMS = [
    (EVENTS_STREAM, ALL_EVENTS, RetentionPolicy.LIMITS, "Molbridge domain events: molbridge.events.<source>.<type>"),
    (WORK_STREAM, ALL_WORK, RetentionPolicy.WORK_QUEUE, "Molbridge work queues: molbridge.work.<queue>"),
]


def stream_configs(*, replicas: int = 1, duplicate_window: float = DUPLICATE_WINDOW_SECONDS) -> list[StreamConfig]:
    """`replicas`: copies JetStream keeps of each stream (3 on a three-node cluster: one node may fail)."""
    return [
        StreamConfig(
            name=name,
            description=description,
            subjects=[subjects],
            retention=retention,
            storage=StorageType.FILE,
            duplicate_window=duplicate_window,
            num_replicas=replicas,
        )
        for name, subjects, retention, description in _STREAMS
    ]


async def ensure_streams(
    js: JetStreamContext, *, replicas: int = 1, duplicate_window: float = DUPLICATE_WINDOW_SECONDS
) -> None:
    """Create the streams, or bring an existing one to this configuration (JetStream scales a stream's
    replicas up or down in place); safe to run on every start. Every process must pass the same values
    (MOLBRIDGE_STREAM_REPLICAS), or each start would undo the last."""
    for config in stream_configs(replicas=replicas, duplicate_window=duplicate_window):
        try:
            # Creating with an identical configuration is a no-op, which makes concurrent starts safe.
            await js.add_stream(config)
        except BadRequestError as error:
            if error.err_code != _STREAM_NAME_IN_USE:
                raise
            await js.update_stream(config)
