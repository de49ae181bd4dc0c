"""Outgoing email: SMTP when SMTP_URL is set, else .eml files in a local outbox folder so a developer can
read what would have been sent.

- `smtp://[user:pass@]host[:port]` (port 25 by default; 587 for a submission relay): STARTTLS whenever
  the server offers it. Credentials are never sent in clear: without STARTTLS, AUTH is refused unless
  SMTP_ALLOW_PLAINTEXT_AUTH=1 (a relay on loopback, say).
- `smtps://[user:pass@]host[:port]` (port 465 by default): TLS from the first byte.
- The server certificate is verified against the system CAs, or SMTP_CA_FILE (a PEM bundle; e.g. a
  private CA); SMTP_VERIFY=0 turns verification off (tests and labs only).
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

from services.runtime.errors import IntegrationError
from services.runtime.settings import Settings

SMTP_TIMEOUT_S = 10


class EmailSender(Protocol):
    async def send(self, message: EmailMessage) -> None: ...


class PlaintextAuthRefused(smtplib.SMTPException):
    """The server offers no STARTTLS and credentials would travel in clear."""


class SmtpSender:
    def __init__(
        self,
        url: str,
        *,
        ca_file: Path | None = None,
        verify: bool = True,
        allow_plaintext_auth: bool = False,
        timeout: float = SMTP_TIMEOUT_S,
    ) -> None:
        parsed = urlparse(url)
        if parsed.scheme not in ("smtp", "smtps"):
            raise ValueError(f"SMTP_URL must start with smtp:// or smtps://, got {parsed.scheme or url!r}")
        self._implicit_tls = parsed.scheme == "smtps"
        self._host = parsed.hostname or "127.0.0.1"
        self._port = parsed.port or (465 if self._implicit_tls else 25)
        self._user = unquote(parsed.username or "")
        self._password = unquote(parsed.password or "")
        self._allow_plaintext_auth = allow_plaintext_auth
        self._timeout = timeout
        self._tls = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        if not verify:
            self._tls.check_hostname = False
            self._tls.verify_mode = ssl.CERT_NONE

    def _send_blocking(self, message: EmailMessage) -> None:
        smtp: smtplib.SMTP
        if self._implicit_tls:
            smtp = smtplib.SMTP_SSL(self._host, self._port, timeout=self._timeout, context=self._tls)
        else:
            smtp = smtplib.SMTP(self._host, self._port, timeout=self._timeout)
        with smtp:
            smtp.ehlo()
            if not self._implicit_tls:
                if smtp.has_extn("starttls"):
                    smtp.starttls(context=self._tls)
                    smtp.ehlo()  # the capabilities (AUTH among them) may differ once encrypted
                elif self._user and not self._allow_plaintext_auth:
                    raise PlaintextAuthRefused("the server offers no STARTTLS; not sending credentials in clear")
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


def email_outbox(data_dir: Path) -> Path:
    """Where mails go when no SMTP_URL is set."""
    return data_dir / "outbox" / "email"


def make_email_sender(settings: Settings) -> EmailSender:
    if not settings.smtp_url:
        return FolderSender(email_outbox(settings.data_dir))
    return SmtpSender(
        settings.smtp_url,
        ca_file=settings.smtp_ca_file,
        verify=settings.smtp_verify,
        allow_plaintext_auth=settings.smtp_allow_plaintext_auth,
    )
