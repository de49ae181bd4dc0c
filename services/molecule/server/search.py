"""SearchService servicer: maps protos to the use cases (service/search.py) and back."""

from __future__ import annotations

from typing import TypeAlias

import grpc
from molbridge.molecule.v1 import search_service_pb2 as pb
from molbridge.molecule.v1 import search_service_pb2_grpc

from services.molecule.server.mapping import molecule_pb, query_from_proto
from services.molecule.service.search import SearchOutcome, SearchService
from services.runtime.auth import current_principal

Context: TypeAlias = grpc.aio.ServicerContext

SEARCH = "search"  # ctx.shared keys
SEARCH_INDEX = "search_index"
SEARCH_SYNC = "search_sync"


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
