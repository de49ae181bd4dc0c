"""DocuSignProvider through the real docusign-esign SDK against the local eSignature peer
(tests/docusign_server.py): JWT grant, envelopes in routing order, embedded signing, status, the
completed document, void, and the failures that must become IntegrationError."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path

import pytest
from pypdf import PdfReader, PdfWriter

from services.document.adapters.docusign import DocuSignProvider, DocuSignSettings
from services.document.domain.docusign_connect import parse_connect_event, verify_connect_signature
from services.document.domain.vocabulary import EnvelopeStatus, SignerStatus
from services.document.service.ports import EnvelopeRecipient
from services.runtime.errors import IntegrationError, ValidationError
from services.runtime.settings import SettingsError
from stack.ports import free_port
from tests.docusign_server import DocuSignServer, combined_pdf, iter_pdf_text, new_rsa_key, private_pem

PHARMA = EnvelopeRecipient("1", "Paula Pharma", "paula@pharma.test", 1, "user-paula")
CRO = EnvelopeRecipient("2", "Carl Cro", "carl@cro.test", 2, "user-carl")
RETURN_URL = "https://molbridge.test/documents/d1/signature/return"


@pytest.fixture(scope="module")
def docusign(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DocuSignServer]:
    with DocuSignServer(tmp_path_factory.mktemp("docusign")) as server:
        yield server


@pytest.fixture
def provider(docusign: DocuSignServer) -> DocuSignProvider:
    return DocuSignProvider(DocuSignSettings.from_environ(docusign.environ()))


def agreement_pdf(pages: int = 2) -> bytes:
    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(width=612, height=792)
    out = BytesIO()
    writer.write(out)
    return combined_pdf([out.getvalue()], ["Mutual non-disclosure agreement"])


async def send(provider: DocuSignProvider, pdf: bytes | None = None) -> str:
    return await provider.create_envelope(
        pdf=pdf or agreement_pdf(),
        filename="nda.pdf",
        subject="Please sign: NDA",
        message="Pharma and CRO sign the NDA",
        recipients=[CRO, PHARMA],  # out of order on purpose: routing order decides
    )


async def test_the_jwt_grant_is_made_once_and_its_token_used(docusign: DocuSignServer, provider: DocuSignProvider):
    before = len(docusign.requests_to("POST", r"^/oauth/token$"))
    envelope_id = await send(provider)
    await provider.envelope_state(envelope_id)

    grants = docusign.requests_to("POST", r"^/oauth/token$")[before:]
    assert len(grants) == 1  # the peer checked the RS256 assertion, its iss, sub and aud
    calls = docusign.requests_to("GET", rf"/envelopes/{envelope_id}")
    assert calls and all(call.headers["authorization"].startswith("Bearer ") for call in calls)
    assert all(call.path.startswith("/restapi/v2.1/accounts/" + docusign.account_id) for call in calls)


async def test_an_envelope_is_sent_with_embedded_signers_in_routing_order(
    docusign: DocuSignServer, provider: DocuSignProvider
):
    pdf = agreement_pdf(pages=2)
    envelope_id = await send(provider, pdf)

    body = docusign.requests_to("POST", r"/envelopes$")[-1].json()
    assert body["status"] == "sent"
    assert base64.b64decode(body["documents"][0]["documentBase64"]) == pdf
    signers = {s["recipientId"]: s for s in body["recipients"]["signers"]}
    assert (signers["1"]["routingOrder"], signers["2"]["routingOrder"]) == ("1", "2")
    assert (signers["1"]["clientUserId"], signers["2"]["clientUserId"]) == ("user-paula", "user-carl")
    tab = signers["1"]["tabs"]["signHereTabs"][0]
    assert tab["pageNumber"] == "3" and tab["documentId"] == "1"  # the last page (text page appended)

    state = await provider.envelope_state(envelope_id)
    assert state.status is EnvelopeStatus.SENT
    assert {r.recipient_id: r.status for r in state.recipients} == {"1": SignerStatus.SENT, "2": SignerStatus.WAITING}


async def test_signing_urls_follow_the_routing_order(docusign: DocuSignServer, provider: DocuSignProvider):
    envelope_id = await send(provider)

    url = await provider.signing_url(envelope_id, PHARMA, RETURN_URL)
    assert url.startswith(f"https://{docusign.host}/signing/")
    view = docusign.requests_to("POST", r"/views/recipient$")[-1].json()
    assert view["authenticationMethod"] == "none"
    assert (view["clientUserId"], view["returnUrl"]) == ("user-paula", RETURN_URL)

    with pytest.raises(IntegrationError, match="RECIPIENT_NOT_IN_SEQUENCE"):
        await provider.signing_url(envelope_id, CRO, RETURN_URL)


async def test_signatures_advance_the_envelope_to_completed(docusign: DocuSignServer, provider: DocuSignProvider):
    pdf = agreement_pdf(pages=1)
    envelope_id = await send(provider, pdf)

    docusign.sign(envelope_id, "1")
    state = await provider.envelope_state(envelope_id)
    recipients = {r.recipient_id: r for r in state.recipients}
    assert state.status is EnvelopeStatus.SENT
    assert recipients["1"].status is SignerStatus.SIGNED and recipients["1"].signed_at is not None
    assert recipients["2"].status is SignerStatus.SENT and recipients["2"].signed_at is None

    docusign.sign(envelope_id, "2")
    state = await provider.envelope_state(envelope_id)
    assert state.status is EnvelopeStatus.COMPLETED
    assert {r.status for r in state.recipients} == {SignerStatus.SIGNED}

    signed = await provider.completed_document(envelope_id)
    assert signed.startswith(b"%PDF-")
    assert len(PdfReader(BytesIO(signed)).pages) == len(PdfReader(BytesIO(pdf)).pages) + 1
    record = list(iter_pdf_text(signed))[-1]
    assert "Signed by Paula Pharma" in record and "Signed by Carl Cro" in record
    assert docusign.requests_to("GET", rf"/envelopes/{envelope_id}/documents/combined$")


async def test_a_declined_envelope_reports_who_declined_and_why(docusign: DocuSignServer, provider: DocuSignProvider):
    envelope_id = await send(provider)
    docusign.decline(envelope_id, "1", "wrong counterparty")

    state = await provider.envelope_state(envelope_id)
    assert state.status is EnvelopeStatus.DECLINED
    declined = next(r for r in state.recipients if r.recipient_id == "1")
    assert (declined.status, declined.declined_reason) == (SignerStatus.DECLINED, "wrong counterparty")


async def test_void_stops_an_envelope_in_progress_and_is_refused_once_finished(
    docusign: DocuSignServer, provider: DocuSignProvider
):
    envelope_id = await send(provider)
    await provider.void(envelope_id, "replaced by version 2")
    assert docusign.requests_to("PUT", rf"/envelopes/{envelope_id}$")[-1].json() == {
        "status": "voided",
        "voidedReason": "replaced by version 2",
    }
    assert (await provider.envelope_state(envelope_id)).status is EnvelopeStatus.VOIDED

    completed = await send(provider)
    docusign.complete(completed)
    with pytest.raises(IntegrationError, match="HTTP 400 \\(ENVELOPE_CANNOT_VOID_INVALID_STATE\\)"):
        await provider.void(completed, "too late")


async def test_a_revoked_token_fails_once_then_a_new_grant_is_made(
    docusign: DocuSignServer, provider: DocuSignProvider
):
    envelope_id = await send(provider)
    docusign.revoke_tokens()
    with pytest.raises(IntegrationError, match="HTTP 401") as refused:
        await provider.envelope_state(envelope_id)
    assert refused.value.detail == "DOCUSIGN_REFUSED"
    assert (await provider.envelope_state(envelope_id)).status is EnvelopeStatus.SENT


async def test_a_key_the_integration_does_not_know_is_refused(docusign: DocuSignServer):
    stranger_key = private_pem(new_rsa_key())
    provider = DocuSignProvider(DocuSignSettings.from_environ(docusign.environ(DOCUSIGN_PRIVATE_KEY=stranger_key)))
    with pytest.raises(IntegrationError) as refused:
        await send(provider)
    message = refused.value.message
    assert message == "DocuSign refused to grant an access token (JWT grant): HTTP 400 (invalid_grant)"
    assert stranger_key not in str(refused.value.metadata)


async def test_a_private_key_that_is_not_rsa_pem_is_a_configuration_error(docusign: DocuSignServer):
    broken = "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n"
    with pytest.raises(SettingsError, match="not an unencrypted RSA private key") as refused_at_start:
        DocuSignSettings.from_environ(docusign.environ(DOCUSIGN_PRIVATE_KEY=broken))
    assert broken not in str(refused_at_start.value)

    grants_before = len(docusign.requests_to("POST", r"^/oauth/token$"))
    settings = replace(DocuSignSettings.from_environ(docusign.environ()), private_key=broken)
    with pytest.raises(IntegrationError, match="private key cannot sign") as refused:
        await send(DocuSignProvider(settings))
    assert refused.value.detail == "DOCUSIGN_CONFIGURATION"
    assert len(docusign.requests_to("POST", r"^/oauth/token$")) == grants_before  # nothing was sent


async def test_docusign_down_is_an_integration_error(docusign: DocuSignServer):
    port = free_port()  # nothing listens there
    environ = docusign.environ(
        DOCUSIGN_BASE_PATH=f"https://127.0.0.1:{port}/restapi", DOCUSIGN_OAUTH_HOST=f"127.0.0.1:{port}"
    )
    provider = DocuSignProvider(DocuSignSettings.from_environ(environ))
    with pytest.raises(IntegrationError, match="could not be reached to grant an access token") as down:
        await provider.envelope_state("any")
    assert down.value.detail == "DOCUSIGN_UNREACHABLE"


async def test_an_untrusted_certificate_is_refused(docusign: DocuSignServer):
    provider = DocuSignProvider(DocuSignSettings.from_environ(docusign.environ(DOCUSIGN_CA_CERT_FILE="")))
    with pytest.raises(IntegrationError, match="could not be reached"):
        await provider.envelope_state("any")


async def test_a_document_that_is_not_a_pdf_is_refused_before_calling_docusign(provider: DocuSignProvider):
    with pytest.raises(ValidationError):
        await send(provider, b"PK\x03\x04 a zip, not a PDF")


def test_settings_name_every_missing_variable(tmp_path: Path, docusign: DocuSignServer):
    with pytest.raises(SettingsError) as missing:
        DocuSignSettings.from_environ({"DOCUSIGN_BASE_PATH": docusign.base_path})
    for name in (
        "DOCUSIGN_OAUTH_HOST",
        "DOCUSIGN_ACCOUNT_ID",
        "DOCUSIGN_INTEGRATION_KEY",
        "DOCUSIGN_USER_ID",
        "DOCUSIGN_PRIVATE_KEY_FILE",
    ):
        assert name in str(missing.value)

    key_file = tmp_path / "integration.pem"
    key_file.write_text(docusign.private_key_pem)
    environ = docusign.environ(
        DOCUSIGN_PRIVATE_KEY="",
        DOCUSIGN_PRIVATE_KEY_FILE=str(key_file),
        DOCUSIGN_CONNECT_SECRETS="old-secret, new-secret",
    )
    settings = DocuSignSettings.from_environ(environ)
    assert settings.private_key == docusign.private_key_pem
    assert settings.connect_secrets == ("old-secret", "new-secret")
    assert docusign.private_key_pem not in repr(settings)

    with pytest.raises(SettingsError, match="DOCUSIGN_OAUTH_HOST='https://x': expected a host"):
        DocuSignSettings.from_environ(docusign.environ(DOCUSIGN_OAUTH_HOST="https://x"))


class ConnectListener:
    """A webhook endpoint that keeps what it received and answers 200 when the signature verifies."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        self.received: list[tuple[bool, bytes]] = []
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                valid = verify_connect_signature(body, dict(self.headers.items()), listener.secrets)
                listener.received.append((valid, body))
                self.send_response(200 if valid else 401)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.secrets = secrets
        self.httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/api/v1/documents/signature/webhook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


