"""Webhook rules: signing and verification (replay window, rotation, constant-time match), the retry
schedule with its 24 h window, and which URLs and addresses an endpoint may have."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest

from services.notification.domain.vocabulary import DeliveryStatus
from services.notification.domain.webhooks import (
    FIRST_RETRY_S,
    MAX_RETRY_WAIT_S,
    MIN_RETRY_WAIT_S,
    RETRY_WINDOW,
    ROTATION_GRACE,
    AttemptResult,
    Delivery,
    SignatureError,
    UrlPolicy,
    after_attempt,
    backoff_delay,
    check_addresses,
    check_description,
    check_event_types,
    check_redeliverable,
    check_url,
    compute_signature,
    encode_payload,
    generate_secret,
    parse_retry_after,
    payload_for_test,
    secret_hint,
    signature_header,
    signing_secrets,
    verify,
)
from services.runtime.errors import PreconditionError, ValidationError

BODY = b'{"id":"evt_1","type":"submission.submitted"}'
T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
NOW = int(T0.timestamp())


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


# ---------------------------------------------------------------- signing


def test_a_signed_payload_verifies_and_returns_its_timestamp() -> None:
    secret = generate_secret()
    header = signature_header(BODY, [secret], NOW)
    assert header.startswith(f"t={NOW},v1=")
    assert verify(header, BODY, [secret], NOW + 10) == NOW


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    import hashlib
    import hmac

    expected = hmac.new(b"k", f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert compute_signature("k", NOW, BODY) == expected
    assert compute_signature("k", NOW, BODY.decode()) == expected


def test_a_changed_body_or_wrong_secret_is_refused() -> None:
    header = signature_header(BODY, ["right"], NOW)
    with pytest.raises(SignatureError) as bad_body:
        verify(header, BODY + b" ", ["right"], NOW)
    assert bad_body.value.reason == "BAD_SIGNATURE"
    with pytest.raises(SignatureError):
        verify(header, BODY, ["wrong"], NOW)


def test_a_replayed_old_or_future_timestamp_is_refused_even_with_a_valid_signature() -> None:
    header = signature_header(BODY, ["s"], NOW)
    assert verify(header, BODY, ["s"], NOW + 300) == NOW  # the edge of the tolerance still passes
    for now in (NOW + 301, NOW - 301):
        with pytest.raises(SignatureError) as error:
            verify(header, BODY, ["s"], now)
        assert error.value.reason == "STALE_TIMESTAMP"
    assert verify(header, BODY, ["s"], NOW + 1000, tolerance=2000) == NOW


def test_a_forged_timestamp_breaks_the_signature() -> None:
    header = signature_header(BODY, ["s"], NOW - 3600)
    forged = header.replace(f"t={NOW - 3600}", f"t={NOW}")
    with pytest.raises(SignatureError) as error:
        verify(forged, BODY, ["s"], NOW)
    assert error.value.reason == "BAD_SIGNATURE"


def test_during_a_rotation_either_secret_verifies() -> None:
    header = signature_header(BODY, ["new", "old"], NOW)
    assert header.count("v1=") == 2
    assert verify(header, BODY, ["old"], NOW) == NOW
    assert verify(header, BODY, ["new"], NOW) == NOW
    assert verify(signature_header(BODY, ["old"], NOW), BODY, ["new", "old"], NOW) == NOW


@pytest.mark.parametrize("header", [None, "", "v1=abc", f"t={NOW}", "t=soon,v1=abc", f"t={NOW},t={NOW},v1=ab"])
def test_a_missing_or_malformed_header_is_refused(header: str | None) -> None:
    with pytest.raises(SignatureError) as error:
        verify(header, BODY, ["s"], NOW)
    assert error.value.reason in ("MISSING_HEADER", "MALFORMED_HEADER")


def test_signing_needs_a_secret_and_secrets_are_distinct() -> None:
    with pytest.raises(ValueError):
        signature_header(BODY, [], NOW)
    assert generate_secret() != generate_secret()
    assert generate_secret().startswith("whsec_")


# ---------------------------------------------------------------- schedule


def test_the_backoff_grows_exponentially_with_full_jitter_and_a_cap() -> None:
    assert backoff_delay(1, lambda: 0.999999) == pytest.approx(FIRST_RETRY_S, rel=1e-3)
    assert backoff_delay(3, lambda: 0.999999) == pytest.approx(4 * FIRST_RETRY_S, rel=1e-3)
    assert backoff_delay(40, lambda: 0.999999) == pytest.approx(MAX_RETRY_WAIT_S, rel=1e-3)
    assert backoff_delay(5, lambda: 0.5) == pytest.approx(0.5 * 16 * FIRST_RETRY_S)
    assert backoff_delay(5, lambda: 0.0) == MIN_RETRY_WAIT_S


def test_a_2xx_is_delivered() -> None:
    decision = after_attempt(AttemptResult(status_code=204), attempt=1, first_attempt_at=T0, now=T0, draw=lambda: 0.5)
    assert decision.status is DeliveryStatus.DELIVERED and decision.next_attempt_at is None


@pytest.mark.parametrize(
    "result",
    [
        AttemptResult(error="ConnectError"),
        AttemptResult(error="timeout"),
        AttemptResult(status_code=408),
        AttemptResult(status_code=400),
        AttemptResult(status_code=410),
        AttemptResult(status_code=500),
        AttemptResult(status_code=302),
    ],
)
def test_every_other_outcome_is_retried_within_the_window(result: AttemptResult) -> None:
    now = T0 + timedelta(minutes=5)
    decision = after_attempt(result, attempt=2, first_attempt_at=T0, now=now, draw=lambda: 0.5)
    assert decision.status is DeliveryStatus.RETRYING
    assert decision.next_attempt_at == now + timedelta(seconds=0.5 * 2 * FIRST_RETRY_S)


def test_retry_after_is_honoured_for_429_and_503() -> None:
    for code in (429, 503):
        result = AttemptResult(status_code=code, retry_after="120")
        decision = after_attempt(result, attempt=1, first_attempt_at=T0, now=T0, draw=lambda: 0.5)
        assert decision.next_attempt_at == T0 + timedelta(seconds=120)
    http_date = AttemptResult(status_code=429, retry_after="Thu, 03 Dec 2026 12:10:00 GMT")
    decision = after_attempt(http_date, attempt=1, first_attempt_at=T0, now=T0, draw=lambda: 0.5)
    assert decision.next_attempt_at == T0 + timedelta(minutes=10)
    # A shorter Retry-After than the backoff does not shorten it.
    short = AttemptResult(status_code=429, retry_after="1")
    assert after_attempt(short, attempt=9, first_attempt_at=T0, now=T0, draw=lambda: 0.5).next_attempt_at == (
        T0 + timedelta(seconds=backoff_delay(9, lambda: 0.5))
    )


def test_retry_after_parsing() -> None:
    assert parse_retry_after(None, T0) is None
    assert parse_retry_after("soon", T0) is None
    assert parse_retry_after(" 30 ", T0) == 30.0
    assert parse_retry_after("Thu, 03 Dec 2026 11:00:00 GMT", T0) == 0.0


def test_the_last_retry_is_at_the_end_of_the_window_then_dead() -> None:
    near_end = T0 + RETRY_WINDOW - timedelta(seconds=30)
    decision = after_attempt(AttemptResult(status_code=500), attempt=30, first_attempt_at=T0, now=near_end,
                             draw=lambda: 0.99)
    assert decision.status is DeliveryStatus.RETRYING and decision.next_attempt_at == T0 + RETRY_WINDOW
    at_end = after_attempt(AttemptResult(status_code=500), attempt=31, first_attempt_at=T0, now=T0 + RETRY_WINDOW,
                           draw=lambda: 0.99)
    assert at_end.status is DeliveryStatus.DEAD and at_end.next_attempt_at is None
    # A 2xx at the very end still counts.
    late = after_attempt(AttemptResult(status_code=200), attempt=31, first_attempt_at=T0,
                         now=T0 + RETRY_WINDOW + timedelta(hours=1), draw=lambda: 0.5)
    assert late.status is DeliveryStatus.DELIVERED


def test_a_failing_endpoint_is_tried_a_bounded_number_of_times() -> None:
    now, attempt = T0, 1
    while True:
        decision = after_attempt(AttemptResult(error="down"), attempt=attempt, first_attempt_at=T0, now=now,
                                 draw=lambda: 0.5)
        if decision.status is DeliveryStatus.DEAD:
            break
        assert decision.next_attempt_at is not None and decision.next_attempt_at > now
        now, attempt = decision.next_attempt_at, attempt + 1
    assert now == T0 + RETRY_WINDOW
    assert 20 < attempt < 100


# ---------------------------------------------------------------- URLs

STRICT = UrlPolicy(allow_private=False)
LAB = UrlPolicy(allow_private=True)


def test_a_plain_https_url_is_accepted() -> None:
    target = check_url(" https://hooks.partner.example/molbridge?x=1 ", STRICT)
    assert (target.url, target.scheme, target.host, target.port) == (
        "https://hooks.partner.example/molbridge?x=1", "https", "hooks.partner.example", 443
    )
    check_addresses(target, [ip("93.184.216.34")], STRICT)


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("", "required"),
        ("ftp://partner.example/x", "https"),
        ("http://partner.example/x", "https"),
        ("https://user:pw@partner.example/x", "credentials"),
        ("https://token@partner.example/x", "credentials"),
        ("https:///x", "host"),
        ("https://partner.example/x#top", "fragment"),
        ("https://partner.example:99999/x", "valid"),
        ("https://partner.example/a b", "spaces"),
        ("https://partner.example/" + "a" * 2100, "at most"),
    ],
)
def test_bad_urls_are_refused_naming_the_field(url: str, fragment: str) -> None:
    with pytest.raises(ValidationError) as error:
        check_url(url, STRICT)
    assert fragment in error.value.message
    assert error.value.field_violations[0][0] == "url"


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "10.1.2.3", "192.168.0.10", "172.16.5.5", "169.254.1.1", "::1", "fc00::1",
                "fe80::1", "100.64.0.1", "::ffff:127.0.0.1", "0.0.0.0"],
)
def test_private_loopback_and_link_local_targets_are_refused_by_default(address: str) -> None:
    with pytest.raises(ValidationError) as error:
        check_addresses(check_url("https://internal.example/x", STRICT), [ip(address)], STRICT)
    assert error.value.detail == "WEBHOOK_ADDRESS_REFUSED"


def test_one_private_address_among_public_ones_is_enough_to_refuse() -> None:
    with pytest.raises(ValidationError):
        check_addresses(check_url("https://mixed.example/x", STRICT), [ip("93.184.216.34"), ip("10.0.0.1")], STRICT)


def test_the_lab_setting_allows_http_on_loopback_and_private_targets_only() -> None:
    target = check_url("http://127.0.0.1:8099/hook", LAB)
    assert target.port == 8099
    check_addresses(target, [ip("127.0.0.1")], LAB)
    check_addresses(check_url("https://10.0.0.5/hook", LAB), [ip("10.0.0.5")], LAB)
    with pytest.raises(ValidationError) as public_http:
        check_addresses(check_url("http://partner.example/hook", LAB), [ip("93.184.216.34")], LAB)
    assert "https" in public_http.value.message


def test_metadata_addresses_are_refused_even_in_the_lab() -> None:
    for address in ("169.254.169.254", "fd00:ec2::254", "::ffff:169.254.169.254"):
        with pytest.raises(ValidationError):
            check_addresses(check_url("http://meta.example/", LAB), [ip(address)], LAB)


def test_an_unresolvable_host_is_refused() -> None:
    with pytest.raises(ValidationError) as error:
        check_addresses(check_url("https://nowhere.example/", STRICT), [], STRICT)
    assert error.value.detail == "WEBHOOK_HOST_UNRESOLVED"


# ---------------------------------------------------------------- endpoints


def test_event_types_are_known_type_names_sorted_once() -> None:
    assert check_event_types([]) == ()
    assert check_event_types(["RESULTS_UPLOADED", "SUBMISSION_SUBMITTED", "RESULTS_UPLOADED"]) == (
        "RESULTS_UPLOADED", "SUBMISSION_SUBMITTED"
    )
    with pytest.raises(ValidationError) as error:
        check_event_types(["SUBMISSION_SUBMITTED", "", "#99"])
    assert "TYPE_UNSPECIFIED" in error.value.message and "#99" in error.value.message
    assert error.value.field_violations[0][0] == "event_types"


def test_descriptions_are_bounded() -> None:
    assert check_description("  LIMS  ") == "LIMS"
    with pytest.raises(ValidationError):
        check_description("x" * 501)


def test_the_previous_secret_signs_only_during_the_grace_period() -> None:
    expires = T0 + ROTATION_GRACE
    assert signing_secrets("new", "old", expires, T0) == ["new", "old"]
    assert signing_secrets("new", "old", expires, expires) == ["new"]
    assert signing_secrets("new", None, None, T0) == ["new"]
    assert secret_hint("whsec_abcdef") == "cdef"


def test_a_test_payload_is_shaped_like_an_event_and_encodes_stably() -> None:
    body = payload_for_test(event_id="test_1", organization_id="org-1", webhook_id="w-1", now=T0)
    assert body["type"] == "webhook.test" and body["id"] == "test_1" and body["organization_id"] == "org-1"
    assert encode_payload(body) == encode_payload(dict(reversed(list(body.items()))))
    assert b" " not in encode_payload({"a": 1, "b": [1, 2]})


def delivery(status: DeliveryStatus) -> Delivery:
    return Delivery(id="d", webhook_id="w", event_id="e", event_type="", status=status, attempts=1,
                    last_status_code=None, last_error="", next_attempt_at=None, last_attempt_at=None,
                    delivered_at=None, dead_at=None, created_at=T0, test=True)


def test_only_dead_or_delivered_deliveries_are_redelivered() -> None:
    check_redeliverable(delivery(DeliveryStatus.DEAD))
    check_redeliverable(delivery(DeliveryStatus.DELIVERED))
    for status in (DeliveryStatus.PENDING, DeliveryStatus.RETRYING):
        with pytest.raises(PreconditionError):
            check_redeliverable(delivery(status))
