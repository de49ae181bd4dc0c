"""Audit anchors in object storage: `audit-anchors/<sequence>.json`, each naming the one before it, and
`audit-anchors/latest.json` (a copy of the newest), so they are read back without listing the bucket."""

from __future__ import annotations

import logging

from services.identity.domain import LATEST_ANCHOR_KEY, Anchor, anchor_key
from services.runtime.errors import NotFoundError
from services.runtime.storage import ObjectStorage

JSON = "application/json"
log = logging.getLogger("molbridge.identity.audit")


class AuditAnchors:
    def __init__(self, storage: ObjectStorage) -> None:
        self._storage = storage

    async def latest(self) -> Anchor | None:
        try:
            return Anchor.from_json(await self._storage.get_bytes(LATEST_ANCHOR_KEY))
        except NotFoundError:
            return None

    async def write(self, anchor: Anchor) -> None:
        """The anchor's own object first: `latest` never names an anchor that is not there."""
        await self._storage.put_bytes(anchor.object_key, anchor.to_json(), JSON)
        await self._storage.put_bytes(LATEST_ANCHOR_KEY, anchor.to_json(), JSON)

    async def every(self) -> list[Anchor]:
        """Every anchor, newest first, following each one's link to the one before."""
        found: list[Anchor] = []
        anchor = await self.latest()
        while anchor is not None:
            found.append(anchor)
            previous = anchor.previous_sequence
            if not previous or any(a.sequence == previous for a in found):  # the first one, or a loop
                break
            try:
                anchor = Anchor.from_json(await self._storage.get_bytes(anchor_key(previous)))
            except NotFoundError:
                log.warning("audit anchor %s is missing from object storage", anchor_key(previous))
                break
        return found
