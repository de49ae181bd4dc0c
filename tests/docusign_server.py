"""A local DocuSign eSignature peer for tests: the OAuth JWT grant and the REST calls docusign-esign makes
(envelopes, recipients, recipient views, documents, void), plus signed Connect callbacks (JSON SIM).

The SDK always reaches the OAuth host over https, so the peer speaks TLS with a self-signed certificate
for 127.0.0.1 (`ca_cert_file`). It owns the integration's RSA key pair: the adapter signs with
`private_key_pem`, the peer checks the assertion with the public half.

    with DocuSignServer(tmp_path) as docusign:
        docusign.configure_connect("http://127.0.0.1:8080/api/v1/documents/signature/webhook", "secret")
        provider = DocuSignProvider(DocuSignSettings.from_environ(docusign.environ()))
        envelope_id = await provider.create_envelope(...)
        docusign.sign(envelope_id, "1")          # as the first signer would; posts Connect callbacks
        docusign.replay_last_callback()          # the same signed message again
        docusign.send_forged_callback(envelope_id, "envelope-completed")

Test control (`sign`, `decline`, `complete`) follows DocuSign's rules: routing order, a finished envelope
cannot change. Every request is kept in `requests` for assertions on what the SDK sent.

Connect (after `configure_connect(url, secret)`), JSON SIM with the envelope summary, one signature header:
envelope-sent and envelope-voided go out from a thread after the API answer (`flush()` waits for them);
recipient-completed (+ envelope-completed after the last signer) and recipient-declined + envelope-declined
are delivered before `sign` / `decline` return. `callbacks` keeps every delivery and the listener's status.
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import json
import re
import secrets
import ssl
import sys
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
from pypdf import PdfReader, PdfWriter
from pypdf.generic import ContentStream, DictionaryObject, NameObject

from services.document.domain.docusign_connect import connect_signature
from stack.ports import free_port
from tests.tls import new_rsa_key, private_pem, write_self_signed_certificate

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
API_PATH = re.compile(
    r"^(?P<prefix>.*)/v2\.1/accounts/(?P<account>[^/]+)/envelopes(?:/(?P<envelope>[^/]+)(?P<rest>/.*)?)?$"
)
FINISHED = frozenset({"completed", "declined", "voided"})


@dataclass
class RecordedRequest:
    method: str
    path: str  # without the query
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Callback:
    """One Connect delivery: what was posted, and what the listener answered (0: unreachable)."""

    event: str
    envelope_id: str
    body: bytes
    headers: dict[str, str]
    status: int = 0


@dataclass
class PeerRecipient:
    recipient_id: str
    name: str
    email: str
    routing_order: int
    client_user_id: str
    status: str = "created"
    signed_at: str = ""
    delivered_at: str = ""
    declined_reason: str = ""
    tabs: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "recipientId": self.recipient_id,
            "recipientIdGuid": f"00000000-0000-0000-0000-{int(self.recipient_id):012d}"
            if self.recipient_id.isdigit()
            else self.recipient_id,
            "name": self.name,
            "email": self.email,
            "routingOrder": str(self.routing_order),
            "clientUserId": self.client_user_id,
            "recipientType": "signer",
            "status": self.status,
        }
        if self.signed_at:
            answer["signedDateTime"] = self.signed_at
        if self.delivered_at:
            answer["deliveredDateTime"] = self.delivered_at
        if self.declined_reason:
            answer["declinedReason"] = self.declined_reason
        return answer


@dataclass
class PeerEnvelope:
    envelope_id: str
    account_id: str
    subject: str
    documents: dict[str, bytes]  # documentId → PDF
    recipients: list[PeerRecipient]
    status: str = "sent"
    created_at: str = ""
    completed_at: str = ""
    voided_reason: str = ""

    def recipient(self, recipient_id: str) -> PeerRecipient:
        for recipient in self.recipients:
            if recipient.recipient_id == recipient_id:
                return recipient
        raise KeyError(f"envelope {self.envelope_id} has no recipient {recipient_id}")

    def current_order(self) -> int | None:
        """The routing order whose signers are signing now; None when nobody has to sign."""
        waiting = [r.routing_order for r in self.recipients if r.status not in ("completed", "signed")]
        return min(waiting) if waiting else None

    def release(self, now: str) -> None:
        """Sends the envelope to the signers of the lowest unfinished routing order."""
        order = self.current_order()
        for recipient in self.recipients:
            if recipient.routing_order == order and recipient.status == "created":
                recipient.status = "sent"

    def as_json(self) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "envelopeId": self.envelope_id,
            "status": self.status,
            "emailSubject": self.subject,
            "createdDateTime": self.created_at,
            "sentDateTime": self.created_at,
        }
        if self.completed_at:
            answer["completedDateTime"] = self.completed_at
        if self.voided_reason:
            answer["voidedReason"] = self.voided_reason
        return answer


class DocuSignServer:
    def __init__(
        self,
        work_dir: Path,
        *,
        account_id: str = "4f2b8c1e-0000-4000-8000-00000000acc1",
        integration_key: str = "9a1c7e52-0000-4000-8000-0000000000ik",
        user_id: str = "5e0d6b3a-0000-4000-8000-00000000user",
        token_lifetime_seconds: int = 3600,
    ) -> None:
        self.account_id = account_id
        self.integration_key = integration_key
        self.user_id = user_id
        self.token_lifetime_seconds = token_lifetime_seconds
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"  # the OAuth host name (the assertion's audience)
        self.base_path = f"https://{self.host}/restapi"
        self._key = new_rsa_key()
        self.private_key_pem = private_pem(self._key)
        self._public_key = self._key.public_key()
        self.ca_cert_file = work_dir / "docusign-peer.crt"
        self._key_file = work_dir / "docusign-peer.key"
        write_self_signed_certificate(self.ca_cert_file, self._key_file, "molbridge docusign peer")

        self.requests: list[RecordedRequest] = []
        self.envelopes: dict[str, PeerEnvelope] = {}
        self.callbacks: list[Callback] = []
        self._tokens: dict[str, dt.datetime] = {}  # access token → expiry
        self._signing_tokens: dict[str, tuple[str, str, str]] = {}  # → envelope, recipient, return URL
        self._connect_url = ""
        self._connect_secret = ""
        self._lock = threading.RLock()
        self._pending: list[threading.Thread] = []
        self._ticks = itertools.count()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- life ------------------------------------------------------------------------------------
    def start(self) -> None:
        peer = self

        class Handler(_Handler):
            server_peer = peer

        httpd = _TlsServer(("127.0.0.1", self.port), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.ca_cert_file, self._key_file)
        # The handshake happens in the handler's thread, not in the accepting loop.
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
        httpd.daemon_threads = True
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, name="docusign-peer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.flush()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> DocuSignServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def environ(self, **overrides: str) -> dict[str, str]:
        """The DOCUSIGN_* variables that point the adapter at this peer."""
        variables = {
            "DOCUSIGN_BASE_PATH": self.base_path,
            "DOCUSIGN_OAUTH_HOST": self.host,
            "DOCUSIGN_ACCOUNT_ID": self.account_id,
            "DOCUSIGN_INTEGRATION_KEY": self.integration_key,
            "DOCUSIGN_USER_ID": self.user_id,
            "DOCUSIGN_PRIVATE_KEY": self.private_key_pem,
            "DOCUSIGN_CA_CERT_FILE": str(self.ca_cert_file),
            "DOCUSIGN_TIMEOUT_SECONDS": "10",
        }
        if self._connect_secret:
            variables["DOCUSIGN_CONNECT_SECRETS"] = self._connect_secret
        variables.update(overrides)
        return variables

    # -- test control: what DocuSign's users and Connect would do ---------------------------------
    def configure_connect(self, url: str, secret: str) -> None:
        """Connect posts every envelope and recipient event to `url`, signed with `secret`."""
        self._connect_url = url
        self._connect_secret = secret

    def sign(self, envelope_id: str, recipient_id: str) -> None:
        """The recipient signs; the next routing order is released; the envelope completes after the
        last signer. Raises ValueError when it is not the recipient's turn or the envelope is finished."""
        with self._lock:
            envelope = self.envelopes[envelope_id]
            recipient = envelope.recipient(recipient_id)
            if envelope.status in FINISHED or recipient.status not in ("sent", "delivered"):
                raise ValueError(
                    f"recipient {recipient_id} cannot sign: envelope {envelope.status}, recipient {recipient.status}"
                )
            now = self._now()
            recipient.status = "completed"
            recipient.signed_at = now
            events = [("recipient-completed", recipient_id)]
            if envelope.current_order() is None:
                envelope.status = "completed"
                envelope.completed_at = now
                events.append(("envelope-completed", ""))
            else:
                envelope.release(now)
        for event, rid in events:
            self.send_callback(envelope_id, event, recipient_id=rid)

    def decline(self, envelope_id: str, recipient_id: str, reason: str = "declined") -> None:
        with self._lock:
            envelope = self.envelopes[envelope_id]
            recipient = envelope.recipient(recipient_id)
            if envelope.status in FINISHED or recipient.status not in ("sent", "delivered"):
                raise ValueError(f"recipient {recipient_id} cannot decline now")
            recipient.status = "declined"
            recipient.declined_reason = reason
            envelope.status = "declined"
        self.send_callback(envelope_id, "recipient-declined", recipient_id=recipient_id)
        self.send_callback(envelope_id, "envelope-declined")

    def complete(self, envelope_id: str) -> None:
        """Every remaining signer signs, in routing order."""
        while True:
            with self._lock:
                envelope = self.envelopes[envelope_id]
                turn = [r.recipient_id for r in envelope.recipients if r.status in ("sent", "delivered")]
            if not turn:
                return
            for recipient_id in turn:
                self.sign(envelope_id, recipient_id)

    def connect_message(self, envelope_id: str, event: str, *, recipient_id: str = "") -> bytes:
        """A JSON SIM Connect message for the envelope as it is now (summary included)."""
        with self._lock:
            envelope = self.envelopes[envelope_id]
            data: dict[str, Any] = {
                "accountId": envelope.account_id,
                "userId": self.user_id,
                "envelopeId": envelope_id,
                "envelopeSummary": {
                    **envelope.as_json(),
                    "recipients": {"signers": [r.as_json() for r in envelope.recipients]},
                },
            }
            if recipient_id:
                data["recipientId"] = recipient_id
            message = {
                "event": event,
                "apiVersion": "v2.1",
                "uri": f"/restapi/v2.1/accounts/{envelope.account_id}/envelopes/{envelope_id}",
                "retryCount": 0,
                "configurationId": 10482,
                "generatedDateTime": self._now(),
                "data": data,
            }
        return json.dumps(message).encode()

    def send_callback(self, envelope_id: str, event: str, *, recipient_id: str = "", secret: str | None = None) -> int:
        """Posts a signed Connect message (no-op without a Connect URL); answers the listener's status."""
        if not self._connect_url:
            return 0
        body = self.connect_message(envelope_id, event, recipient_id=recipient_id)
        key = self._connect_secret if secret is None else secret
        headers = {"Content-Type": "application/json", "X-DocuSign-Signature-1": connect_signature(body, key)}
        return self._deliver(Callback(event=event, envelope_id=envelope_id, body=body, headers=headers))

    def replay_last_callback(self) -> int:
        """Delivers the last message again, byte for byte and validly signed (as a redelivery or a replay)."""
        last = self.callbacks[-1]
        return self._deliver(
            Callback(event=last.event, envelope_id=last.envelope_id, body=last.body, headers=dict(last.headers))
        )

    def send_forged_callback(self, envelope_id: str, event: str = "envelope-completed") -> int:
        """A Connect message signed with a secret that is not the configured one."""
        return self.send_callback(envelope_id, event, secret="forged-" + secrets.token_hex(8))

    def _send_later(self, envelope_id: str, event: str) -> None:
        """Events caused by an API call go out after the answer, as DocuSign's do (never inside the
        caller's request: its service may not have stored the envelope id yet)."""
        if not self._connect_url:
            return
        thread = threading.Thread(target=self.send_callback, args=(envelope_id, event), daemon=True)
        self._pending.append(thread)
        thread.start()

    def flush(self, timeout: float = 30.0) -> None:
        """Waits for the Connect deliveries of envelope-sent / envelope-voided to be answered."""
        while self._pending:
            self._pending.pop(0).join(timeout)

    def _deliver(self, callback: Callback) -> int:
        request = urllib.request.Request(self._connect_url, data=callback.body, headers=callback.headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                callback.status = answer.status
        except urllib.error.HTTPError as error:
            callback.status = error.code
        except OSError:
            callback.status = 0
        with self._lock:
            self.callbacks.append(callback)
        return callback.status

    # -- what the SDK reaches -----------------------------------------------------------------------
    def requests_to(self, method: str, path_pattern: str) -> list[RecordedRequest]:
        pattern = re.compile(path_pattern)
        return [r for r in self.requests if r.method == method and pattern.search(r.path)]

    def revoke_tokens(self) -> None:
        with self._lock:
            self._tokens.clear()

    def _handle(self, method: str, url: str, headers: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
        parts = urlsplit(url)
        with self._lock:
            self.requests.append(RecordedRequest(method, parts.path, parse_qs(parts.query), headers, body))
        if parts.path == "/oauth/token" and method == "POST":
            return self._token(body)
        if parts.path == "/oauth/userinfo" and method == "GET":
            if not self._authorized(headers):
                return _json(401, {"error": "invalid_token"})
            return _json(
                200,
                {
                    "sub": self.user_id,
                    "name": "Peer User",
                    "email": "peer@docusign.test",
                    "accounts": [
                        {
                            "account_id": self.account_id,
                            "is_default": True,
                            "account_name": "Molbridge test",
                            "base_uri": f"https://{self.host}",
                        }
                    ],
                },
            )
        if parts.path.startswith("/signing/") and method == "GET":
            return self._open_signing(parts.path.removeprefix("/signing/"))
        match = API_PATH.match(parts.path)
        if match is None:
            return _json(404, {"errorCode": "INVALID_REQUEST_PARAMETER", "message": "unknown resource"})
        if not self._authorized(headers):
            return _json(
                401,
                {
                    "errorCode": "AUTHORIZATION_INVALID_TOKEN",
                    "message": "The access token provided is expired, revoked or malformed.",
                },
            )
        if match["account"] != self.account_id:
            return _json(400, {"errorCode": "INVALID_ACCOUNT_ID", "message": "unknown account"})
        try:
            payload = json.loads(body) if body else {}
        except ValueError:
            return _json(400, {"errorCode": "INVALID_REQUEST_BODY", "message": "not JSON"})
        envelope_id, rest = match["envelope"], match["rest"] or ""
        with self._lock:
            if envelope_id is None:
                if method == "POST":
                    return self._create(payload)
                return _json(405, {"errorCode": "INVALID_REQUEST_PARAMETER"})
            envelope = self.envelopes.get(envelope_id)
            if envelope is None:
                return _json(404, {"errorCode": "ENVELOPE_DOES_NOT_EXIST", "message": "no such envelope"})
            if rest == "" and method == "GET":
                return _json(200, envelope.as_json())
            if rest == "" and method == "PUT":
                return self._update(envelope, payload)
            if rest == "/recipients" and method == "GET":
                return _json(
                    200,
                    {
                        "signers": [r.as_json() for r in envelope.recipients],
                        "recipientCount": str(len(envelope.recipients)),
                    },
                )
            if rest == "/views/recipient" and method == "POST":
                return self._recipient_view(envelope, payload)
            if rest.startswith("/documents/") and method == "GET":
                return self._document(envelope, rest.removeprefix("/documents/"))
        return _json(404, {"errorCode": "INVALID_REQUEST_PARAMETER", "message": "unknown resource"})

    def _token(self, body: bytes) -> tuple[int, str, bytes]:
        form = {key: values[0] for key, values in parse_qs(body.decode()).items()}
        if form.get("grant_type") != JWT_GRANT:
            return _json(400, {"error": "unsupported_grant_type"})
        try:
            claims = jwt.decode(
                form.get("assertion", ""),
                self._public_key,
                algorithms=["RS256"],
                audience=self.host,
                issuer=self.integration_key,
                options={"require": ["iss", "sub", "aud", "iat", "exp"]},
            )
        except jwt.PyJWTError:
            return _json(400, {"error": "invalid_grant", "error_description": "no_valid_keys_or_signatures"})
        if claims["sub"] != self.user_id or "signature" not in str(claims.get("scope", "")).split():
            return _json(400, {"error": "invalid_grant", "error_description": "user_not_found_or_scope"})
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = _utcnow() + dt.timedelta(seconds=self.token_lifetime_seconds)
        return _json(200, {"access_token": token, "token_type": "Bearer", "expires_in": self.token_lifetime_seconds})

    def _authorized(self, headers: dict[str, str]) -> bool:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        with self._lock:
            expiry = self._tokens.get(token)
        return scheme.lower() == "bearer" and expiry is not None and expiry > _utcnow()

    def _create(self, payload: dict[str, Any]) -> tuple[int, str, bytes]:
        documents = {}
        for document in payload.get("documents") or []:
            try:
                pdf = base64.b64decode(document["documentBase64"], validate=True)
            except (KeyError, ValueError):
                return _json(400, {"errorCode": "INVALID_REQUEST_BODY", "message": "documentBase64"})
            if not pdf.startswith(b"%PDF-"):
                return _json(400, {"errorCode": "FORMAT_CONVERSION_ERROR", "message": "not a PDF"})
            documents[str(document.get("documentId", ""))] = pdf
        signers = (payload.get("recipients") or {}).get("signers") or []
        if not documents or not signers:
            return _json(400, {"errorCode": "ENVELOPE_IS_INCOMPLETE", "message": "documents and signers needed"})
        recipients = [
            PeerRecipient(
                recipient_id=str(signer["recipientId"]),
                name=str(signer.get("name", "")),
                email=str(signer.get("email", "")),
                routing_order=int(signer.get("routingOrder") or 1),
                client_user_id=str(signer.get("clientUserId", "")),
                tabs=signer.get("tabs") or {},
            )
            for signer in signers
        ]
        now = self._now()
        envelope = PeerEnvelope(
            envelope_id=str(uuid.uuid4()),
            account_id=self.account_id,
            subject=str(payload.get("emailSubject", "")),
            documents=documents,
            recipients=recipients,
            status="sent" if payload.get("status") == "sent" else "created",
            created_at=now,
        )
        if envelope.status == "sent":
            envelope.release(now)
        self.envelopes[envelope.envelope_id] = envelope
        answer = {
            "envelopeId": envelope.envelope_id,
            "status": envelope.status,
            "statusDateTime": now,
            "uri": f"/envelopes/{envelope.envelope_id}",
        }
        if envelope.status == "sent":
            self._send_later(envelope.envelope_id, "envelope-sent")
        return _json(201, answer)

    def _update(self, envelope: PeerEnvelope, payload: dict[str, Any]) -> tuple[int, str, bytes]:
        if payload.get("status") != "voided":
            return _json(400, {"errorCode": "INVALID_REQUEST_PARAMETER", "message": "only voiding is supported"})
        if envelope.status in FINISHED:
            return _json(
                400,
                {
                    "errorCode": "ENVELOPE_CANNOT_VOID_INVALID_STATE",
                    "message": f"Only envelopes in progress can be voided; this one is {envelope.status}.",
                },
            )
        if not payload.get("voidedReason"):
            return _json(400, {"errorCode": "VOIDED_REASON_REQUIRED", "message": "voidedReason"})
        envelope.status = "voided"
        envelope.voided_reason = str(payload["voidedReason"])
        self._send_later(envelope.envelope_id, "envelope-voided")
        return _json(200, {"envelopeId": envelope.envelope_id})

    def _recipient_view(self, envelope: PeerEnvelope, payload: dict[str, Any]) -> tuple[int, str, bytes]:
        candidates = [
            r
            for r in envelope.recipients
            if r.client_user_id
            and r.client_user_id == payload.get("clientUserId")
            and (
                r.recipient_id == payload.get("recipientId")
                or (r.name == payload.get("userName") and r.email == payload.get("email"))
            )
        ]
        if not candidates:
            return _json(
                400,
                {
                    "errorCode": "UNKNOWN_ENVELOPE_RECIPIENT",
                    "message": "The recipient you have identified is not a valid recipient",
                },
            )
        if envelope.status in FINISHED:
            return _json(400, {"errorCode": "ENVELOPE_INVALID_STATUS", "message": f"envelope is {envelope.status}"})
        recipient = candidates[0]
        if recipient.status not in ("sent", "delivered"):
            return _json(
                400,
                {
                    "errorCode": "RECIPIENT_NOT_IN_SEQUENCE",
                    "message": "The token for an out of sequence recipient cannot be generated.",
                },
            )
        if not payload.get("returnUrl") or not payload.get("authenticationMethod"):
            return _json(400, {"errorCode": "INVALID_REQUEST_PARAMETER", "message": "returnUrl"})
        token = secrets.token_urlsafe(24)
        self._signing_tokens[token] = (envelope.envelope_id, recipient.recipient_id, str(payload["returnUrl"]))
        return _json(201, {"url": f"https://{self.host}/signing/{token}"})

    def _open_signing(self, token: str) -> tuple[int, str, bytes]:
        with self._lock:
            found = self._signing_tokens.get(token)
            if found is None:
                return 404, "text/plain", b"unknown signing session"
            envelope = self.envelopes[found[0]]
            recipient = envelope.recipient(found[1])
            if recipient.status == "sent":
                recipient.status = "delivered"
                recipient.delivered_at = self._now()
        page = f"<html><body><h1>Sign {envelope.subject}</h1><a href='{found[2]}'>done</a></body></html>"
        return 200, "text/html", page.encode()

    def _document(self, envelope: PeerEnvelope, document_id: str) -> tuple[int, str, bytes]:
        if document_id == "combined":
            pdfs = list(envelope.documents.values())
        elif document_id in envelope.documents:
            pdfs = [envelope.documents[document_id]]
        else:
            return _json(404, {"errorCode": "DOCUMENT_DOES_NOT_EXIST", "message": "no such document"})
        lines = []
        if envelope.status == "completed":
            lines = [f"Signed by {r.name} <{r.email}> at {r.signed_at}" for r in envelope.recipients]
            lines.insert(0, f"DocuSign envelope {envelope.envelope_id} completed")
        return 200, "application/pdf", combined_pdf(pdfs, lines)

    def _now(self) -> str:
        """DocuSign's timestamp format (7 fractional digits; the 7th counts calls, so that two events
        of one microsecond differ)."""
        tick = next(self._ticks)
        now = _utcnow()
        return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond:06d}{tick % 10}Z"


def combined_pdf(pdfs: list[bytes], lines: list[str]) -> bytes:
    """The documents as one PDF; with `lines`, a last page that prints them (DocuSign's signing record)."""
    writer = PdfWriter()
    for pdf in pdfs:
        writer.append(PdfReader(BytesIO(pdf)))
    if lines:
        page = writer.add_blank_page(width=612, height=792)
        font = DictionaryObject(
            {
                NameObject("/Type"): NameObject("/Font"),
                NameObject("/Subtype"): NameObject("/Type1"),
                NameObject("/BaseFont"): NameObject("/Helvetica"),
            }
        )
        page[NameObject("/Resources")] = DictionaryObject(
            {
                NameObject("/Font"): DictionaryObject({NameObject("/F1"): font}),
            }
        )
        text = "".join(f"({_pdf_text(line)}) Tj 0 -18 Td " for line in lines)
        content = ContentStream(None, writer)
        content.set_data(f"BT /F1 11 Tf 72 720 Td {text}ET".encode("latin-1", "replace"))
        page.replace_contents(content)
    out = BytesIO()
    writer.write(out)
    return out.getvalue()


def _pdf_text(line: str) -> str:
    return line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def _json(status: int, payload: dict[str, Any]) -> tuple[int, str, bytes]:
    return status, "application/json; charset=utf-8", json.dumps(payload).encode()


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class _TlsServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that refuses our self-signed certificate (a test of exactly that) is no server error."""
        if not isinstance(sys.exc_info()[1], ssl.SSLError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server_peer: DocuSignServer
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        status, content_type, payload = self.server_peer._handle(self.command, self.path, headers, body)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("X-DocuSign-TraceToken", "peer-" + secrets.token_hex(4))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass


def iter_pdf_text(pdf: bytes) -> Iterator[str]:
    for page in PdfReader(BytesIO(pdf)).pages:
        yield page.extract_text() or ""
