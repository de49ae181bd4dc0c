"""The document domain without I/O: status rules, versions, expiry, requirements, and what a file is
from its bytes (real sample files: DOCX/XLSX zips built here, PNG/JPEG/PDF headers, a renamed .exe)."""

from __future__ import annotations

import io
import zipfile
from datetime import UTC, date, datetime, timedelta

import pytest

from services.document.domain import content
from services.document.domain.documents import Document, StatusChange, StoredFile, parse_type
from services.document.domain.requirements import SubmissionDocument, requirements
from services.document.domain.vocabulary import DocumentStatus, DocumentType, VersionOrigin
from services.runtime.errors import NotFoundError, PreconditionError, ValidationError

ORG, CRO = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"


def stored(name: str = "nda.pdf", sha: str = "a" * 64) -> StoredFile:
    return StoredFile(f"documents/{ORG}/{name}", name, content.PDF, 10, sha)


def new_document(document_type: DocumentType = DocumentType.NON_DISCLOSURE_AGREEMENT, **values: object) -> Document:
    document, change = Document.create(
        organization_id=ORG, document_type=document_type, title="NDA", file=stored(), created_by="u1", **values
    )
    assert change == StatusChange(None, DocumentStatus.DRAFT)
    return document


# -- the aggregate ------------------------------------------------------------------------------------------


def test_a_new_document_is_a_draft_with_version_one() -> None:
    document = new_document()
    assert document.status is DocumentStatus.DRAFT and document.current_version == 1
    assert document.current.origin is VersionOrigin.UPLOAD and not document.current.signed
    assert document.signature_required
    assert not new_document(DocumentType.RESULTS_REPORT).signature_required


def test_versions_are_kept_and_numbered() -> None:
    document = new_document()
    assert document.add_version(stored("v2.pdf", "b" * 64), "u2") is None
    assert [v.version for v in document.versions] == [1, 2]
    assert document.version(0).filename == "v2.pdf" and document.version(1).filename == "nda.pdf"
    with pytest.raises(NotFoundError, match="no version 3"):
        document.version(3)


@pytest.mark.parametrize("status", [DocumentStatus.REJECTED, DocumentStatus.EXPIRED])
def test_a_new_version_makes_a_rejected_or_expired_document_a_draft_again(status: DocumentStatus) -> None:
    document = new_document()
    document.status = status
    assert document.add_version(stored("v2.pdf"), "u1") == StatusChange(status, DocumentStatus.DRAFT)


@pytest.mark.parametrize("status", [DocumentStatus.SIGNED, DocumentStatus.PENDING_SIGNATURE, DocumentStatus.ARCHIVED])
def test_no_new_version_once_signed_out_for_signature_or_archived(status: DocumentStatus) -> None:
    document = new_document()
    document.status = status
    with pytest.raises(PreconditionError, match="only DRAFT, REJECTED or EXPIRED") as error:
        document.add_version(stored("v2.pdf"), "u1")
    assert error.value.detail == "DOCUMENT_STATE"
    assert document.current_version == 1


def test_a_signed_version_completes_a_pending_document() -> None:
    document = new_document()
    with pytest.raises(PreconditionError, match="only PENDING_SIGNATURE"):
        document.add_signed_version(stored("signed.pdf"), "u1", VersionOrigin.SIGNED)
    assert document.change_status(DocumentStatus.PENDING_SIGNATURE) == StatusChange(
        DocumentStatus.DRAFT, DocumentStatus.PENDING_SIGNATURE
    )
    change = document.add_signed_version(stored("signed.pdf"), "u1", VersionOrigin.SIGNED)
    assert change.to_status is DocumentStatus.SIGNED
    assert document.current.signed and document.current.origin is VersionOrigin.SIGNED
    with pytest.raises(PreconditionError):
        document.change_status(DocumentStatus.DRAFT)  # a signed document stays signed


@pytest.mark.parametrize("status", [DocumentStatus.SIGNED, DocumentStatus.PENDING_SIGNATURE])
def test_soft_delete_is_refused_for_signed_documents(status: DocumentStatus) -> None:
    document = new_document()
    document.status = status
    with pytest.raises(PreconditionError, match="cannot be deleted"):
        document.archive()
    assert document.status is status


def test_soft_delete_archives_once() -> None:
    document = new_document()
    assert document.archive() == StatusChange(DocumentStatus.DRAFT, DocumentStatus.ARCHIVED)
    assert document.archive() is None
    with pytest.raises(PreconditionError, match="ARCHIVED"):
        document.update(title="again")


def test_update_changes_only_what_is_given() -> None:
    document = new_document(expires_on=date(2030, 1, 1))
    assert document.update(title="  Mutual NDA ", expires_on="2031-06-30") == ["title", "expires_on"]
    assert document.title == "Mutual NDA" and document.expires_on == date(2031, 6, 30)
    assert document.update(title="Mutual NDA") == []
    assert document.update(expires_on="none") == ["expires_on"] and document.expires_on is None
    with pytest.raises(ValidationError) as error:
        document.update(expires_on="30/06/2031")
    assert error.value.field_violations[0][0] == "expires_on"


