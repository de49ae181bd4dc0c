"""The query engine without a database: validation of queries and paging, and the columnar tenant
against a brute-force evaluation (tests/molecule_oracle.py) on synthetic molecules."""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from collections.abc import Iterator

import numpy as np
import pytest

from services.molecule.domain.vocabulary import STATUSES
from services.molecule.index.columnar import TenantColumns
from services.molecule.index.ids import id_halves, id_text
from services.molecule.index.query import MEMORY_FIELDS, MoleculeQuery, RawFilter, parse_query
from services.molecule.store.molecule_columns import ColumnBatch
from services.runtime.errors import ValidationError
from services.runtime.pagination import PageRequest
from tests import molecule_oracle as oracle

# ---- validation -----------------------------------------------------------------------------------


def violations(**kwargs: object) -> dict[str, str]:
    with pytest.raises(ValidationError) as error:
        parse_query(**kwargs)  # type: ignore[arg-type]
    return dict(error.value.field_violations)


@pytest.mark.parametrize(
    ("given", "field_name", "words"),
    [
        (RawFilter("colour", "eq", "red"), "filters[0].property", "unknown property"),
        (RawFilter("", "eq", 1), "filters[0].property", "required"),
        (RawFilter("logp", "like", 1), "filters[0].operator", "one of"),
        (RawFilter("logp", "", 1), "filters[0].operator", "one of"),
        (RawFilter("logp", "contains", "1"), "filters[0].operator", "does not apply"),
        (RawFilter("name", "gt", "a"), "filters[0].operator", "does not apply"),
        (RawFilter("logp", "gt", "high"), "filters[0].value", "not a number"),
        (RawFilter("logp", "eq", None), "filters[0].value", "required"),
        (RawFilter("logp", "eq", [1, 2]), "filters[0].value", "single value"),
        (RawFilter("logp", "in", 3), "filters[0].value", "list"),
        (RawFilter("logp", "in", []), "filters[0].value", "list"),
        (RawFilter("logp", "in", list(range(1001))), "filters[0].value", "at most"),
        (RawFilter("name", "eq", 5), "filters[0].value", "string"),
        (RawFilter("custom_x", "gt", "abc"), "filters[0].value", "not a number"),
        (RawFilter("custom_x", "eq", {"a": 1}), "filters[0].value", "single value"),
        (RawFilter("logp", "gt", float("nan")), "filters[0].value", "finite"),
        (RawFilter("logp", "gt", 1, "GUESSED"), "filters[0].source", "one of"),
        (RawFilter("formula", "eq", "C6H6", "IMPORTED"), "filters[0].source", "no source"),
    ],
)
def test_bad_conditions_are_400_naming_the_field(given: RawFilter, field_name: str, words: str) -> None:
    found = violations(filters=[given])
    assert field_name in found and words in found[field_name]


def test_every_problem_is_reported_at_once() -> None:
    found = violations(
        filters=[RawFilter("logp", "gt", 1), RawFilter("nope", "eq", 1)],
        flags=["STARRED"],
        statuses=["GONE"],
        library_id="not-a-uuid",
        sort_by="colour",
    )
    assert set(found) == {"filters[1].property", "flags", "status", "library_id", "sort_by"}
    assert "at most 20" in violations(filters=[RawFilter("logp", "gt", 1)] * 21)["filters"]


def test_values_are_typed_for_their_property() -> None:
    query = parse_query(
        filters=[
            RawFilter("logp", "gte", "1.5"),  # a numeric property takes numeric text
            RawFilter("num_rings", "in", [1, "2"]),
            RawFilter("custom_series", "eq", "A-7"),
            RawFilter("custom_score", "lt", "10"),
            RawFilter("custom_code", "eq", "007"),  # kept as text; also matches the number 7
            RawFilter("name", "contains", "ASP"),
            RawFilter("ic50", "lt", 500, "experimental"),
        ],
        flags=["favorite", "PRIORITY", "favorite"],
        statuses=["available"],
        library_id="6F9619FF-8B86-D011-B42D-00C04FC964FF",
        sort_by="tpsa",
        sort_desc=True,
    )
    values = [c.value for c in query.conditions]
    assert values == [1.5, (1.0, 2.0), "A-7", 10.0, "007", "ASP", 500.0]
    assert query.conditions[-1].source == "EXPERIMENTAL"
    assert query.flags == ("FAVORITE", "PRIORITY") and query.statuses == ("AVAILABLE",)
    assert query.library_id == "6f9619ff-8b86-d011-b42d-00c04fc964ff"


@pytest.mark.parametrize(("page", "size"), [(-1, 10), (1, 101), (1, -5)])
def test_page_bounds_are_400(page: int, size: int) -> None:
    with pytest.raises(ValidationError):
        PageRequest.of(page, size)
    assert PageRequest.of(0, 0) == PageRequest(1, 50)


