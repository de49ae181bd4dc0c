"""DocumentService through its real servicer, in-process over a real gRPC channel, on real PostgreSQL
and NATS, with object storage in a local directory and on S3 (moto's server).

Callers are real users of the real identity service (same database, its own schema); the document
service verifies their tokens against the identity JWKS, as it does in the mesh.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import urllib.request
import uuid
import zipfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from google.api.httpbody_pb2 import HttpBody
from google.rpc import error_details_pb2, status_pb2
from molbridge.document.v1 import document_service_pb2 as pb
from molbridge.document.v1 import document_service_pb2_grpc as pb_grpc
from molbridge.events.v1.audit_pb2 import AuditRecorded
from molbridge.events.v1.cro_pb2 import SubmissionTransitioned
from molbridge.events.v1.document_pb2 import DocumentExpiring, DocumentStatusChanged
from molbridge.events.v1.envelope_pb2 import EventEnvelope
from sqlalchemy.ext.asyncio import AsyncEngine

from bus import build_envelope, event_subject, outbox_table, unpack
from bus.connection import connect
from bus.subjects import source_events
from services.document import worker
from services.document.bootstrap import MIGRATIONS as DOCUMENT_MIGRATIONS
from services.document.bootstrap import DocumentParts, DocumentSettings, build_parts
from services.document.domain.vocabulary import DocumentStatus, VersionOrigin
from services.document.store import SCHEMA as DOCUMENT_SCHEMA
from services.identity.bootstrap import MIGRATIONS as IDENTITY_MIGRATIONS
from services.identity.store import SCHEMA as IDENTITY_SCHEMA
from services.runtime.auth import Authenticator, TokenVerifier
from services.runtime.db import make_engine
from services.runtime.process import Outbox, Process, running
from services.runtime.storage import MIB
from stack.ports import free_port
from tests.integration.identity_world import started_identity
from tests.integration.s3_server import MotoS3

ADMIN = ("root@platform.test", "Platform-Root-Pass1!")
PASSWORD = "Scientist-Pass-123!"
LIMIT = 2 * MIB
BOUNDARY = "----DocumentBoundary7MA4YWxkTrZu0gW"
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n" + bytes(range(256)) * 8 + b"\n%%EOF\n"
EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + bytes(600)
NDA = pb.Document.NON_DISCLOSURE_AGREEMENT


def docx(text: str = "Experiment specification") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("_rels/.rels", "<Relationships/>")
        archive.writestr("word/document.xml", f"<w:document><w:t>{text}</w:t></w:document>")
    return buffer.getvalue()


SPEC = docx()  # built once: a ZIP records the time it was written


@dataclass
class World:
    stub: pb_grpc.DocumentServiceStub
    parts: DocumentParts
    engine: AsyncEngine
    tokens: dict[str, str]  # "alpha_scientist", "alpha_admin", "beta_scientist", "cro_technician", …
    orgs: dict[str, str]  # "alpha", "beta", "cro", "audit" → organization id
    nats_url: str

    def auth(self, who: str) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.tokens[who]}")]


@pytest.fixture(params=["local"])
async def world(request: pytest.FixtureRequest, database_url: str, nats_server, tmp_path: Path) -> AsyncIterator[World]:  # type: ignore[no-untyped-def]
    IDENTITY_MIGRATIONS.upgrade(database_url)
    DOCUMENT_MIGRATIONS.upgrade(database_url)
    identity_engine = make_engine(database_url, IDENTITY_SCHEMA)
    identity = await started_identity(identity_engine, tmp_path / "mail", *ADMIN)
    verifier = TokenVerifier(identity.jwks)
    admin_token = (await identity.login(*ADMIN)).access_token
    admin = await verifier.verify(admin_token)
    tokens, orgs = {"system_admin": admin_token}, {}
    members = {
        "alpha": ("PHARMA", ["pharma_scientist", "pharma_admin"]),
        "beta": ("PHARMA", ["pharma_scientist"]),
        "cro": ("CRO", ["cro_technician"]),
        "audit": ("PLATFORM", ["auditor"]),  # the platform organization's auditor
    }
    for org_name, (kind, roles) in members.items():
        if kind == "PLATFORM":
            orgs[org_name] = admin.organization_id
        else:
            orgs[org_name] = (
                await identity.create_organization(admin, f"{org_name} {uuid.uuid4().hex[:6]}", kind, "")
            ).id
        for role in roles:
            email = f"{role}@{org_name}.test"
            await identity.create_user(
                admin,
                email=email,
                full_name=role,
                password=PASSWORD,
                roles=[role],
                organization_id=orgs[org_name],
                request_id="",
            )
            tokens[f"{org_name}_{role.split('_')[-1]}"] = (await identity.login(email, PASSWORD)).access_token

    env = {
        "MOLBRIDGE_DOCUMENT_ADDR": f"127.0.0.1:{free_port()}",
        "MOLBRIDGE_DATA_DIR": str(tmp_path / "data"),
        "MOLBRIDGE_DOCUMENT_MAX_BYTES": str(LIMIT),
        "MOLBRIDGE_PUBLIC_URL": "http://gw.test",
        "NATS_URL": nats_server.url,
    }
    s3 = MotoS3(tmp_path / "moto.log") if request.param == "s3" else None
    if s3 is not None:
        s3.start()
        env |= {
            "S3_BUCKET": "documents-test",
            "S3_ENDPOINT_URL": s3.url,
            "S3_CREATE_BUCKET": "1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }
    settings = DocumentSettings.from_env("document", env)
    engine = make_engine(database_url, DOCUMENT_SCHEMA)
    parts = build_parts(settings, engine)
    process = Process(
        servicers=parts.servicers,
        authenticator=Authenticator(verifier, identity),
        outbox=Outbox(engine, DOCUMENT_SCHEMA),
    )
    try:
        async with running("document", process, settings), grpc.aio.insecure_channel(settings.listen_addr) as channel:
            yield World(pb_grpc.DocumentServiceStub(channel), parts, engine, tokens, orgs, nats_server.url)
    finally:
        await engine.dispose()
        await identity_engine.dispose()
        if s3 is not None:
            s3.stop()


# --- helpers ---------------------------------------------------------------------------------------------


def form(fields: dict[str, str], file: tuple[str, bytes] | None, *, after: dict[str, str] | None = None) -> bytes:
    out = bytearray()
    for name, value in fields.items():
        out += f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    if file is not None:
        out += (
            (
                f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{file[0]}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + file[1]
            + b"\r\n"
        )
    for name, value in (after or {}).items():
        out += f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    return bytes(out) + f"--{BOUNDARY}--\r\n".encode()


def messages(body: bytes, content_type: str, largest: int = 64 * 1024) -> list[HttpBody]:
    pieces = [body[i : i + largest] for i in range(0, len(body), largest)] or [b""]
    return [HttpBody(content_type=content_type, data=pieces[0]), *(HttpBody(data=p) for p in pieces[1:])]


async def upload_messages(
    world: World, who: str, msgs: Sequence[HttpBody], headers: Sequence[tuple[str, str]] = ()
) -> pb.Document:
    async def requests() -> AsyncIterator[HttpBody]:
        for message in msgs:
            yield message

    return (await world.stub.UploadDocument(requests(), metadata=world.auth(who) + list(headers))).data


async def upload_form(world: World, who: str, fields: dict[str, str], file: tuple[str, bytes]) -> pb.Document:
    return await upload_messages(world, who, messages(form(fields, file), f"multipart/form-data; boundary={BOUNDARY}"))


async def upload_raw(world: World, who: str, data: bytes, filename: str = "", **headers: str) -> pb.Document:
    sent = [(f"x-{name.replace('_', '-')}", value) for name, value in headers.items()]
    if filename:
        sent.append(("content-disposition", f'attachment; filename="{filename}"'))
    return await upload_messages(world, who, messages(data, "application/octet-stream"), sent)


async def download(world: World, who: str, document_id: str, version: int = 0) -> tuple[bytes, str, str]:
    """The bytes, the content type of the first message and the content-disposition."""
    call = world.stub.DownloadDocument(
        pb.DownloadDocumentRequest(id=document_id, version=version), metadata=world.auth(who)
    )
    chunks = [message async for message in call]
    disposition = dict(await call.initial_metadata())["content-disposition"]
    return b"".join(m.data for m in chunks), chunks[0].content_type, disposition


async def rpc_error(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call  # type: ignore[misc]
    return error.value


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    details = dict(error.trailing_metadata() or ())["grpc-status-details-bin"]
    for detail in status_pb2.Status.FromString(details).details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info
    raise AssertionError("no ErrorInfo in the status")


def assert_validation(error: grpc.aio.AioRpcError, detail: str = "") -> error_details_pb2.ErrorInfo:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    info = error_info(error)
    assert info.reason == "VALIDATION_ERROR", info
    if detail:
        assert info.metadata["detail"] == detail, info
    return info


async def outbox(world: World) -> list[EventEnvelope]:
    async with world.engine.connect() as connection:
        rows = (await connection.execute(sa.select(outbox_table(DOCUMENT_SCHEMA)).order_by("created_at"))).all()
    return [EventEnvelope.FromString(row.payload) for row in rows]


async def audits(world: World, document_id: str = "") -> list[AuditRecorded]:
    found = []
    for envelope in await outbox(world):
        if envelope.payload.Is(AuditRecorded.DESCRIPTOR):
            audit = unpack(envelope, AuditRecorded)
            if not document_id or audit.target_id == document_id:
                found.append(audit)
    return found


async def status_changes(world: World, document_id: str) -> list[tuple[str, str]]:
    found = []
    for envelope in await outbox(world):
        if envelope.payload.Is(DocumentStatusChanged.DESCRIPTOR):
            change = unpack(envelope, DocumentStatusChanged)
            if change.document_id == document_id:
                found.append((change.from_status, change.to_status))
    return found


async def stored_objects(world: World) -> int:
    root = getattr(world.parts.storage, "root", None)
    return len([p for p in root.rglob("*") if p.is_file()]) if root and root.exists() else 0


async def set_signed(world: World, document_id: str) -> None:
    """Completes a signature the way the signature service does: through the domain and repository."""
    stored = await world.parts.documents.store_bytes(world.orgs["alpha"], PDF + b"%signed", "signed.pdf")
    async with world.parts.uow() as uow:
        document = await uow.documents.get_any(document_id, lock=True)
        assert document is not None
        document.change_status(DocumentStatus.PENDING_SIGNATURE)
        document.add_signed_version(stored, "signer", VersionOrigin.SIGNED)
        await uow.documents.save(document)


# --- upload, versions, download ------------------------------------------------------------------------


@pytest.mark.parametrize("world", ["local", "s3"], indirect=True)
async def test_multipart_and_raw_uploads_store_the_file_typed_from_its_bytes(world: World) -> None:
    fields = {
        "document_type": "NON_DISCLOSURE_AGREEMENT",
        "title": "Mutual NDA",
        "description": "with CRO",
        "submission_id": "sub-1",
        "expires_on": "2031-12-31",
    }
    nda = await upload_form(world, "alpha_scientist", fields, ("nda final.docx", PDF))
    assert (nda.document_type, nda.title, nda.description, nda.submission_id, nda.expires_on) == (
        NDA,
        "Mutual NDA",
        "with CRO",
        "sub-1",
        "2031-12-31",
    )
    assert nda.status == pb.Document.DRAFT and nda.signature_required and nda.current_version == 1
    assert nda.organization_id == world.orgs["alpha"]
    current = nda.current
    # the client called it .docx; the bytes are a PDF
    assert (current.filename, current.content_type, current.size_bytes) == (
        "nda final.docx",
        "application/pdf",
        len(PDF),
    )
    assert current.sha256 == hashlib.sha256(PDF).hexdigest() and current.origin == "upload" and not current.signed

    spec_bytes = docx()
    spec = await upload_raw(
        world,
        "alpha_scientist",
        spec_bytes,
        "spec.docx",
        document_type="EXPERIMENT_SPECIFICATION",
        document_title="Spec",
        submission_id="sub-1",
    )
    assert spec.document_type == pb.Document.EXPERIMENT_SPECIFICATION and spec.title == "Spec"
    assert spec.current.content_type == "application/vnd.openxmlformats-officedocument.wordprocessingml.document"

    data, content_type, disposition = await download(world, "alpha_scientist", spec.id)
    assert data == spec_bytes and content_type == spec.current.content_type
    assert disposition.startswith('attachment; filename="spec.docx"')

    link = (
        await world.stub.GetDocumentDownloadLink(
            pb.GetDocumentDownloadLinkRequest(id=nda.id), metadata=world.auth("alpha_scientist")
        )
    ).data
    if "s3" in type(world.parts.storage).__name__.lower():
        assert link.expires_at.seconds > 0
        with urllib.request.urlopen(link.url) as answer:  # presigned: no token needed
            assert answer.read() == PDF
            assert "nda final.docx" in answer.headers["Content-Disposition"]
            assert answer.headers["Content-Type"] == "application/pdf"
    else:
        assert link.url == f"http://gw.test/api/v1/documents/{nda.id}/download?version=1"


async def test_every_change_adds_a_version_and_old_versions_stay_downloadable(world: World) -> None:
    first = await upload_raw(
        world, "alpha_scientist", b"draft one\n", "notes.txt", document_type="ADDITIONAL_INSTRUCTIONS"
    )
    assert first.current.content_type == "text/plain"
    second = await upload_raw(world, "alpha_admin", b"a,b\n1,2\n3,4\n", "notes.csv", document_id=first.id)
    assert second.id == first.id and second.current_version == 2 and second.current.content_type == "text/csv"
    got = (
        await world.stub.GetDocument(pb.GetDocumentRequest(id=first.id), metadata=world.auth("alpha_scientist"))
    ).data
    assert [v.version for v in got.versions] == [2, 1]  # newest first
    assert (await download(world, "alpha_scientist", first.id, 1))[0] == b"draft one\n"
    assert (await download(world, "alpha_scientist", first.id))[0] == b"a,b\n1,2\n3,4\n"
    error = await rpc_error(download(world, "alpha_scientist", first.id, 3))
    assert error.code() == grpc.StatusCode.NOT_FOUND

    actions = [(a.action, a.details["version"]) for a in await audits(world, first.id)]
    assert actions == [("document.created", "1"), ("document.version_added", "2")]
    assert await status_changes(world, first.id) == [("", "DRAFT")]


async def test_a_signed_document_is_immutable_and_cannot_be_deleted(world: World) -> None:
    nda = await upload_raw(world, "alpha_scientist", PDF, "nda.pdf", document_type="NON_DISCLOSURE_AGREEMENT")
    await set_signed(world, nda.id)
    error = await rpc_error(upload_raw(world, "alpha_scientist", PDF, "v2.pdf", document_id=nda.id))
    assert error.code() == grpc.StatusCode.ABORTED or error.code() == grpc.StatusCode.FAILED_PRECONDITION, error
    assert "only DRAFT, REJECTED or EXPIRED" in (error.details() or "")
    error = await rpc_error(
        world.stub.DeleteDocument(pb.DeleteDocumentRequest(id=nda.id), metadata=world.auth("alpha_scientist"))
    )
    assert "cannot be deleted" in (error.details() or "")
    got = (await world.stub.GetDocument(pb.GetDocumentRequest(id=nda.id), metadata=world.auth("alpha_scientist"))).data
    assert got.status == pb.Document.SIGNED and got.current.signed and got.current.origin == "signed"
    assert (await download(world, "alpha_scientist", nda.id, 1))[0] == PDF


async def test_update_and_soft_delete(world: World) -> None:
    report = await upload_raw(world, "alpha_scientist", b"report\n", "r.txt", document_type="QUALITY_CONTROL")
    updated = (
        await world.stub.UpdateDocument(
            pb.UpdateDocumentRequest(id=report.id, title="QC batch 7", expires_on="2030-01-31"),
            metadata=world.auth("alpha_scientist"),
        )
    ).data
    assert (updated.title, updated.expires_on, updated.description) == ("QC batch 7", "2030-01-31", "")
    cleared = (
        await world.stub.UpdateDocument(
            pb.UpdateDocumentRequest(id=report.id, expires_on="none"), metadata=world.auth("alpha_scientist")
        )
    ).data
    assert cleared.expires_on == "" and cleared.title == "QC batch 7"
    error = await rpc_error(
        world.stub.UpdateDocument(
            pb.UpdateDocumentRequest(id=report.id, expires_on="tomorrow"), metadata=world.auth("alpha_scientist")
        )
    )
    assert_validation(error)

    deleted = (
        await world.stub.DeleteDocument(pb.DeleteDocumentRequest(id=report.id), metadata=world.auth("alpha_scientist"))
    ).data
    assert deleted.status == pb.Document.ARCHIVED

    def ids(answer: pb.ListDocumentsResponse) -> list[str]:
        return [d.id for d in answer.data]

    listed = await world.stub.ListDocuments(pb.ListDocumentsRequest(), metadata=world.auth("alpha_scientist"))
    assert report.id not in ids(listed)
    listed = await world.stub.ListDocuments(
        pb.ListDocumentsRequest(include_deleted=True), metadata=world.auth("alpha_scientist")
    )
    assert report.id in ids(listed)
    assert (await download(world, "alpha_scientist", report.id))[0] == b"report\n"  # kept
    actions = [a.action for a in await audits(world, report.id)]
    assert actions == ["document.created", "document.updated", "document.updated", "document.archived"]
    assert await status_changes(world, report.id) == [("", "DRAFT"), ("DRAFT", "ARCHIVED")]


async def test_bad_uploads_are_refused_and_leave_nothing_behind(world: World) -> None:
    error = await rpc_error(
        upload_raw(world, "alpha_scientist", EXE, "contract.pdf", document_type="NON_DISCLOSURE_AGREEMENT")
    )
    info = assert_validation(error, "UNSUPPORTED_MEDIA_TYPE")
    assert (info.metadata["found"], info.metadata["accepted"]) == (
        "a Windows executable",
        "PDF, DOCX, XLSX, CSV, PNG, JPEG, TXT",
    )
    big = PDF + bytes(LIMIT)
    assert_validation(
        await rpc_error(upload_raw(world, "alpha_scientist", big, "big.pdf", document_type="QUALITY_CONTROL")),
        "FILE_TOO_LARGE",
    )
    assert_validation(await rpc_error(upload_raw(world, "alpha_scientist", PDF, "x.pdf")))  # no document_type
    assert_validation(await rpc_error(upload_raw(world, "alpha_scientist", PDF, "x.pdf", document_type="NDA")))
    assert_validation(
        await rpc_error(upload_raw(world, "alpha_scientist", b"", "x.pdf", document_type="QUALITY_CONTROL")),
        "EMPTY_FILE",
    )
    multipart = f"multipart/form-data; boundary={BOUNDARY}"
    late = form({}, ("a.pdf", PDF), after={"document_type": "QUALITY_CONTROL"})
    assert_validation(await rpc_error(upload_messages(world, "alpha_scientist", messages(late, multipart))))
    unknown = form({"document_type": "QUALITY_CONTROL", "colour": "red"}, ("a.pdf", PDF))
    assert_validation(await rpc_error(upload_messages(world, "alpha_scientist", messages(unknown, multipart))))
    no_file = form({"document_type": "QUALITY_CONTROL"}, None)
    assert_validation(
        await rpc_error(upload_messages(world, "alpha_scientist", messages(no_file, multipart))), "MISSING_FILE"
    )
    assert await stored_objects(world) == 0
    assert await audits(world) == []

    error = await rpc_error(upload_raw(world, "audit_auditor", PDF, "a.pdf", document_type="QUALITY_CONTROL"))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_another_organization_finds_nothing(world: World) -> None:
    doc = await upload_raw(
        world, "alpha_scientist", PDF, "nda.pdf", document_type="NON_DISCLOSURE_AGREEMENT", submission_id="s-9"
    )
    for who in ("beta_scientist", "cro_technician", "audit_auditor"):
        auth = world.auth(who)
        calls = [
            world.stub.GetDocument(pb.GetDocumentRequest(id=doc.id), metadata=auth),
            world.stub.GetDocumentDownloadLink(pb.GetDocumentDownloadLinkRequest(id=doc.id), metadata=auth),
            download(world, who, doc.id),
        ]
        if who != "audit_auditor":  # an auditor only reads: a write is refused for its role first (403)
            calls += [
                world.stub.UpdateDocument(pb.UpdateDocumentRequest(id=doc.id, title="mine"), metadata=auth),
                world.stub.DeleteDocument(pb.DeleteDocumentRequest(id=doc.id), metadata=auth),
                upload_raw(world, who, PDF, "v2.pdf", document_id=doc.id),
            ]
        for call in calls:
            assert (await rpc_error(call)).code() == grpc.StatusCode.NOT_FOUND, who
        listed = await world.stub.ListDocuments(pb.ListDocumentsRequest(), metadata=auth)
        assert listed.data == [] and listed.meta.total == 0
    admin = await world.stub.GetDocument(pb.GetDocumentRequest(id=doc.id), metadata=world.auth("system_admin"))
    assert admin.data.id == doc.id


# --- sharing and requirements ------------------------------------------------------------------------------


async def test_sharing_a_submission_lets_the_cro_read_exactly_its_documents(world: World) -> None:
    nda = await upload_raw(
        world, "alpha_scientist", PDF, "nda.pdf", document_type="NON_DISCLOSURE_AGREEMENT", submission_id="sub-A"
    )
    spec = await upload_raw(
        world, "alpha_scientist", SPEC, "spec.docx", document_type="EXPERIMENT_SPECIFICATION", submission_id="sub-A"
    )
    other = await upload_raw(
        world, "alpha_scientist", PDF, "mta.pdf", document_type="MATERIAL_TRANSFER_AGREEMENT", submission_id="sub-B"
    )
    loose = await upload_raw(world, "alpha_scientist", PDF, "x.pdf", document_type="QUALITY_CONTROL")
    share = pb.ShareSubmissionDocumentsRequest(
        submission_id="sub-A",
        owner_organization_id=world.orgs["alpha"],
        cro_organization_id=world.orgs["cro"],
        shared=True,
    )
    for who in ("cro_technician", "beta_scientist"):  # only the owner's pharma scientists (or an admin)
        error = await rpc_error(world.stub.ShareSubmissionDocuments(share, metadata=world.auth(who)))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    answer = await world.stub.ShareSubmissionDocuments(share, metadata=world.auth("alpha_scientist"))
    assert answer.documents == 2
    assert (await world.stub.ShareSubmissionDocuments(share, metadata=world.auth("alpha_scientist"))).documents == 2

    cro = world.auth("cro_technician")
    listed = await world.stub.ListDocuments(pb.ListDocumentsRequest(), metadata=cro)
    assert sorted(d.id for d in listed.data) == sorted([nda.id, spec.id])
    by_route = await world.stub.ListDocuments(pb.ListDocumentsRequest(submission_id="sub-A"), metadata=cro)
    assert by_route.meta.total == 2
    assert (await download(world, "cro_technician", spec.id))[0] == SPEC
    for hidden in (other.id, loose.id):
        assert (
            await rpc_error(world.stub.GetDocument(pb.GetDocumentRequest(id=hidden), metadata=cro))
        ).code() == grpc.StatusCode.NOT_FOUND
    # read, not changed, by the other side
    error = await rpc_error(world.stub.UpdateDocument(pb.UpdateDocumentRequest(id=nda.id, title="ours"), metadata=cro))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    # and the pharma side reads the CRO's documents of the submission
    agreement = await upload_raw(
        world, "cro_technician", PDF, "sa.pdf", document_type="SERVICE_AGREEMENT", submission_id="sub-A"
    )
    assert agreement.organization_id == world.orgs["cro"]
    seen = await world.stub.GetDocument(pb.GetDocumentRequest(id=agreement.id), metadata=world.auth("alpha_scientist"))
    assert seen.data.id == agreement.id
    assert (
        await rpc_error(
            world.stub.GetDocument(pb.GetDocumentRequest(id=agreement.id), metadata=world.auth("beta_scientist"))
        )
    ).code() == grpc.StatusCode.NOT_FOUND

    requirements = (
        await world.stub.GetDocumentRequirements(
            pb.GetDocumentRequirementsRequest(submission_id="sub-A", service_type="BINDING_ASSAY"), metadata=cro
        )
    ).data
    by_type = {r.document_type: r for r in requirements.requirements}
    assert set(by_type) == {pb.Document.MATERIAL_TRANSFER_AGREEMENT, NDA, pb.Document.EXPERIMENT_SPECIFICATION}
    assert not by_type[pb.Document.MATERIAL_TRANSFER_AGREEMENT].present  # the MTA is in sub-B
    assert by_type[NDA].document_id == nda.id and by_type[NDA].present and not by_type[NDA].satisfied
    assert by_type[pb.Document.EXPERIMENT_SPECIFICATION].satisfied and not requirements.complete
    await set_signed(world, nda.id)
    requirements = (
        await world.stub.GetDocumentRequirements(
            pb.GetDocumentRequirementsRequest(submission_id="sub-A", service_type="BINDING_ASSAY"),
            metadata=world.auth("alpha_scientist"),
        )
    ).data
    nda_state = next(r for r in requirements.requirements if r.document_type == NDA)
    assert nda_state.signed_by_owner and nda_state.satisfied and not nda_state.signed_by_counterparty
    error = await rpc_error(
        world.stub.GetDocumentRequirements(
            pb.GetDocumentRequirementsRequest(submission_id="sub-A", service_type="BAKING"), metadata=cro
        )
    )
    assert_validation(error)
    assert "accepted: ADME" in (error.details() or "")

    share.shared = False
    assert (await world.stub.ShareSubmissionDocuments(share, metadata=world.auth("system_admin"))).documents == 2
    assert (
        await rpc_error(world.stub.GetDocument(pb.GetDocumentRequest(id=nda.id), metadata=cro))
    ).code() == grpc.StatusCode.NOT_FOUND
    listed = await world.stub.ListDocuments(pb.ListDocumentsRequest(), metadata=cro)
    assert [d.id for d in listed.data] == [agreement.id]
    # Sharing twice changed something once: one audit record for it.
    assert [a.action for a in await audits(world) if a.target_type == "submission"] == [
        "document.shared",
        "document.unshared",
    ]


async def test_a_submitted_submission_shares_its_documents_once_without_a_caller(world: World) -> None:
    submission = str(uuid.uuid4())
    nda = await upload_raw(
        world, "alpha_scientist", PDF, "nda.pdf", document_type="NON_DISCLOSURE_AGREEMENT", submission_id=submission
    )
    cro = world.auth("cro_technician")

    def transitioned(to_status: str, cro_organization_id: str = "") -> EventEnvelope:
        event = SubmissionTransitioned(
            submission_id=submission,
            organization_id=world.orgs["alpha"],
            cro_organization_id=cro_organization_id or world.orgs["cro"],
            from_status="DRAFT",
            to_status=to_status,
            action="SUBMIT",
        )
        return build_envelope(
            event_id=str(uuid.uuid4()), source="cro", payload=event, occurred_at=datetime.now(UTC), actor_id="someone"
        )

    async def handled(envelope: EventEnvelope) -> None:
        async def poll() -> None:
            query = sa.text("SELECT count(*) FROM processed_events WHERE consumer = :c AND event_id = :e")
            while True:
                async with world.engine.connect() as connection:
                    if await connection.scalar(query, {"c": worker.SHARING_DURABLE, "e": envelope.id}):
                        return
                await asyncio.sleep(0.05)

        await asyncio.wait_for(poll(), 20)

    # The subscription as the server declares it, next to the servicer.
    declared = [s for s in world.parts.subscriptions if s.durable == worker.SHARING_DURABLE]
    nats = await connect(world.nats_url)
    js = nats.jetstream()
    subject = event_subject("cro", SubmissionTransitioned)
    try:
        async with running("document-sharing", Process(subscriptions=declared), world.parts.settings):
            # Not SUBMITTED yet (a cancelled draft): nothing is shared. An owner sharing with itself: poison.
            for ignored in (transitioned("CANCELLED"), transitioned("SUBMITTED", world.orgs["alpha"])):
                await js.publish(subject, ignored.SerializeToString(), headers={"Nats-Msg-Id": ignored.id})
            submitted = transitioned("SUBMITTED")
            for copy in range(2):  # delivered twice (a second copy JetStream does not dedupe)
                headers = {"Nats-Msg-Id": submitted.id if copy == 0 else str(uuid.uuid4())}
                await js.publish(subject, submitted.SerializeToString(), headers=headers)
            await handled(submitted)
            later = transitioned("PENDING_REVIEW")
            await js.publish(subject, later.SerializeToString(), headers={"Nats-Msg-Id": later.id})
            # The CRO reads the submission's documents.
            seen = await world.stub.GetDocument(pb.GetDocumentRequest(id=nda.id), metadata=cro)
            assert seen.data.id == nda.id
            while True:  # the copy and the later event are consumed in order after the first
                listed = await world.stub.ListDocuments(pb.ListDocumentsRequest(submission_id=submission), metadata=cro)
                assert [d.id for d in listed.data] == [nda.id]
                if await _consumed_all(js, worker.SHARING_DURABLE):
                    break
                await asyncio.sleep(0.05)
    finally:
        await nats.close()
    shared = [a for a in await audits(world) if a.target_id == submission]
    assert [(a.action, a.details["submitted_by"], a.details["documents"]) for a in shared] == [
        ("document.shared", "someone", "1")
    ]
    # A person's share still needs the owner's pharma scientist: the system path loosened nothing.
    share = pb.ShareSubmissionDocumentsRequest(
        submission_id=submission, owner_organization_id=world.orgs["alpha"], cro_organization_id=world.orgs["cro"]
    )
    error = await rpc_error(world.stub.ShareSubmissionDocuments(share, metadata=cro))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


async def _consumed_all(js: Any, durable: str) -> bool:
    info = await js.consumer_info("EVENTS", durable)
    return info.num_pending == 0 and info.num_ack_pending == 0


# --- expiry -------------------------------------------------------------------------------------------------


async def test_the_expiry_sweep_marks_each_due_document_once_even_when_two_replicas_sweep(world: World) -> None:
    yesterday = (date.today() - timedelta(days=1)).isoformat()
    due = [
        await upload_raw(
            world, "alpha_scientist", PDF, f"{i}.pdf", document_type="NON_DISCLOSURE_AGREEMENT", expires_on=yesterday
        )
        for i in range(7)
    ]
    valid = await upload_raw(
        world,
        "alpha_scientist",
        PDF,
        "ok.pdf",
        document_type="NON_DISCLOSURE_AGREEMENT",
        expires_on=date.today().isoformat(),
    )
    service = world.parts.documents
    counts = await asyncio.gather(service.expire_due(batch=2), service.expire_due(batch=3))
    assert sum(counts) == len(due)
    assert await service.expire_due() == 0  # idempotent
    for document in due:
        got = await world.stub.GetDocument(
            pb.GetDocumentRequest(id=document.id), metadata=world.auth("alpha_scientist")
        )
        assert got.data.status == pb.Document.EXPIRED
        assert await status_changes(world, document.id) == [("", "DRAFT"), ("DRAFT", "EXPIRED")]
        assert [a.action for a in await audits(world, document.id)] == ["document.created", "document.expired"]
    got = await world.stub.GetDocument(pb.GetDocumentRequest(id=valid.id), metadata=world.auth("alpha_scientist"))
    assert got.data.status == pb.Document.DRAFT
    # a new version makes an expired document a draft again
    renewed = await upload_raw(world, "alpha_scientist", PDF, "renewed.pdf", document_id=due[0].id)
    assert renewed.status == pb.Document.DRAFT and renewed.current_version == 2


async def test_documents_about_to_expire_are_announced_once_per_expiry_date(world: World) -> None:
    soon = (date.today() + timedelta(days=10)).isoformat()
    later = (date.today() + timedelta(days=90)).isoformat()
    expiring = await upload_raw(world, "alpha_scientist", PDF, "soon.pdf", document_type="NON_DISCLOSURE_AGREEMENT",
                                expires_on=soon)
    await upload_raw(world, "alpha_scientist", PDF, "later.pdf", document_type="NON_DISCLOSURE_AGREEMENT",
                     expires_on=later)
    service = world.parts.documents
    counts = await asyncio.gather(service.warn_expiring(batch=1), service.warn_expiring(batch=1))
    assert sum(counts) == 1
    assert await service.warn_expiring() == 0  # once per document and expiry date

    def warnings(envelopes: list[EventEnvelope]) -> list[DocumentExpiring]:
        return [unpack(e, DocumentExpiring) for e in envelopes if e.payload.Is(DocumentExpiring.DESCRIPTOR)]

    [warned] = warnings(await outbox(world))
    assert (warned.document_id, warned.organization_id, warned.expires_on, warned.days_left, warned.title) == (
        expiring.id, world.orgs["alpha"], soon, 10, expiring.title
    )
    # A new expiry date is a new announcement.
    sooner = (date.today() + timedelta(days=3)).isoformat()
    await world.stub.UpdateDocument(pb.UpdateDocumentRequest(id=expiring.id, expires_on=sooner),
                                    metadata=world.auth("alpha_scientist"))
    assert await service.warn_expiring() == 1
    assert [w.days_left for w in warnings(await outbox(world))] == [10, 3]


# --- the bus ------------------------------------------------------------------------------------------------


async def test_status_changes_reach_the_bus(world: World) -> None:
    nats = await connect(world.nats_url)
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def keep(message) -> None:  # type: ignore[no-untyped-def]
        await received.put(message.data)

    subscription = await nats.subscribe(source_events("document"), cb=keep)
    try:
        document = await upload_raw(world, "alpha_scientist", b"hello\n", "a.txt", document_type="RESULTS_REPORT")
        seen: set[str] = set()
        while "DRAFT" not in seen:
            envelope = EventEnvelope.FromString(await asyncio.wait_for(received.get(), timeout=20))
            if envelope.payload.Is(DocumentStatusChanged.DESCRIPTOR):
                change = unpack(envelope, DocumentStatusChanged)
                assert change.document_id == document.id and change.organization_id == world.orgs["alpha"]
                assert change.document_type == "RESULTS_REPORT" and change.version == 1
                seen.add(change.to_status)
    finally:
        await subscription.unsubscribe()
        await nats.close()


# --- generation from templates ---------------------------------------------------------------------------


def sample_fields(template: pb.DocumentTemplate) -> dict[str, str]:
    samples = {
        "effective_date": "2026-06-01",
        "term_years": "3",
        "price": "12500.00",
        "currency": "EUR",
        "turnaround_days": "20",
        "payment_terms_days": "30",
        "service_type": "BINDING_ASSAY",
    }
    return {f.name: samples.get(f.name, f"{f.name} value") for f in template.fields if f.required}


async def test_templates_are_listed_previewed_and_generate_versioned_pdfs(world: World) -> None:
    auth = world.auth("alpha_scientist")
    listed = (await world.stub.ListDocumentTemplates(pb.ListDocumentTemplatesRequest(), metadata=auth)).data
    templates = {t.name: t for t in listed}
    assert {"nda", "mta", "service_agreement", "experiment_specification"} <= set(templates)
    assert templates["nda"].document_type == NDA and any(f.required for f in templates["nda"].fields)

    call = world.stub.PreviewDocumentTemplate(pb.PreviewDocumentTemplateRequest(name="nda"), metadata=auth)
    preview = await call
    assert preview.content_type == "application/pdf" and preview.data.startswith(b"%PDF-")
    assert await audits(world) == []  # nothing stored

    fields = sample_fields(templates["nda"]) | {"cro_organization": "Contoso Bioanalytics GmbH"}
    request = pb.GenerateDocumentRequest(
        template="nda", fields=fields, submission_id="sub-gen", expires_on="2029-05-31"
    )
    generated = (await world.stub.GenerateDocument(request, metadata=auth)).data
    assert generated.document_type == NDA and generated.template == "nda" and generated.submission_id == "sub-gen"
    assert generated.title == "Mutual Non-Disclosure Agreement — Contoso Bioanalytics GmbH"
    assert generated.current.origin == "generated" and generated.current.content_type == "application/pdf"
    assert generated.expires_on == "2029-05-31" and generated.signature_required
    pdf, content_type, disposition = await download(world, "alpha_scientist", generated.id)
    assert pdf.startswith(b"%PDF-") and hashlib.sha256(pdf).hexdigest() == generated.current.sha256
    assert 'filename="nda.pdf"' in disposition

    again = pb.GenerateDocumentRequest(template="nda", fields=fields, document_id=generated.id)
    version_two = (await world.stub.GenerateDocument(again, metadata=auth)).data
    assert version_two.id == generated.id and version_two.current_version == 2
    assert [a.action for a in await audits(world, generated.id)] == ["document.created", "document.version_added"]

    error = await rpc_error(world.stub.GenerateDocument(pb.GenerateDocumentRequest(template="lease"), metadata=auth))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    missing = pb.GenerateDocumentRequest(template="nda", fields={"pharma_organization": "Northwind"})
    assert_validation(await rpc_error(world.stub.GenerateDocument(missing, metadata=auth)))
    error = await rpc_error(world.stub.GenerateDocument(request, metadata=world.auth("audit_auditor")))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
