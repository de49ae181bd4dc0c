"""Webhook endpoints of an organization (its admins only): register with a secret answered once and
stored encrypted, list/get/update/delete, rotate the secret (the old one keeps signing during a grace
period), the delivery log, redelivery of a DEAD or DELIVERED delivery, and a test event.

Another organization's endpoint does not exist (404): the repository filters by the caller's organization.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Protocol

from services.notification.domain.vocabulary import DeliveryStatus
from services.notification.domain.webhooks import (
    ROTATION_GRACE,
    Delivery,
    Webhook,
    WebhookUrl,
    check_description,
    check_event_types,
    check_redeliverable,
    payload_for_test,
    secret_hint,
)
from services.notification.store import NotificationTransactions, NotificationUnitOfWork
from services.runtime.audit import audit_event
from services.runtime.auth import ADMIN_ROLES, Principal
from services.runtime.errors import NotFoundError, PreconditionError
from services.runtime.pagination import PageRequest

TARGET_TYPE = "webhook"


class SecretSealer(Protocol):
    def seal(self, secret: str) -> str: ...

    @staticmethod
    def new_secret() -> str: ...


class UrlChecker(Protocol):
    async def check(self, url: str) -> WebhookUrl: ...


@dataclass(frozen=True)
class WebhookChange:
    url: str | None = None
    event_types: Sequence[str] | None = None  # NotificationType names; None: unchanged; empty: every type
    description: str | None = None
    active: bool | None = None


def _now() -> datetime:
    return datetime.now(UTC)


class WebhookService:
    def __init__(
        self,
        uow: NotificationTransactions,
        secrets: SecretSealer,
        urls: UrlChecker,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._uow = uow
        self._secrets = secrets
        self._urls = urls
        self._clock = clock

    @staticmethod
    def _require_admin(principal: Principal) -> None:
        principal.require_any_role(*ADMIN_ROLES)

    @staticmethod
    async def _webhook(
        uow: NotificationUnitOfWork, principal: Principal, webhook_id: str, *, lock: bool = False
    ) -> Webhook:
        webhook = await uow.webhooks.get(principal.organization_id, webhook_id, lock=lock)
        if webhook is None:
            raise NotFoundError(f"Webhook {webhook_id} not found", metadata={"id": webhook_id})
        return webhook

    async def create(
        self,
        principal: Principal,
        *,
        url: str,
        event_types: Sequence[str],
        description: str,
        request_id: str = "",
    ) -> tuple[Webhook, str]:
        """The new endpoint and its secret ("" when a retried request answers the first endpoint)."""
        self._require_admin(principal)
        target = await self._urls.check(url)
        description = check_description(description)
        kinds = check_event_types(event_types)
        secret = self._secrets.new_secret()
        created: list[Webhook] = []

        async with self._uow() as uow:

            async def make() -> str:
                now = self._clock()
                webhook = Webhook(
                    id=str(uuid.uuid4()),
                    organization_id=principal.organization_id,
                    url=target.url,
                    event_types=kinds,
                    description=description,
                    active=True,
                    secret_hint=secret_hint(secret),
                    created_by=principal.subject,
                    created_at=now,
                    updated_at=now,
                )
                await uow.webhooks.add(webhook, self._secrets.seal(secret))
                uow.record(
                    audit_event(
                        "webhook.created", target_type=TARGET_TYPE, target_id=webhook.id, details={"url": webhook.url}
                    ),
                    actor=principal,
                )
                created.append(webhook)
                return webhook.id

            webhook_id = await uow.once(f"webhooks:{principal.organization_id}", request_id, make)
            if created:
                return created[0], secret
            return await self._webhook(uow, principal, webhook_id), ""

    async def listing(self, principal: Principal, page: PageRequest) -> tuple[list[Webhook], int]:
        self._require_admin(principal)
        async with self._uow() as uow:
            return await uow.webhooks.listing(principal.organization_id, page)

    async def get(self, principal: Principal, webhook_id: str) -> Webhook:
        self._require_admin(principal)
        async with self._uow() as uow:
            return await self._webhook(uow, principal, webhook_id)

    async def update(self, principal: Principal, webhook_id: str, change: WebhookChange) -> Webhook:
        self._require_admin(principal)
        target = await self._urls.check(change.url) if change.url is not None else None
        description = check_description(change.description) if change.description is not None else None
        kinds = check_event_types(change.event_types) if change.event_types is not None else None
        async with self._uow() as uow:
            webhook = await self._webhook(uow, principal, webhook_id, lock=True)
            updated = replace(
                webhook,
                url=target.url if target else webhook.url,
                event_types=kinds if kinds is not None else webhook.event_types,
                description=description if description is not None else webhook.description,
                active=change.active if change.active is not None else webhook.active,
            )
            if updated != webhook:
                updated.updated_at = self._clock()
                await uow.webhooks.save(updated)
                uow.record(
                    audit_event(
                        "webhook.updated",
                        target_type=TARGET_TYPE,
                        target_id=webhook.id,
                        details={"url": updated.url, "active": str(updated.active).lower()},
                    ),
                    actor=principal,
                )
            return updated

    async def delete(self, principal: Principal, webhook_id: str) -> None:
        self._require_admin(principal)
        async with self._uow() as uow:
            webhook = await self._webhook(uow, principal, webhook_id, lock=True)
            await uow.webhooks.delete(webhook.id)
            uow.record(
                audit_event(
                    "webhook.deleted", target_type=TARGET_TYPE, target_id=webhook.id, details={"url": webhook.url}
                ),
                actor=principal,
            )

    async def rotate_secret(self, principal: Principal, webhook_id: str) -> tuple[Webhook, str]:
        """A new secret, answered once; the previous one keeps signing (both v1 sent) for ROTATION_GRACE."""
        self._require_admin(principal)
        secret = self._secrets.new_secret()
        async with self._uow() as uow:
            webhook = await self._webhook(uow, principal, webhook_id, lock=True)
            now = self._clock()
            rotated = replace(webhook, secret_hint=secret_hint(secret), secret_rotated_at=now, updated_at=now)
            await uow.webhooks.rotate_secret(rotated, self._secrets.seal(secret), now + ROTATION_GRACE)
            uow.record(
                audit_event("webhook.secret_rotated", target_type=TARGET_TYPE, target_id=webhook.id),
                actor=principal,
            )
            return rotated, secret

    async def deliveries(
        self, principal: Principal, webhook_id: str, status: DeliveryStatus | None, page: PageRequest
    ) -> tuple[list[Delivery], int]:
        self._require_admin(principal)
        async with self._uow() as uow:
            webhook = await self._webhook(uow, principal, webhook_id)
            return await uow.webhooks.deliveries(webhook.id, status, page)

    async def redeliver(self, principal: Principal, webhook_id: str, delivery_id: str) -> Delivery:
        """A DEAD or DELIVERED delivery back to PENDING with a fresh 24 h window (same event id: the
        receiver can tell it is the same event)."""
        self._require_admin(principal)
        async with self._uow() as uow:
            webhook = await self._webhook(uow, principal, webhook_id)
            delivery = await uow.webhooks.delivery(webhook.id, delivery_id, lock=True)
            if delivery is None:
                raise NotFoundError(f"Delivery {delivery_id} not found", metadata={"id": delivery_id})
            check_redeliverable(delivery)
            await uow.webhooks.requeue(delivery.id, self._clock())
            uow.record(
                audit_event(
                    "webhook.redelivered",
                    target_type=TARGET_TYPE,
                    target_id=webhook.id,
                    details={"delivery_id": delivery.id, "event_id": delivery.event_id},
                ),
                actor=principal,
            )
            requeued = await uow.webhooks.delivery(webhook.id, delivery.id)
            assert requeued is not None
            return requeued

    async def send_test(self, principal: Principal, webhook_id: str) -> Delivery:
        """Queues a signed `webhook.test` event to the endpoint (sent by the worker like any other)."""
        self._require_admin(principal)
        async with self._uow() as uow:
            webhook = await self._webhook(uow, principal, webhook_id)
            if not webhook.active:
                raise PreconditionError(
                    "The webhook is inactive: activate it to send a test", detail="WEBHOOK_INACTIVE"
                )
            now = self._clock()
            event_id = f"test_{uuid.uuid4().hex}"
            return await uow.webhooks.add_delivery(
                delivery_id=str(uuid.uuid4()),
                webhook=webhook,
                event_id=event_id,
                event_type="",
                payload=payload_for_test(
                    event_id=event_id, organization_id=webhook.organization_id, webhook_id=webhook.id, now=now
                ),
                test=True,
                now=now,
            )
