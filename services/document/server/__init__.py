"""The document service's servicers: proto ↔ use cases, nothing else."""

from services.document.server.documents import DocumentServicer

__all__ = ["DocumentServicer"]
