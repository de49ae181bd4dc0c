"""What the use cases need from the outside world, as protocols (the adapters: engine_client.py and
services/runtime/molecule_client.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from services.prediction.domain.catalogue import Catalogue
from services.prediction.domain.jobs import BatchOutcome, MoleculeInput
from services.runtime.molecule_client import MoleculeRecord


class PredictionEngine(Protocol):
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
