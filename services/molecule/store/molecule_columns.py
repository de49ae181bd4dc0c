"""What the columnar index reads from PostgreSQL: one organization's molecules (or some of them) in one
REPEATABLE READ snapshot, by binary COPY of array aggregates; and the ids passing a condition on a
structure column, which the index does not hold."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from psycopg import AsyncCursor, sql
from sqlalchemy.ext.asyncio import AsyncEngine

from services.molecule.domain.vocabulary import STATUSES
from services.molecule.index.ids import GONE, id_halves
from services.molecule.index.query import MEMORY_FIELDS, Condition, Operator
from services.molecule.store.pg_copy import copy_rows, fixed_array, text_array, text_field, uuid_array


@dataclass
class ColumnBatch:
    """Molecules read from PostgreSQL (a full load or a refresh), ready to apply to a tenant."""

    hi: np.ndarray
    lo: np.ndarray
    status: np.ndarray  # int8 codes
    created: np.ndarray  # float64 epoch seconds
    updated: np.ndarray
    molecular_weight: np.ndarray
    text: dict[str, list[str]]  # MEMORY_FIELDS
    numbers: list[tuple[str, str, np.ndarray, np.ndarray, np.ndarray]]  # name, source, hi, lo, values
    texts: list[tuple[str, str, np.ndarray, np.ndarray, list[str]]]
    flags: list[tuple[str, str, np.ndarray, np.ndarray]]  # user, type, hi, lo
    libraries: list[tuple[str, np.ndarray, np.ndarray]]  # library id, hi, lo
    requested: tuple[np.ndarray, np.ndarray] | None = None  # a refresh's ids (absent ones are gone)



_STATUS_ARRAY = "ARRAY[" + ", ".join(f"'{s}'" for s in STATUSES) + "]::text[]"
# The molecules of the selection `m`; every statement reads them by the same WHERE clause.
_MOLECULES = f"""
SELECT array_agg(m.id), array_agg(coalesce(array_position({_STATUS_ARRAY}, m.status) - 1, {GONE})::int2),
       array_agg(extract(epoch FROM m.created_at)::float8),
       array_agg(extract(epoch FROM m.updated_at)::float8), array_agg(m.molecular_weight),
       array_agg(m.name), array_agg(m.inchi_key), array_agg(m.formula), array_agg(m.registration_number)
