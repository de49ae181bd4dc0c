"""MoleculeService servicer: maps protos to the service layer (services/molecule/molecules.py) and back."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, TypeAlias

import grpc
from google.api.httpbody_pb2 import HttpBody
from google.protobuf import struct_pb2
from molbridge.common.v1.page_pb2 import PageMeta
from molbridge.molecule.v1 import molecule_pb2
from molbridge.molecule.v1 import molecule_service_pb2 as pb
from molbridge.molecule.v1 import molecule_service_pb2_grpc as pb_grpc

from services.molecule.domain import properties
from services.molecule.index.query import MoleculeQuery, RawFilter, parse_query
from services.molecule.server.libraries import molecule_pb
from services.molecule.service.molecules import MoleculeService, NewMolecule, PropertyInput
from services.runtime.auth import current_principal
from services.runtime.pagination import PageRequest

Context: TypeAlias = grpc.aio.ServicerContext
log = logging.getLogger("molbridge.molecule.server")



def _name(enum: Any, prefix: str, value: int) -> str:
    """A proto enum value as the service layer's plain name; UNSPECIFIED (or unknown) is ""."""
    try:
        return "" if value == 0 else str(enum.Name(value)).removeprefix(prefix)
    except ValueError:
        return f"#{value}"  # the service layer names it in its 400


def _python(value: struct_pb2.Value | None) -> Any:
    """google.protobuf.Value → None, float, str, bool, list (a struct stays a dict: rejected as a value)."""
    if value is None:
        return None
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        return value.number_value
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "list_value":
        return [_python(v) for v in value.list_value.values]
    if kind == "struct_value":
        return {k: _python(v) for k, v in value.struct_value.fields.items()}
    return None


def _source(value: int) -> str:
    return _name(molecule_pb2.PropertySource, "PROPERTY_SOURCE_", value)


def _flag(value: int) -> str:
    return _name(molecule_pb2.FlagType, "FLAG_TYPE_", value)


def _status(value: int) -> str:
    return _name(molecule_pb2.MoleculeStatus, "MOLECULE_STATUS_", value)


def _property_input(p: molecule_pb2.Property) -> PropertyInput:
    return PropertyInput(
        p.name, _python(p.value) if p.HasField("value") else None, p.units, _source(p.source)
    )


def _new_molecule(m: pb.NewMolecule) -> NewMolecule:
    return NewMolecule(m.smiles, m.name, [_property_input(p) for p in m.properties])


def query_from_proto(
    filters: Sequence[pb.PropertyFilter],
    flags: Sequence[int],
    statuses: Sequence[int],
    library_id: str,
    sort_by: str = "",
    sort_desc: bool = False,
) -> MoleculeQuery:
    """A filter query's proto fields (FilterMolecules, and the searches that combine with filters)."""
    return parse_query(
        filters=[
            RawFilter(
                f.property,
                f.operator,
                _python(f.value) if f.HasField("value") else None,
                _source(f.source),
            )
            for f in filters
        ],
        flags=[_flag(f) for f in flags],
        statuses=[_status(s) for s in statuses],
        library_id=library_id,
        sort_by=sort_by,
        sort_desc=sort_desc,
    )


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

    async def ListMolecules(
        self, request: pb.ListMoleculesRequest, context: Context
    ) -> pb.ListMoleculesResponse:
        flag, status = _flag(request.flag), _status(request.status)
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
            status=_status(request.status),
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
            _flag(request.type),
            _name(molecule_pb2.FlagLevel, "FLAG_LEVEL_", request.level),
            request.notes,
        )
        return pb.SetFlagResponse(data=molecule_pb(view))

    async def DeleteFlag(self, request: pb.DeleteFlagRequest, context: Context) -> pb.DeleteFlagResponse:
        view = await self._service.delete_flag(current_principal(), request.molecule_id, _flag(request.type))
        return pb.DeleteFlagResponse(data=molecule_pb(view))

    async def GetMoleculeImage(self, request: pb.GetMoleculeImageRequest, context: Context) -> HttpBody:
        image = await self._service.image(
            current_principal(), request.id, request.format, request.width, request.height
        )
        return HttpBody(content_type=image.content_type, data=image.data)
