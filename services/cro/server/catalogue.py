"""CatalogueService servicer: proto ↔ the catalogue use cases (service/catalogue.py); no rules here."""

from __future__ import annotations

from typing import Any, TypeAlias

import grpc
from google.protobuf import json_format, struct_pb2
from molbridge.cro.v1 import cro_service_pb2 as pb
from molbridge.cro.v1 import cro_service_pb2_grpc as pb_grpc

from services.cro.domain.catalogue import CroService, ServiceFields
from services.cro.service.catalogue import CatalogueService
from services.runtime.auth import current_principal
from services.runtime.errors import ValidationError
from services.runtime.molecule_client import forwarded_credentials
from services.runtime.pagination import PageRequest
from services.runtime.protomap import enum_name, enum_number, timestamp

Context: TypeAlias = grpc.aio.ServicerContext


def _plain(value: Any) -> Any:
    """Struct numbers are doubles: give integral ones back as ints (a schema's "minLength": 3)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    return _plain(json_format.MessageToDict(struct))  # type: ignore[no-any-return]


def dict_to_struct(value: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(value)
    return struct


def service_pb(service: CroService) -> pb.CroService:
    return pb.CroService(
        id=service.id,
        organization_id=service.organization_id,
        organization_name=service.organization_name,
        name=service.name,
        description=service.description,
        service_type=enum_number(pb.CroService.ServiceType, service.service_type.value),
        base_price=str(service.base_price),
        currency=service.currency,
        turnaround_days=service.turnaround_days,
        specification_schema=dict_to_struct(service.specification_schema),
        active=service.active,
        created_at=timestamp(service.created_at),
        updated_at=timestamp(service.updated_at),
    )


def credentials_of(context: Context) -> dict[str, str]:
    return forwarded_credentials(context.invocation_metadata())


def _active(text: str) -> bool | None:
    if not text:
        return None
    if text.lower() not in ("true", "false"):
        raise ValidationError("active: \"true\" or \"false\"", field_violations=[("active", "\"true\" or \"false\"")])
    return text.lower() == "true"


class CatalogueServicer(pb_grpc.CatalogueServiceServicer):
    SERVICE_FULL_NAME = "molbridge.cro.v1.CatalogueService"

    def __init__(self, service: CatalogueService) -> None:
        self._service = service

    async def ListCroServices(self, request: pb.ListCroServicesRequest, context: Context) -> pb.ListCroServicesResponse:
        page = PageRequest.of(request.page, request.page_size)
        found, total = await self._service.list_services(
            current_principal(),
            page,
            service_type=enum_name(pb.CroService.ServiceType, request.service_type),
            organization_id=request.organization_id,
            max_price=request.max_price,
            max_turnaround_days=request.max_turnaround_days,
            include_inactive=request.include_inactive,
            sort=request.sort,
        )
        return pb.ListCroServicesResponse(data=[service_pb(s) for s in found], meta=page.meta(total))

    async def CreateCroService(
        self, request: pb.CreateCroServiceRequest, context: Context
    ) -> pb.CreateCroServiceResponse:
        fields = ServiceFields(
            name=request.name,
            description=request.description,
            service_type=enum_name(pb.CroService.ServiceType, request.service_type),
            base_price=request.base_price,
            currency=request.currency,
            turnaround_days=request.turnaround_days,
            specification_schema=struct_to_dict(request.specification_schema),
        )
        service = await self._service.create(
            current_principal(), fields, request_id=request.request_id, credentials=credentials_of(context)
        )
        return pb.CreateCroServiceResponse(data=service_pb(service))

    async def GetCroService(self, request: pb.GetCroServiceRequest, context: Context) -> pb.GetCroServiceResponse:
        return pb.GetCroServiceResponse(data=service_pb(await self._service.get(current_principal(), request.id)))

    async def UpdateCroService(
        self, request: pb.UpdateCroServiceRequest, context: Context
    ) -> pb.UpdateCroServiceResponse:
        fields = ServiceFields(
            name=request.name or None,
            description=request.description or None,
            base_price=request.base_price or None,
            currency=request.currency or None,
            turnaround_days=request.turnaround_days or None,
            specification_schema=struct_to_dict(request.specification_schema)
            if request.HasField("specification_schema")
            else None,
            active=_active(request.active),
        )
        service = await self._service.update(
            current_principal(), request.id, fields, credentials=credentials_of(context)
        )
        return pb.UpdateCroServiceResponse(data=service_pb(service))

    async def DeleteCroService(
        self, request: pb.DeleteCroServiceRequest, context: Context
    ) -> pb.DeleteCroServiceResponse:
        deleted, service = await self._service.delete(current_principal(), request.id)
        return pb.DeleteCroServiceResponse(deleted=deleted, data=None if deleted else service_pb(service))
