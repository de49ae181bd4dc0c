"""The email adapter against a real aiosmtpd listener with a self-signed certificate made here:
STARTTLS on smtp://, implicit TLS on smtps://, no credentials in clear, and the .eml outbox default."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from services.runtime.email import FolderSender, SmtpSender, email_outbox, make_email_sender
from services.runtime.errors import IntegrationError
from services.runtime.settings import Settings
from stack.ports import free_port
from tests.tls import write_self_signed_certificate

USER, PASSWORD = "relay-user", "s3cret:with/odd@chars"
CREDENTIALS = f"{USER}:{quote(PASSWORD, safe='')}"  # as they appear in SMTP_URL


def encrypted(server: Any, session: Any) -> bool:
    """STARTTLS sets session.ssl; implicit TLS shows on the transport."""
    return session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None


class Mailbox:
    """aiosmtpd handler and authenticator: keeps what arrived, whether it came over TLS, and logins."""

    def __init__(self) -> None:
        self.messages: list[tuple[EmailMessage, bool]] = []
        self.logins: list[tuple[str, str, bool]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content, policy=policy.default)
        self.messages.append((message, encrypted(server, session)))  # type: ignore[arg-type]
        return "250 OK"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        assert isinstance(data, LoginPassword)
        login, password = data.login.decode(), data.password.decode()
        self.logins.append((login, password, encrypted(server, session)))
        return AuthResult(success=(login, password) == (USER, PASSWORD))


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (cert PEM, key PEM)."""
    folder = tmp_path_factory.mktemp("smtp-tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    write_self_signed_certificate(cert_path, key_path, "molbridge test smtp")
    return cert_path, key_path


def server_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


def listen(mailbox: Mailbox, **options: Any) -> Iterator[int]:
    port = free_port()
    controller = Controller(
        mailbox, hostname="127.0.0.1", port=port, authenticator=mailbox.authenticate, **options
    )
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


def letter(to: str = "someone@example.test") -> EmailMessage:
    message = EmailMessage()
    message["From"] = "noreply@molbridge.local"
    message["To"] = to
    message["Subject"] = "Reset your password"
    message.set_content("Follow the link.")
    return message


async def test_smtp_upgrades_with_starttls_before_sending_credentials(certificate: tuple[Path, Path]) -> None:
    mailbox = Mailbox()
    for port in listen(mailbox, tls_context=server_tls(certificate), require_starttls=True, auth_require_tls=True):
        sender = SmtpSender(f"smtp://{CREDENTIALS}@127.0.0.1:{port}", ca_file=certificate[0])
        await sender.send(letter())
    assert mailbox.logins == [(USER, PASSWORD, True)], "credentials only inside TLS"
    [(message, over_tls)] = mailbox.messages
    assert over_tls and message["Subject"] == "Reset your password"


async def test_smtps_speaks_tls_from_the_first_byte(certificate: tuple[Path, Path]) -> None:
    mailbox = Mailbox()
    # aiosmtpd only counts STARTTLS for auth_require_tls; implicit TLS is checked through session.ssl below.
    for port in listen(mailbox, ssl_context=server_tls(certificate), auth_require_tls=False):
        settings = Settings.from_env(
            "identity",
            {"SMTP_URL": f"smtps://{CREDENTIALS}@127.0.0.1:{port}",
             "SMTP_CA_FILE": str(certificate[0])},
        )
        await make_email_sender(settings).send(letter("smtps@example.test"))
    assert mailbox.logins == [(USER, PASSWORD, True)]
    [(message, over_tls)] = mailbox.messages
    assert over_tls and message["To"] == "smtps@example.test"


async def test_an_untrusted_certificate_is_refused_unless_verification_is_off(certificate: tuple[Path, Path]) -> None:
    mailbox = Mailbox()
    for port in listen(mailbox, tls_context=server_tls(certificate), require_starttls=True):
        with pytest.raises(IntegrationError):
            await SmtpSender(f"smtp://{CREDENTIALS}@127.0.0.1:{port}").send(letter())
        assert mailbox.logins == [] and mailbox.messages == []
        await SmtpSender(f"smtp://127.0.0.1:{port}", verify=False).send(letter())
    assert len(mailbox.messages) == 1


async def test_credentials_are_not_sent_in_clear_unless_allowed() -> None:
    mailbox = Mailbox()
    for port in listen(mailbox, auth_require_tls=False):  # a relay without TLS
        with pytest.raises(IntegrationError):
            await SmtpSender(f"smtp://{CREDENTIALS}@127.0.0.1:{port}").send(letter())
        assert mailbox.logins == [] and mailbox.messages == []
        await SmtpSender(f"smtp://{CREDENTIALS}@127.0.0.1:{port}", allow_plaintext_auth=True).send(letter())
        await SmtpSender(f"smtp://127.0.0.1:{port}").send(letter())  # no credentials: plain is fine
    assert mailbox.logins == [(USER, PASSWORD, False)]
    assert [over_tls for _, over_tls in mailbox.messages] == [False, False]


async def test_without_smtp_url_mail_lands_as_eml_files(tmp_path: Path) -> None:
    sender = make_email_sender(Settings.from_env("identity", {"MOLBRIDGE_DATA_DIR": str(tmp_path)}))
    assert isinstance(sender, FolderSender)
    await sender.send(letter("local@example.test"))
    [stored] = email_outbox(tmp_path).glob("*.eml")
    assert message_from_bytes(stored.read_bytes(), policy=policy.default)["To"] == "local@example.test"
