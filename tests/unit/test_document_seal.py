"""The platform's seal: a real signature page (WeasyPrint), a real PAdES signature (pyHanko) and its
verification, and the key files on disk."""

from __future__ import annotations

import io
import re
import stat
from datetime import UTC, datetime
from pathlib import Path

import pypdf
import pytest

from services.document.adapters.seal import CERTIFICATE_FILE, KEY_FILE, SEAL_SUBJECT, PadesSealer, PlatformKey
from services.document.adapters.templates import JinjaTemplates
from services.document.service.ports import SignatureLine
from services.runtime.errors import ValidationError

SIGNED_SHA256 = "9f2c4a1be0d8c3f5a7e6b4d2c1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2"
LINES = (
    SignatureLine(
        printed_name="Dr. Helen Marsh",
        email="helen.marsh@northwind.example",
        organization_id="org_pharma_1",
        meaning="approved",
        signed_at=datetime(2026, 3, 2, 9, 15, 4, tzinfo=UTC),
        signed_sha256=SIGNED_SHA256,
    ),
    SignatureLine(
        printed_name="Dr. Jonas Keller",
        email="j.keller@contoso.example",
        organization_id="org_cro_7",
        meaning="reviewed",
        signed_at=datetime(2026, 3, 2, 11, 40, 0, tzinfo=UTC),
        signed_sha256=SIGNED_SHA256,
    ),
)


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> PlatformKey:
    return PlatformKey.load_or_create(tmp_path_factory.mktemp("keys") / "document-seal")


@pytest.fixture(scope="module")
def sealer(key: PlatformKey) -> PadesSealer:
    return PadesSealer(key)


@pytest.fixture(scope="module")
def document() -> bytes:
    return JinjaTemplates().preview("nda")


@pytest.fixture(scope="module")
def sealed(sealer: PadesSealer, document: bytes) -> bytes:
    return sealer.seal(document, LINES, title="Mutual Non-Disclosure Agreement", document_id="doc_42")


def pages(pdf: bytes) -> list[pypdf.PageObject]:
    return list(pypdf.PdfReader(io.BytesIO(pdf)).pages)


def test_a_sealed_document_verifies_intact_trusted_and_whole(sealer: PadesSealer, sealed: bytes) -> None:
    check = sealer.verify(sealed)
    assert check.intact and check.trusted and check.covers_whole_document
    assert SEAL_SUBJECT in check.signer_certificate
    assert check.signed_at is not None and check.signed_at.tzinfo is not None
    assert check.summary == "sealed by this platform and unchanged since"


def test_the_signature_page_is_appended_with_every_signature(document: bytes, sealed: bytes, key: PlatformKey) -> None:
    assert len(pages(sealed)) == len(pages(document)) + 1
    last = " ".join((pages(sealed)[-1].extract_text() or "").split())
    assert "Signature page – Mutual Non-Disclosure Agreement" in last
    assert "doc_42" in last
    assert "21 CFR Part 11" in last
    for line in LINES:
        assert line.printed_name in last and line.email in last and line.organization_id in last
        assert line.meaning in last
    assert "2026-03-02 09:15:04" in last and "2026-03-02 11:40:00" in last
    assert last.replace(" ", "").count(SIGNED_SHA256) == 2
    assert key.fingerprint in last
    first = " ".join((pages(sealed)[0].extract_text() or "").split())
    assert "Northwind Therapeutics Ltd." in first  # the document itself is unchanged ahead of it


def test_the_sealed_file_starts_with_the_exact_bytes_of_the_signed_version(document: bytes, sealed: bytes) -> None:
    assert sealed.startswith(document)  # an incremental update: the version's SHA-256 checks against the prefix


def test_any_uploaded_pdf_can_be_sealed(sealer: PadesSealer) -> None:
    writer = pypdf.PdfWriter()
    writer.add_blank_page(width=612, height=792)  # US Letter, not PDF/A, not ours
    upload = io.BytesIO()
    writer.write(upload)

    sealed = sealer.seal(upload.getvalue(), LINES[:1], title="Scanned agreement", document_id="doc_7")
    assert len(pages(sealed)) == 2
    assert sealer.verify(sealed).covers_whole_document


