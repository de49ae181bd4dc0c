"""Properties of webhook signatures (services/notification/domain/webhooks.py): what is signed verifies within
the tolerance, and any change of body, signature, timestamp or secret is refused; header parsing fails only
with SignatureError. And the receiver's Retry-After, hostile too, never breaks the retry schedule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.notification.domain.vocabulary import DeliveryStatus
from services.notification.domain.webhooks import (
    DEFAULT_TOLERANCE_S,
    RETRY_WINDOW,
    AttemptResult,
    SignatureError,
    after_attempt,
    parse_retry_after,
    parse_signature_header,
    signature_header,
    verify,
)

FAST = settings(max_examples=200, deadline=None)

bodies = st.binary(max_size=200)
secret_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)
secret_lists = st.lists(secret_text, min_size=1, max_size=3, unique=True)
timestamps = st.integers(min_value=0, max_value=4_000_000_000)
skews = st.integers(min_value=-DEFAULT_TOLERANCE_S, max_value=DEFAULT_TOLERANCE_S)


def refusal(header: str, body: bytes, secrets: list[str], now: int) -> str:
    """The reason `verify` refuses; fails the test when it accepts."""
    try:
        verify(header, body, secrets, now)
    except SignatureError as error:
        return error.reason
    raise AssertionError(f"verified: {header!r}")


@FAST
@given(bodies, secret_lists, timestamps, skews, st.data())
def test_what_is_signed_verifies_with_any_of_the_secrets_within_the_tolerance(
    body: bytes, secrets: list[str], t: int, skew: int, data: st.DataObject
) -> None:
    header = signature_header(body, secrets, t)
    known = data.draw(st.sampled_from(secrets))  # the receiver may know only one of them (rotation)
    assert verify(header, body, [known], t + skew) == t


@FAST
@given(bodies, secret_text, timestamps, st.data())
def test_a_changed_body_is_refused(body: bytes, secret: str, t: int, data: st.DataObject) -> None:
    changed = bytearray(body or b"\x00")
    if body:
        at = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
        changed[at] ^= data.draw(st.integers(min_value=1, max_value=255))
    else:
        changed = bytearray(b"x")
    header = signature_header(body, [secret], t)
    assert refusal(header, bytes(changed), [secret], t) == "BAD_SIGNATURE"


@FAST
@given(bodies, secret_text, timestamps, st.data())
def test_a_changed_signature_is_refused(body: bytes, secret: str, t: int, data: st.DataObject) -> None:
    header = signature_header(body, [secret], t)
    start = header.index("v1=") + 3
    at = data.draw(st.integers(min_value=start, max_value=len(header) - 1))
    replacement = data.draw(st.sampled_from("0123456789abcdefABCDEF,= x").filter(lambda c: c != header[at]))
    forged = header[:at] + replacement + header[at + 1 :]
    assert refusal(forged, body, [secret], t) in ("BAD_SIGNATURE", "MALFORMED_HEADER")


@FAST
@given(bodies, secret_text, timestamps, st.integers(min_value=DEFAULT_TOLERANCE_S + 1, max_value=10**9), st.booleans())
def test_a_stale_or_future_timestamp_is_refused(body: bytes, secret: str, t: int, off: int, future: bool) -> None:
    header = signature_header(body, [secret], t)
    now = t - off if future else t + off
    assert refusal(header, body, [secret], now) == "STALE_TIMESTAMP"


@FAST
@given(bodies, secret_text, secret_text, timestamps)
def test_a_wrong_secret_is_refused(body: bytes, secret: str, other: str, t: int) -> None:
    if other == secret:
        other += "x"
    assert refusal(signature_header(body, [secret], t), body, [other], t) == "BAD_SIGNATURE"


@FAST
@given(bodies, secret_text, timestamps, timestamps)
def test_a_signature_moved_to_another_timestamp_is_refused(body: bytes, secret: str, t: int, other: int) -> None:
    if other == t:
        other += 1
    header = signature_header(body, [secret], t).replace(f"t={t}", f"t={other}", 1)
    assert refusal(header, body, [secret], other) == "BAD_SIGNATURE"


header_pieces = st.one_of(
    st.sampled_from(["t=", "v1=", ",", "=", " ", "1", "9" * 30, "²", "٣", "-1", "+1", "t=1", "v1=ab", "v0=1"]),
    st.text(max_size=8),
)


@FAST
@given(st.lists(header_pieces, max_size=12).map("".join), bodies, st.integers(min_value=0, max_value=2**40))
@example("t=²,v1=aa", b"", 0)
@example("t=" + "9" * 5000 + ",v1=aa", b"", 0)
@example("t=" + "9" * 400 + ",v1=aa", b"", 0)
def test_any_header_text_fails_only_with_a_signature_error(header: str, body: bytes, now: int) -> None:
    try:
        parse_signature_header(header)
        verify(header, body, ["whsec_x"], now)
    except SignatureError:
        pass


T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
retry_after_text = st.one_of(
    st.none(),
    st.text(max_size=40),
    st.integers(min_value=0, max_value=10**30).map(str),
    st.datetimes(timezones=st.just(UTC)).map(lambda d: format_datetime(d, usegmt=True)),
    st.sampled_from(["²", "٣٣", "1e9", "inf", "Thu, 03 Dec 9999 12:10:00 GMT", "Mon, 01 Jan 0001 00:00:00 GMT"]),
)


@FAST
@given(retry_after_text)
@example("²")
def test_any_retry_after_is_a_non_negative_wait_or_none(value: str | None) -> None:
    wait = parse_retry_after(value, T0)
    assert wait is None or wait >= 0


@FAST
@given(retry_after_text, st.sampled_from([429, 503, 500, None]), st.integers(min_value=1, max_value=60),
       st.integers(min_value=0, max_value=24 * 3600 + 10))  # fmt: skip
@example("99999999999999", 429, 1, 0)
def test_after_any_response_the_next_attempt_is_within_the_window(
    value: str | None, code: int | None, attempt: int, elapsed: int
) -> None:
    now = T0 + timedelta(seconds=elapsed)
    result = AttemptResult(status_code=code, error="" if code else "timeout", retry_after=value)
    decision = after_attempt(result, attempt=attempt, first_attempt_at=T0, now=now, draw=lambda: 0.5)
    if decision.status is DeliveryStatus.RETRYING:
        assert decision.next_attempt_at is not None and now < decision.next_attempt_at <= T0 + RETRY_WINDOW
    else:
        assert decision.status is DeliveryStatus.DEAD and now >= T0 + RETRY_WINDOW
