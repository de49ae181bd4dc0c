"""The engine's model catalogue, cached: requests are checked against it without an engine round
trip each, and an engine that is down for a while does not stop requests being checked (the last
catalogue seen stays in use until the engine answers again)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from services.prediction.domain.breaker import CircuitOpen
from services.prediction.domain.catalogue import Catalogue
from services.prediction.service.ports import EngineRejected, EngineUnavailable, PredictionEngine
from services.runtime.errors import IntegrationError

log = logging.getLogger("molbridge.prediction.catalogue")

FRESH_S = 60.0  # how long a catalogue is used without asking the engine again
RECHECK_S = 5.0  # a name the catalogue does not know is rechecked with the engine at most this often


class ModelCatalogue:
    def __init__(self, engine: PredictionEngine, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._engine = engine
        self._clock = clock
        self._cached: Catalogue | None = None
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def get(self, max_age: float = FRESH_S) -> Catalogue:
        """A catalogue at most `max_age` seconds old, or the last one seen when the engine cannot
        answer now; IntegrationError when the engine never answered."""
        if self._cached is not None and self._clock() - self._fetched_at <= max_age:
            return self._cached
        async with self._lock:
            if self._cached is not None and self._clock() - self._fetched_at <= max_age:
                return self._cached  # another caller refreshed it while this one waited
            try:
                self._cached, self._fetched_at = await self._engine.catalogue(), self._clock()
            except (CircuitOpen, EngineUnavailable, EngineRejected) as error:
                if self._cached is None:
                    raise IntegrationError(
                        f"The AI engine's model catalogue is unavailable, so the request cannot be checked: {error}"
                    ) from error
                log.warning(
                    "AI engine catalogue not refreshed (%s); using the one from %.0f s ago",
                    error,
                    self._clock() - self._fetched_at,
                )
            return self._cached

    async def check(self, properties: list[str], model: str) -> None:
        """ValidationError naming what the engine does not offer and listing what it does."""
        catalogue = await self.get()
        if not catalogue.knows(properties, model):
            catalogue = await self.get(max_age=RECHECK_S)  # the engine may have loaded a model since
        catalogue.check(properties, model)
