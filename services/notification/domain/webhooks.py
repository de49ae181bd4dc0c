"""Outbound webhooks, the pure rules: signing and verifying a payload, the retry schedule, which HTTP
outcomes count as delivered, and which URLs an endpoint may have. No I/O: the sender resolves host
names and posts; the worker stores attempts; both ask this module what to do.

Signature (Stripe-like): `Molbridge-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>…]`, each v1 being
HMAC-SHA256(secret, f"{t}.{body}"). During a secret rotation the payload carries one v1 per valid secret,
so a receiver that knows either secret accepts it. A receiver refuses a timestamp more than `tolerance`
away from its clock (a replayed or forged-in-the-future request).

Retries: every outcome other than a 2xx — a network error, a timeout, any non-2xx status — is retried
with exponential backoff and full jitter (each wait capped), for 24 h from the first attempt, then the
delivery is DEAD (a person may redeliver it). We retry 4xx too, like Stripe: a receiver that answers 400
or 401 for a while (a deploy, a misconfigured secret being fixed) gets the events once it is repaired,
and a permanently broken one costs only the bounded retries. 429 and 503 with Retry-After wait at least
as long as asked.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import secrets as secrets_module
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

from services.notification.domain.vocabulary import TEST_TOPIC, DeliveryStatus, NotificationType
from services.runtime.errors import PreconditionError, ValidationError

SIGNATURE_HEADER = "Molbridge-Signature"
SIGNATURE_SCHEME = "v1"
DEFAULT_TOLERANCE_S = 300
SECRET_PREFIX = "whsec_"

RETRY_WINDOW = timedelta(hours=24)
FIRST_RETRY_S = 10.0  # the backoff's base: 10 s, 20 s, 40 s … before jitter
MAX_RETRY_WAIT_S = 3600.0  # no single wait is longer than an hour (Retry-After may ask for more)
MIN_RETRY_WAIT_S = 1.0  # full jitter may draw 0; do not hammer a failing endpoint in a loop
DELIVERY_TIMEOUT_S = 10.0  # a receiver answers within this or the attempt counts as a timeout
MAX_URL_LENGTH = 2048
MAX_RECORDED_RESPONSE_CHARS = 2000  # what the deliveries log keeps of a response body

# Cloud instance metadata: never a webhook target, whatever the settings allow.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(address) for address in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


# ---------------------------------------------------------------- signing


def generate_secret() -> str:
    """A new endpoint secret: shown to the admin once, then stored encrypted."""
    return SECRET_PREFIX + secrets_module.token_urlsafe(32)


def _as_bytes(body: bytes | str) -> bytes:
    return body.encode() if isinstance(body, str) else body


def compute_signature(secret: str, timestamp: int, body: bytes | str) -> str:
    signed = f"{timestamp}.".encode() + _as_bytes(body)
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def signature_header(body: bytes | str, secrets: Sequence[str], timestamp: int) -> str:
    """The header value for `body` signed with each of `secrets` (the current one first)."""
    if not secrets:
        raise ValueError("at least one secret is needed to sign")
    parts = [f"t={timestamp}"] + [f"{SIGNATURE_SCHEME}={compute_signature(s, timestamp, body)}" for s in secrets]
    return ",".join(parts)


class SignatureError(ValueError):
    """The request is not proven to come from Molbridge; `reason` is a stable UPPER_SNAKE word."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ParsedSignature:
    timestamp: int
    signatures: tuple[str, ...]


def parse_signature_header(header: str) -> ParsedSignature:
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            # ASCII digits only ("²".isdigit() is true), and few of them: int() and the clock arithmetic
            # must not fail on a hostile header.
            if not _is_digits(value, 18) or timestamp is not None:
                raise SignatureError("MALFORMED_HEADER", "the timestamp t= must appear once, as unix seconds")
            timestamp = int(value)
        elif key == SIGNATURE_SCHEME:
            signatures.append(value)
    if timestamp is None:
        raise SignatureError("MALFORMED_HEADER", f"{SIGNATURE_HEADER} has no timestamp t=")
    if not signatures:
        raise SignatureError("MALFORMED_HEADER", f"{SIGNATURE_HEADER} has no {SIGNATURE_SCHEME}= signature")
    return ParsedSignature(timestamp, tuple(signatures))


def _is_digits(text: str, most: int) -> bool:
    return 0 < len(text) <= most and text.isascii() and text.isdigit()