FROM molecules m WHERE {{where}}"""
_NUMBERS = """
SELECT p.name, p.source, array_agg(p.molecule_id), array_agg(p.value_num)
FROM molecule_properties p JOIN molecules m ON m.id = p.molecule_id
WHERE {where} AND p.value_num IS NOT NULL GROUP BY p.name, p.source"""
_TEXTS = """
SELECT p.name, p.source, array_agg(p.molecule_id), array_agg(p.value_text)
FROM molecule_properties p JOIN molecules m ON m.id = p.molecule_id
WHERE {where} AND p.value_num IS NULL AND p.value_text IS NOT NULL GROUP BY p.name, p.source"""
_FLAGS = """
SELECT f.user_id, f.type, array_agg(f.molecule_id)
FROM flags f JOIN molecules m ON m.id = f.molecule_id WHERE {where} GROUP BY f.user_id, f.type"""
_LIBRARIES = """
SELECT l.library_id::text, array_agg(l.molecule_id)
FROM library_molecules l JOIN molecules m ON m.id = l.molecule_id WHERE {where} GROUP BY l.library_id"""
_ORGANIZATION = "m.organization_id = %(org)s::uuid"
_SOME = "m.organization_id = %(org)s::uuid AND m.id = ANY(%(ids)s::uuid[])"


async def _copy_out(cursor: AsyncCursor, statement: str | sql.Composable, params: dict[str, Any]) -> bytes:
    # One growing buffer: it lives in its own mapping and goes back to the OS when freed, where
    # thousands of small chunk objects would leave the heap fragmented (~250 MB RSS after a 500k load).
    data = bytearray()
    body = sql.SQL(statement) if isinstance(statement, str) else statement  # type: ignore[arg-type]
    async with cursor.copy(sql.SQL("COPY ({}) TO STDOUT (FORMAT BINARY)").format(body), params) as copy:
        async for chunk in copy:
            data += chunk
    return bytes(data)


async def read_columns(engine: AsyncEngine, organization_id: str, ids: list[str] | None) -> ColumnBatch:
    """One consistent snapshot of an organization's molecules (ids None) or of some of them."""
    where = _ORGANIZATION if ids is None else _SOME
    params: dict[str, Any] = {"org": organization_id, "ids": ids}
    async with engine.connect() as connection:
        snapshot = await connection.execution_options(
            isolation_level="REPEATABLE READ", postgresql_readonly=True
        )
        raw = (await snapshot.get_raw_connection()).driver_connection
        assert raw is not None
        async with snapshot.begin(), raw.cursor() as cursor:
            if ids is None:  # the aggregates of a whole organization hash well within this
                await cursor.execute("SET LOCAL work_mem = '256MB'")
            out = {}
            for label, statement in (
                ("m", _MOLECULES),
                ("n", _NUMBERS),
                ("t", _TEXTS),
                ("f", _FLAGS),
                ("l", _LIBRARIES),
            ):
                out[label] = await _copy_out(cursor, statement.format(where=where), params)
    (mol,) = list(copy_rows(out["m"]))
    hi, lo = uuid_array(mol[0])
    batch = ColumnBatch(
        hi=hi,
        lo=lo,
        status=fixed_array(mol[1], ">i2").astype(np.int8),
        created=fixed_array(mol[2], ">f8"),
        updated=fixed_array(mol[3], ">f8"),
        molecular_weight=fixed_array(mol[4], ">f8"),
        text={name: text_array(mol[5 + i]) for i, name in enumerate(MEMORY_FIELDS)},
        numbers=[
            (text_field(r[0]), text_field(r[1]), *uuid_array(r[2]), fixed_array(r[3], ">f8"))
            for r in copy_rows(out["n"])
        ],
        texts=[
            (text_field(r[0]), text_field(r[1]), *uuid_array(r[2]), text_array(r[3])) for r in copy_rows(out["t"])
        ],
        flags=[(text_field(r[0]), text_field(r[1]), *uuid_array(r[2])) for r in copy_rows(out["f"])],
        libraries=[(text_field(r[0]), *uuid_array(r[1])) for r in copy_rows(out["l"])],
        requested=None if ids is None else id_halves(ids),
    )
    return batch


async def structure_matches(
    engine: AsyncEngine, organization_id: str, condition: Condition
) -> tuple[np.ndarray, np.ndarray]:
    """Ids of the organization's molecules passing a condition on a structure column (SQL_FIELDS)."""
    column = sql.Identifier(condition.property)
    params: dict[str, Any] = {"org": organization_id, "value": condition.value}
    match condition.operator:
        case Operator.EQ:
            test = sql.SQL("{} = %(value)s").format(column)
        case Operator.NEQ:
            test = sql.SQL("{} <> %(value)s").format(column)
        case Operator.IN:
            test = sql.SQL("{} = ANY(%(value)s::text[])").format(column)
            params["value"] = (
                list(condition.value) if isinstance(condition.value, tuple) else [condition.value]
            )
        case _:
            test = sql.SQL("strpos(lower({}), lower(%(value)s)) > 0").format(column)
    statement = sql.SQL(
        "SELECT array_agg(id) FROM molecules WHERE organization_id = %(org)s::uuid AND {}"
    ).format(test)
    async with engine.connect() as connection:
        raw = (await connection.get_raw_connection()).driver_connection
        assert raw is not None
        async with raw.cursor() as cursor:
            data = await _copy_out(cursor, statement, params)
    (row,) = list(copy_rows(data))
    return uuid_array(row[0])



async def organizations_with_molecules(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as connection:
        result = await connection.exec_driver_sql("SELECT DISTINCT organization_id::text FROM molecules")
        return [row[0] for row in result]
