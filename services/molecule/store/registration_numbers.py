"""Registration numbers in PostgreSQL: the per-organization counter and its one allocation path.

Every transaction that inserts molecules allocates their numbers here first, with one upsert of the
organization's counter row (`… RETURNING`), and holds that row's lock until it commits. So the
transactions that create molecules of one organization are serialised from allocation to commit:
keys another one inserted are visible once the lock is ours, the surplus of a block (keys that turned
out to exist meanwhile) is handed back before anyone else can allocate, and no number is burned or
issued twice. A rolled-back transaction (e.g. a redelivered import chunk that finds its row) takes
its allocation with it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from services.molecule.domain.registration_numbers import DEFAULT_PREFIX, format_number
from services.molecule.store.tables import molecules, registration_counters
from services.runtime.errors import PreconditionError


async def existing_keys(session: AsyncSession, organization_id: str, keys: Sequence[str]) -> set[str]:
    found = await session.scalars(
        sa.select(molecules.c.inchi_key).where(
            molecules.c.organization_id == organization_id, molecules.c.inchi_key.in_(list(keys))
        )
    )
    return set(found)


async def allocate_numbers(session: AsyncSession, organization_id: str, keys: Sequence[str]) -> dict[str, str]:
    """Numbers for those of `keys` (InChIKeys, in the order they should be numbered) that the
    organization has no molecule for yet; keys that exist get none. Locks the counter when it allocates."""
    known = await existing_keys(session, organization_id, keys)
    candidates = [key for key in dict.fromkeys(keys) if key not in known]
    if not candidates:
        return {}
    n = len(candidates)
    statement = sa.text(
        """INSERT INTO registration_counters AS c (organization_id, prefix, next_value, locked)
           VALUES (:org, :prefix, 1 + :n, true)
           ON CONFLICT (organization_id) DO UPDATE SET next_value = c.next_value + :n, locked = true
           RETURNING c.prefix, c.next_value - :n"""
    )
    prefix, first = (await session.execute(statement, {"org": organization_id, "prefix": DEFAULT_PREFIX, "n": n})).one()
    # The lock is ours: every other creator of this organization's molecules has committed or rolled back.
    taken = await existing_keys(session, organization_id, candidates)
    fresh = [key for key in candidates if key not in taken]
    if len(fresh) < n:
        await session.execute(
            registration_counters.update()
            .where(registration_counters.c.organization_id == organization_id)
            .values(next_value=registration_counters.c.next_value - (n - len(fresh)))
        )
    return {key: format_number(prefix, first + i) for i, key in enumerate(fresh)}


async def lock_counter(session: AsyncSession, organization_id: str) -> None:
    """Takes the organization's counter lock up front (a transaction that locks molecules before it may
    allocate numbers: registrations lock the counter first, so it must too)."""
    await session.execute(
        sa.select(registration_counters.c.organization_id)
        .where(registration_counters.c.organization_id == organization_id)
        .with_for_update()
    )


async def has_counter(session: AsyncSession, organization_id: str) -> bool:
    found = await session.scalar(
        sa.select(registration_counters.c.organization_id).where(
            registration_counters.c.organization_id == organization_id
        )
    )
    return found is not None


async def start_counter(session: AsyncSession, organization_id: str, prefix: str) -> bool:
    """The organization's counter with this prefix, unless it has one already; whether it started one."""
    started = await session.execute(
        sa.text(
            """INSERT INTO registration_counters (organization_id, prefix) VALUES (:org, :prefix)
               ON CONFLICT (organization_id) DO NOTHING"""
        ),
        {"org": organization_id, "prefix": prefix},
    )
    return bool(started.rowcount)  # type: ignore[attr-defined]


async def set_prefix(session: AsyncSession, organization_id: str, prefix: str) -> None:
    """Sets the organization's prefix; 409 once a number was issued (numbers never change)."""
    statement = sa.text(
        """INSERT INTO registration_counters AS c (organization_id, prefix) VALUES (:org, :prefix)
           ON CONFLICT (organization_id) DO UPDATE SET prefix = excluded.prefix WHERE NOT c.locked
           RETURNING c.prefix"""
    )
    if (await session.execute(statement, {"org": organization_id, "prefix": prefix})).first() is None:
        raise PreconditionError(
            "The registration prefix cannot change: molecules already have numbers with the current one",
            detail="REGISTRATION_PREFIX_IN_USE",
        )


async def current_prefix(session: AsyncSession, organization_id: str) -> tuple[str, bool]:
    """(prefix, whether numbers were issued) of the organization."""
    row = (
        await session.execute(
            sa.select(registration_counters.c.prefix, registration_counters.c.locked).where(
                registration_counters.c.organization_id == organization_id
            )
        )
    ).first()
    return (row.prefix, row.locked) if row is not None else (DEFAULT_PREFIX, False)
