"""Revoked credentials as every service applies them (pure, no bus)."""

from __future__ import annotations

from datetime import timedelta

from molbridge.events.v1.identity_pb2 import PrincipalRevoked

from services.runtime.auth import issued_at
from services.runtime.revocation import Revocations

T = 1_800_000_000.0  # an instant, in epoch seconds


def revoked(user_id: str = "", session_id: str = "", api_key_id: str = "", at: float = T) -> PrincipalRevoked:
    event = PrincipalRevoked(user_id=user_id, session_id=session_id, api_key_id=api_key_id,
                             reason=PrincipalRevoked.USER_DELETED)
    event.not_before.seconds, event.not_before.nanos = int(at), round((at % 1) * 1e9)
    return event


def test_tokens_issued_before_a_users_revocation_are_refused_later_ones_accepted() -> None:
    revocations = Revocations(clock=lambda: T)
    revocations.apply(revoked(user_id="u1", at=T + 0.5))
    assert revocations.is_revoked("u1", "", T + 0.499)
    assert not revocations.is_revoked("u1", "", T + 0.5)  # a login after the revocation
    assert not revocations.is_revoked("u2", "", T)


def test_a_session_revocation_ends_only_that_sessions_tokens() -> None:
    revocations = Revocations(clock=lambda: T)
    revocations.apply(revoked(session_id="s1"))
    assert revocations.is_revoked("u1", "s1", T - 1)
    assert not revocations.is_revoked("u1", "s2", T - 1)
    assert not revocations.is_revoked("u1", "", T - 1)


def test_the_latest_revocation_wins_and_every_event_moves_the_generation() -> None:
    revocations = Revocations(clock=lambda: T)
    start = revocations.generation
    revocations.apply(revoked(user_id="u1", at=T + 10))
    revocations.apply(revoked(user_id="u1", at=T))  # an older event delivered late changes nothing
    revocations.apply(revoked(api_key_id="k1"))  # a key revocation: only API-key caches care
    assert revocations.is_revoked("u1", "", T + 5)
    assert revocations.generation == start + 3 and len(revocations) == 1


def test_revocations_older_than_a_token_lifetime_are_forgotten() -> None:
    now = [T]
    revocations = Revocations(keep_for=timedelta(minutes=16), clock=lambda: now[0])
    revocations.revoke(not_before=T, user_id="old")
    now[0] = T + 17 * 60
    for n in range(255):  # pruning is amortized over revocations
        revocations.revoke(not_before=now[0], user_id=f"u{n}")
    assert not revocations.is_revoked("old", "", T - 1) and revocations.is_revoked("u1", "", now[0] - 1)


def test_issued_at_prefers_milliseconds() -> None:
    assert issued_at({"iat": 100, "iat_ms": 100_250}) == 100.25
    assert issued_at({"iat": 100}) == 100.0
    assert issued_at({"iat": 100, "iat_ms": "bogus"}) == 100.0