def verify(
    header: str | None,
    body: bytes | str,
    secrets: Iterable[str],
    now: datetime | float,
    tolerance: float = DEFAULT_TOLERANCE_S,
) -> int:
    """Check a received `Molbridge-Signature` against `body` with any of `secrets`; returns the signed
    timestamp. Raises SignatureError when the header is missing or malformed, the timestamp is more than
    `tolerance` seconds from `now` (either way: replay or a clock far ahead), or no signature matches.
    Signatures are compared in constant time."""
    if not header:
        raise SignatureError("MISSING_HEADER", f"no {SIGNATURE_HEADER} header")
    parsed = parse_signature_header(header)
    now_s = now.timestamp() if isinstance(now, datetime) else float(now)
    if abs(now_s - parsed.timestamp) > tolerance:
        raise SignatureError("STALE_TIMESTAMP", f"the timestamp is more than {tolerance:g} s from now")
    expected = [compute_signature(secret, parsed.timestamp, body) for secret in secrets]
    # Every pair is compared (no early exit), so the time taken says nothing about which part matched.
    matched = False
    for candidate in parsed.signatures:
        for signature in expected:
            matched |= hmac.compare_digest(candidate.encode(), signature.encode())
    if not matched:
        raise SignatureError("BAD_SIGNATURE", "no signature matches the body with a known secret")
    return parsed.timestamp


# ---------------------------------------------------------------- outcomes and schedule


@dataclass(frozen=True)
class AttemptResult:
    """What one POST gave: a status code, or an error (network, timeout, refused address)."""

    status_code: int | None = None
    error: str = ""
    retry_after: str | None = None  # the response's Retry-After header, as received
    response_body: str = ""
    duration_ms: int = 0

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    def describe(self) -> str:
        if self.status_code is not None:
            return f"HTTP {self.status_code}"
        return self.error or "no response"


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Retry-After as seconds from `now`: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def backoff_delay(attempt: int, draw: Callable[[], float]) -> float:
    """The wait after failed attempt number `attempt` (1-based): full jitter over an exponentially growing,
    capped ceiling. `draw` returns a float in [0, 1) (random.random; tests pass a fixed one)."""
    ceiling = min(MAX_RETRY_WAIT_S, FIRST_RETRY_S * 2 ** min(attempt - 1, 30))
    return max(MIN_RETRY_WAIT_S, draw() * ceiling)


@dataclass(frozen=True)
class Decision:
    status: DeliveryStatus  # DELIVERED, RETRYING or DEAD (vocabulary)
    next_attempt_at: datetime | None  # set when RETRYING


def after_attempt(
    result: AttemptResult,
    *,
    attempt: int,
    first_attempt_at: datetime,
    now: datetime,
    draw: Callable[[], float],
    window: timedelta = RETRY_WINDOW,
) -> Decision:
    """What happens to a delivery after its `attempt`-th attempt (1-based) finished at `now`.

    A 2xx: DELIVERED. Anything else: retried after the backoff (at least what a 429/503 Retry-After asks),
    until the window from the first attempt ends; the last retry is at the window's end, and a failure
    then (or later) is DEAD."""
    if result.succeeded:
        return Decision(DeliveryStatus.DELIVERED, None)
    deadline = first_attempt_at + window
    if now >= deadline:
        return Decision(DeliveryStatus.DEAD, None)
    delay = backoff_delay(attempt, draw)
    if result.status_code in (429, 503):
        asked = parse_retry_after(result.retry_after, now)
        if asked is not None:  # capped by the window: a huge Retry-After would overflow the datetime
            delay = max(delay, min(asked, window.total_seconds()))
    return Decision(DeliveryStatus.RETRYING, min(now + timedelta(seconds=delay), deadline))


# ---------------------------------------------------------------- URLs


@dataclass(frozen=True)
class UrlPolicy:
    """`allow_private`: http:// and loopback/private/link-local targets are allowed (a lab or the tests;
    off in production). Cloud metadata addresses are refused either way."""

    allow_private: bool = False


@dataclass(frozen=True)
class WebhookUrl:
    url: str
    scheme: str
    host: str  # without brackets for IPv6
    port: int


def _invalid(message: str, detail: str = "WEBHOOK_URL") -> ValidationError:
    return ValidationError(message, detail=detail, field_violations=[("url", message)])