def test_expiry_after_the_last_valid_day_only_once() -> None:
    document = new_document(expires_on=date(2026, 3, 31))
    assert document.expire(date(2026, 3, 31)) is None  # still its last valid day
    assert document.expire(date(2026, 4, 1)) == StatusChange(DocumentStatus.DRAFT, DocumentStatus.EXPIRED)
    assert document.expire(date(2026, 4, 2)) is None
    archived = new_document(expires_on=date(2020, 1, 1))
    archived.archive()
    assert archived.expire(date(2026, 1, 1)) is None
    assert new_document().expire(date(2099, 1, 1)) is None  # no expiry date


def test_a_signed_document_expires_too() -> None:
    document = new_document(expires_on=date(2026, 1, 1))
    document.change_status(DocumentStatus.PENDING_SIGNATURE)
    document.add_signed_version(stored("signed.pdf"), "u1", VersionOrigin.SIGNED)
    assert document.expire(date(2026, 1, 2)) == StatusChange(DocumentStatus.SIGNED, DocumentStatus.EXPIRED)


def test_values_a_caller_sends_are_checked() -> None:
    with pytest.raises(ValidationError, match="accepted: MATERIAL_TRANSFER_AGREEMENT"):
        parse_type("NDA")
    assert parse_type(" safety_data_sheet ") is DocumentType.SAFETY_DATA_SHEET
    with pytest.raises(ValidationError, match="title"):
        Document.create(
            organization_id=ORG, document_type=DocumentType.QUALITY_CONTROL, title="  ", file=stored(), created_by="u"
        )


# -- requirements ---------------------------------------------------------------------------------------------

NOW = datetime(2026, 5, 1, tzinfo=UTC)


def doc(
    document_type: DocumentType,
    status: DocumentStatus = DocumentStatus.DRAFT,
    *,
    age: int = 0,
    signed_by: frozenset[str] = frozenset(),
    organization_id: str = ORG,
    id: str = "",
) -> SubmissionDocument:
    return SubmissionDocument(
        id=id or f"{document_type.value}-{status.value}-{age}",
        organization_id=organization_id,
        document_type=document_type,
        status=status,
        created_at=NOW - timedelta(days=age),
        signed_by=signed_by,
    )


def test_requirements_of_a_binding_assay_and_of_adme() -> None:
    binding = requirements("s1", "BINDING_ASSAY", [], owner_organization_id=ORG)
    assert [r.document_type for r in binding.requirements] == [
        DocumentType.MATERIAL_TRANSFER_AGREEMENT,
        DocumentType.NON_DISCLOSURE_AGREEMENT,
        DocumentType.EXPERIMENT_SPECIFICATION,
    ]
    assert not binding.complete and all(r.document_id == "" and not r.present for r in binding.requirements)
    adme = requirements("s1", "adme", [], owner_organization_id=ORG)
    assert adme.requirements[-1].document_type is DocumentType.SAFETY_DATA_SHEET
    with pytest.raises(ValidationError, match="accepted: ADME"):
        requirements("s1", "COOKING", [], owner_organization_id=ORG)


def test_requirements_are_satisfied_by_present_documents_signed_where_required() -> None:
    signed = frozenset({ORG})
    found = [
        doc(DocumentType.MATERIAL_TRANSFER_AGREEMENT, DocumentStatus.SIGNED, signed_by=signed),
        doc(DocumentType.NON_DISCLOSURE_AGREEMENT, DocumentStatus.DRAFT),
        doc(DocumentType.EXPERIMENT_SPECIFICATION, DocumentStatus.DRAFT),
    ]
    answer = requirements("s1", "SOLUBILITY", found, owner_organization_id=ORG, counterparty_organization_id=CRO)
    by_type = {r.document_type: r for r in answer.requirements}
    assert by_type[DocumentType.MATERIAL_TRANSFER_AGREEMENT].satisfied
    assert by_type[DocumentType.MATERIAL_TRANSFER_AGREEMENT].signed_by_owner
    assert not by_type[DocumentType.MATERIAL_TRANSFER_AGREEMENT].signed_by_counterparty
    nda = by_type[DocumentType.NON_DISCLOSURE_AGREEMENT]
    assert nda.present and nda.signature_required and not nda.satisfied  # present but not signed
    assert by_type[DocumentType.EXPERIMENT_SPECIFICATION].satisfied  # no signature needed
    assert not answer.complete
    found[1] = doc(DocumentType.NON_DISCLOSURE_AGREEMENT, DocumentStatus.SIGNED, signed_by=frozenset({ORG, CRO}))
    answer = requirements("s1", "SOLUBILITY", found, owner_organization_id=ORG, counterparty_organization_id=CRO)
    assert answer.complete and answer.requirements[1].signed_by_counterparty


