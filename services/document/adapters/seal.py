"""The platform's seal on built-in signatures: a signature page appended to the document and a PAdES
(baseline B-B) certification signature by the platform's key over the whole file, so anyone can check
offline that the signed document was not altered. pyHanko signs, validates and appends the signature page.

All of it is CPU work and synchronous; the use case runs it in a thread."""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from pyhanko.keys import load_private_key_from_pemder_data
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign import fields, signers
from pyhanko.sign.validation import read_certification_data, validate_pdf_signature
from pyhanko.sign.validation.status import PdfSignatureStatus, SignatureCoverageLevel
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.registry import SimpleCertificateStore

from services.document.adapters.templates import TEMPLATES_DIR, jinja_environment, pdf_a
from services.document.service.ports import SealCheck, SignatureLine
from services.runtime.errors import ValidationError

logger = logging.getLogger(__name__)

SEAL_SUBJECT = "Molbridge document seal"
SIGNATURE_FIELD = "MolbridgeSeal"
KEY_FILE = "seal-key.pem"
CERTIFICATE_FILE = "seal-certificate.pem"
CERTIFICATE_VALIDITY = timedelta(days=20 * 365)  # sealed records are kept for years; the seal must outlive them
SIGNATURE_PAGE = "signature_page.html.j2"

MAX_SIGNATURE_LINES = 50
MAX_TITLE_LENGTH = 500
MAX_DOCUMENT_ID_LENGTH = 200
PDF_HEADER_WINDOW = 1024  # readers accept the %PDF- header anywhere in the first KiB


