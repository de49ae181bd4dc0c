"""LibraryService servicer: maps protos to the use cases (service/libraries.py) and back."""

from __future__ import annotations

from typing import TypeAlias

import grpc
from google.api.httpbody_pb2 import HttpBody
from molbridge.molecule.v1 import library_service_pb2 as pb
from molbridge.molecule.v1 import library_service_pb2_grpc as pb_grpc

from services.molecule.domain.distributions import Histogram
from services.molecule.domain.library_rules import Level, LibraryFilter
from services.molecule.server.mapping import caller_credentials, molecule_pb
from services.molecule.service.libraries import FIRST_GRANTS_PAGE, LibraryService
from services.molecule.store.libraries import Library, LibraryAccess
from services.runtime.auth import current_principal
from services.runtime.errors import ValidationError
from services.runtime.pagination import PageRequest
from services.runtime.protomap import enum_name, enum_number, timestamp

Context: TypeAlias = grpc.aio.ServicerContext


def _category(value: int) -> str:
    return enum_name(pb.Library.Category, value)


def _visibility(value: int) -> str:
    return enum_name(pb.Library.Visibility, value)


def _level(value: int) -> Level:
    try:
        return Level(value)
    except ValueError:
        raise ValidationError("Unknown access level", field_violations=[("level", f"unknown value {value}")]) from None


def _access_level(level: Level) -> pb.LibraryAccess.Level.ValueType:
    return enum_number(pb.LibraryAccess.Level, level.name)  # NONE is no value name: LEVEL_UNSPECIFIED


def library_pb(library: Library) -> pb.Library:
    return pb.Library(
        id=library.id, name=library.name, description=library.description,
        category=enum_number(pb.Library.Category, library.category),
        visibility=enum_number(pb.Library.Visibility, library.visibility),
        owner_id=library.owner_id, organization_id=library.organization_id, molecule_count=library.molecule_count,
        access_level=_access_level(library.access_level), created_at=timestamp(library.created_at),
        updated_at=timestamp(library.updated_at),
    )


def access_pb(access: LibraryAccess) -> pb.LibraryAccess:
    return pb.LibraryAccess(
        library_id=access.library_id, level=_access_level(access.level),
        visibility=enum_number(pb.Library.Visibility, access.visibility),
        grants=[pb.LibraryGrant(user_id=g.user_id, level=_access_level(g.level)) for g in access.grants],
    )


def distribution_pb(hist: Histogram) -> pb.Distribution:
    return pb.Distribution(
        property=hist.property, units=hist.units, edges=hist.edges, counts=hist.counts,
        with_value=hist.with_value, missing=hist.missing, mean=hist.mean, median=hist.median,
    )


def _credentials(context: Context) -> list[tuple[str, str]]:
    return caller_credentials(context.invocation_metadata())


