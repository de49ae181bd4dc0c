"""Connect webhook rules: the HMAC check against every configured secret and every signature header,
and the reading of JSON SIM messages (services/document/domain/docusign_connect.py)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from services.document.domain.docusign_connect import (
    connect_event_key,
    parse_connect_event,
    verify_connect_signature,
)
from services.document.domain.vocabulary import EnvelopeStatus, SignerStatus
from services.runtime.errors import ValidationError

ENVELOPE_ID = "93be49ab-0000-4000-8000-00000000e001"


def message(event: str = "envelope-completed", **data: Any) -> dict[str, Any]:
    return {
        "event": event,
        "apiVersion": "v2.1",
        "uri": f"/restapi/v2.1/accounts/acc/envelopes/{ENVELOPE_ID}",
        "retryCount": 0,
        "configurationId": 10482,
        "generatedDateTime": "2026-12-03T15:30:00.1234567Z",
        "data": {"accountId": "acc", "userId": "user", "envelopeId": ENVELOPE_ID, **data},
    }


def body_of(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


def signed(body: bytes, secret: str) -> str:
    # Computed here independently of the module: HMAC-SHA256 of the raw body, base64.
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


BODY = body_of(message())


def test_a_signature_under_the_second_of_two_secrets_verifies():
    headers = {"X-DocuSign-Signature-1": signed(BODY, "new-secret")}
    assert verify_connect_signature(BODY, headers, ["old-secret", "new-secret"])
    assert verify_connect_signature(BODY, headers, [b"old-secret", b"new-secret"])


def test_any_of_several_signature_headers_may_match_and_names_are_case_insensitive():
    headers = {
        "x-docusign-signature-1": signed(BODY, "secret-of-another-listener"),
        "X-DOCUSIGN-SIGNATURE-2": signed(BODY, "our-secret"),
    }
    assert verify_connect_signature(BODY, headers, ["our-secret"])


def test_a_forged_or_altered_call_does_not_verify():
    headers = {"X-DocuSign-Signature-1": signed(BODY, "guessed-secret")}
    assert not verify_connect_signature(BODY, headers, ["our-secret"])

    genuine = {"X-DocuSign-Signature-1": signed(BODY, "our-secret")}
    assert not verify_connect_signature(BODY + b" ", genuine, ["our-secret"])
    assert not verify_connect_signature(BODY, {"X-DocuSign-Signature-1": "not base64 ☃"}, ["our-secret"])


def test_a_missing_header_or_no_secret_does_not_verify():
    assert not verify_connect_signature(BODY, {"Content-Type": "application/json"}, ["our-secret"])
    assert not verify_connect_signature(BODY, {"X-DocuSign-Signature": signed(BODY, "our-secret")}, ["our-secret"])
    assert not verify_connect_signature(BODY, {"X-DocuSign-Signature-1": signed(BODY, "")}, [])
    assert not verify_connect_signature(BODY, {"X-DocuSign-Signature-1": signed(BODY, "")}, [""])


def test_an_envelope_event_is_read_with_its_summary():
    payload = message(
        envelopeSummary={
            "status": "completed",
            "recipients": {
                "signers": [
                    {"recipientId": "1", "status": "completed", "signedDateTime": "2026-12-03T15:29:01.5000000Z"},
                    {"recipientId": "2", "status": "declined", "declinedReason": "wrong party"},
                    {"recipientId": "3", "status": "faxpending"},
                ]
            },
        }
    )
    event = parse_connect_event(body_of(payload))
    assert (event.event, event.envelope_id, event.account_id) == ("envelope-completed", ENVELOPE_ID, "acc")
    assert event.is_envelope_event
    assert event.envelope_status is EnvelopeStatus.COMPLETED
    assert event.generated_at == datetime(2026, 12, 3, 15, 30, 0, 123456, tzinfo=UTC)
    first, second, third = event.recipients
    assert (first.status, first.signed_at) == (
        SignerStatus.SIGNED,
        datetime(2026, 12, 3, 15, 29, 1, 500000, tzinfo=UTC),
    )
    assert (second.status, second.declined_reason) == (SignerStatus.DECLINED, "wrong party")
    assert third.status is None  # a status we do not track is not guessed


def test_a_recipient_event_without_summary_names_its_recipient():
    event = parse_connect_event(body_of(message("recipient-completed", recipientId="2")))
    assert (event.recipient_id, event.envelope_status, event.recipients) == ("2", None, ())
    assert not event.is_envelope_event
    # Without a summary, an envelope event's name gives the status.
    assert parse_connect_event(body_of(message("envelope-voided"))).envelope_status is EnvelopeStatus.VOIDED


def test_the_event_key_is_stable_across_redeliveries_and_differs_between_events():
    first = parse_connect_event(BODY)
    redelivered = message()
    redelivered["retryCount"] = 3  # DocuSign's retry of the same event
    assert parse_connect_event(body_of(redelivered)).event_key == first.event_key
    assert first.event_key == connect_event_key(ENVELOPE_ID, "envelope-completed", "", "2026-12-03T15:30:00.1234567Z")

    later = message()
    later["generatedDateTime"] = "2026-12-03T15:30:00.1234568Z"
    other_recipient = message("recipient-completed", recipientId="2")
    keys = {
        first.event_key,
        parse_connect_event(body_of(later)).event_key,
        parse_connect_event(body_of(message("envelope-sent"))).event_key,
        parse_connect_event(body_of(other_recipient)).event_key,
    }
    assert len(keys) == 4


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"\xff\xfe",
        b"[]",
        body_of({"event": "envelope-completed", "generatedDateTime": "2026-12-03T15:30:00Z"}),
        body_of(message(envelopeId="")),
        body_of({**message(), "event": ""}),
        body_of({**message(), "generatedDateTime": "yesterday"}),
        body_of(message(envelopeId="x" * 101)),
        body_of(message(envelopeId=["not", "text"])),
    ],
)
def test_a_malformed_message_is_a_validation_error(body: bytes):
    with pytest.raises(ValidationError):
        parse_connect_event(body)
