"""SignatureProvider on DocuSign eSignature, through the official SDK (docusign-esign).

Authentication is the JWT grant: the integration's RSA key signs an assertion for the impersonated
user, the OAuth host answers an access token, kept until shortly before it expires. The SDK is
blocking: every call runs in a worker thread, bounded by `request_timeout_seconds`.

Where DocuSign is depends on configuration only (`DOCUSIGN_BASE_PATH`, `DOCUSIGN_OAUTH_HOST`). The SDK
always reaches the OAuth host over https; `DOCUSIGN_CA_CERT_FILE` names extra certificates to trust
(a private CA, or the tests' local eSignature peer with its self-signed certificate).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any, TypeVar

import jwt
import urllib3
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from docusign_esign import (
    ApiClient,
    ApiException,
    Document,
    Envelope,
    EnvelopeDefinition,
    EnvelopesApi,
    Recipients,
    RecipientViewRequest,
    Signer,
    SignHere,
    Tabs,
)
from docusign_esign.client.api_exception import ArgumentException
from docusign_esign.client.api_response import RESTClientObject
from docusign_esign.client.auth.oauth import OAuth
from docusign_esign.client.configuration import Configuration
from pypdf import PdfReader
from pypdf.errors import PdfReadError

from services.document.domain.docusign_connect import envelope_status_of, parse_docusign_time, signer_status_of
from services.document.service.ports import EnvelopeRecipient, EnvelopeState, RecipientState
from services.runtime.errors import IntegrationError, ValidationError
from services.runtime.settings import SettingsError

T = TypeVar("T")
S = TypeVar("S")

REQUIRED_VARIABLES = (
    "DOCUSIGN_BASE_PATH",
    "DOCUSIGN_OAUTH_HOST",
    "DOCUSIGN_ACCOUNT_ID",
    "DOCUSIGN_INTEGRATION_KEY",
    "DOCUSIGN_USER_ID",
)
COMBINED_DOCUMENT = "combined"  # DocuSign's document id for all documents of an envelope as one PDF
DOCUMENT_ID = "1"
ASSERTION_LIFETIME_SECONDS = 600
# A token is renewed this long before it expires (or at 90 % of its life when shorter).
TOKEN_RENEWAL_MARGIN_SECONDS = 300.0
# The signature fields: on the last page, one below the other in signing order (points from top left).
SIGN_HERE_X = 72
SIGN_HERE_FIRST_Y = 560
SIGN_HERE_STEP_Y = 70


@dataclass(frozen=True)
class DocuSignSettings:
    base_path: str  # e.g. https://demo.docusign.net/restapi
    oauth_host: str  # e.g. account-d.docusign.com (host[:port]; always https)
    account_id: str
    integration_key: str
    impersonated_user_id: str
    private_key: str = field(repr=False)  # PEM of the integration's RSA key
    connect_secrets: tuple[str, ...] = field(default=(), repr=False)  # Connect HMAC keys
    ca_cert_file: str = ""  # extra certificates to trust (PEM); empty: the public CAs
    request_timeout_seconds: float = 30.0

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> DocuSignSettings:
        """Reads DOCUSIGN_*; raises SettingsError naming every missing or unusable variable.

        DOCUSIGN_BASE_PATH, DOCUSIGN_OAUTH_HOST, DOCUSIGN_ACCOUNT_ID, DOCUSIGN_INTEGRATION_KEY,
        DOCUSIGN_USER_ID (the impersonated user), DOCUSIGN_PRIVATE_KEY (PEM) or DOCUSIGN_PRIVATE_KEY_FILE,
        DOCUSIGN_CONNECT_SECRETS (comma separated, optional), DOCUSIGN_CA_CERT_FILE (optional),
        DOCUSIGN_TIMEOUT_SECONDS (optional, default 30)."""

        def value(name: str) -> str:
            return environ.get(name, "").strip()

        problems = [f"{name} is not set" for name in REQUIRED_VARIABLES if not value(name)]
        private_key = value("DOCUSIGN_PRIVATE_KEY").replace("\\n", "\n")
        key_file = value("DOCUSIGN_PRIVATE_KEY_FILE")
        if not private_key and key_file:
            try:
                private_key = Path(key_file).read_text()
            except OSError as error:
                problems.append(f"DOCUSIGN_PRIVATE_KEY_FILE={key_file!r} cannot be read: {error.strerror}")
        elif not private_key:
            problems.append("DOCUSIGN_PRIVATE_KEY (PEM) or DOCUSIGN_PRIVATE_KEY_FILE is not set")
        if private_key and not is_rsa_private_key(private_key):
            problems.append("the DocuSign private key is not an unencrypted RSA private key in PEM")
        base_path = value("DOCUSIGN_BASE_PATH").rstrip("/")
        if base_path and not base_path.startswith(("https://", "http://")):
            problems.append(f"DOCUSIGN_BASE_PATH={base_path!r}: expected https://host/restapi")
        oauth_host = value("DOCUSIGN_OAUTH_HOST")
        if "://" in oauth_host or "/" in oauth_host:
            problems.append(f"DOCUSIGN_OAUTH_HOST={oauth_host!r}: expected a host[:port], e.g. account-d.docusign.com")
        ca_cert_file = value("DOCUSIGN_CA_CERT_FILE")
        if ca_cert_file and not Path(ca_cert_file).is_file():
            problems.append(f"DOCUSIGN_CA_CERT_FILE={ca_cert_file!r} is not a file")
        timeout_text = value("DOCUSIGN_TIMEOUT_SECONDS") or "30"
        try:
            timeout = float(timeout_text)
            if timeout <= 0:
                raise ValueError
        except ValueError:
            problems.append(f"DOCUSIGN_TIMEOUT_SECONDS={timeout_text!r}: expected a positive number of seconds")
            timeout = 30.0
        if problems:
            raise SettingsError("DocuSign configuration: " + "; ".join(problems))
        secrets = tuple(part.strip() for part in value("DOCUSIGN_CONNECT_SECRETS").split(",") if part.strip())
        return cls(
            base_path=base_path,
            oauth_host=oauth_host,
            account_id=value("DOCUSIGN_ACCOUNT_ID"),
            integration_key=value("DOCUSIGN_INTEGRATION_KEY"),
            impersonated_user_id=value("DOCUSIGN_USER_ID"),
            private_key=private_key,
            connect_secrets=secrets,
            ca_cert_file=ca_cert_file,
            request_timeout_seconds=timeout,
        )


class DocuSignProvider:
    """SignatureProvider (services/document/service/ports.py) on DocuSign. Raises IntegrationError when
    DocuSign cannot be reached or refuses; messages say what failed, never a key or a token."""

    def __init__(self, settings: DocuSignSettings) -> None:
        self._settings = settings
        self._client = ApiClient(host=settings.base_path, oauth_host_name=settings.oauth_host)
        # The SDK's Configuration() is a process-wide singleton that its REST client reads TLS trust
        # from when built: this client gets a REST client built from a copy, so the trust configured
        # here stays with this provider and changes nothing for other SDK users in the process.
        configuration = copy.copy(Configuration())
        if settings.ca_cert_file:
            configuration.ssl_ca_cert = settings.ca_cert_file
        self._client.rest_client = RESTClientObject(configuration=configuration)
        self._token_lock = threading.Lock()
        self._token_renew_at = 0.0  # time.monotonic() after which a new token is requested

    # -- the port ------------------------------------------------------------------------------------
    async def create_envelope(
        self, *, pdf: bytes, filename: str, subject: str, message: str, recipients: Sequence[EnvelopeRecipient]
    ) -> str:
        if not recipients:
            raise ValidationError(
                "an envelope needs at least one recipient", field_violations=[("recipients", "empty")]
            )
        last_page = _page_count(pdf)
        signers = [
            Signer(
                recipient_id=recipient.recipient_id,
                name=recipient.name,
                email=recipient.email,
                routing_order=str(recipient.routing_order),
                client_user_id=recipient.client_user_id,
                tabs=Tabs(
                    sign_here_tabs=[
                        SignHere(
                            document_id=DOCUMENT_ID,
                            page_number=str(last_page),
                            x_position=str(SIGN_HERE_X),
                            y_position=str(SIGN_HERE_FIRST_Y + SIGN_HERE_STEP_Y * position),
                        )
                    ]
                ),
            )
            for position, recipient in enumerate(sorted(recipients, key=lambda r: r.routing_order))
        ]
        definition = EnvelopeDefinition(
            email_subject=subject[:100],  # DocuSign's limit
            email_blurb=message,
            documents=[
                Document(
                    document_base64=base64.b64encode(pdf).decode("ascii"),
                    name=filename,
                    file_extension="pdf",
                    document_id=DOCUMENT_ID,
                )
            ],
            recipients=Recipients(signers=signers),
            status="sent",
        )
        summary = await self._call(
            "create an envelope",
            lambda api, timeout: api.create_envelope(
                self._settings.account_id, envelope_definition=definition, _request_timeout=timeout
            ),
        )
        envelope_id = str(getattr(summary, "envelope_id", "") or "")
        if not envelope_id:
            raise IntegrationError("DocuSign created an envelope but answered no envelope id", detail="DOCUSIGN_ANSWER")
        return envelope_id

    async def signing_url(self, envelope_id: str, recipient: EnvelopeRecipient, return_url: str) -> str:
        request = RecipientViewRequest(
            authentication_method="none",
            client_user_id=recipient.client_user_id,
            recipient_id=recipient.recipient_id,
            user_name=recipient.name,
            email=recipient.email,
            return_url=return_url,
        )
        view = await self._call(
            f"open the signing view of envelope {envelope_id}",
            lambda api, timeout: api.create_recipient_view(
                self._settings.account_id, envelope_id, recipient_view_request=request, _request_timeout=timeout
            ),
        )
        url = str(getattr(view, "url", "") or "")
        if not url:
            raise IntegrationError("DocuSign answered no signing URL", detail="DOCUSIGN_ANSWER")
        return url

    async def envelope_state(self, envelope_id: str) -> EnvelopeState:
        def read(api: EnvelopesApi, timeout: float) -> tuple[Any, Any]:
            account = self._settings.account_id
            return (
                api.get_envelope(account, envelope_id, _request_timeout=timeout),
                api.list_recipients(account, envelope_id, _request_timeout=timeout),
            )

        envelope, recipients = await self._call(f"read envelope {envelope_id}", read)
        return EnvelopeState(
            envelope_id=envelope_id,
            status=_known_status(envelope, envelope_status_of, "an envelope"),
            recipients=tuple(_recipient_state(signer) for signer in (getattr(recipients, "signers", None) or [])),
        )

    async def completed_document(self, envelope_id: str) -> bytes:
        document = await self._call(
            f"download the document of envelope {envelope_id}",
            lambda api, timeout: api.get_document(
                self._settings.account_id, COMBINED_DOCUMENT, envelope_id, _request_timeout=timeout
            ),
        )
        if not isinstance(document, bytes) or not document.startswith(b"%PDF-"):
            raise IntegrationError(
                f"DocuSign's document of envelope {envelope_id} is not a PDF", detail="DOCUSIGN_ANSWER"
            )
        return document

    async def void(self, envelope_id: str, reason: str) -> None:
        envelope = Envelope(status="voided", voided_reason=reason[:200] or "voided")
        await self._call(
            f"void envelope {envelope_id}",
            lambda api, timeout: api.update(
                self._settings.account_id, envelope_id, envelope=envelope, _request_timeout=timeout
            ),
        )

    # -- plumbing ------------------------------------------------------------------------------------
    async def _call(self, what: str, call: Callable[[EnvelopesApi, float], T]) -> T:
        timeout = self._settings.request_timeout_seconds
        try:
            # The token request takes no timeout in the SDK: wait_for bounds the whole step.
            return await asyncio.wait_for(asyncio.to_thread(self._run, what, call, timeout), timeout * 2)
        except TimeoutError:
            raise IntegrationError(
                f"DocuSign did not answer within {timeout:g} s to {what}", detail="DOCUSIGN_UNREACHABLE"
            ) from None

    def _run(self, what: str, call: Callable[[EnvelopesApi, float], T], timeout: float) -> T:
        self._ensure_token()
        try:
            return call(EnvelopesApi(self._client), timeout)
        except ApiException as error:
            if error.status == 401:
                self._forget_token()
            raise _refused(what, error) from None
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise _unreachable(what, error) from None

    def _ensure_token(self) -> None:
        with self._token_lock:
            if time.monotonic() < self._token_renew_at:
                return
            settings = self._settings
            if not is_rsa_private_key(settings.private_key):
                raise IntegrationError(
                    "the DocuSign private key cannot sign the JWT assertion (not an RSA private key in PEM)",
                    detail="DOCUSIGN_CONFIGURATION",
                )
            try:
                token = self._client.request_jwt_user_token(
                    client_id=settings.integration_key,
                    user_id=settings.impersonated_user_id,
                    oauth_host_name=settings.oauth_host,
                    private_key_bytes=settings.private_key.encode(),
                    expires_in=ASSERTION_LIFETIME_SECONDS,
                    scopes=[OAuth.SCOPE_SIGNATURE, OAuth.SCOPE_IMPERSONATION],
                )
            except ApiException as error:
                raise _refused("grant an access token (JWT grant)", error) from None
            except (urllib3.exceptions.HTTPError, OSError) as error:
                raise _unreachable("grant an access token (JWT grant)", error) from None
            except (ArgumentException, jwt.PyJWTError) as error:
                # Their text may quote the key: only the kind of failure is told.
                raise IntegrationError(
                    f"the DocuSign JWT assertion could not be made ({type(error).__name__})",
                    detail="DOCUSIGN_CONFIGURATION",
                ) from None
            except ValueError:
                raise IntegrationError(
                    "DocuSign answered the token request with something that is not a token",
                    detail="DOCUSIGN_ANSWER",
                ) from None
            lifetime = _seconds(getattr(token, "expires_in", None))
            margin = min(TOKEN_RENEWAL_MARGIN_SECONDS, lifetime / 10)
            self._token_renew_at = time.monotonic() + lifetime - margin

    def _forget_token(self) -> None:
        with self._token_lock:
            self._token_renew_at = 0.0


def is_rsa_private_key(pem: str) -> bool:
    """True when `pem` is an unencrypted RSA private key (what DocuSign's JWT grant signs with)."""
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        return False
    return isinstance(key, rsa.RSAPrivateKey)


def _refused(what: str, error: ApiException) -> IntegrationError:
    status = int(error.status or 0)
    if status == 0:  # the SDK's word for a TLS failure
        return IntegrationError(
            f"DocuSign could not be reached to {what}: TLS failed",
            detail="DOCUSIGN_UNREACHABLE",
            metadata={"provider": "docusign"},
        )
    code = _error_code(error.body)
    suffix = f" ({code})" if code else ""
    return IntegrationError(
        f"DocuSign refused to {what}: HTTP {status}{suffix}",
        detail="DOCUSIGN_REFUSED",
        metadata={"provider": "docusign", "http_status": str(status), "error_code": code},
    )


def _unreachable(what: str, error: BaseException) -> IntegrationError:
    return IntegrationError(
        f"DocuSign could not be reached to {what}: {type(error).__name__}",
        detail="DOCUSIGN_UNREACHABLE",
        metadata={"provider": "docusign"},
    )


def _error_code(body: Any) -> str:
    """DocuSign's error code (REST: errorCode, OAuth: error) from an error body; never the body itself."""
    try:
        answer = json.loads(body) if isinstance(body, (bytes, str)) else None
    except (ValueError, UnicodeDecodeError):
        return ""
    if not isinstance(answer, dict):
        return ""
    code = answer.get("errorCode") or answer.get("error") or ""
    return str(code)[:80] if isinstance(code, str) else ""


def _seconds(value: Any) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return 0.0
    return max(seconds, 0.0)


def _page_count(pdf: bytes) -> int:
    try:
        pages = len(PdfReader(BytesIO(pdf)).pages)
    except (PdfReadError, ValueError, OSError):
        pages = 0
    if pages == 0:
        raise ValidationError("the document to sign is not a PDF", field_violations=[("pdf", "not a PDF")])
    return pages


def _known_status(model: Any, ours: Callable[[str], S | None], what: str) -> S:
    word = str(getattr(model, "status", "") or "")
    status = ours(word)
    if status is None:
        raise IntegrationError(f"DocuSign answered {what} status we do not know: {word!r}", detail="DOCUSIGN_ANSWER")
    return status


def _recipient_state(signer: Any) -> RecipientState:
    return RecipientState(
        recipient_id=str(getattr(signer, "recipient_id", "") or ""),
        status=_known_status(signer, signer_status_of, "a recipient"),
        signed_at=parse_docusign_time(str(getattr(signer, "signed_date_time", "") or "")),
        declined_reason=str(getattr(signer, "declined_reason", "") or ""),
    )
