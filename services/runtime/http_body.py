"""What a servicer needs from a `stream google.api.HttpBody` request as the gateway sends it: the body's
content type (only the first message carries it), its bytes as they arrive, and the request headers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from google.api.httpbody_pb2 import HttpBody


async def streamed_body(messages: AsyncIterator[HttpBody]) -> tuple[str, AsyncIterator[bytes]]:
    """The content type of the first message and an iterator over every message's bytes."""
    stream = aiter(messages)
    first = await anext(stream, None)

    async def chunks() -> AsyncIterator[bytes]:
        if first is not None:
            yield first.data
        async for message in stream:
            yield message.data

    return (first.content_type if first is not None else ""), chunks()


def request_headers(context: grpc.aio.ServicerContext) -> dict[str, str]:
    """The request's text headers (gRPC metadata; binary `-bin` entries left out)."""
    return {key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)}
