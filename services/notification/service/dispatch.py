"""Events → notifications, exactly once per recipient (issue 13).

One transaction per event: the processed-events marker, the submission's parties (when the event tells
them), one notification per recipient (unique per event and recipient) on the channels their
preferences leave on, the email and webhook deliveries for the delivery worker, and NotificationCreated
for the live streams. A redelivered event finds its marker and does nothing; should the marker ever be
missing, the unique keys still make it add nothing.

A notification whose IN_APP switch is off is stored hidden (`in_app` false) when its email is on (the
email refers to it); with both off there is nothing for that recipient.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from datetime import datetime

from molbridge.events.v1.notification_pb2 import NotificationCreated

from services.notification.domain.notices import Notification, describe, webhook_payload
from services.notification.domain.recipients import Occurrence, Parties, audience, recipients, webhook_organizations
from services.notification.domain.vocabulary import Channel
from services.notification.store import NotificationTransactions, NotificationUnitOfWork

log = logging.getLogger("molbridge.notification.dispatch")

CONSUMER = "notification-dispatch"  # the processed-events marker of every event this service tells


class SubmissionUnknown(Exception):
    """A submission's event came before any of its transitions told who its submitter is (events of one
    submission travel on different consumers): worth waiting a little for."""


@dataclasses.dataclass(frozen=True)
class SubmissionState:
    """What a SubmissionTransitioned says about its submission, kept for the events that do not."""

    parties: Parties
    status: str
    at: datetime | None


class Dispatcher:
    def __init__(self, uow: NotificationTransactions, app_url: str) -> None:
        self._uow = uow
        self._app_url = app_url

    async def remember(self, state: SubmissionState, event_id: str) -> None:
        """A submission event that tells nobody still tells who its parties are."""
        async with self._uow() as uow:
            if await uow.first_delivery(CONSUMER, event_id):
                await uow.parties.remember(state.parties, state.status, state.at)

    async def dispatch(
        self, occurrence: Occurrence, state: SubmissionState | None = None, *, wait_for_submission: bool = False
    ) -> int:
        """Creates the notifications and queues the deliveries of one event; answers how many recipients.
        `wait_for_submission`: raise SubmissionUnknown (nothing done) rather than tell a submission's event
        without its submitter."""
        async with self._uow() as uow:
            if not await uow.first_delivery(CONSUMER, occurrence.event_id):
                return 0
            if state is not None:
                await uow.parties.remember(state.parties, state.status, state.at)
            o = await _with_parties(uow, occurrence)
            if wait_for_submission and o.submission is not None and not o.submission.created_by:
                raise SubmissionUnknown(f"submission {o.submission.submission_id} not known yet")
            acting = await uow.directory.get(o.actor_id) if o.actor_id else None
            acting_organization = acting.organization_id if acting else None
            members = await uow.directory.members(audience(o, acting_organization).organizations)
            chosen = recipients(o, members, acting_organization)
            preferences = await uow.preferences.of(m.user_id for m in chosen)
            notice = describe(o, self._app_url)
            told = 0
            for member in chosen:
                prefs = preferences[member.user_id]
                channels = prefs.channels(o.type)
                if not channels:
                    continue
                notification_id = str(uuid.uuid4())
                stored = await uow.notifications.add(
                    Notification(
                        id=notification_id,
                        recipient_id=member.user_id,
                        type=o.type,
                        title=notice.title,
                        body=notice.body,
                        link=notice.link,
                        organization_id=o.organization_id,
                        subject_type=o.subject_type.value,
                        subject_id=o.subject_id,
                        submission_id=o.submission.submission_id if o.submission else "",
                        event_id=o.event_id,
                        occurred_at=o.occurred_at,
                        in_app=Channel.IN_APP in channels,
                        data=dict(o.facts),
                    )
                )
                if not stored:
                    continue
                told += 1
                if Channel.IN_APP in channels:
                    uow.record(
                        NotificationCreated(
                            notification_id=notification_id, recipient_id=member.user_id, type=o.type.value
                        ),
                        organization_id=member.organization_id,
                        actor_id=o.actor_id,
                    )
                if Channel.EMAIL in channels and member.email:
                    await uow.deliveries.email(notification_id, member.user_id, member.email, o.type, prefs.digest)
            payload = webhook_payload(o, self._app_url)
            for webhook_id, organization_id in await uow.deliveries.subscribed_webhooks(
                webhook_organizations(o), o.type
            ):
                await uow.deliveries.webhook(webhook_id, organization_id, o.event_id, o.type, payload)
        log.info("event %s (%s): %d recipients", o.event_id, o.type.value, told)
        return told


async def _with_parties(uow: NotificationUnitOfWork, o: Occurrence) -> Occurrence:
    """The submission's parties as known (the event may carry only its id, or no submitter)."""
    if o.submission is None or not o.submission.submission_id:
        return o
    known = await uow.parties.get(o.submission.submission_id)
    if known is None:
        if not o.submission.organization_id:  # an id alone says nobody: leave it out
            return dataclasses.replace(
                o, submission=None, facts={**o.facts, "submission_id": o.submission.submission_id}
            )
        return o
    return dataclasses.replace(o, submission=known)