def test_ids_round_trip_through_halves() -> None:
    ids = [str(uuid.uuid4()) for _ in range(50)] + ["00000000-0000-0000-0000-000000000000"]
    hi, lo = id_halves([*ids, "not-an-id"])
    assert [i.decode() for i in id_text(hi, lo)] == ids


# ---- the columnar tenant against brute force ------------------------------------------------------

NAMES = ["aspirin", "Aspirin", "ibuprofen", "caffeine", "", "zeta", "alpha", "Ω-3"]
SERIES = ["A-1", "A-2", "B-1", "007", "x"]
USERS = ["u1", "u2"]
LIBRARIES = [str(uuid.uuid4()) for _ in range(3)]


def synthetic(count: int, rng: random.Random) -> list[oracle.Row]:
    rows = []
    for i in range(count):
        values: dict[tuple[str, str], oracle.Value] = {
            ("molecular_weight", "CALCULATED"): round(rng.uniform(100, 700), 2),
            ("logp", "CALCULATED"): round(rng.uniform(-3, 8), 1),
            ("num_rings", "CALCULATED"): float(rng.randint(0, 5)),
        }
        if rng.random() < 0.3:
            values[("logp", "IMPORTED")] = round(rng.uniform(-3, 8), 1)
        if rng.random() < 0.1:
            values[("logp", "EXPERIMENTAL")] = round(rng.uniform(-3, 8), 1)
        if rng.random() < 0.2:
            values[("logp", "PREDICTED")] = round(rng.uniform(-3, 8), 1)
        if rng.random() < 0.5:
            values[("ic50", "IMPORTED")] = float(rng.randint(0, 50) * 10)
        if rng.random() < 0.4:
            values[("custom_series", "IMPORTED")] = rng.choice(SERIES)
        elif rng.random() < 0.3:
            values[("custom_series", "IMPORTED")] = float(rng.randint(0, 9))  # mixed: numbers and text
        if rng.random() < 0.05:
            values[("custom_series", "EXPERIMENTAL")] = rng.choice(SERIES)
        rows.append(
            oracle.Row(
                id=str(uuid.UUID(int=rng.getrandbits(128))),
                status=rng.choices(STATUSES, weights=[80, 5, 5, 5, 5])[0],
                created=float(1_700_000_000 + rng.randint(0, count // 3)),  # ties on purpose
                updated=float(1_700_000_000 + i),
                name=rng.choice(NAMES) + (str(rng.randint(0, 30)) if rng.random() < 0.5 else ""),
                inchi_key=f"KEY{rng.randint(0, 10**6):07d}",
                formula=f"C{rng.randint(1, 30)}H{rng.randint(1, 60)}",
                registration_number=f"MOL-{i + 1:06d}",
                values=values,
                flags={
                    (u, t) for u in USERS for t in ("PRIORITY", "FAVORITE", "REVIEW") if rng.random() < 0.1
                },
                libraries={lib for lib in LIBRARIES if rng.random() < 0.3},
            )
        )
    return rows


def batch_of(rows: list[oracle.Row], requested: list[str] | None = None) -> ColumnBatch:
    def halves(ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        return id_halves(ids)

    numbers: dict[tuple[str, str], list[tuple[str, float]]] = defaultdict(list)
    texts: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    flags: dict[tuple[str, str], list[str]] = defaultdict(list)
    members: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        for key, value in r.values.items():
            if isinstance(value, str):
                texts[key].append((r.id, value))
            else:
                numbers[key].append((r.id, value))
        for flag in r.flags:
            flags[flag].append(r.id)
        for library in r.libraries:
            members[library].append(r.id)
    hi, lo = halves([r.id for r in rows])
    return ColumnBatch(
        hi=hi,
        lo=lo,
        status=np.array([STATUSES.index(r.status) for r in rows], np.int8),
        created=np.array([r.created for r in rows]),
        updated=np.array([r.updated for r in rows]),
        molecular_weight=np.array([r.values[("molecular_weight", "CALCULATED")] for r in rows]),
        text={f: [getattr(r, f) for r in rows] for f in MEMORY_FIELDS},
        numbers=[
            (k[0], k[1], *halves([i for i, _ in v]), np.array([x for _, x in v])) for k, v in numbers.items()
        ],
        texts=[(k[0], k[1], *halves([i for i, _ in v]), [x for _, x in v]) for k, v in texts.items()],
        flags=[(k[0], k[1], *halves(v)) for k, v in flags.items()],
        libraries=[(k, *halves(v)) for k, v in members.items()],
        requested=None if requested is None else halves(requested),
    )


def random_queries(rng: random.Random, count: int) -> Iterator[tuple[MoleculeQuery, int, int]]:
    fields = [
        lambda: RawFilter("logp", rng.choice(["gt", "gte", "lt", "lte"]), round(rng.uniform(-2, 7), 1)),
        lambda: RawFilter("logp", rng.choice(["eq", "neq"]), round(rng.uniform(-3, 8), 1)),
        lambda: RawFilter("logp", "lt", 2.0, rng.choice(["CALCULATED", "IMPORTED", "EXPERIMENTAL"])),
        lambda: RawFilter("ic50", rng.choice(["lt", "gte", "eq", "neq"]), float(rng.randint(0, 50) * 10)),
        lambda: RawFilter("ic50", "in", [float(rng.randint(0, 50) * 10) for _ in range(5)]),
        lambda: RawFilter("num_rings", rng.choice(["eq", "gte"]), float(rng.randint(0, 5))),
        lambda: RawFilter(
            "custom_series", rng.choice(["eq", "neq", "contains"]), rng.choice(SERIES + ["a", "7"])
        ),
        lambda: RawFilter("custom_series", "in", rng.sample(SERIES, 2) + [3.0]),
        lambda: RawFilter("custom_series", "gt", 4.0),
        lambda: RawFilter("name", rng.choice(["eq", "neq", "contains"]), rng.choice(NAMES + ["asp", "IN"])),
        lambda: RawFilter("name", "in", rng.sample(NAMES, 3)),
        lambda: RawFilter("formula", "contains", f"C{rng.randint(1, 3)}"),
        lambda: RawFilter(
            "registration_number", rng.choice(["eq", "neq", "contains"]), f"MOL-{rng.randint(1, 500):06d}"
        ),
        lambda: RawFilter("molecular_weight", "lte", round(rng.uniform(100, 700), 1)),
    ]
    sorts = [
        "",
        *["name", "created_at", "updated_at", "molecular_weight", "logp"],
        *["ic50", "num_rings", "custom_series", "inchi_key", "formula", "tpsa", "registration_number"],
    ]
    for _ in range(count):
        query = parse_query(
            filters=[rng.choice(fields)() for _ in range(rng.randint(0, 3))],
            flags=rng.sample(["PRIORITY", "FAVORITE", "REVIEW"], rng.randint(0, 2))
            if rng.random() < 0.2
            else [],
            statuses=rng.sample(STATUSES, rng.randint(1, 3)) if rng.random() < 0.2 else [],
            library_id=rng.choice(LIBRARIES) if rng.random() < 0.2 else "",
            sort_by=rng.choice(sorts),
            sort_desc=rng.random() < 0.5,
        )
        yield query, rng.choice([1, 1, 2, 7, 40]), rng.choice([1, 10, 50, 100])


def tenant_page(
    tenant: TenantColumns, query: MoleculeQuery, user: str, page: int, size: int
) -> tuple[list[str], int]:
    start = (page - 1) * size
    return tenant.page(query, user, [], start, start + size)


@pytest.mark.parametrize("fast_paths", [False, True])
def test_filter_sort_and_page_agree_with_brute_force(
    fast_paths: bool,
) -> None:
    rng = random.Random(7)
    rows = synthetic(3000, rng)
    # With fast paths: the partial sort and per-column ranks run at this small size too.
    tenant = TenantColumns(partition_min=50, rank_subset_max=50) if fast_paths else TenantColumns()
    tenant.apply(batch_of(rows))
    for query, page, size in random_queries(rng, 300):
        user = rng.choice(USERS)
        assert tenant_page(tenant, query, user, page, size) == oracle.evaluate(
            rows, query, user, page, size
        ), query


def test_a_refresh_replaces_what_it_reads_and_marks_the_vanished_gone() -> None:
    rng = random.Random(11)
    rows = synthetic(500, rng)
    tenant = TenantColumns()
    tenant.apply(batch_of(rows))
    changed, vanished = rows[0], rows[1]
    changed.values = {("molecular_weight", "CALCULATED"): 1.0, ("logp", "PREDICTED"): 9.5}
    changed.flags, changed.libraries, changed.status = {("u1", "FAVORITE")}, {LIBRARIES[0]}, "AVAILABLE"
    newcomer = synthetic(1, random.Random(12))[0]
    tenant.apply(batch_of([changed, newcomer], requested=[changed.id, vanished.id, newcomer.id]))
    current = [changed, newcomer, *rows[2:]]
    for query, page, size in random_queries(rng, 100):
        user = rng.choice(USERS)
        assert tenant_page(tenant, query, user, page, size) == oracle.evaluate(
            current, query, user, page, size
        )
    everything = parse_query(statuses=list(STATUSES))
    ids = tenant.candidate_ids(everything, "u1", [])
    assert vanished.id.encode() not in set(ids.tolist()) and len(ids) == len(current)


def test_growth_keeps_rows_findable() -> None:
    tenant = TenantColumns()
    rng = random.Random(3)
    seen: list[oracle.Row] = []
    for size in (1, 700, 2000, 30_000):  # past the capacity steps and the lookup table's re-sort
        more = synthetic(size, rng)
        tenant.apply(batch_of(more, requested=[r.id for r in more]))
        seen += more
    query = parse_query(statuses=list(STATUSES), sort_by="updated_at")
    assert tenant_page(tenant, query, "u1", 3, 100) == oracle.evaluate(seen, query, "u1", 3, 100)
    assert tenant.rows_of(*id_halves([seen[5].id, seen[-5].id])).tolist() == [5, len(seen) - 5]
