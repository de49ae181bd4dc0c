"""Documents through the real gateway over REST, the way a browser or a partner calls them: multipart
and raw uploads streamed to storage, the limits and the content check as 400 envelopes, versions,
downloads with their headers, update, soft delete, the expiry sweep, requirements, organizations
isolated on every route, and a submission's documents shared with its CRO through the internal RPC
(on the document service's own gRPC port: the gateway never routes it)."""

from __future__ import annotations

import hashlib
import io
import time
import uuid
import zipfile
from collections.abc import Iterator
from datetime import date, timedelta

import grpc
import httpx
import pytest
from molbridge.document.v1 import document_service_pb2 as pb
from molbridge.document.v1 import document_service_pb2_grpc as pb_grpc

from tests.conftest import MESH_DOCUMENT_MAX_BYTES
from tests.e2e import test_identity_gateway
from tests.e2e.molecule_rest import Org, assert_error, created, data, field_violations
from tests.e2e.test_identity_gateway import new_org

api = test_identity_gateway.api
admin = test_identity_gateway.admin

PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n" + bytes(range(256)) * 4 + b"\n%%EOF\n"
EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + bytes(2048)
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
SWEEP_WAIT_S = 30.0


def xlsx() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("xl/workbook.xml", "<workbook/>")
        archive.writestr("xl/worksheets/sheet1.xml", "<worksheet/>")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def pharma(api: httpx.Client, admin: dict) -> Org:
    return Org.create(api, admin)


@pytest.fixture(scope="module")
def other_pharma(api: httpx.Client, admin: dict) -> Org:
    return Org.create(api, admin)


@pytest.fixture(scope="module")
def cro(api: httpx.Client, admin: dict) -> Org:
    org_id, session = new_org(api, admin, "CRO")
    return Org(org_id, session)


@pytest.fixture(scope="module")
def documents_grpc(mesh) -> Iterator[pb_grpc.DocumentServiceStub]:  # type: ignore[no-untyped-def]
    """The document service's own port, as the CRO service calls it (not through the gateway)."""
    with grpc.insecure_channel(mesh.service_addr("document")) as channel:
        yield pb_grpc.DocumentServiceStub(channel)


@pytest.fixture(scope="module")
def gateway_grpc(mesh) -> Iterator[pb_grpc.DocumentServiceStub]:  # type: ignore[no-untyped-def]
    with grpc.insecure_channel(mesh.grpc_target) as channel:
        yield pb_grpc.DocumentServiceStub(channel)


def upload_form(api: httpx.Client, org: Org, content: bytes, filename: str, **fields: str) -> httpx.Response:
    """multipart/form-data: the text fields, then `file` (httpx writes `data` before `files`)."""
    return api.post(
        "/documents/upload", data=fields, files={"file": (filename, content, "application/pdf")}, headers=org.headers
    )


def upload_raw(api: httpx.Client, org: Org, content: bytes, filename: str = "", **fields: str) -> httpx.Response:
    headers = {**org.headers, "content-type": "application/octet-stream"}
    headers |= {f"x-{name.replace('_', '-')}": value for name, value in fields.items()}
    if filename:
        headers["content-disposition"] = f'attachment; filename="{filename}"'
    return api.post("/documents/upload", content=content, headers=headers)


def new_document(api: httpx.Client, org: Org, content: bytes = PDF, **fields: str) -> dict:
    return dict(created(upload_raw(api, org, content, "file.pdf", **{"document_type": "QUALITY_CONTROL", **fields})))


# --- upload ----------------------------------------------------------------------------------------------


def test_multipart_upload_answers_the_document_with_its_version(api: httpx.Client, pharma: Org) -> None:
    document = created(
        upload_form(
            api,
            pharma,
            PDF,
            "mutual nda.pdf",
            document_type="NON_DISCLOSURE_AGREEMENT",
            title="Mutual NDA",
            submission_id="sub-rest-1",
            expires_on="2031-01-31",
        )
    )
    assert document["document_type"] == "NON_DISCLOSURE_AGREEMENT" and document["status"] == "DRAFT"
    assert document["title"] == "Mutual NDA" and document["expires_on"] == "2031-01-31"
    assert document["signature_required"] is True and document["organization_id"] == pharma.id
    current = document["current"]
    assert current["filename"] == "mutual nda.pdf" and current["content_type"] == "application/pdf"
    assert int(current["size_bytes"]) == len(PDF) and current["sha256"] == hashlib.sha256(PDF).hexdigest()


