"""Structure search of the caller's organization: similarity, substructure and exact, each combinable
with the query engine's filters (property conditions, the caller's flags, statuses, a library).

The service layer of SearchService (services/molecule/server/search.py maps protos to it). Similarity and
substructure run on this replica's in-memory SearchIndex (one per organization, so a query never sees
another organization's molecules), kept equal to PostgreSQL by search_sync.SearchIndexSync; the hits' rows
are then read from PostgreSQL in one query and returned in hit order.

Decisions:
- Queries: a similarity or exact SMILES is standardized like a registration (chemistry.register: salts
  stripped, neutralized), so a salt form finds its parent. A substructure query is used as written
  (chemistry.substructure_query): `smarts` takes precedence over `smiles`. Unreadable input is a 400
  naming the field and RDKit's reason.
- threshold 0–1, 0 (the proto default) means 0.7; limit 1–1000, 0 means 50.
- Filters restrict the candidates to the query engine's matches (queries.QueryIndex.candidate_ids).
  Statuses default to every status but ARCHIVED; archived molecules are never in the index, so asking for
  them finds nothing (exact search excepted). A library needs the caller's read access (404/403).
- Bounds: similarity stops after MOLBRIDGE_SEARCH_SIMILARITY_BUDGET_MS (1000), substructure after
  MOLBRIDGE_SEARCH_SUBSTRUCTURE_BUDGET_MS (2000) (MoleculeSettings.search_budgets); meta.truncated then says so.
- Substructure matching (RDKit, after the in-process fingerprint screen) runs in the StructureMatcher's worker
  processes (services/molecule/index/matcher.py): RDKit cannot be interrupted, and some pairs of large fused ring
  systems keep it busy for minutes, so a worker still busy at the budget is killed and replaced and the
  answer is `truncated`. The matcher bounds how many matches run at once, in all and per organization
  (waiting for a worker counts against the budget), so one organization's queries cannot take the
  service's capacity; similarity, exact search and every other call never wait for it.
- meta.total: similarity — the hits returned (every molecule at or above the threshold when fewer than
  limit); substructure — the matches found: the search stops at `limit` matches, so when truncated (limit
  reached with molecules left to check, or time out) it is a lower bound.
- Exact search reads PostgreSQL's (organization, InChIKey) identity directly: always current, and available
  while the index warms up. With filters, the query engine decides (the InChIKey is one more condition).
- Warm-up: until this replica has loaded the caller's organization, similarity and substructure answer
  UNAVAILABLE (INTEGRATION_ERROR, detail SEARCH_INDEX_WARMING_UP, "retry in a few seconds"): an empty
  result would read as "nothing matches".
- Hits are re-read from PostgreSQL: a molecule archived (or gone) since the index last heard of it is left
  out, so an archive is never visible in results, even before the index hears of it.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Literal, TypeVar

import numpy as np

from services.molecule.domain import chemistry
from services.molecule.domain.library_rules import Action
from services.molecule.domain.vocabulary import ARCHIVED
from services.molecule.index.columnar import QueryIndex
from services.molecule.index.matcher import StructureMatcher
from services.molecule.index.query import Condition, MoleculeQuery, Operator
from services.molecule.index.search_index import SearchIndex, SimilarityResult, SubstructureScan
from services.molecule.store.molecule_views import MoleculeView
from services.molecule.store.uow import MoleculeTransactions
from services.runtime.auth import Principal
from services.runtime.errors import IntegrationError, ValidationError

DEFAULT_THRESHOLD = 0.7
DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
WARMING_UP = "SEARCH_INDEX_WARMING_UP"
T = TypeVar("T")
R = TypeVar("R")
_INCHI_KEY = re.compile(r"^[A-Z]{14}-[A-Z]{10}-[A-Z]$")


@dataclass(frozen=True)
class Budgets:
    """How long the index may search before it stops and says so (seconds)."""

    similarity_s: float = 1.0
    substructure_s: float = 2.0


@dataclass(frozen=True)
class Hit:
    molecule: MoleculeView
    similarity: float = 0.0  # similarity search only


@dataclass(frozen=True)
class SearchOutcome:
    hits: list[Hit]
    limit: int
    total: int
    truncated: bool
    searched: int
    elapsed_ms: float


class SearchService:
    def __init__(
        self,
        uow: MoleculeTransactions,
        index: SearchIndex,
        queries: QueryIndex,
        *,
        matcher: StructureMatcher,
        is_ready: Callable[[str], bool] = lambda organization_id: True,
        budgets: Budgets | None = None,
    ) -> None:
        self._uow = uow
        self._index = index
        self._queries = queries
        self._matcher = matcher
        self._is_ready = is_ready
        self._budgets = budgets or Budgets()

    async def similar(
        self,
        principal: Principal,
        smiles: str,
        *,
        threshold: float = 0.0,
        limit: int = 0,
        query: MoleculeQuery | None = None,
    ) -> SearchOutcome:
        """Molecules at least `threshold` Tanimoto-similar (Morgan r2, 2048 bits) to the standardized query,
        best first."""
        started = time.monotonic()
        violations = _limit_violations(limit)
        if math.isnan(threshold) or not 0.0 <= threshold <= 1.0:
            violations.append(("threshold", "between 0 and 1 (0 or absent: 0.7)"))
        if violations:
            raise _invalid(violations)
        registered = await _parsed("smiles", partial(chemistry.register, smiles))
        limit, threshold = limit or DEFAULT_LIMIT, threshold or DEFAULT_THRESHOLD

        def search(organization_id: str, candidates: np.ndarray | None) -> SimilarityResult:
            fp, budget = registered.morgan_fp, self._budgets.similarity_s
            return self._index.similar(organization_id, fp, threshold, limit, candidates, budget)

        result = await self._search(principal, query, search)
        similarity = dict(result.hits)
        views = await self._views(principal, [molecule_id for molecule_id, _ in result.hits])
        return SearchOutcome(
            hits=[Hit(view, similarity[view.id]) for view in views],
            limit=limit,
            total=len(views),
            truncated=result.truncated,
            searched=result.searched,
            elapsed_ms=_since(started),
        )

    async def substructure(
        self,
        principal: Principal,
        *,
        smarts: str = "",
        smiles: str = "",
        limit: int = 0,
        query: MoleculeQuery | None = None,
    ) -> SearchOutcome:
        """Molecules containing the SMARTS (or SMILES) pattern, at most `limit`, smaller molecules first."""
        started = time.monotonic()
        violations = _limit_violations(limit)
        if not smarts.strip() and not smiles.strip():
            violations.append(("smarts", "a SMARTS or SMILES pattern is required"))
        if violations:
            raise _invalid(violations)
        kind: Literal["smarts", "smiles"] = "smarts" if smarts.strip() else "smiles"
        pattern = await _parsed(kind, partial(chemistry.substructure_query, smarts or smiles, kind=kind))
        fingerprint = chemistry.pattern_fingerprint(pattern)
        limit = limit or DEFAULT_LIMIT

        def screen(organization_id: str, candidates: np.ndarray | None) -> SubstructureScan:
            deadline = time.monotonic() + self._budgets.substructure_s
            return self._index.substructure_scan(organization_id, fingerprint, limit, candidates, deadline)

        scan = await self._search(principal, query, screen)
        result = await self._matcher.run_scan(principal.organization_id, scan, pattern)
        views = await self._views(principal, result.hits)
        return SearchOutcome(
            hits=[Hit(view) for view in views],
            limit=limit,
            total=result.total_matched - (len(result.hits) - len(views)),  # less those archived meanwhile
            truncated=result.truncated,
            searched=result.checked,
            elapsed_ms=_since(started),
        )

    async def exact(
        self,
        principal: Principal,
        *,
        smiles: str = "",
        inchi_key: str = "",
        query: MoleculeQuery | None = None,
    ) -> list[MoleculeView]:
        """The molecule with this structure (standardized: a salt form finds its parent) or InChIKey."""
        if bool(smiles.strip()) == bool(inchi_key.strip()):
            both = ", not both" if smiles.strip() else ""
            raise _invalid([("smiles", f"give smiles or inchi_key{both}")])
        key = inchi_key.strip().upper()
        if smiles.strip():
            key = (await _parsed("smiles", partial(chemistry.register, smiles))).inchi_key
        elif not _INCHI_KEY.match(key):
            raise _invalid([("inchi_key", "not an InChIKey (AAAAAAAAAAAAAA-BBBBBBBBBB-C)")])
        if query is not None and _restricts(query):  # the key as one more condition: one candidate at most
            same_key = Condition("inchi_key", Operator.EQ, key)
            narrowed = replace(query, conditions=(*query.conditions, same_key))
            candidates = await self._candidates(principal, narrowed)
            ids = [] if candidates is None else [i.decode() for i in candidates.tolist()]
            return await self._views(principal, ids, keep_archived=ARCHIVED in query.statuses)
        async with self._uow() as uow:
            found = await uow.search_reads.id_with_inchi_key(principal.organization_id, key)
        return await self._views(principal, [] if found is None else [found])

    # -- helpers -------------------------------------------------------------------------------------------

    async def _search(
        self, principal: Principal, query: MoleculeQuery | None, search: Callable[[str, np.ndarray | None], R]
    ) -> R:
        """Run an index search (in a worker thread) over the caller's organization, within the query."""
        if not self._is_ready(principal.organization_id):
            raise IntegrationError(
                "Structure search is warming up (this server is still loading molecules into its search"
                " index): retry in a few seconds",
                detail=WARMING_UP,
            )
        candidates = await self._candidates(principal, query)
        return await asyncio.to_thread(search, principal.organization_id, candidates)

    async def _candidates(self, principal: Principal, query: MoleculeQuery | None) -> np.ndarray | None:
        """The ids the query engine matches (None: no restriction beyond the index's live molecules)."""
        if query is None or not _restricts(query):
            return None
        if query.library_id:
            async with self._uow() as uow:
                await uow.libraries.get(principal, query.library_id, Action.READ)
        return await self._queries.candidate_ids(principal.organization_id, principal.subject, query)

    async def _views(
        self, principal: Principal, ids: Sequence[str], *, keep_archived: bool = False
    ) -> list[MoleculeView]:
        """The molecules in this order, as PostgreSQL has them now (archived ones left out unless asked)."""
        if not ids:
            return []
        async with self._uow() as uow:
            views = await uow.molecule_views.of_ids(principal, ids)
        return [v for v in views if keep_archived or v.status != ARCHIVED]


def _restricts(query: MoleculeQuery) -> bool:
    return bool(query.conditions or query.flags or query.statuses or query.library_id)


def _limit_violations(limit: int) -> list[tuple[str, str]]:
    if 0 <= limit <= MAX_LIMIT:
        return []
    return [("limit", f"between 1 and {MAX_LIMIT} (0 or absent: {DEFAULT_LIMIT})")]


def _invalid(violations: list[tuple[str, str]]) -> ValidationError:
    return ValidationError(f"Invalid {violations[0][0]}: {violations[0][1]}", field_violations=violations)


async def _parsed(field_name: str, parse: Callable[[], T]) -> T:
    """A query structure read by chemistry (in a worker thread); a 400 with RDKit's reason if unreadable."""
    try:
        return await asyncio.to_thread(parse)
    except chemistry.InvalidStructure as error:
        raise _invalid([(field_name, error.reason)]) from None


def _since(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 3)