def check_url(url: str, policy: UrlPolicy) -> WebhookUrl:
    """The URL's form: https (http only when the policy allows private targets), a host, no credentials,
    no fragment. Raises ValidationError naming `url`. The addresses are checked by `check_addresses` once
    the host is resolved (at registration and again before every attempt: DNS may change)."""
    url = url.strip()
    if not url:
        raise _invalid("a webhook URL is required")
    if len(url) > MAX_URL_LENGTH:
        raise _invalid(f"a webhook URL has at most {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 0x20 for ch in url):
        raise _invalid("a webhook URL has no spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise _invalid(f"not a valid URL: {error}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise _invalid("a webhook URL starts with https://")
    if scheme == "http" and not policy.allow_private:
        raise _invalid("a webhook URL must use https://")
    if parts.username is not None or parts.password is not None:
        raise _invalid("a webhook URL must not carry credentials (user:password@); the signature authenticates")
    if parts.fragment:
        raise _invalid("a webhook URL has no #fragment")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise _invalid("a webhook URL names a host")
    return WebhookUrl(url=url, scheme=scheme, host=host, port=port or (443 if scheme == "https" else 80))


def literal_address(host: str) -> IpAddress | None:
    """The host as an IP address when it is written as one (no resolution needed)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _effective(address: IpAddress) -> IpAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def refused_address(address: IpAddress, policy: UrlPolicy) -> str | None:
    """Why a target address is refused, or None when it may be posted to."""
    address = _effective(address)
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_global:
        return None
    if address.is_multicast or address.is_unspecified:
        return "a multicast or unspecified address"
    if policy.allow_private:
        return None
    return "a private, loopback or link-local address"


def check_addresses(target: WebhookUrl, addresses: Iterable[IpAddress], policy: UrlPolicy) -> None:
    """Every address the host resolves to must be allowed (an attacker controls which one is used), and
    plain http is only for non-public targets (a lab on loopback); raises ValidationError."""
    resolved = list(addresses)
    if not resolved:
        raise _invalid(f"the host {target.host} does not resolve", "WEBHOOK_HOST_UNRESOLVED")
    for address in resolved:
        reason = refused_address(address, policy)
        if reason:
            raise _invalid(f"the host {target.host} resolves to {reason} ({address})", "WEBHOOK_ADDRESS_REFUSED")
    if target.scheme == "http" and any(_effective(a).is_global for a in resolved):
        raise _invalid("a webhook URL on a public address must use https://")


# ---------------------------------------------------------------- endpoints, payloads, rotation

ROTATION_GRACE = timedelta(hours=24)  # after a rotation the previous secret still signs (both v1 sent)
MAX_DESCRIPTION_LENGTH = 500
TEST_MESSAGE = "A test event from Molbridge: your endpoint receives and verifies webhooks."


def secret_hint(secret: str) -> str:
    """The last four characters, to tell secrets apart in a listing."""
    return secret[-4:]


def signing_secrets(
    current: str, previous: str | None, previous_expires_at: datetime | None, now: datetime
) -> list[str]:
    """The secrets a payload is signed with now: the current one, and the previous one during the grace
    period after a rotation (the receiver may still know only that one)."""
    if previous and previous_expires_at is not None and now < previous_expires_at:
        return [current, previous]
    return [current]


def check_description(description: str) -> str:
    description = description.strip()
    if len(description) > MAX_DESCRIPTION_LENGTH:
        raise ValidationError(
            f"A description has at most {MAX_DESCRIPTION_LENGTH} characters",
            field_violations=[("description", f"at most {MAX_DESCRIPTION_LENGTH} characters")],
        )
    return description


def payload_for_test(*, event_id: str, organization_id: str, webhook_id: str, now: datetime) -> dict[str, object]:
    """SendWebhookTest's body, shaped like every event's (notices.webhook_payload): `id` is the event's id
    (the same on every retry, so a receiver drops duplicates by it), `type` the dotted topic."""
    return {
        "id": event_id,
        "type": TEST_TOPIC,
        "occurred_at": now.isoformat(),
        "organization_id": organization_id,
        "data": {"webhook_id": webhook_id, "message": TEST_MESSAGE},
    }


def encode_payload(body: dict[str, object]) -> bytes:
    """The exact bytes signed and sent (compact, keys sorted: the same payload gives the same bytes)."""
    return json.dumps(body, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


@dataclass
class Webhook:
    """An organization's endpoint, as the API shows it (the secrets stay in the store, encrypted)."""

    id: str
    organization_id: str
    url: str
    event_types: tuple[str, ...]  # NotificationType names; empty: every type
    description: str
    active: bool
    secret_hint: str
    created_by: str
    created_at: datetime
    updated_at: datetime
    secret_rotated_at: datetime | None = None


@dataclass(frozen=True)
class Delivery:
    """One event's delivery to one endpoint, as the delivery log shows it."""

    id: str
    webhook_id: str
    event_id: str
    event_type: str  # NotificationType name, "" for a test
    status: DeliveryStatus
    attempts: int
    last_status_code: int | None
    last_error: str
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    delivered_at: datetime | None
    dead_at: datetime | None
    created_at: datetime
    test: bool


REDELIVERABLE = frozenset({DeliveryStatus.DEAD, DeliveryStatus.DELIVERED})


def check_redeliverable(delivery: Delivery) -> None:
    """A person sends again what was given up (DEAD) or what the receiver lost (DELIVERED); one still
    being tried is left to its schedule."""
    if delivery.status not in REDELIVERABLE:
        raise PreconditionError(
            f"A {delivery.status} delivery is still being tried; only DEAD or DELIVERED ones are redelivered",
            detail="DELIVERY_STATE",
        )


def check_event_types(names: Sequence[str]) -> tuple[str, ...]:
    """The NotificationType names an endpoint subscribes to (sorted, unique); empty means every type."""
    known = {kind.value for kind in NotificationType}
    unknown = [name or "TYPE_UNSPECIFIED" for name in names if name not in known]
    if unknown:
        raise ValidationError(
            f"Unknown event types: {', '.join(unknown)}",
            field_violations=[("event_types", f"one of {', '.join(sorted(known))}")],
        )
    return tuple(sorted(set(names)))