def test_raw_upload_takes_its_values_from_headers_and_its_type_from_the_bytes(api: httpx.Client, pharma: Org) -> None:
    document = created(
        upload_raw(
            api,
            pharma,
            xlsx(),
            "prices.pdf",
            document_type="ADDITIONAL_INSTRUCTIONS",
            document_title="Price list",
            document_description="2026",
        )
    )
    assert (document["title"], document["description"]) == ("Price list", "2026")
    assert document["current"]["content_type"] == XLSX and document["current"]["filename"] == "prices.pdf"


def test_too_large_and_wrong_type_are_400_envelopes(api: httpx.Client, pharma: Org) -> None:
    big = PDF + bytes(MESH_DOCUMENT_MAX_BYTES)
    error = assert_error(
        upload_raw(api, pharma, big, "big.pdf", document_type="QUALITY_CONTROL"), 400, "VALIDATION_ERROR"
    )
    assert "upload limit" in error["message"]
    error = assert_error(
        upload_form(api, pharma, EXE, "contract.pdf", document_type="QUALITY_CONTROL"), 400, "VALIDATION_ERROR"
    )
    assert "Windows executable" in error["message"] and "PDF, DOCX, XLSX, CSV, PNG, JPEG, TXT" in error["message"]
    error = assert_error(upload_raw(api, pharma, PDF, "x.pdf", document_type="CONTRACT"), 400, "VALIDATION_ERROR")
    assert "document_type" in field_violations(error)


# --- versions, download, update, delete -----------------------------------------------------------------------


def test_versions_and_downloads_with_their_headers(api: httpx.Client, pharma: Org) -> None:
    first = new_document(api, pharma, b"first draft\n")
    second = created(upload_form(api, pharma, PDF, "final version.pdf", document_id=first["id"]))
    assert second["id"] == first["id"] and second["current_version"] == 2
    versions = data(api.get(f"/documents/{first['id']}", headers=pharma.headers))["versions"]
    assert [v["version"] for v in versions] == [2, 1]

    current = api.get(f"/documents/{first['id']}/download", headers=pharma.headers)
    assert current.status_code == 200 and current.content == PDF
    assert current.headers["content-type"] == "application/pdf"
    assert current.headers["content-disposition"].startswith('attachment; filename="final version.pdf"')
    old = api.get(f"/documents/{first['id']}/download", params={"version": 1}, headers=pharma.headers)
    assert old.content == b"first draft\n" and old.headers["content-type"] == "text/plain"
    assert_error(
        api.get(f"/documents/{first['id']}/download", params={"version": 9}, headers=pharma.headers),
        404,
        "RESOURCE_NOT_FOUND",
    )
    link = data(api.get(f"/documents/{first['id']}/download-link", headers=pharma.headers))
    assert link["url"].endswith(f"/api/v1/documents/{first['id']}/download?version=2")


def test_update_and_soft_delete(api: httpx.Client, pharma: Org) -> None:
    document = new_document(api, pharma, submission_id="sub-rest-del")
    updated = data(
        api.put(
            f"/documents/{document['id']}", json={"title": "QC lot 12", "description": "re-run"}, headers=pharma.headers
        )
    )
    assert (updated["title"], updated["description"]) == ("QC lot 12", "re-run")
    deleted = data(api.delete(f"/documents/{document['id']}", headers=pharma.headers))
    assert deleted["status"] == "ARCHIVED"
    listed = data(api.get("/submissions/sub-rest-del/documents", headers=pharma.headers))
    assert listed == []
    listed = data(
        api.get(
            "/documents", params={"include_deleted": "true", "submission_id": "sub-rest-del"}, headers=pharma.headers
        )
    )
    assert [d["id"] for d in listed] == [document["id"]]
    assert api.get(f"/documents/{document['id']}/download", headers=pharma.headers).content == PDF  # kept


