"""NotificationService servicer: maps proto requests to the use cases (service/notifications.py) and back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypeAlias

import grpc
from molbridge.notification.v1 import notification_service_pb2 as pb
from molbridge.notification.v1 import notification_service_pb2_grpc as pb_grpc

from services.notification.domain.notices import Notification
from services.notification.domain.preferences import Preferences
from services.notification.service.notifications import NotificationService
from services.runtime.auth import current_principal
from services.runtime.pagination import PageRequest
from services.runtime.protomap import enum_name, enum_number, timestamp

Context: TypeAlias = grpc.aio.ServicerContext


def notification_pb(n: Notification) -> pb.Notification:
    return pb.Notification(
        id=n.id,
        type=enum_number(pb.Notification.Type, n.type.value),
        title=n.title,
        body=n.body,
        link=n.link,
        organization_id=n.organization_id,
        subject_type=n.subject_type,
        subject_id=n.subject_id,
        submission_id=n.submission_id,
        read=n.read_at is not None,
        read_at=timestamp(n.read_at),
        created_at=timestamp(n.created_at),
        event_id=n.event_id,
        occurred_at=timestamp(n.occurred_at),
    )


def preferences_pb(p: Preferences) -> pb.Preferences:
    return pb.Preferences(
        settings=[
            pb.ChannelSetting(
                type=enum_number(pb.Notification.Type, s.type.value),
                channel=enum_number(pb.Preferences.Channel, s.channel.value),
                enabled=s.enabled,
            )
            for s in p.settings()
        ],
        email_digest=enum_number(pb.Preferences.EmailDigest, p.digest.value),
    )


class NotificationServicer(pb_grpc.NotificationServiceServicer):
    def __init__(self, notifications: NotificationService) -> None:
        self._notifications = notifications

    async def ListNotifications(
        self, request: pb.ListNotificationsRequest, context: Context
    ) -> pb.ListNotificationsResponse:
        page = PageRequest.of(request.page, request.page_size)
        found, total, unread = await self._notifications.list_notifications(
            current_principal(),
            page,
            unread_only=request.unread_only,
            kind=enum_name(pb.Notification.Type, request.type),
        )
        return pb.ListNotificationsResponse(
            data=[notification_pb(n) for n in found], meta=page.meta(total), unread=unread
        )

    async def GetUnreadCount(self, request: pb.GetUnreadCountRequest, context: Context) -> pb.GetUnreadCountResponse:
        return pb.GetUnreadCountResponse(unread=await self._notifications.unread_count(current_principal()))

    async def MarkNotificationRead(
        self, request: pb.MarkNotificationReadRequest, context: Context
    ) -> pb.MarkNotificationReadResponse:
        found, unread = await self._notifications.mark_read(current_principal(), request.id)
        return pb.MarkNotificationReadResponse(data=notification_pb(found), unread=unread)

    async def MarkAllNotificationsRead(
        self, request: pb.MarkAllNotificationsReadRequest, context: Context
    ) -> pb.MarkAllNotificationsReadResponse:
        return pb.MarkAllNotificationsReadResponse(marked=await self._notifications.mark_all_read(current_principal()))

    async def WatchNotifications(
        self, request: pb.WatchNotificationsRequest, context: Context
    ) -> AsyncIterator[pb.WatchNotificationsResponse]:
        """Server streaming; an empty `notification` is a heartbeat."""
        async for found in self._notifications.watch(current_principal(), request.after_id):
            yield pb.WatchNotificationsResponse(notification=notification_pb(found) if found else None)

    async def GetPreferences(self, request: pb.GetPreferencesRequest, context: Context) -> pb.GetPreferencesResponse:
        return pb.GetPreferencesResponse(
            data=preferences_pb(await self._notifications.preferences(current_principal()))
        )

    async def UpdatePreferences(
        self, request: pb.UpdatePreferencesRequest, context: Context
    ) -> pb.UpdatePreferencesResponse:
        changes = [
            (enum_name(pb.Notification.Type, s.type), enum_name(pb.Preferences.Channel, s.channel), s.enabled)
            for s in request.settings
        ]
        updated = await self._notifications.update_preferences(
            current_principal(),
            changes,
            enum_name(pb.Preferences.EmailDigest, request.email_digest),
            reset=request.reset_to_defaults,
        )
        return pb.UpdatePreferencesResponse(data=preferences_pb(updated))
