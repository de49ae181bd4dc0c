"""WebhookService servicer: proto ↔ the webhook use cases (service/webhooks.py); no rules here."""

from __future__ import annotations

from typing import TypeAlias

import grpc
from molbridge.notification.v1 import notification_service_pb2 as pb
from molbridge.notification.v1 import notification_service_pb2_grpc as pb_grpc

from services.notification.domain.vocabulary import DeliveryStatus
from services.notification.domain.webhooks import Delivery, Webhook
from services.notification.service.webhooks import WebhookChange, WebhookService
from services.runtime.auth import current_principal
from services.runtime.errors import ValidationError
from services.runtime.pagination import PageRequest
from services.runtime.protomap import enum_name, enum_number, timestamp

Context: TypeAlias = grpc.aio.ServicerContext
Type = pb.Notification.Type


def webhook_pb(webhook: Webhook) -> pb.Webhook:
    return pb.Webhook(
        id=webhook.id,
        organization_id=webhook.organization_id,
        url=webhook.url,
        event_types=[enum_number(Type, name) for name in webhook.event_types],
        description=webhook.description,
        active=webhook.active,
        secret_hint=webhook.secret_hint,
        created_by=webhook.created_by,
        created_at=timestamp(webhook.created_at),
        updated_at=timestamp(webhook.updated_at),
        secret_rotated_at=timestamp(webhook.secret_rotated_at),
    )


def delivery_pb(delivery: Delivery) -> pb.WebhookDelivery:
    return pb.WebhookDelivery(
        id=delivery.id,
        webhook_id=delivery.webhook_id,
        event_id=delivery.event_id,
        event_type=enum_number(Type, delivery.event_type),  # a test delivery has none: TYPE_UNSPECIFIED
        status=enum_number(pb.WebhookDelivery.Status, delivery.status.value),
        attempts=delivery.attempts,
        last_status_code=delivery.last_status_code or 0,
        last_error=delivery.last_error,
        next_attempt_at=timestamp(delivery.next_attempt_at),
        last_attempt_at=timestamp(delivery.last_attempt_at),
        delivered_at=timestamp(delivery.delivered_at),
        dead_at=timestamp(delivery.dead_at),
        created_at=timestamp(delivery.created_at),
        test=delivery.test,
    )


def _types(numbers: list[int]) -> list[str]:
    return [enum_name(Type, number) for number in numbers]


def _status(number: int) -> DeliveryStatus | None:
    name = enum_name(pb.WebhookDelivery.Status, number)
    if not name:
        return None
    if name not in DeliveryStatus.__members__:
        raise ValidationError(
            f"Unknown status {name}", field_violations=[("status", "PENDING, DELIVERED, RETRYING or DEAD")]
        )
    return DeliveryStatus(name)


class WebhookServicer(pb_grpc.WebhookServiceServicer):
    SERVICE_FULL_NAME = "molbridge.notification.v1.WebhookService"

    def __init__(self, service: WebhookService) -> None:
        self._service = service

    async def CreateWebhook(self, request: pb.CreateWebhookRequest, context: Context) -> pb.CreateWebhookResponse:
        webhook, secret = await self._service.create(
            current_principal(),
            url=request.url,
            event_types=_types(list(request.event_types)),
            description=request.description,
            request_id=request.request_id,
        )
        return pb.CreateWebhookResponse(data=webhook_pb(webhook), secret=secret)

    async def ListWebhooks(self, request: pb.ListWebhooksRequest, context: Context) -> pb.ListWebhooksResponse:
        page = PageRequest.of(request.page, request.page_size)
        found, total = await self._service.listing(current_principal(), page)
        return pb.ListWebhooksResponse(data=[webhook_pb(w) for w in found], meta=page.meta(total))

    async def GetWebhook(self, request: pb.GetWebhookRequest, context: Context) -> pb.GetWebhookResponse:
        return pb.GetWebhookResponse(data=webhook_pb(await self._service.get(current_principal(), request.id)))

    async def UpdateWebhook(self, request: pb.UpdateWebhookRequest, context: Context) -> pb.UpdateWebhookResponse:
        change = WebhookChange(
            url=request.url if request.HasField("url") else None,
            event_types=_types(list(request.event_types)) if request.replace_event_types else None,
            description=request.description if request.HasField("description") else None,
            active=request.active if request.HasField("active") else None,
        )
        webhook = await self._service.update(current_principal(), request.id, change)
        return pb.UpdateWebhookResponse(data=webhook_pb(webhook))

    async def DeleteWebhook(self, request: pb.DeleteWebhookRequest, context: Context) -> pb.DeleteWebhookResponse:
        await self._service.delete(current_principal(), request.id)
        return pb.DeleteWebhookResponse()

    async def RotateWebhookSecret(
        self, request: pb.RotateWebhookSecretRequest, context: Context
    ) -> pb.RotateWebhookSecretResponse:
        webhook, secret = await self._service.rotate_secret(current_principal(), request.id)
        return pb.RotateWebhookSecretResponse(data=webhook_pb(webhook), secret=secret)

    async def ListWebhookDeliveries(
        self, request: pb.ListWebhookDeliveriesRequest, context: Context
    ) -> pb.ListWebhookDeliveriesResponse:
        page = PageRequest.of(request.page, request.page_size)
        found, total = await self._service.deliveries(current_principal(), request.id, _status(request.status), page)
        return pb.ListWebhookDeliveriesResponse(data=[delivery_pb(d) for d in found], meta=page.meta(total))

    async def RedeliverWebhookDelivery(
        self, request: pb.RedeliverWebhookDeliveryRequest, context: Context
    ) -> pb.RedeliverWebhookDeliveryResponse:
        delivery = await self._service.redeliver(current_principal(), request.id, request.delivery_id)
        return pb.RedeliverWebhookDeliveryResponse(data=delivery_pb(delivery))

    async def SendWebhookTest(self, request: pb.SendWebhookTestRequest, context: Context) -> pb.SendWebhookTestResponse:
        delivery = await self._service.send_test(current_principal(), request.id)
        return pb.SendWebhookTestResponse(data=delivery_pb(delivery))
