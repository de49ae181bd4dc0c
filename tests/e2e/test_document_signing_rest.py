"""E-signatures through the real gateway over REST: the built-in signer (pharma admin, then the CRO's
admin, each re-authenticating with the identity service) ending in a PAdES-sealed version that verifies
through the API and offline with pyHanko; and DocuSign end to end against the local eSignature peer
(mesh.docusign), whose signed Connect callbacks reach the public webhook route — forged ones refused,
replayed ones without effect, the completed envelope's document stored once as a new version."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from molbridge.document.v1 import document_service_pb2 as pb
from molbridge.document.v1 import document_service_pb2_grpc as pb_grpc
from pyhanko.keys import load_cert_from_pemder
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation import validate_pdf_signature
from pyhanko.sign.validation.status import SignatureCoverageLevel
from pyhanko_certvalidator import ValidationContext
from pypdf import PdfReader

from tests.conftest import WEBHOOK_PATH
from tests.e2e import test_identity_gateway
from tests.e2e.molecule_rest import Org, assert_error, created, data
from tests.e2e.test_identity_gateway import PASSWORD, new_org
from tests.e2e.test_prediction_gateway import eventually
from tests.pdfs import blank_pdf

api = test_identity_gateway.api
admin = test_identity_gateway.admin
WEBHOOK = WEBHOOK_PATH.removeprefix("/api/v1")  # the api client's base URL ends in /api/v1


@pytest.fixture(scope="module")
def documents_grpc(mesh) -> Iterator[pb_grpc.DocumentServiceStub]:  # type: ignore[no-untyped-def]
    """The document service's own port, as the CRO service calls it (not through the gateway)."""
    with grpc.insecure_channel(mesh.service_addr("document")) as channel:
        yield pb_grpc.DocumentServiceStub(channel)


@pytest.fixture(scope="module")
def parties(api: httpx.Client, admin: dict) -> Parties:
    return Parties.create(api, admin)


class Parties:
    """A pharma organization (its admin and a scientist), a CRO (its admin), and an outsider."""

    def __init__(self, pharma: Org, scientist: dict, cro: Org, outsider: Org) -> None:
        self.pharma, self.scientist, self.cro, self.outsider = pharma, scientist, cro, outsider

    @classmethod
    def create(cls, api: httpx.Client, admin: dict) -> Parties:
        pharma = Org.create(api, admin)
        cro_id, cro_session = new_org(api, admin, "CRO")
        return cls(pharma, pharma.add_user(api, "pharma_scientist"), Org(cro_id, cro_session), Org.create(api, admin))

    @property
    def scientist_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.scientist['access_token']}"}

    def shared_document(self, api: httpx.Client, documents_grpc: pb_grpc.DocumentServiceStub, pages: int = 1) -> str:
        """A PDF NDA of a new submission that the CRO may read and sign."""
        submission = f"sub-{uuid.uuid4().hex[:8]}"
        uploaded = api.post(
            "/documents/upload",
            data={"document_type": "NON_DISCLOSURE_AGREEMENT", "title": "Mutual NDA", "submission_id": submission},
            files={"file": ("nda.pdf", blank_pdf(pages), "application/pdf")},
            headers=self.scientist_headers,
        )
        document_id: str = created(uploaded)["id"]
        share = pb.ShareSubmissionDocumentsRequest(
            submission_id=submission, owner_organization_id=self.pharma.id, cro_organization_id=self.cro.id,
            shared=True,
        )
        assert documents_grpc.ShareSubmissionDocuments(share, metadata=list(self.scientist_headers.items())).documents
        return document_id


def sign(api: httpx.Client, org: Org, document_id: str, meaning: str, password: str = PASSWORD) -> httpx.Response:
    return api.post(f"/documents/{document_id}/signature/sign", json={"password": password, "meaning": meaning},
                    headers=org.headers)


