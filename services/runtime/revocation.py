"""Revoked credentials, known to every service within moments: identity publishes `PrincipalRevoked`
(a deleted or demoted user, a logout, a password reset, a revoked API key) through its outbox; each
process keeps the revocations of the last token lifetime in memory and refuses access tokens issued
before them.

Each process reads the events with its own consumer (`RevocationFeed`) that starts `REPLAY` in the
past, so a process that starts (or restarts) knows every revocation that can still matter: an access
token lives 15 minutes, so an older revocation concerns only tokens that have expired anyway. The
consumer is ephemeral-by-inactivity: the server drops it an hour after its process is gone.

    revocations = Revocations()
    verifier = TokenVerifier(jwks, revocations)                     # refuses revoked tokens
    Process(..., consumers=[revocation_feed(revocations, "molecule")])  # one feed per process
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from molbridge.events.v1.envelope_pb2 import EventEnvelope
from molbridge.events.v1.identity_pb2 import PrincipalRevoked
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from bus.consumer import Consumer, PoisonError
from bus.envelope import unpack
from bus.streams import EVENTS_STREAM
from bus.subjects import event_subject

TOKEN_LIFETIME = timedelta(minutes=15)
# Revocations are kept (and replayed at start) for a token's lifetime plus verification leeway and
# clock skew: after that, every token they concern has expired.
REPLAY = TOKEN_LIFETIME + timedelta(minutes=1)
FEED_INACTIVE_THRESHOLD_S = 3600.0
REVOCATION_SUBJECT = event_subject("identity", PrincipalRevoked)


class Revocations:
    """Who must be refused: `not_before` instants per user and per login session (epoch seconds)."""

    def __init__(self, *, keep_for: timedelta = REPLAY, clock: Callable[[], float] = time.time) -> None:
        self._users: dict[str, float] = {}
        self._sessions: dict[str, float] = {}
        self._keep_for = keep_for.total_seconds()
        self._clock = clock
        self._applied = 0
        # Bumped by every revocation: caches of API-key verifications compare it and start over.
        self.generation = 0

    def revoke(self, *, not_before: float, user_id: str = "", session_id: str = "") -> None:
        if user_id:
            self._users[user_id] = max(not_before, self._users.get(user_id, 0.0))
        if session_id:
            self._sessions[session_id] = max(not_before, self._sessions.get(session_id, 0.0))
        self.generation += 1
        self._applied += 1
        if self._applied % 256 == 0:
            self._forget_expired()

    def apply(self, event: PrincipalRevoked) -> None:
        # An API-key revocation carries no user: bumping the generation is its whole effect.
        self.revoke(
            not_before=event.not_before.seconds + event.not_before.nanos / 1e9,
            user_id=event.user_id,
            session_id=event.session_id,
        )

    def is_revoked(self, user_id: str, session_id: str, issued_at: float) -> bool:
        """Whether a token of `user_id` (and `session_id`) issued at `issued_at` must be refused."""
        not_before = self._users.get(user_id)
        if not_before is not None and issued_at < not_before:
            return True
        if session_id:
            not_before = self._sessions.get(session_id)
            return not_before is not None and issued_at < not_before
        return False

    def __len__(self) -> int:
        return len(self._users) + len(self._sessions)

    def _forget_expired(self) -> None:
        horizon = self._clock() - self._keep_for
        for revoked in (self._users, self._sessions):
            for key in [k for k, not_before in revoked.items() if not_before < horizon]:
                del revoked[key]


class RevocationFeed(Consumer):
    """This process's own consumer of `PrincipalRevoked`, replaying the last `REPLAY` at start."""

    def __init__(self, js: JetStreamContext, revocations: Revocations, *, process_name: str) -> None:
        self._revocations = revocations
        self._start = datetime.now(UTC) - REPLAY
        # A name of its own: consumers sharing a name would split the events between processes.
        name = f"revocations-{process_name}-{uuid.uuid4().hex[:12]}"
        super().__init__(js, EVENTS_STREAM, name, REVOCATION_SUBJECT, self._handle, batch=100, backoff=(1.0,))

    def config(self) -> ConsumerConfig:
        config = super().config()
        config.deliver_policy = DeliverPolicy.BY_START_TIME
        config.opt_start_time = self._start
        config.inactive_threshold = FEED_INACTIVE_THRESHOLD_S
        return config

    async def _handle(self, envelope: EventEnvelope, msg: Msg) -> None:
        try:
            self._revocations.apply(unpack(envelope, PrincipalRevoked))
        except TypeError as error:
            raise PoisonError(str(error)) from error


def revocation_feed(revocations: Revocations, process_name: str) -> Callable[[JetStreamContext], Consumer]:
    """A consumer factory for `services.runtime.process.Process(consumers=[…])`."""

    def make(js: JetStreamContext) -> Consumer:
        return RevocationFeed(js, revocations, process_name=process_name)

    return make
