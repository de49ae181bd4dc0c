"""Outgoing email: SMTP when SMTP_URL is set (smtp://user:pass@host:port, smtps:// for TLS), else .eml
files in a local outbox folder so a developer can read what would have been sent."""

from __future__ import annotations

import asyncio
import smtplib
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

from services.runtime.errors import IntegrationError

SMTP_TIMEOUT_S = 10


class EmailSender(Protocol):
    async def send(self, message: EmailMessage) -> None: ...


class SmtpSender:
    def __init__(self, url: str) -> None:
        parsed = urlparse(url)
        self._tls = parsed.scheme == "smtps"
        self._host = parsed.hostname or "127.0.0.1"
        self._port = parsed.port or (465 if self._tls else 25)
        self._user = unquote(parsed.username or "")
        self._password = unquote(parsed.password or "")

    def _send_blocking(self, message: EmailMessage) -> None:
        smtp_class = smtplib.SMTP_SSL if self._tls else smtplib.SMTP
        with smtp_class(self._host, self._port, timeout=SMTP_TIMEOUT_S) as smtp:
            if self._user:
                smtp.login(self._user, self._password)
            smtp.send_message(message)

    async def send(self, message: EmailMessage) -> None:
        try:
            await asyncio.to_thread(self._send_blocking, message)
        except (OSError, smtplib.SMTPException) as exc:
            reason = type(exc).__name__
            raise IntegrationError(f"Could not send email through SMTP ({reason}); try again later") from exc


class FolderSender:
    def __init__(self, folder: Path) -> None:
        self._folder = folder

    async def send(self, message: EmailMessage) -> None:
        self._folder.mkdir(parents=True, exist_ok=True)
        path = self._folder / f"{uuid.uuid4().hex}.eml"
        path.write_bytes(bytes(message))


def make_email_sender(smtp_url: str, data_dir: Path) -> EmailSender:
    return SmtpSender(smtp_url) if smtp_url else FolderSender(data_dir / "outbox" / "email")