def test_the_expiry_sweep_marks_past_documents_expired(api: httpx.Client, pharma: Org) -> None:
    yesterday = (date.today() - timedelta(days=2)).isoformat()
    document = new_document(api, pharma, document_type="NON_DISCLOSURE_AGREEMENT", expires_on=yesterday)
    deadline = time.monotonic() + SWEEP_WAIT_S
    while data(api.get(f"/documents/{document['id']}", headers=pharma.headers))["status"] != "EXPIRED":
        assert time.monotonic() < deadline, "the sweep did not expire the document"
        time.sleep(0.2)
    expired = data(api.get("/documents", params={"status": "EXPIRED"}, headers=pharma.headers))
    assert document["id"] in [d["id"] for d in expired]


def test_requirements_of_a_submission(api: httpx.Client, pharma: Org) -> None:
    submission = f"sub-{uuid.uuid4().hex[:8]}"
    mta = new_document(api, pharma, document_type="MATERIAL_TRANSFER_AGREEMENT", submission_id=submission)
    answer = data(
        api.get(
            "/documents/requirements",
            params={"submission_id": submission, "service_type": "ADME"},
            headers=pharma.headers,
        )
    )
    by_type = {r["document_type"]: r for r in answer["requirements"]}
    assert list(by_type) == [
        "MATERIAL_TRANSFER_AGREEMENT",
        "NON_DISCLOSURE_AGREEMENT",
        "EXPERIMENT_SPECIFICATION",
        "SAFETY_DATA_SHEET",
    ]
    assert by_type["MATERIAL_TRANSFER_AGREEMENT"]["document_id"] == mta["id"]
    assert by_type["MATERIAL_TRANSFER_AGREEMENT"]["present"] is True
    assert not by_type["MATERIAL_TRANSFER_AGREEMENT"].get("satisfied")  # not signed
    assert not answer.get("complete")
    assert_error(
        api.get(
            "/documents/requirements", params={"submission_id": submission, "service_type": "X"}, headers=pharma.headers
        ),
        400,
        "VALIDATION_ERROR",
    )


# --- isolation and sharing ---------------------------------------------------------------------------------


def test_another_organization_gets_404_on_every_document_route(
    api: httpx.Client, pharma: Org, other_pharma: Org, cro: Org
) -> None:
    submission = f"sub-{uuid.uuid4().hex[:8]}"
    document = new_document(api, pharma, submission_id=submission)
    path = f"/documents/{document['id']}"
    for outsider in (other_pharma, cro):
        headers = outsider.headers
        for response in (
            api.get(path, headers=headers),
            api.put(path, json={"title": "ours"}, headers=headers),
            api.delete(path, headers=headers),
            api.get(f"{path}/download", headers=headers),
            api.get(f"{path}/download-link", headers=headers),
            upload_raw(api, outsider, PDF, "v2.pdf", document_id=document["id"]),
        ):
            assert_error(response, 404, "RESOURCE_NOT_FOUND")
        assert data(api.get(f"/submissions/{submission}/documents", headers=headers)) == []
        assert document["id"] not in [d["id"] for d in data(api.get("/documents", headers=headers))]
        answer = data(
            api.get(
                "/documents/requirements",
                params={"submission_id": submission, "service_type": "CUSTOM"},
                headers=headers,
            )
        )
        assert all(not r.get("document_id") for r in answer["requirements"])


def test_the_internal_share_rpc_is_not_routed_by_the_gateway(
    gateway_grpc: pb_grpc.DocumentServiceStub, pharma: Org, cro: Org
) -> None:
    request = pb.ShareSubmissionDocumentsRequest(
        submission_id="sub-x", owner_organization_id=pharma.id, cro_organization_id=cro.id, shared=True
    )
    with pytest.raises(grpc.RpcError) as error:
        gateway_grpc.ShareSubmissionDocuments(request, metadata=list(pharma.headers.items()))
    assert error.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNIMPLEMENTED)


