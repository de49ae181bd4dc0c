"""The molecule service's unit of work: its repositories and read models on one transaction, its events
recorded to the molecule outbox (source `molecule`) with the change."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from bus.idempotency import first_delivery
from services.molecule.domain.vocabulary import EVENT_SOURCE
from services.molecule.store.import_chunks import ImportChunkRepository
from services.molecule.store.import_jobs import ImportJobRepository
from services.molecule.store.libraries import LibraryRepository
from services.molecule.store.molecule_views import MoleculeViews
from services.molecule.store.molecules import MoleculeRepository
from services.molecule.store.restandardize import RestandardizeStore
from services.molecule.store.search_reads import SearchReads
from services.molecule.store.tables import SCHEMA
from services.molecule.store.uploads import UploadRepository
from services.runtime.idempotency import idempotent
from services.runtime.uow import EventSink, Transactions, UnitOfWork

MOLECULE_EVENTS = EventSink(source=EVENT_SOURCE, schema=SCHEMA)


class MoleculeUnitOfWork(UnitOfWork):
    def __init__(self, session: AsyncSession, sink: EventSink) -> None:
        super().__init__(session, sink)
        self.molecules = MoleculeRepository(session)
        self.libraries = LibraryRepository(session)
        self.molecule_views = MoleculeViews(session)
        self.search_reads = SearchReads(session)
        self.uploads = UploadRepository(session)
        self.import_jobs = ImportJobRepository(session)
        self.import_chunks = ImportChunkRepository(session)
        self.restandardize = RestandardizeStore(session)

    async def once(self, scope: str, request_id: str, create: Callable[[], Awaitable[str]]) -> str:
        """Runs `create` (which returns the new resource's id) once per (scope, request_id) (AIP-155)."""
        return await idempotent(self.session, scope, request_id, create)

    async def first_delivery(self, consumer: str, event_id: str) -> bool:
        """True the first time `consumer` handles this event (the marker commits with the change)."""
        return await first_delivery(self.session, consumer, event_id, schema=SCHEMA)


MoleculeTransactions = Transactions[MoleculeUnitOfWork]


def molecule_transactions(engine: AsyncEngine) -> MoleculeTransactions:
    """The unit-of-work factory the molecule use cases hold: `async with self._uow() as uow: …`."""
    return Transactions(engine, MOLECULE_EVENTS, MoleculeUnitOfWork)
