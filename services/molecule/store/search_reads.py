"""What structure search reads from PostgreSQL besides molecule views: the identity lookup of exact search."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from services.molecule.store.tables import molecules


class SearchReads:
    """The read model on a unit of work's session."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def id_with_inchi_key(self, organization_id: str, inchi_key: str) -> str | None:
        """The organization's molecule with this standard InChIKey (archived or not), if any."""
        found = await self._session.scalar(
            sa.select(molecules.c.id).where(
                molecules.c.organization_id == organization_id, molecules.c.inchi_key == inchi_key
            )
        )
        return None if found is None else str(found)
