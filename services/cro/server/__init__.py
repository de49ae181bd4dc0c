"""The CRO service's servicers: proto ↔ use cases, nothing else."""

from services.cro.server.catalogue import CatalogueServicer
from services.cro.server.submissions import SubmissionServicer

__all__ = ["CatalogueServicer", "SubmissionServicer"]
