"""A user's notification preferences: switches per type × channel over the vocabulary's defaults, and
the email digest. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from services.notification.domain.vocabulary import (
    DEFAULT_DIGEST,
    USER_CHANNELS,
    Channel,
    EmailDigest,
    NotificationType,
    default_enabled,
)
from services.runtime.errors import ValidationError

Switch = tuple[NotificationType, Channel]


@dataclass(frozen=True)
class Setting:
    type: NotificationType
    channel: Channel
    enabled: bool


@dataclass(frozen=True)
class Preferences:
    """What a user chose (`chosen`: only the switches they set) and their digest."""

    chosen: Mapping[Switch, bool] = field(default_factory=dict)
    digest: EmailDigest = DEFAULT_DIGEST

    def enabled(self, kind: NotificationType, channel: Channel) -> bool:
        return self.chosen.get((kind, channel), default_enabled(kind, channel))

    def channels(self, kind: NotificationType) -> frozenset[Channel]:
        """Where a notification of `kind` goes for this user."""
        return frozenset(c for c in USER_CHANNELS if self.enabled(kind, c))

    def settings(self) -> list[Setting]:
        """Every type on every user channel, as it stands."""
        return [
            Setting(kind, channel, self.enabled(kind, channel))
            for kind in NotificationType
            for channel in USER_CHANNELS
        ]


def check_changes(changes: Iterable[tuple[str, str, bool]]) -> list[Setting]:
    """UpdatePreferences' switches (type and channel names as the request gave them) → settings;
    ValidationError naming each bad one."""
    settings: list[Setting] = []
    violations: list[tuple[str, str]] = []
    for index, (kind, channel, enabled) in enumerate(changes):
        where = f"settings[{index}]"
        if kind not in NotificationType.__members__:
            violations.append((f"{where}.type", f"one of {', '.join(NotificationType)}"))
        if channel not in {c.value for c in USER_CHANNELS}:
            violations.append(
                (f"{where}.channel", "IN_APP or EMAIL (webhooks are chosen per endpoint: its event_types)")
            )
        if not violations:
            settings.append(Setting(NotificationType(kind), Channel(channel), enabled))
    if violations:
        raise ValidationError("Invalid preferences", field_violations=violations)
    return settings


def check_digest(digest: str) -> EmailDigest | None:
    """The digest a request names, None when it names none ("" = unchanged)."""
    if not digest:
        return None
    if digest not in EmailDigest.__members__:
        raise ValidationError("Invalid preferences", field_violations=[("email_digest", "OFF, HOURLY or DAILY")])
    return EmailDigest(digest)