def test_two_built_in_signatures_seal_the_pdf(
    api: httpx.Client, parties: Parties, documents_grpc: pb_grpc.DocumentServiceStub, mesh  # type: ignore[no-untyped-def]
) -> None:
    pharma, cro = parties.pharma, parties.cro
    document_id = parties.shared_document(api, documents_grpc)
    signers = [{"user_id": pharma.user_id, "routing_order": 1},
               {"organization_id": cro.id, "role": "cro_admin", "routing_order": 2}]
    request = created(api.post(f"/documents/{document_id}/signature", json={"signers": signers, "message": "Please"},
                               headers=parties.scientist_headers))
    assert request["status"] == "SENT" and request["provider"] == "builtin" and request["version"] == 1
    status = data(api.get(f"/documents/{document_id}/signature/status", headers=cro.headers))
    assert [s["status"] for s in status["signers"]] == ["SENT", "WAITING"]
    assert data(api.get(f"/documents/{document_id}", headers=pharma.headers))["status"] == "PENDING_SIGNATURE"

    assert_error(sign(api, cro, document_id, "reviewed"), 409, "RESOURCE_CONFLICT")  # not the CRO's turn yet
    assert_error(sign(api, pharma, document_id, "approved", "Wrong-Password-1!"), 401, "AUTHENTICATION_ERROR")
    assert_error(sign(api, pharma, document_id, "witnessed"), 400, "VALIDATION_ERROR")

    first = data(sign(api, pharma, document_id, "approved"))
    assert first["status"] == "SIGNED" and first["signers"][0]["meaning"] == "approved"
    assert first["signers"][0]["printed_name"] == "Org Admin" and first["signers"][0]["signed_by"] == pharma.user_id
    assert first["signers"][0]["signed_sha256"] == request["sha256"]
    done = data(sign(api, cro, document_id, "reviewed"))
    assert done["status"] == "COMPLETED" and done["signed_version"] == 2 and done["finished_at"]

    document = data(api.get(f"/documents/{document_id}", headers=pharma.headers))
    assert document["status"] == "SIGNED" and document["current_version"] == 2
    assert document["current"]["origin"] == "signed" and document["current"]["signed"] is True

    verified = data(api.get(f"/documents/{document_id}/signature/verify", headers=cro.headers))
    assert verified["version"] == 2 and verified["intact"] and verified["trusted"]
    assert verified["covers_whole_document"] and "Molbridge" in verified["signer_certificate"]

    downloaded = api.get(f"/documents/{document_id}/download", headers=cro.headers)
    assert downloaded.status_code == 200 and downloaded.headers["content-type"] == "application/pdf"
    sealed = downloaded.content
    assert len(PdfReader(io.BytesIO(sealed)).pages) == 2  # the document and its signature page
    # Offline: pyHanko alone, trusting the platform's published certificate.
    certificate = load_cert_from_pemder(str(mesh.data_dir / "document-seal" / "seal-certificate.pem"))
    embedded = PdfFileReader(io.BytesIO(sealed)).embedded_signatures
    assert len(embedded) == 1
    checked = validate_pdf_signature(embedded[0], ValidationContext(trust_roots=[certificate]))
    assert checked.intact and checked.valid and checked.trusted
    assert checked.coverage == SignatureCoverageLevel.ENTIRE_FILE
    original = api.get(f"/documents/{document_id}/download", params={"version": 1}, headers=cro.headers).content
    assert sealed.startswith(original)  # the seal is an incremental update of the exact bytes signed

    assert_error(api.delete(f"/documents/{document_id}", headers=pharma.headers), 409, "RESOURCE_CONFLICT")


def test_decline_and_void_over_rest(
    api: httpx.Client, parties: Parties, documents_grpc: pb_grpc.DocumentServiceStub
) -> None:
    pharma = parties.pharma
    document_id = parties.shared_document(api, documents_grpc)
    ask = {"signers": [{"user_id": pharma.user_id}]}
    created(api.post(f"/documents/{document_id}/signature", json=ask, headers=parties.scientist_headers))
    assert_error(api.post(f"/documents/{document_id}/signature/decline", json={"reason": ""}, headers=pharma.headers),
                 400, "VALIDATION_ERROR")
    declined = data(api.post(f"/documents/{document_id}/signature/decline", json={"reason": "wrong party"},
                             headers=pharma.headers))
    assert declined["status"] == "DECLINED" and declined["signers"][0]["decline_reason"] == "wrong party"
    assert data(api.get(f"/documents/{document_id}", headers=pharma.headers))["status"] == "REJECTED"

    created(api.post(f"/documents/{document_id}/signature", json=ask, headers=parties.scientist_headers))
    voided = data(api.post(f"/documents/{document_id}/signature/void", json={"reason": "superseded"},
                           headers=parties.scientist_headers))
    assert voided["status"] == "VOIDED"
    assert data(api.get(f"/documents/{document_id}", headers=pharma.headers))["status"] == "DRAFT"


