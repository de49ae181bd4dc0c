"""SearchService servicer: maps protos to the service layer (services/molecule/search.py) and back; and the
search part of the molecule service (the index, its loader and bus follower)."""

from __future__ import annotations

from typing import TypeAlias

import grpc
from molbridge.molecule.v1 import search_service_pb2 as pb
from molbridge.molecule.v1 import search_service_pb2_grpc

from services.molecule.context import MoleculeContext, ServicePart
from services.molecule.matcher import MatcherLimits, StructureMatcher
from services.molecule.search import Budgets, SearchOutcome, SearchService
from services.molecule.search_index import SearchIndex
from services.molecule.search_sync import SearchIndexSync
from services.molecule.server.libraries import molecule_pb, shared_query_index
from services.molecule.server.molecules import query_from_proto
from services.runtime.auth import current_principal

Context: TypeAlias = grpc.aio.ServicerContext

SEARCH = "search"  # ctx.shared keys
SEARCH_INDEX = "search_index"
SEARCH_SYNC = "search_sync"
SEARCH_MATCHER = "search_matcher"


def meta_pb(outcome: SearchOutcome) -> pb.SearchMeta:
    return pb.SearchMeta(
        page=1,
        page_size=outcome.limit,
        total=outcome.total,
        truncated=outcome.truncated,
        searched=outcome.searched,
        elapsed_ms=outcome.elapsed_ms,
    )


class SearchServicer(search_service_pb2_grpc.SearchServiceServicer):
    SERVICE_FULL_NAME = "molbridge.molecule.v1.SearchService"

    def __init__(self, service: SearchService) -> None:
        self._service = service

    async def SearchSimilar(
        self, request: pb.SearchSimilarRequest, context: Context
    ) -> pb.SearchSimilarResponse:
        query = query_from_proto(request.filters, request.flags, request.status, request.library_id)
        outcome = await self._service.similar(
            current_principal(), request.smiles, threshold=request.threshold, limit=request.limit, query=query
        )
        data = []
        for hit in outcome.hits:
            molecule = molecule_pb(hit.molecule)
            molecule.similarity = round(hit.similarity, 4)
            data.append(molecule)
        return pb.SearchSimilarResponse(data=data, meta=meta_pb(outcome))

    async def SearchSubstructure(
        self, request: pb.SearchSubstructureRequest, context: Context
    ) -> pb.SearchSubstructureResponse:
        query = query_from_proto(request.filters, request.flags, request.status, request.library_id)
        outcome = await self._service.substructure(
            current_principal(),
            smarts=request.smarts,
            smiles=request.smiles,
            limit=request.limit,
            query=query,
        )
        return pb.SearchSubstructureResponse(
            data=[molecule_pb(hit.molecule) for hit in outcome.hits], meta=meta_pb(outcome)
        )

    async def SearchExact(self, request: pb.SearchExactRequest, context: Context) -> pb.SearchExactResponse:
        query = query_from_proto(request.filters, request.flags, request.status, request.library_id)
        views = await self._service.exact(
            current_principal(), smiles=request.smiles, inchi_key=request.inchi_key, query=query
        )
        return pb.SearchExactResponse(data=[molecule_pb(v) for v in views])


def build(ctx: MoleculeContext) -> ServicePart:
    """Needs ctx.engine, ctx.uow and ctx.settings (nats_url; MOLBRIDGE_SEARCH_*_BUDGET_MS,
    MOLBRIDGE_SEARCH_MATCH_WORKERS[_PER_ORG]). Uses the query index ctx.shared["query_index"] (made if no
    part made it yet) for filters, and shares the service, the index, its sync and the substructure matcher
    as ctx.shared["search"], ["search_index"], ["search_sync"] and ["search_matcher"] (another part may
    call `sync.after_write(org, ids)` after its own commits, for read-your-writes on this replica). Runs
    the index's loader and bus follower as one background job: the service serves at once, and answers
    UNAVAILABLE for an organization until its molecules are loaded. Starts the matcher's worker processes
    in the background and stops them at shutdown."""
    index = SearchIndex()
    sync = SearchIndexSync(ctx.engine, index, ctx.settings.nats_url)
    matcher = StructureMatcher(MatcherLimits.from_settings(ctx.settings))
    service = SearchService(
        ctx.uow,
        index,
        shared_query_index(ctx),
        matcher=matcher,
        is_ready=sync.is_ready,
        budgets=Budgets.from_settings(ctx.settings),
    )
    ctx.shared.update({SEARCH: service, SEARCH_INDEX: index, SEARCH_SYNC: sync, SEARCH_MATCHER: matcher})
    return ServicePart(
        servicers=[(search_service_pb2_grpc.add_SearchServiceServicer_to_server, SearchServicer(service))],
        background=[sync.run, matcher.start],
        on_stop=[matcher.close],
    )