async def test_connect_callbacks_are_signed_and_a_replay_has_the_same_event_key(
    docusign: DocuSignServer, provider: DocuSignProvider
):
    listener = ConnectListener(("rotated-out", "connect-secret"))
    docusign.configure_connect(listener.url, "connect-secret")
    try:
        envelope_id = await send(provider)
        docusign.flush()  # envelope-sent goes out after the API answer
        docusign.complete(envelope_id)
        assert [c.status for c in docusign.callbacks[-4:]] == [200, 200, 200, 200]
        events = [parse_connect_event(body) for _, body in listener.received]
        assert [(e.event, e.recipient_id) for e in events] == [
            ("envelope-sent", ""),
            ("recipient-completed", "1"),
            ("recipient-completed", "2"),
            ("envelope-completed", ""),
        ]
        assert events[-1].envelope_status is EnvelopeStatus.COMPLETED
        assert {r.status for r in events[-1].recipients} == {SignerStatus.SIGNED}
        assert len({e.event_key for e in events}) == 4

        assert docusign.replay_last_callback() == 200  # validly signed: only the event key tells
        assert parse_connect_event(listener.received[-1][1]).event_key == events[-1].event_key

        assert docusign.send_forged_callback(envelope_id) == 401
        assert listener.received[-1][0] is False
        assert json.loads(listener.received[-1][1])["data"]["envelopeId"] == envelope_id
    finally:
        docusign.configure_connect("", "")
        listener.httpd.shutdown()
        listener.httpd.server_close()
