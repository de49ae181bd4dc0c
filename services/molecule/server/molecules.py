"""MoleculeService servicer: maps protos to the use cases (service/molecules.py) and back."""

from __future__ import annotations

import logging
from typing import TypeAlias

import grpc
from google.api.httpbody_pb2 import HttpBody
from molbridge.common.v1.page_pb2 import PageMeta
from molbridge.molecule.v1 import molecule_pb2
from molbridge.molecule.v1 import molecule_service_pb2 as pb
from molbridge.molecule.v1 import molecule_service_pb2_grpc as pb_grpc

from services.molecule.domain import properties
from services.molecule.index.query import MoleculeQuery, parse_query
from services.molecule.server.mapping import (
    caller_credentials,
    flag_name,
    molecule_pb,
    python_value,
    query_from_proto,
    source_name,
    status_name,
)
from services.molecule.service.molecules import MoleculeService, NewMolecule, PropertyInput
from services.runtime.auth import current_principal
from services.runtime.pagination import PageRequest
from services.runtime.protomap import enum_name

Context: TypeAlias = grpc.aio.ServicerContext
log = logging.getLogger("molbridge.molecule.server")



def _property_input(p: molecule_pb2.Property) -> PropertyInput:
    return PropertyInput(
        p.name, python_value(p.value) if p.HasField("value") else None, p.units, source_name(p.source)
    )


def _new_molecule(m: pb.NewMolecule) -> NewMolecule:
    return NewMolecule(m.smiles, m.name, [_property_input(p) for p in m.properties])


def definition_pb(d: properties.PropertyDefinition) -> molecule_pb2.PropertyDefinition:
    return molecule_pb2.PropertyDefinition(
        name=d.name,
        units=d.units,
        value_type=str(d.value_type or ""),
        min_value=d.minimum or 0.0,
        max_value=d.maximum or 0.0,
        calculated=d.calculated,
        predictable=d.predictable,
        description=d.label,
    )


