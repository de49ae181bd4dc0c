"""JSON log lines carry the ids an operator needs and never a secret."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from services.runtime.context import request_id_var
from services.runtime.logs import REDACTED, configure_logging, redact

JWT = "eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIn0.eyJzdWIiOiJ1c2VyLTEifQ.c2lnbmF0dXJlLWJ5dGVz"


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    stream = io.StringIO()
    configure_logging("identity", "DEBUG", stream=stream)
    yield stream
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


def entries(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_line_is_one_json_object_with_trace_and_request_ids(log_lines: io.StringIO) -> None:
    tracer = TracerProvider(shutdown_on_exit=False).get_tracer("test")
    token = request_id_var.set("req-123")
    try:
        with tracer.start_as_current_span("rpc") as span:
            logging.getLogger("molbridge.rpc").info("user %s logged in", "u-1", extra={"user_id": "u-1"})
    finally:
        request_id_var.reset(token)
    logging.getLogger("other").debug("outside a request")

    inside, outside = entries(log_lines)
    ctx = span.get_span_context()
    assert inside == {
        "ts": inside["ts"],
        "level": "INFO",
        "service": "identity",
        "logger": "molbridge.rpc",
        "message": "user u-1 logged in",
        "trace_id": format(ctx.trace_id, "032x"),
        "span_id": format(ctx.span_id, "016x"),
        "request_id": "req-123",
        "user_id": "u-1",
    }
    assert inside["ts"].endswith("+00:00")
    assert (outside["level"], outside["trace_id"], outside["span_id"], outside["request_id"]) == (
        "DEBUG",
        "",
        "",
        "",
    )


def test_exceptions_go_into_a_field(log_lines: io.StringIO) -> None:
    try:
        raise RuntimeError("database went away")
    except RuntimeError:
        logging.getLogger("molbridge.rpc").exception("unhandled error in %s", "/x.v1.XService/Get")

    (entry,) = entries(log_lines)
    assert entry["level"] == "ERROR"
    assert entry["message"] == "unhandled error in /x.v1.XService/Get"
    assert entry["exc_info"].startswith("Traceback (most recent call last):")
    assert entry["exc_info"].endswith("RuntimeError: database went away")


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("login failed: password=Hunter2-Hunter2!", "Hunter2-Hunter2!"),
        ('body {"email": "a@b.c", "password": "Sup3r Secret!"}', "Sup3r Secret!"),
        ("{'new_password': 'N3w-Passw0rd!', 'current_password': 'Old-Passw0rd!'}", "Passw0rd"),
        ("metadata (('authorization', 'Bearer abc.def.ghi'),)", "abc.def.ghi"),
        ("authorization: Bearer " + JWT, JWT),
        ("Authorization=Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA"),
        ("x-api-key: mbk_live_4f9a8b7c6d5e", "4f9a8b7c6d5e"),
        ("partner sent mbk_4f9a8b7c6d5e in the url", "4f9a8b7c6d5e"),
        ("refresh_token=rt_93b1c0ffee&grant=1", "rt_93b1c0ffee"),
        ('{"refresh_token":"rt_93b1c0ffee"}', "rt_93b1c0ffee"),
        ("token " + JWT + " rejected", JWT),
        ("mfa_token=mfa-7d2e reset token: abc123XYZ", "abc123XYZ"),
        ("[SQL: INSERT ...] [parameters: {'hash': '$argon2id$v=19$abc'}]", "argon2id"),
    ],
)
def test_secrets_are_redacted(text: str, secret: str) -> None:
    redacted = redact(text)
    assert secret not in redacted
    assert REDACTED in redacted


def test_ordinary_text_is_kept() -> None:
    text = "token_type=bearer expires_in=900 status_code=16 user u-1 has 3 tokens; password policy: 12 chars"
    assert redact(text) == text


def test_secrets_never_reach_the_log(log_lines: io.StringIO) -> None:
    log = logging.getLogger("molbridge.identity")
    log.warning("login for %s with password=%s", "a@b.c", "Hunter2-Hunter2!", extra={"header": "Bearer " + JWT})
    try:
        raise ValueError("bad refresh_token=rt_93b1c0ffee")
    except ValueError:
        log.exception("refresh failed")

    output = log_lines.getvalue()
    for secret in ("Hunter2-Hunter2!", JWT, "rt_93b1c0ffee"):
        assert secret not in output
    first, second = entries(log_lines)
    assert first["message"] == f"login for a@b.c with password={REDACTED}"
    assert first["header"] == f"Bearer {REDACTED}"
    assert second["exc_info"].endswith(f"ValueError: bad refresh_token={REDACTED}")
