"""The document service as a message thread sees it: GetDocument with the caller's own credentials, so
the document service's visibility rules decide (its own documents; the other side's once shared)."""

from __future__ import annotations

from collections.abc import Mapping

import grpc
from molbridge.document.v1 import document_service_pb2 as document_pb
from molbridge.document.v1 import document_service_pb2_grpc as document_grpc

from services.runtime import telemetry
from services.runtime.db import canonical_uuid
from services.runtime.errors import IntegrationError

CALL_TIMEOUT_S = 10.0
NOT_VISIBLE = (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED)


class RemoteDocuments:
    def __init__(self, address: str) -> None:
        self._channel = telemetry.traced_channel(address)
        self._stub = document_grpc.DocumentServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def submission_of(self, document_id: str, credentials: Mapping[str, str]) -> str | None:
        """The document's submission id ("" for none) when the caller may read it; None otherwise."""
        if canonical_uuid(document_id) is None:
            return None
        try:
            reply = await self._stub.GetDocument(
                document_pb.GetDocumentRequest(id=document_id),
                metadata=tuple(credentials.items()),
                timeout=CALL_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() in NOT_VISIBLE:
                return None
            raise IntegrationError("The document service could not be reached; try again") from error
        return reply.data.submission_id