class MoleculeServicer(pb_grpc.MoleculeServiceServicer):
    SERVICE_FULL_NAME = "molbridge.molecule.v1.MoleculeService"

    def __init__(self, service: MoleculeService) -> None:
        self._service = service

    async def GetMoleculeByNumber(
        self, request: pb.GetMoleculeByNumberRequest, context: Context
    ) -> pb.GetMoleculeByNumberResponse:
        view = await self._service.get_by_number(current_principal(), request.number)
        return pb.GetMoleculeByNumberResponse(data=molecule_pb(view))

    async def GetRegistrationPrefix(
        self, request: pb.GetRegistrationPrefixRequest, context: Context
    ) -> pb.GetRegistrationPrefixResponse:
        prefix, locked = await self._service.registration_prefix(
            current_principal(), caller_credentials(context.invocation_metadata())
        )
        return pb.GetRegistrationPrefixResponse(data=pb.RegistrationPrefix(prefix=prefix, locked=locked))

    async def SetRegistrationPrefix(
        self, request: pb.SetRegistrationPrefixRequest, context: Context
    ) -> pb.SetRegistrationPrefixResponse:
        prefix, locked = await self._service.set_registration_prefix(current_principal(), request.prefix)
        return pb.SetRegistrationPrefixResponse(data=pb.RegistrationPrefix(prefix=prefix, locked=locked))

    async def ListMolecules(
        self, request: pb.ListMoleculesRequest, context: Context
    ) -> pb.ListMoleculesResponse:
        flag, status = flag_name(request.flag), status_name(request.status)
        query = parse_query(
            flags=[flag] if flag else [],
            statuses=[status] if status else [],
            library_id=request.library_id,
            sort_by=request.sort_by,
            sort_desc=request.sort_desc,
        )
        data, meta = await self._page(query, request.page, request.page_size)
        return pb.ListMoleculesResponse(data=data, meta=meta)

    async def FilterMolecules(
        self, request: pb.FilterMoleculesRequest, context: Context
    ) -> pb.FilterMoleculesResponse:
        query = query_from_proto(
            request.filters,
            request.flags,
            request.status,
            request.library_id,
            request.sort_by,
            request.sort_desc,
        )
        data, meta = await self._page(query, request.page, request.page_size)
        return pb.FilterMoleculesResponse(data=data, meta=meta)

    async def _page(
        self, query: MoleculeQuery, page_number: int, page_size: int
    ) -> tuple[list[molecule_pb2.Molecule], PageMeta]:
        page = PageRequest.of(page_number, page_size)
        views, total = await self._service.list_molecules(current_principal(), query, page)
        return [molecule_pb(v) for v in views], page.meta(total)

    async def CreateMolecule(
        self, request: pb.CreateMoleculeRequest, context: Context
    ) -> pb.CreateMoleculeResponse:
        view = await self._service.create(
            current_principal(),
            _new_molecule(request.molecule),
            library_id=request.library_id,
            request_id=request.request_id,
            credentials=caller_credentials(context.invocation_metadata()),
        )
        return pb.CreateMoleculeResponse(data=molecule_pb(view))

    async def BatchCreateMolecules(
        self, request: pb.BatchCreateMoleculesRequest, context: Context
    ) -> pb.BatchCreateMoleculesResponse:
        outcomes = await self._service.batch_create(
            current_principal(),
            [_new_molecule(m) for m in request.molecules],
            library_id=request.library_id,
            request_id=request.request_id,
            credentials=caller_credentials(context.invocation_metadata()),
        )
        return pb.BatchCreateMoleculesResponse(
            data=[
                pb.RegistrationOutcome(
                    index=o.index, outcome=o.outcome, molecule_id=o.molecule_id, reason=o.reason
                )
                for o in outcomes
            ]
        )

    async def ListPropertyDefinitions(
        self, request: pb.ListPropertyDefinitionsRequest, context: Context
    ) -> pb.ListPropertyDefinitionsResponse:
        current_principal()  # any caller of an organization, but a caller
        return pb.ListPropertyDefinitionsResponse(
            data=[definition_pb(d) for d in self._service.property_definitions()]
        )

    async def BatchGetMolecules(
        self, request: pb.BatchGetMoleculesRequest, context: Context
    ) -> pb.BatchGetMoleculesResponse:
        views, missing = await self._service.batch_get(current_principal(), list(request.ids))
        return pb.BatchGetMoleculesResponse(data=[molecule_pb(v) for v in views], not_found_ids=missing)

    async def GetMolecule(self, request: pb.GetMoleculeRequest, context: Context) -> pb.GetMoleculeResponse:
        return pb.GetMoleculeResponse(
            data=molecule_pb(await self._service.get(current_principal(), request.id))
        )

    async def UpdateMolecule(
        self, request: pb.UpdateMoleculeRequest, context: Context
    ) -> pb.UpdateMoleculeResponse:
        view = await self._service.update(
            current_principal(),
            request.id,
            name=request.name,
            status=status_name(request.status),
            values=[_property_input(p) for p in request.properties],
        )
        return pb.UpdateMoleculeResponse(data=molecule_pb(view))

    async def DeleteMolecule(
        self, request: pb.DeleteMoleculeRequest, context: Context
    ) -> pb.DeleteMoleculeResponse:
        return pb.DeleteMoleculeResponse(
            data=molecule_pb(await self._service.delete(current_principal(), request.id))
        )

    async def SetFlag(self, request: pb.SetFlagRequest, context: Context) -> pb.SetFlagResponse:
        view = await self._service.set_flag(
            current_principal(),
            request.molecule_id,
            flag_name(request.type),
            enum_name(molecule_pb2.Flag.Level, request.level),
            request.notes,
        )
        return pb.SetFlagResponse(data=molecule_pb(view))

    async def DeleteFlag(self, request: pb.DeleteFlagRequest, context: Context) -> pb.DeleteFlagResponse:
        view = await self._service.delete_flag(current_principal(), request.molecule_id, flag_name(request.type))
        return pb.DeleteFlagResponse(data=molecule_pb(view))

    async def GetMoleculeImage(self, request: pb.GetMoleculeImageRequest, context: Context) -> HttpBody:
        image = await self._service.image(
            current_principal(), request.id, request.format, request.width, request.height
        )
        return HttpBody(content_type=image.content_type, data=image.data)
