"""MessageService servicer: maps proto requests to the use cases (service/messages.py) and back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypeAlias

import grpc
from molbridge.cro.v1 import cro_service_pb2 as pb
from molbridge.cro.v1 import cro_service_pb2_grpc as pb_grpc

from services.cro.domain.submissions import Message
from services.cro.service.messages import MessageService
from services.runtime.auth import current_principal
from services.runtime.molecule_client import forwarded_credentials
from services.runtime.pagination import PageRequest
from services.runtime.protomap import timestamp

Context: TypeAlias = grpc.aio.ServicerContext


def message_pb(message: Message) -> pb.Message:
    return pb.Message(
        id=message.id,
        submission_id=message.submission_id,
        author_id=message.author,
        side=message.side.value if message.side else "",
        text=message.text,
        document_id=message.document_id,
        change_request=message.change_request,
        created_at=timestamp(message.at),
    )


class MessageServicer(pb_grpc.MessageServiceServicer):
    def __init__(self, messages: MessageService) -> None:
        self._messages = messages

    async def ListMessages(self, request: pb.ListMessagesRequest, context: Context) -> pb.ListMessagesResponse:
        page = PageRequest.of(request.page, request.page_size)
        found, total = await self._messages.list_messages(current_principal(), request.id, page)
        return pb.ListMessagesResponse(data=[message_pb(m) for m in found], meta=page.meta(total))

    async def PostMessage(self, request: pb.PostMessageRequest, context: Context) -> pb.PostMessageResponse:
        message = await self._messages.post_message(
            current_principal(),
            request.id,
            text=request.text,
            document_id=request.document_id,
            request_id=request.request_id,
            credentials=forwarded_credentials(context.invocation_metadata()),
        )
        return pb.PostMessageResponse(data=message_pb(message))

    async def MarkMessagesRead(
        self, request: pb.MarkMessagesReadRequest, context: Context
    ) -> pb.MarkMessagesReadResponse:
        unread = await self._messages.mark_read(current_principal(), request.id, request.up_to_message_id)
        return pb.MarkMessagesReadResponse(unread=unread)

    async def GetUnreadCounts(
        self, request: pb.GetUnreadCountsRequest, context: Context
    ) -> pb.GetUnreadCountsResponse:
        counts, total = await self._messages.unread_counts(current_principal())
        return pb.GetUnreadCountsResponse(
            data=[pb.UnreadCount(submission_id=c.submission_id, unread=c.unread) for c in counts], total=total
        )

    async def WatchMessages(
        self, request: pb.WatchMessagesRequest, context: Context
    ) -> AsyncIterator[pb.WatchMessagesResponse]:
        """Server streaming; an empty `message` is a heartbeat."""
        async for message in self._messages.watch(current_principal(), request.id, request.after_id):
            yield pb.WatchMessagesResponse(message=message_pb(message) if message else None)
