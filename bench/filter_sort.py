"""Filter + sort at 500,000 molecules of one organization: p50/p95 of typical queries.

    python -m bench.filter_sort [--molecules 500000] [--rounds 20] [--concurrency 1]
                                [--database-url URL] [--compare-sql] [--keep]

Synthetic molecules are generated inside PostgreSQL (INSERT … SELECT generate_series: minutes, not
hours) with ~16 property rows each: the 11 calculated properties, IMPORTED ic50 / solubility / pKa /
logP / custom_score / custom_series (text), PREDICTED logD / permeability / clearance / half-life and
a few EXPERIMENTAL ic50, so effective values need the source precedence. 2% are archived, a library
holds half of them and one user has flagged 1%.

Each query runs through MoleculeService.list_molecules, the layer under ListMolecules/FilterMolecules:
the in-memory query index (queries.py) selects, counts and orders, then PostgreSQL reads the page's
molecules with their properties, flags and libraries. The index alone is timed as well. Without
--database-url an embedded PostgreSQL is started in a temporary directory and removed afterwards.
--compare-sql also times the same kind of query as SQL over the EAV table (the design alternative).
Figures are printed; nothing asserts on them (the issue's target: p95 < 300 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import sqlalchemy as sa

from services.molecule.domain import chemistry
from services.molecule.index.columnar import QueryIndex
from services.molecule.index.query import MoleculeQuery, RawFilter, parse_query
from services.molecule.service.molecules import MoleculeService
from services.molecule.store.tables import SCHEMA
from services.molecule.store.uow import molecule_transactions
from services.runtime import migrations
from services.runtime.auth import Principal
from services.runtime.db import make_engine
from services.runtime.pagination import PageRequest
from stack.postgres import PostgresServer

MIGRATIONS = Path(chemistry.__file__).parents[1] / "migrations"
TARGET_P95_MS = 300.0
ORGANIZATION = "0b5e55ed-0000-4000-8000-000000000001"
LIBRARY = "0b5e55ed-0000-4000-8000-00000000000b"
FLAGGER = "bench-user"

# name, source, fraction of molecules, kind (num | int | text), low, high, units
SYNTHETIC_PROPERTIES: list[tuple[str, str, float, str, float, float, str]] = [
    ("molecular_weight", "CALCULATED", 1.0, "mw", 0, 0, "g/mol"),
    ("exact_mass", "CALCULATED", 1.0, "num", 100, 700, "g/mol"),
    ("logp", "CALCULATED", 1.0, "num", -4, 8, ""),
    ("tpsa", "CALCULATED", 1.0, "num", 0, 200, "Å²"),
    ("num_atoms", "CALCULATED", 1.0, "int", 10, 90, ""),
    ("num_heavy_atoms", "CALCULATED", 1.0, "int", 5, 55, ""),
    ("num_rings", "CALCULATED", 1.0, "int", 0, 6, ""),
    ("num_rotatable_bonds", "CALCULATED", 1.0, "int", 0, 15, ""),
    ("num_h_donors", "CALCULATED", 1.0, "int", 0, 6, ""),
    ("num_h_acceptors", "CALCULATED", 1.0, "int", 0, 12, ""),
    ("lipinski_violations", "CALCULATED", 1.0, "int", 0, 3, ""),
    ("ic50", "IMPORTED", 0.7, "num", 0, 10000, "nM"),
    ("solubility", "IMPORTED", 0.5, "num", 0, 100, "mg/mL"),
    ("logp", "IMPORTED", 0.1, "num", -4, 8, ""),
    ("pka", "IMPORTED", 0.4, "num", 0, 14, ""),
    ("custom_score", "IMPORTED", 0.4, "num", 0, 100, ""),
    ("custom_series", "IMPORTED", 0.6, "text", 0, 20, ""),
    ("logd", "PREDICTED", 0.6, "num", -3, 7, ""),
    ("permeability", "PREDICTED", 0.5, "num", 0, 1, "cm/s"),
    ("clearance", "PREDICTED", 0.5, "num", 0, 200, "mL/min/kg"),
    ("half_life", "PREDICTED", 0.4, "num", 0, 48, "h"),
    ("ic50", "EXPERIMENTAL", 0.05, "num", 0, 10000, "nM"),
]


def _f(name: str, operator: str, value: Any, source: str = "") -> RawFilter:
    return RawFilter(name, operator, value, source)


RULE_OF_FIVE = [
    _f("molecular_weight", "lt", 500),
    _f("num_h_donors", "lte", 5),
    _f("num_h_acceptors", "lte", 10),
]
# label, query, page: 1–3 conditions + a sort, page 1 and deep pages (page size 50)
QUERY_MIX: list[tuple[str, dict[str, Any], int]] = [
    ("list, newest first", {}, 1),
    ("list, newest first, page 2000", {}, 2000),
    (
        "logP 1–3 & IC50 < 2000, by TPSA desc",
        {
            "filters": [_f("logp", "gte", 1), _f("logp", "lte", 3), _f("ic50", "lt", 2000)],
            "sort_by": "tpsa",
            "sort_desc": True,
        },
        1,
    ),
    ("logP > 2, by created_at, page 200", {"filters": [_f("logp", "gt", 2)], "sort_by": "created_at"}, 200),
    (
        "MW < 500 & HBD <= 5 & HBA <= 10, by IC50",
        {
            "filters": RULE_OF_FIVE,
            "sort_by": "ic50",
        },
        1,
    ),
    (
        "same, page 1000",
        {
            "filters": RULE_OF_FIVE,
            "sort_by": "ic50",
        },
        1000,
    ),
    (
        "experimental IC50 < 500, by IC50",
        {"filters": [_f("ic50", "lt", 500, "EXPERIMENTAL")], "sort_by": "ic50"},
        1,
    ),
    (
        "series eq + score sort desc",
        {"filters": [_f("custom_series", "eq", "series-C")], "sort_by": "custom_score", "sort_desc": True},
        1,
    ),
    ("name contains '12', by name", {"filters": [_f("name", "contains", "12")], "sort_by": "name"}, 1),
    ("all, by name, page 100", {"sort_by": "name"}, 100),
    (
        "rings in (2,3), by logD desc",
        {"filters": [_f("num_rings", "in", [2, 3])], "sort_by": "logd", "sort_desc": True},
        1,
    ),
    ("library, by permeability", {"library_id": LIBRARY, "sort_by": "permeability"}, 1),
    (
        "library & solubility > 50, page 100",
        {"library_id": LIBRARY, "filters": [_f("solubility", "gt", 50)], "sort_by": "solubility"},
        100,
    ),
    ("my favorites, by MW", {"flags": ["FAVORITE"], "sort_by": "molecular_weight"}, 1),
]


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def generate(database_url: str, molecules: int, organization_id: str = ORGANIZATION) -> None:
    """Synthetic molecules, properties, a library and flags, written by PostgreSQL itself."""
    engine = make_engine(database_url, SCHEMA, pool_size=1)
    specs = ", ".join(
        f"('{n}', '{s}', {f}, '{k}', {lo}, {hi}, '{u}')" for n, s, f, k, lo, hi, u in SYNTHETIC_PROPERTIES
    )
    statements = [
        "SET LOCAL work_mem = '512MB'",
        "SELECT setseed(0.42)",
        f"""INSERT INTO molecules (id, organization_id, inchi_key, registration_number, name, smiles,
                canonical_smiles, formula,
                molecular_weight, status, morgan_fp, pattern_fp, created_by, created_at, updated_at)
            SELECT gen_random_uuid(), '{organization_id}', upper(md5(i::text)), 'MOL-' || lpad(i::text, 7, '0'),
                   'MOL-' || lpad(i::text, 7, '0'), 'C' || i, 'C' || i, 'C' || (i % 50) || 'H' || (i % 90),
                   round((100 + random() * 600)::numeric, 4),
                   CASE WHEN i % 50 = 0 THEN 'ARCHIVED' WHEN i % 20 = 1 THEN 'TESTING' ELSE 'AVAILABLE' END,
                   '\\x00'::bytea, '\\x00'::bytea, 'bench', now() - make_interval(secs => i),
                   now() - make_interval(secs => i)
            FROM generate_series(1, {molecules}) AS i""",
        f"""INSERT INTO molecule_properties (molecule_id, name, source, value_num, value_text, units)
            SELECT m.id, s.name, s.source,
                   CASE s.kind WHEN 'text' THEN NULL WHEN 'mw' THEN m.molecular_weight
                        WHEN 'int' THEN floor(s.lo + random() * (s.hi - s.lo + 1))
                        ELSE round((s.lo + random() * (s.hi - s.lo))::numeric, 3)::float8 END,
                   CASE WHEN s.kind = 'text' THEN 'series-' || chr(65 + floor(random() * s.hi)::int) END,
                   s.units
            FROM molecules m CROSS JOIN (VALUES {specs}) AS s(name, source, fraction, kind, lo, hi, units)
            WHERE m.organization_id = '{organization_id}'
              AND abs(hashtext(m.id::text || s.name || s.source)) % 1000 < s.fraction * 1000
            ORDER BY m.id, s.name, s.source""",
        f"""INSERT INTO libraries (id, organization_id, owner_id, name, visibility)
            VALUES ('{LIBRARY}', '{organization_id}', '{FLAGGER}', 'half', 'ORGANIZATION')""",
        f"""INSERT INTO library_molecules (library_id, molecule_id, added_by)
            SELECT '{LIBRARY}', id, '{FLAGGER}' FROM molecules
            WHERE organization_id = '{organization_id}' AND random() < 0.5 ORDER BY id""",
        f"""INSERT INTO flags (molecule_id, user_id, type)
            SELECT id, '{FLAGGER}', 'FAVORITE' FROM molecules
            WHERE organization_id = '{organization_id}' AND random() < 0.01""",
    ]
    async with engine.begin() as connection:
        for statement in statements:
            await connection.execute(sa.text(statement))
    async with engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        for table in ("molecules", "molecule_properties", "library_molecules", "flags"):
            await autocommit.execute(sa.text(f"VACUUM ANALYZE {table}"))
    await engine.dispose()


@dataclass
class Timings:
    service_ms: list[float] = field(default_factory=list)
    index_ms: list[float] = field(default_factory=list)
    total: int = 0


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)] if ordered else math.nan


async def measure(
    database_url: str, rounds: int, concurrency: int, out: Callable[[str], None]
) -> dict[str, Timings]:
    engine = make_engine(database_url, SCHEMA, pool_size=max(2, concurrency))
    index = QueryIndex(engine)
    service = MoleculeService(molecule_transactions(engine), index)
    process = psutil.Process()
    rss = process.memory_info().rss
    started = time.perf_counter()
    await index.tenant(ORGANIZATION)
    load_s = time.perf_counter() - started
    stats = index.stats(ORGANIZATION)
    assert stats is not None
    out(
        f"index load: {load_s:.1f} s for {stats.molecules:,} molecules, {stats.columns} columns; "
        f"index memory {stats.memory_bytes / 2**20:.0f} MiB "
        f"(process RSS +{(process.memory_info().rss - rss) / 2**20:.0f}"
        " MiB)"
    )
    who = Principal(FLAGGER, ORGANIZATION, "PHARMA", frozenset({"pharma_scientist"}))
    plans = [(label, parse_query(**spec), PageRequest.of(page, 50)) for label, spec, page in QUERY_MIX]
    results = {label: Timings() for label, _, _ in plans}

    async def one(label: str, query: MoleculeQuery, page: PageRequest) -> None:
        t0 = time.perf_counter()
        _, total = await index.page(ORGANIZATION, who.subject, query, page)
        t1 = time.perf_counter()
        views, total = await service.list_molecules(who, query, page)
        t2 = time.perf_counter()
        results[label].index_ms.append((t1 - t0) * 1000)
        results[label].service_ms.append((t2 - t1) * 1000)
        results[label].total = total

    for label, query, page in plans:  # warm-up: first use builds ranks and effective columns
        await one(label, query, page)
    for timings in results.values():
        timings.index_ms.clear()
        timings.service_ms.clear()
    for round_number in range(rounds):
        order = plans[round_number % len(plans) :] + plans[: round_number % len(plans)]  # spread drift
        for start in range(0, len(order), concurrency):
            await asyncio.gather(*(one(*plan) for plan in order[start : start + concurrency]))
    await engine.dispose()
    return results


async def compare_sql(database_url: str, out: Callable[[str], None], rounds: int = 3) -> None:
    """The alternative the engine replaced: effective values by SQL over the EAV table."""
    rank = "CASE source WHEN 'EXPERIMENTAL' THEN 0 WHEN 'IMPORTED' THEN 1 WHEN 'PREDICTED' THEN 2 ELSE 3 END"

    def effective(name: str) -> str:
        return (
            f"(SELECT DISTINCT ON (molecule_id) molecule_id, value_num FROM molecule_properties "
            f"WHERE name = '{name}' ORDER BY molecule_id, {rank})"
        )

    statement = f"""
        WITH a AS {effective("logp")}, b AS {effective("ic50")}, s AS {effective("tpsa")}
        SELECT m.id, count(*) OVER () FROM molecules m JOIN a ON a.molecule_id = m.id
        JOIN b ON b.molecule_id = m.id LEFT JOIN s ON s.molecule_id = m.id
        WHERE m.organization_id = '{ORGANIZATION}' AND m.status <> 'ARCHIVED'
          AND a.value_num BETWEEN 1 AND 3 AND b.value_num < 2000
        ORDER BY s.value_num DESC NULLS LAST, m.id LIMIT 50"""
    engine = make_engine(database_url, SCHEMA, pool_size=1)
    times = []
    async with engine.connect() as connection:
        for _ in range(rounds):
            started = time.perf_counter()
            await connection.execute(sa.text(statement))
            times.append((time.perf_counter() - started) * 1000)
    await engine.dispose()
    out(
        f"SQL over EAV, 'logP 1–3 & IC50 < 2000, by TPSA desc' page 1: "
        f"{', '.join(f'{t:.0f}' for t in times)} ms"
    )


def report(results: dict[str, Timings], out: Callable[[str], None]) -> None:
    width = max(len(label) for label in results)
    out(
        f"{'query':<{width}}  {'matches':>8}  {'p50 ms':>7}  {'p95 ms':>7}  "
        f"{'index p50':>9}  {'index p95':>9}"
    )
    for label, t in results.items():
        out(
            f"{label:<{width}}  {t.total:>8,}  {percentile(t.service_ms, 50):>7.1f}  "
            f"{percentile(t.service_ms, 95):>7.1f}  {percentile(t.index_ms, 50):>9.1f}  "
            f"{percentile(t.index_ms, 95):>9.1f}"
        )
    every = [x for t in results.values() for x in t.service_ms]
    p95 = percentile(every, 95)
    out(
        f"all queries: p50 {percentile(every, 50):.1f} ms, p95 {p95:.1f} ms "
        f"({p95 / TARGET_P95_MS:.2f} of the {TARGET_P95_MS:.0f} ms target)"
    )


def run(
    database_url: str | None = None,
    *,
    molecules: int = 500_000,
    rounds: int = 20,
    concurrency: int = 1,
    compare: bool = False,
    keep: bool = False,
    out: Callable[[str], None] = print,
) -> dict[str, Timings]:
    """Generate (into a new database of the given server, or an embedded one), measure, print."""
    root = Path(tempfile.mkdtemp(prefix="molbridge-bench-filter-"))
    root.chmod(0o711)  # the embedded server may run as another user
    postgres: PostgresServer | None = None
    try:
        if database_url is None:
            postgres = PostgresServer(root / "pgdata", log_path=root / "postgres.log", ephemeral=True)
            postgres.start()
            admin_url = postgres.url
        else:
            admin_url = database_url
        url = _fresh_database(admin_url, f"bench_filter_{uuid.uuid4().hex[:8]}")
        migrations.upgrade(url, SCHEMA, MIGRATIONS)
        started = time.perf_counter()
        asyncio.run(generate(url, molecules))
        out(f"generated {molecules:,} synthetic molecules in {time.perf_counter() - started:.0f} s")
        results = asyncio.run(measure(url, rounds, concurrency, out))
        report(results, out)
        if compare:
            asyncio.run(compare_sql(url, out))
        if keep:
            out(f"database kept: {url}")
        else:
            _drop_database(admin_url, url.rsplit("/", 1)[1])
        return results
    finally:
        if postgres is not None and not keep:
            postgres.stop()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def _fresh_database(admin_url: str, name: str) -> str:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + "/" + name


def _drop_database(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.filter_sort", description=__doc__.split("\n")[0])
    parser.add_argument("--molecules", type=int, default=500_000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL"),
        help="a server to create the benchmark database in (its admin URL); default: embedded",
    )
    parser.add_argument(
        "--compare-sql", action="store_true", help="also time the query as SQL over the EAV table"
    )
    parser.add_argument("--keep", action="store_true", help="keep the database (and embedded server data)")
    args = parser.parse_args(argv)
    run(
        args.database_url,
        molecules=args.molecules,
        rounds=args.rounds,
        concurrency=args.concurrency,
        compare=args.compare_sql,
        keep=args.keep,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