def test_another_organization_gets_404_on_every_signature_route(
    api: httpx.Client, parties: Parties, documents_grpc: pb_grpc.DocumentServiceStub
) -> None:
    document_id = parties.shared_document(api, documents_grpc)
    created(api.post(f"/documents/{document_id}/signature", json={"signers": [{"user_id": parties.pharma.user_id}]},
                     headers=parties.scientist_headers))
    outsider = parties.outsider.headers
    base = f"/documents/{document_id}/signature"
    calls: list[tuple[str, str, dict[str, Any] | None]] = [
        ("POST", base, {"signers": [{"user_id": parties.outsider.user_id}]}),
        ("GET", f"{base}/status", None),
        ("POST", f"{base}/sign", {"password": PASSWORD, "meaning": "approved"}),
        ("POST", f"{base}/decline", {"reason": "no"}),
        ("POST", f"{base}/void", {"reason": "no"}),
        ("POST", f"{base}/signing-url", {"return_url": "https://app.test/back"}),
        ("GET", f"{base}/verify", None),
    ]
    for method, path, body in calls:
        assert_error(api.request(method, path, json=body, headers=outsider), 404, "RESOURCE_NOT_FOUND")


def test_docusign_end_to_end_with_connect_callbacks(
    api: httpx.Client, parties: Parties, documents_grpc: pb_grpc.DocumentServiceStub, mesh  # type: ignore[no-untyped-def]
) -> None:
    pharma, cro, peer = parties.pharma, parties.cro, mesh.docusign
    document_id = parties.shared_document(api, documents_grpc, pages=2)
    signers = [
        {"user_id": pharma.user_id, "organization_id": pharma.id, "name": "Paula Pharma",
         "email": "paula@pharma.test", "routing_order": 1},
        {"organization_id": cro.id, "name": "Carl Cro", "email": "carl@cro.test", "routing_order": 2},
    ]
    request = created(api.post(f"/documents/{document_id}/signature", json={"signers": signers, "provider": "docusign"},
                               headers=parties.scientist_headers))
    envelope_id = request["envelope_id"]
    assert request["provider"] == "docusign" and envelope_id in peer.envelopes

    url = created(api.post(f"/documents/{document_id}/signature/signing-url",
                           json={"return_url": "https://app.test/signed"}, headers=pharma.headers))["url"]
    assert url.startswith("https://")
    assert_error(sign(api, pharma, document_id, "approved"), 409, "RESOURCE_CONFLICT")  # signed at DocuSign

    # A forged callback (wrong secret) and one without a signature: 401, nothing applied.
    assert peer.send_forged_callback(envelope_id) == 401
    body = peer.connect_message(envelope_id, "envelope-completed")
    unsigned = api.post(WEBHOOK, content=body, headers={"content-type": "application/json"})
    assert_error(unsigned, 401, "AUTHENTICATION_ERROR")

    before = len(peer.callbacks)
    peer.complete(envelope_id)  # both recipients sign; Connect posts each event, signed, to the gateway
    delivered = [(c.event, c.status) for c in peer.callbacks[before:] if c.event != "envelope-sent"]
    assert delivered == [("recipient-completed", 200)] * 2 + [("envelope-completed", 200)]

    def signed_version() -> dict | None:
        document = data(api.get(f"/documents/{document_id}", headers=pharma.headers))
        return document if document["status"] == "SIGNED" else None

    document = eventually(signed_version, "the completed envelope's document")
    assert document["current_version"] == 2 and document["current"]["origin"] == "docusign"
    assert document["current"]["signed"] is True
    status = data(api.get(f"/documents/{document_id}/signature/status", headers=cro.headers))
    assert status["status"] == "COMPLETED" and status["signed_version"] == 2
    assert [s["status"] for s in status["signers"]] == ["SIGNED", "SIGNED"]

    # The last callback again, byte for byte and validly signed: accepted, no effect.
    last = peer.callbacks[-1]
    replayed = api.post(WEBHOOK, content=last.body, headers=last.headers)
    assert replayed.status_code == 200 and replayed.json() == {"applied": False}, replayed.text
    versions = data(api.get(f"/documents/{document_id}", headers=pharma.headers))["versions"]
    assert [v["origin"] for v in versions] == ["docusign", "upload"]
    downloaded = api.get(f"/documents/{document_id}/download", headers=cro.headers)
    assert downloaded.status_code == 200 and downloaded.content.startswith(b"%PDF-")