class LibraryServicer(pb_grpc.LibraryServiceServicer):
    SERVICE_FULL_NAME = "molbridge.molecule.v1.LibraryService"

    def __init__(self, service: LibraryService) -> None:
        self._service = service

    async def CreateLibrary(self, request: pb.CreateLibraryRequest, context: Context) -> pb.CreateLibraryResponse:
        library = await self._service.create(
            current_principal(), name=request.name, description=request.description,
            category=_category(request.category), visibility=_visibility(request.visibility),
            request_id=request.request_id,
        )
        return pb.CreateLibraryResponse(data=library_pb(library))

    async def ListLibraries(self, request: pb.ListLibrariesRequest, context: Context) -> pb.ListLibrariesResponse:
        page = PageRequest.of(request.page, request.page_size)
        items, total = await self._service.list_visible(current_principal(), page)
        return pb.ListLibrariesResponse(data=[library_pb(x) for x in items], meta=page.meta(total))

    async def ListMyLibraries(
        self, request: pb.ListMyLibrariesRequest, context: Context
    ) -> pb.ListMyLibrariesResponse:
        page = PageRequest.of(request.page, request.page_size)
        items, total = await self._service.list_mine(current_principal(), page)
        return pb.ListMyLibrariesResponse(data=[library_pb(x) for x in items], meta=page.meta(total))

    async def FilterLibraries(
        self, request: pb.FilterLibrariesRequest, context: Context
    ) -> pb.FilterLibrariesResponse:
        page = PageRequest.of(request.page, request.page_size)
        filters = LibraryFilter(
            name_contains=request.name_contains,
            categories=tuple(_category(c) or "UNSPECIFIED" for c in request.categories),
            visibility=_visibility(request.visibility),
            owner_id=request.owner_id,
        )
        items, total = await self._service.list_visible(current_principal(), page, filters)
        return pb.FilterLibrariesResponse(data=[library_pb(x) for x in items], meta=page.meta(total))

    async def GetLibrary(self, request: pb.GetLibraryRequest, context: Context) -> pb.GetLibraryResponse:
        return pb.GetLibraryResponse(data=library_pb(await self._service.get(current_principal(), request.id)))

    async def UpdateLibrary(self, request: pb.UpdateLibraryRequest, context: Context) -> pb.UpdateLibraryResponse:
        library = await self._service.update(
            current_principal(), request.id, name=request.name, description=request.description,
            category=_category(request.category), visibility=_visibility(request.visibility),
        )
        return pb.UpdateLibraryResponse(data=library_pb(library))

    async def DeleteLibrary(self, request: pb.DeleteLibraryRequest, context: Context) -> pb.DeleteLibraryResponse:
        return pb.DeleteLibraryResponse(data=library_pb(await self._service.delete(current_principal(), request.id)))

    async def AddMolecule(self, request: pb.AddMoleculeRequest, context: Context) -> pb.AddMoleculeResponse:
        library = await self._service.add_molecules(current_principal(), request.library_id, [request.molecule_id])
        return pb.AddMoleculeResponse(data=library_pb(library))

    async def RemoveMolecule(self, request: pb.RemoveMoleculeRequest, context: Context) -> pb.RemoveMoleculeResponse:
        library = await self._service.remove_molecules(current_principal(), request.library_id, [request.molecule_id])
        return pb.RemoveMoleculeResponse(data=library_pb(library))

    async def AddMolecules(self, request: pb.AddMoleculesRequest, context: Context) -> pb.AddMoleculesResponse:
        library = await self._service.add_molecules(
            current_principal(), request.library_id, list(request.molecule_ids)
        )
        return pb.AddMoleculesResponse(data=library_pb(library))

    async def RemoveMolecules(
        self, request: pb.RemoveMoleculesRequest, context: Context
    ) -> pb.RemoveMoleculesResponse:
        library = await self._service.remove_molecules(
            current_principal(), request.library_id, list(request.molecule_ids)
        )
        return pb.RemoveMoleculesResponse(data=library_pb(library))

    async def ListLibraryMolecules(
        self, request: pb.ListLibraryMoleculesRequest, context: Context
    ) -> pb.ListLibraryMoleculesResponse:
        page = PageRequest.of(request.page, request.page_size)
        items, total = await self._service.list_molecules(
            current_principal(), request.library_id, page, sort_by=request.sort_by, sort_desc=request.sort_desc
        )
        return pb.ListLibraryMoleculesResponse(data=[molecule_pb(m) for m in items], meta=page.meta(total))

    async def GetLibraryAccess(
        self, request: pb.GetLibraryAccessRequest, context: Context
    ) -> pb.GetLibraryAccessResponse:
        page = PageRequest.of(request.page, request.page_size)
        access, total = await self._service.access(current_principal(), request.library_id, page)
        return pb.GetLibraryAccessResponse(data=access_pb(access), meta=page.meta(total))

    async def SetLibraryAccess(
        self, request: pb.SetLibraryAccessRequest, context: Context
    ) -> pb.SetLibraryAccessResponse:
        access, total = await self._service.set_access(
            current_principal(), request.library_id, request.user_id, _level(request.level), _credentials(context)
        )
        return pb.SetLibraryAccessResponse(data=access_pb(access), meta=FIRST_GRANTS_PAGE.meta(total))

    async def GetDistribution(
        self, request: pb.GetDistributionRequest, context: Context
    ) -> pb.GetDistributionResponse:
        hist = await self._service.distribution(current_principal(), request.id, request.property, request.bins)
        return pb.GetDistributionResponse(data=distribution_pb(hist))

    async def GetDistributionPlot(self, request: pb.GetDistributionPlotRequest, context: Context) -> HttpBody:
        png = await self._service.distribution_plot(
            current_principal(), request.id, request.property, request.bins, width=request.width,
            height=request.height,
        )
        return HttpBody(content_type="image/png", data=png)