def test_sharing_lets_the_cro_read_exactly_that_submissions_documents(
    api: httpx.Client, documents_grpc: pb_grpc.DocumentServiceStub, pharma: Org, other_pharma: Org, cro: Org
) -> None:
    shared_submission, private_submission = f"sub-{uuid.uuid4().hex[:8]}", f"sub-{uuid.uuid4().hex[:8]}"
    nda = new_document(api, pharma, document_type="NON_DISCLOSURE_AGREEMENT", submission_id=shared_submission)
    spec = new_document(api, pharma, xlsx(), document_type="EXPERIMENT_SPECIFICATION", submission_id=shared_submission)
    hidden = new_document(api, pharma, document_type="MATERIAL_TRANSFER_AGREEMENT", submission_id=private_submission)
    scientist = pharma.add_user(api, "pharma_scientist")
    request = pb.ShareSubmissionDocumentsRequest(
        submission_id=shared_submission, owner_organization_id=pharma.id, cro_organization_id=cro.id, shared=True
    )
    with pytest.raises(grpc.RpcError) as error:  # the CRO cannot grant itself access
        documents_grpc.ShareSubmissionDocuments(request, metadata=list(cro.headers.items()))
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    answer = documents_grpc.ShareSubmissionDocuments(
        request, metadata=[("authorization", f"Bearer {scientist['access_token']}")]
    )
    assert answer.documents == 2

    listed = data(api.get("/documents", headers=cro.headers))
    assert sorted(d["id"] for d in listed) == sorted([nda["id"], spec["id"]])
    assert sorted(
        d["id"] for d in data(api.get(f"/submissions/{shared_submission}/documents", headers=cro.headers))
    ) == sorted([nda["id"], spec["id"]])
    assert data(api.get(f"/documents/{nda['id']}", headers=cro.headers))["id"] == nda["id"]
    assert api.get(f"/documents/{spec['id']}/download", headers=cro.headers).headers["content-type"] == XLSX
    assert_error(api.get(f"/documents/{hidden['id']}", headers=cro.headers), 404, "RESOURCE_NOT_FOUND")
    assert_error(
        api.put(f"/documents/{nda['id']}", json={"title": "x"}, headers=cro.headers), 403, "AUTHORIZATION_ERROR"
    )
    assert_error(api.get(f"/documents/{nda['id']}", headers=other_pharma.headers), 404, "RESOURCE_NOT_FOUND")
    # the pharma side reads the CRO's documents of that submission
    agreement = new_document(api, cro, document_type="SERVICE_AGREEMENT", submission_id=shared_submission)
    assert data(api.get(f"/documents/{agreement['id']}", headers=pharma.headers))["organization_id"] == cro.id

    request.shared = False
    documents_grpc.ShareSubmissionDocuments(
        request, metadata=[("authorization", f"Bearer {scientist['access_token']}")]
    )
    assert_error(api.get(f"/documents/{nda['id']}", headers=cro.headers), 404, "RESOURCE_NOT_FOUND")


def test_templates_are_listed_previewed_and_generated(api: httpx.Client, pharma: Org) -> None:
    templates = {t["name"]: t for t in data(api.get("/document-templates", headers=pharma.headers))}
    assert templates["mta"]["document_type"] == "MATERIAL_TRANSFER_AGREEMENT"
    preview = api.get("/document-templates/experiment_specification/preview", headers=pharma.headers)
    assert preview.status_code == 200 and preview.headers["content-type"] == "application/pdf"
    assert preview.content.startswith(b"%PDF-")
    samples = {"effective_date": "2026-06-01", "service_type": "ADME"}
    fields = {
        f["name"]: samples.get(f["name"], f"{f['name']} text")
        for f in templates["experiment_specification"]["fields"]
        if f.get("required")
    }
    response = api.post(
        "/documents/generate",
        json={"template": "experiment_specification", "fields": fields, "submission_id": "sub-generated"},
        headers=pharma.headers,
    )
    document = data(response, 201)  # a create (gateway/envoy/policy.toml created_methods)
    assert document["template"] == "experiment_specification" and document["current"]["origin"] == "generated"
    assert document["document_type"] == "EXPERIMENT_SPECIFICATION"
    pdf = api.get(f"/documents/{document['id']}/download", headers=pharma.headers)
    assert pdf.headers["content-type"] == "application/pdf" and pdf.content.startswith(b"%PDF-")
    assert_error(api.get("/document-templates/lease/preview", headers=pharma.headers), 404, "RESOURCE_NOT_FOUND")
