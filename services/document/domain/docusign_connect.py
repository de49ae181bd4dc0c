"""DocuSign's words and its Connect webhooks (JSON SIM format), as pure functions: no I/O.

A Connect call is trusted only when `verify_connect_signature` accepts it: DocuSign signs the raw body
with HMAC-SHA256 under each of the account's Connect secrets (up to n at once, to rotate them) and
sends the base64 digests as X-DocuSign-Signature-1..n. Verify the bytes exactly as received, before
any JSON parsing.

Replay: a valid signature does not make a call fresh (a captured call verifies forever, and DocuSign
itself redelivers on failure with the same payload). The caller keeps the `event_key` of every event
it applied, in the same transaction as the change, and ignores an event whose key it has seen: each
envelope event is applied at most once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.document.domain.vocabulary import EnvelopeStatus, SignerStatus
from services.runtime.errors import ValidationError

SIGNATURE_HEADER_PREFIX = "x-docusign-signature-"

# DocuSign's envelope statuses (lower case on the wire) in our words. "created" is a draft.
ENVELOPE_STATUSES: Mapping[str, EnvelopeStatus] = {
    "created": EnvelopeStatus.CREATED,
    "sent": EnvelopeStatus.SENT,
    "delivered": EnvelopeStatus.DELIVERED,
    "signed": EnvelopeStatus.SIGNED,
    "completed": EnvelopeStatus.COMPLETED,
    "declined": EnvelopeStatus.DECLINED,
    "voided": EnvelopeStatus.VOIDED,
    "expired": EnvelopeStatus.EXPIRED,
}

# A recipient is "created" while an earlier routing order is still signing; "completed" is DocuSign's
# word for a signer who signed; "autoresponded" means the notification bounced: still their turn.
SIGNER_STATUSES: Mapping[str, SignerStatus] = {
    "created": SignerStatus.WAITING,
    "sent": SignerStatus.SENT,
    "autoresponded": SignerStatus.SENT,
    "delivered": SignerStatus.DELIVERED,
    "signed": SignerStatus.SIGNED,
    "completed": SignerStatus.SIGNED,
    "declined": SignerStatus.DECLINED,
}


def envelope_status_of(word: str) -> EnvelopeStatus | None:
    """Our status for a DocuSign envelope status, None for one we do not track (e.g. "deleted")."""
    return ENVELOPE_STATUSES.get(word.strip().lower())


def signer_status_of(word: str) -> SignerStatus | None:
    return SIGNER_STATUSES.get(word.strip().lower())


def parse_docusign_time(value: str) -> datetime | None:
    """DocuSign's timestamps ("2026-12-03T15:30:00.1234567Z": up to 7 fractional digits); None when
    empty or unreadable."""
    text = value.strip()
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def connect_signature(body: bytes, secret: bytes | str) -> str:
    """The X-DocuSign-Signature-n value DocuSign computes for `body` under `secret`."""
    key = secret.encode() if isinstance(secret, str) else secret
    return base64.b64encode(hmac.new(key, body, hashlib.sha256).digest()).decode("ascii")


def verify_connect_signature(body: bytes, headers: Mapping[str, str], secrets: Sequence[bytes | str]) -> bool:
    """True when one of the X-DocuSign-Signature-n headers is the HMAC of `body` under one of `secrets`
    (compared in constant time). False without a secret or without a signature header."""
    signatures = [
        value.strip().encode("utf-8", "replace")
        for name, value in headers.items()
        if name.lower().startswith(SIGNATURE_HEADER_PREFIX) and name[len(SIGNATURE_HEADER_PREFIX) :].isdigit()
    ]
    expected = [connect_signature(body, secret).encode("ascii") for secret in secrets if secret]
    matched = False
    for signature in signatures:
        for digest in expected:
            # No early exit: the time taken does not tell which secret or header matched.
            matched |= hmac.compare_digest(signature, digest)
    return matched


@dataclass(frozen=True)
class ConnectRecipient:
    recipient_id: str
    status: SignerStatus | None  # None: a DocuSign status we do not track
    signed_at: datetime | None = None
    declined_reason: str = ""


@dataclass(frozen=True)
class ConnectEvent:
    event: str  # DocuSign's event name, e.g. "envelope-completed", "recipient-completed"
    envelope_id: str
    generated_at: datetime
    account_id: str = ""
    recipient_id: str = ""  # the recipient a recipient-* event is about
    envelope_status: EnvelopeStatus | None = None  # from the envelope summary, else the envelope-* event
    recipients: tuple[ConnectRecipient, ...] = ()  # when the configuration includes the summary
    event_key: str = ""  # stable across DocuSign's redeliveries of this event: apply once per key

    @property
    def is_envelope_event(self) -> bool:
        return self.event.startswith("envelope-")


MAX_ID_LENGTH = 100


def parse_connect_event(body: bytes) -> ConnectEvent:
    """Reads a JSON SIM Connect message; raises ValidationError when it is not one."""
    try:
        message = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValidationError(f"the Connect message is not JSON: {error}") from None
    if not isinstance(message, dict):
        raise ValidationError("the Connect message is not a JSON object")
    data = message.get("data")
    if not isinstance(data, dict):
        raise ValidationError("the Connect message has no data object", field_violations=[("data", "required")])

    event = _text(message, "event").lower()
    envelope_id = _text(data, "envelopeId")
    generated = _text(message, "generatedDateTime")
    violations = [
        (name, "required")
        for name, value in (("event", event), ("data.envelopeId", envelope_id), ("generatedDateTime", generated))
        if not value
    ]
    if violations:
        raise ValidationError("the Connect message misses required fields", field_violations=violations)
    if len(envelope_id) > MAX_ID_LENGTH:
        raise ValidationError(
            "the Connect message's envelope id is too long",
            field_violations=[("data.envelopeId", f"at most {MAX_ID_LENGTH} characters")],
        )
    generated_at = parse_docusign_time(generated)
    if generated_at is None:
        raise ValidationError(
            "the Connect message's generatedDateTime is not a timestamp",
            field_violations=[("generatedDateTime", "expected an ISO 8601 timestamp")],
        )

    summary = data.get("envelopeSummary")
    summary = summary if isinstance(summary, dict) else {}
    status_word = _text(summary, "status") or (event.removeprefix("envelope-") if event.startswith("envelope-") else "")
    recipient_id = _text(data, "recipientId")
    return ConnectEvent(
        event=event,
        envelope_id=envelope_id,
        generated_at=generated_at,
        account_id=_text(data, "accountId"),
        recipient_id=recipient_id,
        envelope_status=envelope_status_of(status_word) if status_word else None,
        recipients=_summary_signers(summary),
        event_key=connect_event_key(envelope_id, event, recipient_id, generated),
    )


def connect_event_key(envelope_id: str, event: str, recipient_id: str, generated_date_time: str) -> str:
    """SHA-256 (hex) of what identifies one event. DocuSign redelivers an event with the same
    generatedDateTime (only retryCount changes), so a redelivery has the same key."""
    identity = "\x1f".join((envelope_id, event, recipient_id, generated_date_time))
    return hashlib.sha256(identity.encode()).hexdigest()


def _summary_signers(summary: Mapping[str, Any]) -> tuple[ConnectRecipient, ...]:
    recipients = summary.get("recipients")
    signers = recipients.get("signers") if isinstance(recipients, dict) else None
    if not isinstance(signers, list):
        return ()
    return tuple(
        ConnectRecipient(
            recipient_id=_text(signer, "recipientId"),
            status=signer_status_of(_text(signer, "status")),
            signed_at=parse_docusign_time(_text(signer, "signedDateTime")),
            declined_reason=_text(signer, "declinedReason"),
        )
        for signer in signers
        if isinstance(signer, dict) and _text(signer, "recipientId")
    )


def _text(mapping: Mapping[str, Any], key: str) -> str:
    value = mapping.get(key)
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return ""