def test_an_expired_or_archived_document_is_not_present_and_the_newest_present_one_counts() -> None:
    expired = doc(DocumentType.NON_DISCLOSURE_AGREEMENT, DocumentStatus.EXPIRED, signed_by=frozenset({ORG}))
    answer = requirements("s1", "CUSTOM", [expired], owner_organization_id=ORG)
    nda = answer.requirements[1]
    assert nda.document_id == expired.id and not nda.present and not nda.signed_by_owner and not nda.satisfied
    older_signed = doc(DocumentType.NON_DISCLOSURE_AGREEMENT, DocumentStatus.SIGNED, age=5, signed_by=frozenset({ORG}))
    newer_archived = doc(DocumentType.NON_DISCLOSURE_AGREEMENT, DocumentStatus.ARCHIVED, age=1)
    answer = requirements("s1", "CUSTOM", [expired, older_signed, newer_archived], owner_organization_id=ORG)
    assert answer.requirements[1].document_id == older_signed.id and answer.requirements[1].satisfied


# -- content from the bytes -------------------------------------------------------------------------------------


def office_zip(*names: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in names:
            archive.writestr(name, f"<xml>{name}</xml>" * 50)
    return buffer.getvalue()


DOCX_NAMES = ("[Content_Types].xml", "_rels/.rels", "word/document.xml", "word/styles.xml", "docProps/core.xml")
XLSX_NAMES = ("[Content_Types].xml", "_rels/.rels", "xl/workbook.xml", "xl/worksheets/sheet1.xml")
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + bytes(range(256))
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n" + bytes(range(256)) + b"\n%%EOF\n"
EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 44 + b"PE\x00\x00" + bytes(512)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (PDF, content.PDF),
        (PNG, content.PNG),
        (JPEG, content.JPEG),
        (office_zip(*DOCX_NAMES), content.DOCX),
        (office_zip(*XLSX_NAMES), content.XLSX),
        (b"smiles,name,amount\nCCO,ethanol,5 mg\nCCN,ethylamine,2 mg\n", content.CSV),
        ("\ufeffcompound;Menge\nCCO;5 mg\nc1ccccc1;1 g\n".encode(), content.CSV),
        ("Shipping notes: keep at −20 °C.\nHandle with gloves.\n".encode(), content.TXT),
        (b"single line of text", content.TXT),
    ],
)
def test_the_content_type_comes_from_the_bytes(data: bytes, expected: str) -> None:
    assert content.sniff(data) == expected


def test_an_office_file_is_recognised_when_streamed_in_small_pieces() -> None:
    data = office_zip(*DOCX_NAMES, *(f"word/media/image{i}.png" for i in range(30)))
    sniffer = content.ContentSniffer()
    for start in range(0, len(data), 7):
        sniffer.feed(data[start : start + 7])
    assert sniffer.media_type() == content.DOCX


def test_an_office_file_written_to_a_stream_with_data_descriptors() -> None:
    class Unseekable(io.RawIOBase):
        def __init__(self) -> None:
            self.data = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, b: object) -> int:
            piece = bytes(b)  # type: ignore[call-overload]
            self.data += piece
            return len(piece)

    sink = Unseekable()
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED) as archive:  # sizes come after each entry's data
        for name in XLSX_NAMES:
            archive.writestr(name, "x" * 5000)
    assert content.sniff(bytes(sink.data)) == content.XLSX


@pytest.mark.parametrize(
    ("data", "found"),
    [
        (EXE, "a Windows executable"),
        (b"\x7fELF\x02\x01\x01" + bytes(100), "an ELF executable"),
        (b"GIF89a\x01\x00\x01\x00" + bytes(20), "a GIF image"),
        (office_zip("readme.txt", "bin/tool.exe"), "a ZIP archive that is not a Word or Excel document"),
        (office_zip("[Content_Types].xml", "ppt/presentation.xml"), "a PowerPoint presentation (PPTX)"),
        (bytes(range(256)) * 4, "binary data"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(500), "a legacy Office (OLE) file such as .doc or .xls"),
    ],
)
def test_anything_else_is_refused_naming_what_was_found_and_what_is_accepted(data: bytes, found: str) -> None:
    with pytest.raises(ValidationError) as error:
        content.sniff(data)
    assert error.value.detail == "UNSUPPORTED_MEDIA_TYPE"
    assert error.value.metadata == {"found": found, "accepted": "PDF, DOCX, XLSX, CSV, PNG, JPEG, TXT"}
    assert found in error.value.message and "accepted: PDF, DOCX, XLSX" in error.value.message


def test_a_renamed_executable_is_refused_from_its_head_before_the_rest_arrives() -> None:
    sniffer = content.ContentSniffer()
    sniffer.feed(EXE + bytes(content.HEAD_BYTES))
    with pytest.raises(ValidationError, match="Windows executable"):
        sniffer.check_head()


def test_an_empty_file_is_refused() -> None:
    with pytest.raises(ValidationError, match="empty") as error:
        content.sniff(b"")
    assert error.value.detail == "EMPTY_FILE"


def test_text_cut_inside_a_character_at_the_head_boundary_is_still_text() -> None:
    line = "é,ü\n".encode()
    data = b"a,b\n" + line * (content.HEAD_BYTES // len(line) + 10)
    assert content.sniff(data[: content.HEAD_BYTES + 1]) == content.CSV
