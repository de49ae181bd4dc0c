"""JSON-lines logging to stderr, carrying the trace and request ids, with secrets redacted."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from services.runtime.context import request_id_var
from services.runtime.telemetry import current_span_id, current_trace_id

REDACTED = "[REDACTED]"

# Attributes every LogRecord has; anything else came in through `extra=` and is logged as a field.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}

_SECRET_KEY = r"[\w-]*(?:password|passwd|secret|token|api[_-]?key|authorization|otp)"
_SECRET_VALUE = r"""(?:(?:bearer|basic)\s+)?(?:"[^"]*"|'[^']*'|[^\s,;&)}\]"']+)"""
_SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # password=…, "refresh_token": "…", authorization: Bearer …, ('x-api-key', '…') (a metadata tuple)
    (
        re.compile(
            rf"""(?ix)
            (?P<key>["']?\b{_SECRET_KEY}["']?)
            (?P<sep>\s*[:=]\s*|(?<=["'])\s*,\s*(?=["']))
            {_SECRET_VALUE}"""
        ),
        rf"\g<key>\g<sep>{REDACTED}",
    ),
    # Credentials that give themselves away wherever they appear. After "bearer": an RFC 7235 token68
    # (the lookahead keeps "token_type=bearer expires_in=900" intact).
    (re.compile(r"(?i)\b(bearer|basic)\s+(?!\[REDACTED\])[A-Za-z0-9._~+/-]{8,}=*(?![\w=])"), rf"\1 {REDACTED}"),
    (re.compile(r"\bmbk_[A-Za-z0-9_-]+"), REDACTED),  # our API keys
    (re.compile(r"\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), REDACTED),  # JWTs
    # SQLAlchemy error messages quote the statement's parameters on one line.
    (re.compile(r"\[parameters: [^\n]*"), f"[parameters: {REDACTED}]"),
)


def redact(text: str) -> str:
    """`text` with anything that looks like a password, token or key replaced by [REDACTED]."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """Redacts the message, string `extra` fields and the exception text of every record. Attached to
    the handler, so records from every logger pass through it."""

    _exception_formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), None
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and isinstance(value, str):
                setattr(record, key, redact(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = self._exception_formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, service, logger, message, trace_id, span_id, request_id,
    then any `extra` fields and exc_info."""

    def __init__(self, service_name: str) -> None:
        super().__init__()
        self.service_name = service_name

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self.service_name,
            "logger": record.name,
            "message": record.getMessage(),
            "trace_id": current_trace_id(),
            "span_id": current_span_id(),
            "request_id": request_id_var.get(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_") and key not in entry:
                entry[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class _MolbridgeHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler configure_logging installed, so a second call replaces it."""


def configure_logging(service_name: str, level: str = "INFO", stream: TextIO | None = None) -> None:
    """Route every logger to JSON lines on stderr (or `stream`) at `level`."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _MolbridgeHandler)]:
        root.removeHandler(handler)
    handler = _MolbridgeHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter(service_name))
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    root.setLevel(level.upper())
