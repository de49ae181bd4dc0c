"""The HTTP webhook sender against the real local receiver: signed posts verify, and every failure
(down, 5xx with Retry-After, slow, redirect, refused address) is an attempt result, never an exception."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from services.notification.adapters.webhook_sender import HttpWebhookSender
from services.notification.domain.webhooks import SIGNATURE_HEADER, UrlPolicy, signature_header
from services.runtime.errors import ValidationError
from tests.webhook_receiver import Receivers

BODY = b'{"id":"evt_1","type":"test"}'
SECRET = "whsec_test-secret"


@pytest.fixture
def receivers() -> Iterator[Receivers]:
    started = Receivers()
    try:
        yield started
    finally:
        started.close()


def signed() -> dict[str, str]:
    return {SIGNATURE_HEADER: signature_header(BODY, [SECRET], int(time.time()))}


async def test_a_signed_post_is_received_and_verified(receivers: Receivers) -> None:
    receiver = receivers.new()
    receiver.secrets = [SECRET]
    sender = HttpWebhookSender(UrlPolicy(allow_private=True))
    try:
        result = await sender.post(receiver.url, BODY, signed())
        assert result.succeeded and result.status_code == 204
        [received] = await receiver.wait_for(1)
        assert received.body == BODY and received.json()["id"] == "evt_1"
        assert received.headers["Content-Type"] == "application/json"
        assert received.headers["Host"] == f"127.0.0.1:{receiver.port}"

        receiver.secrets = ["whsec_another"]
        refused = await sender.post(receiver.url, BODY, signed())
        assert refused.status_code == 401 and receiver.received[-1].refusal == "BAD_SIGNATURE"
    finally:
        await sender.close()


async def test_failures_are_results(receivers: Receivers) -> None:
    receiver = receivers.new()
    receiver.secrets = [SECRET]
    sender = HttpWebhookSender(UrlPolicy(allow_private=True), timeout=0.5)
    try:
        receiver.fail(1, status=503, retry_after="42")
        unavailable = await sender.post(receiver.url, BODY, signed())
        assert (unavailable.status_code, unavailable.retry_after, unavailable.succeeded) == (503, "42", False)

        receiver.slow(2.0)
        slow = await sender.post(receiver.url, BODY, signed())
        assert slow.status_code is None and "timeout" in slow.error
        receiver.slow(0)

        receiver.down()
        down = await sender.post(receiver.url, BODY, signed())
        assert down.status_code is None and down.error
        receiver.up()
        assert (await sender.post(receiver.url, BODY, signed())).succeeded
    finally:
        await sender.close()


async def test_private_targets_are_refused_by_the_strict_policy(receivers: Receivers) -> None:
    receiver = receivers.new()
    sender = HttpWebhookSender(UrlPolicy(allow_private=False))
    try:
        https_local = receiver.url.replace("http://", "https://")
        result = await sender.post(https_local, BODY, signed())
        assert result.status_code is None and "refused" in result.error
        assert receiver.received == []
        with pytest.raises(ValidationError):
            await sender.check(https_local)
        with pytest.raises(ValidationError):
            await sender.check("https://localhost/hook")
    finally:
        await sender.close()