def test_a_sealed_or_encrypted_document_cannot_be_sealed_again(sealer: PadesSealer, sealed: bytes) -> None:
    with pytest.raises(ValidationError) as raised:
        sealer.seal(sealed, LINES, title="Mutual Non-Disclosure Agreement", document_id="doc_42")
    assert "certified against any change" in raised.value.field_violations[0][1]

    writer = pypdf.PdfWriter()
    writer.add_blank_page(width=612, height=792)
    writer.encrypt("secret")
    encrypted = io.BytesIO()
    writer.write(encrypted)
    with pytest.raises(ValidationError) as raised:
        sealer.seal(encrypted.getvalue(), LINES, title="x", document_id="doc_1")
    assert raised.value.field_violations == [("pdf", "an encrypted PDF cannot be sealed")]


def test_one_flipped_byte_inside_the_signed_range_breaks_the_seal(sealer: PadesSealer, sealed: bytes) -> None:
    match = re.search(rb"/ByteRange\s*\[\s*0\s+(\d+)", sealed)
    assert match is not None
    first_range_end = int(match.group(1))
    stream = re.compile(rb">>\s*stream\r?\n").search(sealed, first_range_end // 2)
    assert stream is not None
    position = stream.end() + 40  # inside a page's compressed content
    assert position < first_range_end
    tampered = bytearray(sealed)
    tampered[position] ^= 0x01

    check = sealer.verify(bytes(tampered))
    assert not check.intact and not check.covers_whole_document
    assert "altered" in check.summary


def test_a_revision_appended_after_sealing_is_reported(sealer: PadesSealer, sealed: bytes) -> None:
    writer = pypdf.PdfWriter(io.BytesIO(sealed), incremental=True)
    writer.add_metadata({"/Title": "Changed after signing"})
    updated = io.BytesIO()
    writer.write(updated)
    assert updated.getvalue().startswith(sealed)  # an incremental update: the sealed bytes are still there

    check = sealer.verify(updated.getvalue())
    assert check.intact and check.trusted  # the sealed revision itself is untouched
    assert not check.covers_whole_document
    assert "changed after sealing" in check.summary


def test_a_seal_by_another_key_is_intact_but_not_trusted(sealer: PadesSealer, document: bytes) -> None:
    impostor = PadesSealer(PlatformKey.create())  # same subject name, another key
    forged = impostor.seal(document, LINES[:1], title="Mutual Non-Disclosure Agreement", document_id="doc_42")
    assert impostor.verify(forged).trusted

    check = sealer.verify(forged)
    assert check.intact and not check.trusted
    assert "not by this platform's key" in check.summary


def test_an_unsealed_pdf_has_no_seal(sealer: PadesSealer, document: bytes) -> None:
    check = sealer.verify(document)
    assert not (check.intact or check.trusted or check.covers_whole_document)
    assert check.summary == "the document carries no Molbridge seal"


def test_a_non_pdf_is_refused(sealer: PadesSealer) -> None:
    with pytest.raises(ValidationError) as raised:
        sealer.seal(b"PK\x03\x04 a zip file", LINES, title="x", document_id="doc_1")
    assert raised.value.field_violations == [("pdf", "not a PDF document")]
    with pytest.raises(ValidationError):
        sealer.seal(b"%PDF-1.7\n garbage", LINES, title="x", document_id="doc_1")
    with pytest.raises(ValidationError):
        sealer.verify(b"plain text")


def test_sealing_needs_a_signature_and_a_document_id(sealer: PadesSealer, document: bytes) -> None:
    with pytest.raises(ValidationError) as raised:
        sealer.seal(document, [], title="x", document_id="")
    assert [name for name, _ in raised.value.field_violations] == ["lines", "document_id"]


def test_load_or_create_writes_the_key_once_and_reloads_it(tmp_path: Path) -> None:
    directory = tmp_path / "data" / "document-seal"
    created = PlatformKey.load_or_create(directory)
    assert stat.S_IMODE((directory / KEY_FILE).stat().st_mode) == 0o600
    assert (directory / CERTIFICATE_FILE).read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")

    reloaded = PlatformKey.load_or_create(directory)
    assert reloaded == created
    assert reloaded.fingerprint == created.fingerprint
    assert PlatformKey.load(directory / KEY_FILE, directory / CERTIFICATE_FILE) == created
    assert "PRIVATE KEY" not in repr(created)


def test_a_key_and_a_certificate_that_do_not_belong_together_are_refused(tmp_path: Path) -> None:
    one, other = PlatformKey.create(), PlatformKey.create()
    (tmp_path / "key.pem").write_bytes(one.private_key_pem)
    (tmp_path / "cert.pem").write_bytes(other.certificate_pem)
    with pytest.raises(ValueError, match="does not match"):
        PlatformKey.load(tmp_path / "key.pem", tmp_path / "cert.pem")
