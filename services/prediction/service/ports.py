"""What the use cases need from the outside world, as protocols and the errors they raise (the
adapters: engine_client.py and services/runtime/molecule_client.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from services.prediction.domain.catalogue import Catalogue
from services.prediction.domain.jobs import BatchOutcome, MoleculeInput
from services.runtime.molecule_client import MoleculeRecord


class EngineUnavailable(Exception):
    """The engine could not answer (after retries), or lost or failed the job: try again later."""


class EngineRejected(Exception):
    """The engine refused the request itself (4xx): retrying the same request cannot help."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"the AI engine answered {status}: {message}")
        self.status = status


class PredictionEngine(Protocol):
    """Raises EngineUnavailable, EngineRejected, or the breaker's CircuitOpen."""

    async def catalogue(self) -> Catalogue: ...

    async def predict(
        self, molecules: Sequence[MoleculeInput], properties: Sequence[str], model: str = ""
    ) -> BatchOutcome: ...


class MoleculeDirectory(Protocol):
    async def batch_get(
        self, ids: Sequence[str], credentials: Mapping[str, str]
    ) -> tuple[list[MoleculeRecord], list[str]]:
        """The caller's molecules found and the ids not found; raises IntegrationError."""
        ...