@dataclass(frozen=True)
class PlatformKey:
    """The platform's signing key and its self-signed certificate, as PEM."""

    private_key_pem: bytes = field(repr=False)  # never in a log line
    certificate_pem: bytes

    @classmethod
    def create(cls) -> PlatformKey:
        """A new EC P-256 key and a self-signed certificate for signing documents (non-repudiation)."""
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, SEAL_SUBJECT),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Molbridge"),
            ]
        )
        now = datetime.now(UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + CERTIFICATE_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=True,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(
            private_key_pem=key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
            certificate_pem=certificate.public_bytes(serialization.Encoding.PEM),
        )

    @classmethod
    def load(cls, key_path: Path, certificate_path: Path) -> PlatformKey:
        """From explicit PEM files (e.g. a key managed outside the platform); they must belong together."""
        platform_key = cls(private_key_pem=key_path.read_bytes(), certificate_pem=certificate_path.read_bytes())
        platform_key.check()
        return platform_key

    @classmethod
    def load_or_create(cls, directory: Path) -> PlatformKey:
        """The key in `directory`, created there (key file 0600) on first use. Several processes starting
        at once agree on one key: the key file is published with an exclusive link."""
        key_path, certificate_path = directory / KEY_FILE, directory / CERTIFICATE_FILE
        if not key_path.exists():
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            cls.create()._publish(key_path, certificate_path)
        for _ in range(50):  # another process may have linked the key and not yet written the certificate
            if certificate_path.exists():
                return cls.load(key_path, certificate_path)
            time.sleep(0.1)
        raise FileNotFoundError(f"{certificate_path} is missing next to {key_path}")

    def _publish(self, key_path: Path, certificate_path: Path) -> None:
        suffix = f".{os.getpid()}.tmp"
        key_tmp = key_path.with_name(key_path.name + suffix)
        certificate_tmp = certificate_path.with_name(certificate_path.name + suffix)
        try:
            _write_private(key_tmp, self.private_key_pem)
            certificate_tmp.write_bytes(self.certificate_pem)
            try:
                os.link(key_tmp, key_path)
            except FileExistsError:
                return  # another process won; its key is the one
            os.replace(certificate_tmp, certificate_path)
            logger.info("created the document seal key in %s", key_path.parent)
        finally:
            for leftover in (key_tmp, certificate_tmp):
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()

    def check(self) -> None:
        """Raises ValueError unless the key is EC or RSA and matches the certificate."""
        key = serialization.load_pem_private_key(self.private_key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise ValueError("the document seal key must be an EC or RSA key")
        certificate = x509.load_pem_x509_certificate(self.certificate_pem)
        der, info = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        if key.public_key().public_bytes(der, info) != certificate.public_key().public_bytes(der, info):
            raise ValueError("the document seal key does not match its certificate")

    @property
    def certificate(self) -> asn1_x509.Certificate:
        der = x509.load_pem_x509_certificate(self.certificate_pem).public_bytes(serialization.Encoding.DER)
        return asn1_x509.Certificate.load(der)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the certificate (DER), as verifiers compare it."""
        digest = hashlib.sha256(self.certificate.dump()).hexdigest().upper()
        return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))

    def _signer(self) -> signers.SimpleSigner:
        key: asn1_keys.PrivateKeyInfo = load_private_key_from_pemder_data(self.private_key_pem, passphrase=None)
        certificate = self.certificate
        return signers.SimpleSigner(
            signing_cert=certificate,
            signing_key=key,
            cert_registry=SimpleCertificateStore.from_certs([certificate]),
        )


def _write_private(path: Path, data: bytes) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        os.fchmod(file.fileno(), 0o600)  # whatever the umask
        file.write(data)


class PadesSealer:
    """The Sealer port with the platform's key."""

    def __init__(self, key: PlatformKey, templates_directory: Path = TEMPLATES_DIR) -> None:
        key.check()
        self._key = key
        self._certificate = key.certificate
        self._signer = key._signer()
        self._page = jinja_environment(templates_directory).get_template(SIGNATURE_PAGE)

    def seal(self, pdf: bytes, lines: Sequence[SignatureLine], *, title: str, document_id: str) -> bytes:
        """The seal is an incremental update: the sealed file starts with the exact bytes of `pdf`, so the
        signed version's SHA-256 still checks against that prefix, and earlier PDF signatures stay valid."""
        _check_seal_input(lines, title, document_id)
        writer = _open_for_update(pdf)
        earlier_fields = {signature.field_name for signature in writer.prev.embedded_signatures}
        _append_pages(writer, self._signature_page(lines, title, document_id))
        metadata = signers.PdfSignatureMetadata(
            field_name=_free_field_name(earlier_fields),
            md_algorithm="sha256",
            subfilter=fields.SigSeedSubFilter.PADES,
            reason=f"Electronic signatures of document {document_id}",
            name=SEAL_SUBJECT,
            # Certified against any change, unless someone else signed first (there can be one certification):
            # a later revision then shows as a change.
            certify=not earlier_fields,
            docmdp_permissions=fields.MDPPerm.NO_CHANGES,
        )
        return signers.sign_pdf(writer, metadata, signer=self._signer).getvalue()

    def verify(self, pdf: bytes) -> SealCheck:
        if b"%PDF-" not in pdf[:PDF_HEADER_WINDOW]:
            raise ValidationError("Not a PDF document", field_violations=[("pdf", "not a PDF document")])
        try:
            reader = PdfFileReader(io.BytesIO(pdf), strict=False)
            seals = [s for s in reader.embedded_regular_signatures if s.field_name.startswith(SIGNATURE_FIELD)]
        except Exception as error:  # a damaged file is a verification result, not a failure of ours
            return _failed(f"the file cannot be read as a PDF ({type(error).__name__})")
        if not seals:
            return _failed("the document carries no Molbridge seal")
        seal = seals[-1]
        try:
            trusting_only_us = ValidationContext(trust_roots=[self._certificate])
            status = validate_pdf_signature(seal, signer_validation_context=trusting_only_us)
        except Exception as error:  # pyHanko raises on a signature it cannot even evaluate
            return _failed(f"the seal cannot be validated ({type(error).__name__}: {error})")
        return _check(status)

    def _signature_page(self, lines: Sequence[SignatureLine], title: str, document_id: str) -> bytes:
        html = self._page.render(
            title=title,
            document_id=document_id,
            lines=[_printed(line) for line in lines],
            seal_subject=SEAL_SUBJECT,
            seal_fingerprint=self._key.fingerprint,
        )
        return pdf_a(html)


def _check_seal_input(lines: Sequence[SignatureLine], title: str, document_id: str) -> None:
    violations = []
    if not lines:
        violations.append(("lines", "at least one signature"))
    elif len(lines) > MAX_SIGNATURE_LINES:
        violations.append(("lines", f"at most {MAX_SIGNATURE_LINES} signatures"))
    if len(title) > MAX_TITLE_LENGTH:
        violations.append(("title", f"at most {MAX_TITLE_LENGTH} characters"))
    if not document_id or len(document_id) > MAX_DOCUMENT_ID_LENGTH:
        violations.append(("document_id", f"1 to {MAX_DOCUMENT_ID_LENGTH} characters"))
    if violations:
        raise ValidationError(f"Invalid {violations[0][0]}: {violations[0][1]}", field_violations=violations)


def _open_for_update(pdf: bytes) -> IncrementalPdfFileWriter:
    problem = ""
    if b"%PDF-" not in pdf[:PDF_HEADER_WINDOW]:
        problem = "not a PDF document"
    else:
        try:
            writer = IncrementalPdfFileWriter(io.BytesIO(pdf), strict=False)
            certification = read_certification_data(writer.prev)
            if writer.prev.encrypted:
                problem = "an encrypted PDF cannot be sealed"
            elif int(writer.root["/Pages"]["/Count"]) < 1:
                problem = "the PDF has no pages"
            elif certification is not None and certification.permission == fields.MDPPerm.NO_CHANGES:
                problem = "the PDF is certified against any change (sealed already?)"
            else:
                return writer
        except Exception as error:  # a damaged file raises many kinds of errors, none of them ours
            problem = f"not a readable PDF ({type(error).__name__})"
    raise ValidationError(f"Cannot seal the document: {problem}", field_violations=[("pdf", problem)])


def _append_pages(writer: IncrementalPdfFileWriter, pdf: bytes) -> None:
    """Each page of `pdf` becomes a new last page of the document, drawn from a form XObject."""
    source = PdfFileReader(io.BytesIO(pdf), strict=False)
    for index in range(int(source.root["/Pages"]["/Count"])):
        drawing = writer.import_page_as_xobject(source, page_ix=index)
        contents = writer.add_object(generic.StreamObject(stream_data=b"q /SignaturePage Do Q"))
        name = generic.pdf_name
        xobjects = generic.DictionaryObject({name("/SignaturePage"): drawing})
        page = generic.DictionaryObject(
            {
                name("/Type"): name("/Page"),
                name("/MediaBox"): drawing.get_object()["/BBox"],
                name("/Resources"): generic.DictionaryObject({name("/XObject"): xobjects}),
                name("/Contents"): contents,
            }
        )
        writer.insert_page(page)


def _free_field_name(taken: set[str]) -> str:
    """MolbridgeSeal, or MolbridgeSeal2, 3, … when the document already has a field of that name."""
    name, number = SIGNATURE_FIELD, 1
    while name in taken:
        number += 1
        name = f"{SIGNATURE_FIELD}{number}"
    return name


@dataclass(frozen=True)
class _PrintedLine:
    printed_name: str
    email: str
    organization_id: str
    meaning: str
    signed_at: str
    signed_sha256: str


def _printed(line: SignatureLine) -> _PrintedLine:
    signed_at = line.signed_at if line.signed_at.tzinfo else line.signed_at.replace(tzinfo=UTC)
    return _PrintedLine(
        printed_name=line.printed_name,
        email=line.email,
        organization_id=line.organization_id,
        meaning=line.meaning,
        signed_at=signed_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        signed_sha256=line.signed_sha256,
    )


def _failed(summary: str) -> SealCheck:
    return SealCheck(
        intact=False, trusted=False, covers_whole_document=False, signer_certificate="", signed_at=None, summary=summary
    )


def _check(status: PdfSignatureStatus) -> SealCheck:
    intact = bool(status.intact and status.valid)
    trusted = bool(intact and status.trusted)
    whole = bool(intact and status.coverage == SignatureCoverageLevel.ENTIRE_FILE)
    subject = status.signing_cert.subject.human_friendly if status.signing_cert is not None else ""
    if not intact:
        summary = "the seal does not match the document: it was altered after sealing"
    elif not trusted:
        summary = f"the seal is intact but not by this platform's key (signed by {subject})"
    elif not whole:
        level = status.modification_level.name if status.modification_level is not None else "unknown"
        summary = f"the sealed revision is intact, but the file was changed after sealing (changes: {level})"
    else:
        summary = "sealed by this platform and unchanged since"
    return SealCheck(
        intact=intact,
        trusted=trusted,
        covers_whole_document=whole,
        signer_certificate=subject,
        signed_at=status.signer_reported_dt,
        summary=summary,
    )
