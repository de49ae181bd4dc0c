"""What the molecule service's parts share; built once by the composition root (__main__)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from services.runtime.db import UnitOfWork
from services.runtime.settings import Settings


@dataclass
class MoleculeContext:
    settings: Settings
    engine: AsyncEngine
    uow: UnitOfWork
    # Filled by the composition root as parts are built (object storage, search index, …).
    shared: dict[str, Any] = field(default_factory=dict)


@dataclass
class ServicePart:
    """One area's contribution to the server: servicers, background jobs, shutdown hooks."""

    servicers: list[tuple[Callable[[Any, grpc.aio.Server], None], Any]] = field(default_factory=list)
    background: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
