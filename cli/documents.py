"""Document commands: `documents upload|list|get|download|versions|delete|templates|generate` and the
signature ones, `documents request-signature|status|sign|verify`."""

from __future__ import annotations

import argparse
import csv
import re
import sys
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from molbridge.document.v1 import document_service_pb2 as pb
from molbridge.identity.v1 import identity_service_pb2 as identity_pb

from cli import output
from cli.app import add_command
from cli.arguments import enum_choice, iso_date, truncate
from cli.client import EXIT_AUTHENTICATION, CliError, Gateway
from cli.identity import ask_secret
from cli.progress import format_bytes
from cli.transfer import download_target, filename_of, readable_file, save_stream, upload_with_progress

# Short names for the types people type most; every type is also accepted by its name
# (NON_DISCLOSURE_AGREEMENT, non-disclosure-agreement).
TYPE_ALIASES = {
    "mta": pb.Document.MATERIAL_TRANSFER_AGREEMENT,
    "nda": pb.Document.NON_DISCLOSURE_AGREEMENT,
    "sds": pb.Document.SAFETY_DATA_SHEET,
}
MEANINGS = ("approved", "reviewed", "author")
PROVIDERS = ("builtin", "docusign")
UPLOAD_CONTENT_TYPE = "application/octet-stream"  # the service reads the type from the bytes
SIGNER_KEYS = {"user": "user_id", "org": "organization_id", "role": "role", "name": "name", "email": "email",
               "order": "routing_order"}
# DocumentService.UploadDocument's metadata keys (document_service.proto), by field.
UPLOAD_HEADERS = {
    "document_type": "x-document-type",
    "title": "x-document-title",
    "description": "x-document-description",
    "submission_id": "x-submission-id",
    "expires_on": "x-expires-on",
    "document_id": "x-document-id",
}
OPTION_OF = {"document_type": "--type", "title": "--title", "description": "--description",
             "submission_id": "--submission", "expires_on": "--expires-on", "document_id": "--document"}
UPDATABLE = frozenset({"title", "description", "expires_on"})  # UpdateDocumentRequest's fields
MOLECULE_COLUMNS = ("label", "smiles", "formula", "molecular_weight", "amount", "notes")
TITLE_WIDTH = 40
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)

Prompt = Callable[[str], str]


# --- pure pieces ----------------------------------------------------------------------------------------


def document_type(value: str) -> int:
    """A Document.Type from `nda`, `non-disclosure-agreement` or `NON_DISCLOSURE_AGREEMENT`."""
    return enum_choice(pb.Document.Type, value, "document type", TYPE_ALIASES)


def document_status(value: str) -> int:
    """A Document.Status from `draft`, `pending-signature` or `PENDING_SIGNATURE`."""
    return enum_choice(pb.Document.Status, value, "status")


def upload_metadata(
    *,
    document_type: int = 0,
    title: str = "",
    description: str = "",
    submission_id: str = "",
    expires_on: str = "",
    document_id: str = "",
) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """The x-document-* metadata of an upload (DocumentService.UploadDocument), and the values to set with
    UpdateDocument right after it ({field: value}): those gRPC metadata cannot carry (printable ASCII
    only: a title in another script), and, for a new version (`document_id`), the ones a version ignores."""
    values = {
        "document_type": pb.Document.Type.Name(document_type) if document_type else "",  # type: ignore[arg-type]
        "title": title,
        "description": description,
        "submission_id": submission_id,
        "expires_on": expires_on,
    }
    if document_id:
        if not _header_safe(document_id):
            raise CliError(f"--document {document_id!r} is not a document id")
        fixed = [name for name in ("document_type", "submission_id") if values[name]]
        if fixed:
            options = " and ".join(OPTION_OF[name] for name in fixed)
            raise CliError(f"{options}: a new version (--document) keeps the document's own")
        return [(UPLOAD_HEADERS["document_id"], document_id)], {k: v for k, v in values.items() if v}
    metadata = [(UPLOAD_HEADERS[name], value) for name, value in values.items() if value and _header_safe(value)]
    later = {name: value for name, value in values.items() if value and not _header_safe(value)}
    for name in later.keys() - UPDATABLE:
        raise CliError(f"{OPTION_OF[name]} {later[name]!r}: only printable ASCII can be sent")
    return metadata, later


def _header_safe(value: str) -> bool:
    return value.isascii() and value.isprintable()


def parse_fields(values: Sequence[str]) -> dict[str, str]:
    """`--field NAME=VALUE` values as {name: value}; the first `=` splits (values may hold one)."""
    fields: dict[str, str] = {}
    for value in values:
        name, sep, content = value.partition("=")
        name = name.strip()
        if not sep or not name:
            raise CliError(f"--field {value!r}: expected NAME=VALUE, e.g. --field counterparty_name=Acme Labs")
        if name in fields:
            raise CliError(f"--field {name} is given twice")
        fields[name] = content
    return fields


def parse_signer(spec: str, position: int) -> pb.SignerSpec:
    """A --signer value: a user id, or KEY=VALUE pairs separated by commas (user, org, role, name, email,
    order), e.g. `org=<id>,role=cro_admin` or `name=Ann Lee,email=ann@cro.test`. Without `order` the
    signers sign one after the other, in the order given (`position`, from 1)."""
    text = spec.strip()
    if _UUID.match(text):
        return pb.SignerSpec(user_id=text, routing_order=position)
    signer = pb.SignerSpec(routing_order=position)
    for pair in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = pair.partition("=")
        field = SIGNER_KEYS.get(key.strip().lower())
        if not sep or field is None or not value.strip():
            keys = ", ".join(SIGNER_KEYS)
            raise CliError(f"--signer {spec!r}: expected a user id or KEY=VALUE pairs ({keys}) separated by commas")
        if field == "routing_order":
            if not value.strip().isdigit() or int(value) < 1:
                raise CliError(f"--signer {spec!r}: order must be a whole number from 1")
            signer.routing_order = int(value)
        else:
            setattr(signer, field, value.strip())
    if not (signer.user_id or (signer.organization_id and signer.role) or signer.email):
        raise CliError(f"--signer {spec!r}: name a user, an org with a role, or (DocuSign) an email")
    return signer


def parse_molecules(path: Path) -> list[pb.TemplateMolecule]:
    """The molecule table of a generated document from a CSV whose header names some of: label, smiles,
    formula, molecular_weight, amount, notes."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as source:
            reader = csv.DictReader(source)
            rows = list(reader)
    except (OSError, UnicodeDecodeError) as err:
        raise CliError(f"cannot read {path}: {getattr(err, 'strerror', None) or err}") from err
    unknown = set(reader.fieldnames or ()) - set(MOLECULE_COLUMNS)
    if unknown:
        raise CliError(f"{path}: unknown columns {', '.join(sorted(unknown))} (use {', '.join(MOLECULE_COLUMNS)})")
    molecules = []
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        values = {k: (v or "").strip() for k, v in row.items() if k}
        try:
            weight = float(values.pop("molecular_weight", "") or 0)
        except ValueError:
            raise CliError(f"{path}, line {number}: molecular_weight must be a number") from None
        molecules.append(pb.TemplateMolecule(molecular_weight=weight, **values))
    return molecules


def document_rows(documents: Sequence[pb.Document], *, title_width: int = TITLE_WIDTH) -> list[list[str]]:
    return [
        [
            d.id,
            output.enum_word(d, "document_type"),
            truncate(d.title, title_width) or "-",
            output.enum_word(d, "status"),
            str(d.current_version),
            format_bytes(d.current.size_bytes) if d.HasField("current") else "-",
            output.timestamp(d.updated_at),
        ]
        for d in documents
    ]


DOCUMENT_HEADERS = ["ID", "TYPE", "TITLE", "STATUS", "VERSION", "SIZE", "UPDATED"]
VERSION_HEADERS = ["VERSION", "FILE", "TYPE", "SIZE", "ORIGIN", "SIGNED", "SHA-256", "CREATED"]


def version_rows(versions: Sequence[pb.DocumentVersion]) -> list[list[str]]:
    return [
        [
            str(v.version),
            v.filename,
            v.content_type or "-",
            format_bytes(v.size_bytes),
            v.origin or "-",
            "yes" if v.signed else "no",
            v.sha256[:12] + "…" if len(v.sha256) > 12 else v.sha256 or "-",
            output.timestamp(v.created_at),
        ]
        for v in versions
    ]


def document_fields(d: pb.Document) -> str:
    return output.fields(
        [
            ("id", d.id),
            ("title", d.title or "-"),
            ("type", output.enum_word(d, "document_type")),
            ("status", output.enum_word(d, "status")),
            ("version", str(d.current_version)),
            ("file", f"{d.current.filename} ({format_bytes(d.current.size_bytes)}, {d.current.content_type})"
             if d.HasField("current") else "-"),
            ("sha-256", d.current.sha256 or "-"),
            ("description", d.description or "-"),
            ("submission", d.submission_id or "-"),
            ("expires on", d.expires_on or "-"),
            ("signature", "required" if d.signature_required else "not required"),
            ("template", d.template or "-"),
            ("created", f"{output.timestamp(d.created_at)} by {d.created_by or '-'}"),
            ("updated", output.timestamp(d.updated_at)),
        ]
    )


def signer_label(spec: pb.SignerSpec) -> str:
    if spec.user_id:
        return spec.user_id
    if spec.organization_id:
        return f"{spec.role or 'any'} of {spec.organization_id}"
    return f"{spec.name} <{spec.email}>" if spec.name else spec.email or "-"


def signature_fields(request: pb.SignatureRequest) -> str:
    return output.fields(
        [
            ("request", request.id),
            ("document", request.document_id),
            ("provider", request.provider or "-"),
            ("status", output.enum_word(request, "status")),
            ("version", f"{request.version} (sha-256 {request.sha256 or '-'})"),
            ("signed version", str(request.signed_version) if request.signed_version else "-"),
            ("requested", f"{output.timestamp(request.created_at)} by {request.requested_by or '-'}"),
            ("finished", output.timestamp(request.finished_at)),
        ]
    )


def signer_rows(signers: Sequence[pb.Signer]) -> list[list[str]]:
    return [
        [
            str(s.position),
            str(s.routing_order),
            signer_label(s.spec),
            output.enum_word(s, "status"),
            s.printed_name or "-",
            s.meaning or s.decline_reason or "-",
            output.timestamp(s.signed_at),
        ]
        for s in signers
    ]


SIGNER_HEADERS = ["#", "ORDER", "SIGNER", "STATUS", "SIGNED BY", "MEANING / REASON", "WHEN"]


def sign_request(document_id: str, meaning: str, password: str, mfa_code: str) -> pb.SignRequest:
    return pb.SignRequest(id=document_id, password=password, mfa_code=mfa_code.strip(), meaning=meaning)


# --- commands --------------------------------------------------------------------------------------------


def _print(args: argparse.Namespace, answer: Any, text: Callable[[], str]) -> None:
    print(output.as_json(answer) if args.json else text())


def upload(args: argparse.Namespace, gw: Gateway) -> None:
    path: Path = args.file
    readable_file(path)
    if not args.document and not args.type:
        raise CliError("--type is required for a new document (or pass --document ID to add a version)")
    metadata, later = upload_metadata(
        document_type=args.type or 0, title=args.title, description=args.description,
        submission_id=args.submission, expires_on=args.expires_on, document_id=args.document,
    )
    answer: Any = upload_with_progress(
        gw, gw.documents.UploadDocument, path, content_type=UPLOAD_CONTENT_TYPE, metadata=metadata
    )
    if later:  # a title or description gRPC metadata cannot carry
        answer = gw.call(gw.documents.UpdateDocument, pb.UpdateDocumentRequest(id=answer.data.id, **later))
    d = answer.data
    _print(args, answer, lambda: f"Uploaded {path.name} as version {d.current_version} of document {d.id}\n"
                                 f"{document_fields(d)}")


def list_documents(args: argparse.Namespace, gw: Gateway) -> None:
    request = pb.ListDocumentsRequest(
        document_type=args.type or pb.Document.TYPE_UNSPECIFIED, status=args.status or pb.Document.STATUS_UNSPECIFIED,
        submission_id=args.submission,
        include_deleted=args.include_deleted, page=args.page, page_size=args.page_size,
    )
    answer = gw.call(gw.documents.ListDocuments, request)
    if args.json:
        print(output.as_json(answer))
        return
    if not answer.data and args.output != "csv":
        print("No document found")
        return
    output.listing(args, DOCUMENT_HEADERS, document_rows(answer.data), output.page_summary(answer.meta, "document"),
                   csv_rows=document_rows(answer.data, title_width=sys.maxsize))


def get_document(args: argparse.Namespace, gw: Gateway) -> None:
    answer = gw.call(gw.documents.GetDocument, pb.GetDocumentRequest(id=args.id))
    if args.json:
        print(output.as_json(answer))
        return
    print(document_fields(answer.data))
    if answer.data.versions:
        print()
        print(output.table(VERSION_HEADERS, version_rows(answer.data.versions)))


def versions(args: argparse.Namespace, gw: Gateway) -> None:
    answer = gw.call(gw.documents.GetDocument, pb.GetDocumentRequest(id=args.id))
    if args.json:
        print(output.as_json(answer))
        return
    output.listing(args, VERSION_HEADERS, version_rows(answer.data.versions))


def download(args: argparse.Namespace, gw: Gateway) -> None:
    stream = gw.stream(gw.documents.DownloadDocument, pb.DownloadDocumentRequest(id=args.id, version=args.version))
    try:
        suggested = filename_of(stream.initial_metadata().get("content-disposition", ""))
        path = download_target(args.out, suggested, f"document-{args.id}", force=args.force)
    except BaseException:
        stream.cancel()
        raise
    size = save_stream(stream, path, label=f"download {path.name}")
    print(f"Wrote {path} ({format_bytes(size)})")


def delete(args: argparse.Namespace, gw: Gateway) -> None:
    answer = gw.call(gw.documents.DeleteDocument, pb.DeleteDocumentRequest(id=args.id))
    d = answer.data
    _print(args, answer, lambda: f"Deleted document {d.id} (status {output.enum_word(d, 'status')}; kept for 7 years)")


def templates(args: argparse.Namespace, gw: Gateway) -> None:
    answer = gw.call(gw.documents.ListDocumentTemplates, pb.ListDocumentTemplatesRequest())
    if args.json:
        print(output.as_json(answer))
        return
    rows = [
        [t.name, t.title, output.enum_word(t, "document_type"),
         ", ".join(f.name + ("*" if f.required else "") for f in t.fields) or "-"]
        for t in answer.data
    ]
    output.listing(args, ["NAME", "TITLE", "TYPE", "FIELDS (* required)"], rows)


def generate(args: argparse.Namespace, gw: Gateway) -> None:
    request = pb.GenerateDocumentRequest(
        template=args.template, fields=parse_fields(args.field),
        molecules=parse_molecules(args.molecules) if args.molecules else [], submission_id=args.submission,
        title=args.title, expires_on=args.expires_on, document_id=args.document,
    )
    answer = gw.call(gw.documents.GenerateDocument, request)
    d = answer.data
    _print(args, answer, lambda: f"Generated version {d.current_version} of document {d.id}\n{document_fields(d)}")


def request_signature(args: argparse.Namespace, gw: Gateway) -> None:
    request = pb.RequestSignatureRequest(
        id=args.id, signers=[parse_signer(spec, i) for i, spec in enumerate(args.signer, start=1)],
        provider=args.provider, message=args.message, request_id=str(uuid.uuid4()),
    )
    answer = gw.call(gw.signatures.RequestSignature, request)
    _print(args, answer, lambda: _signature_text(answer.data))


def signature_status(args: argparse.Namespace, gw: Gateway) -> None:
    answer = gw.call(gw.signatures.GetSignatureStatus, pb.GetSignatureStatusRequest(id=args.id))
    _print(args, answer, lambda: _signature_text(answer.data))


def _signature_text(request: pb.SignatureRequest) -> str:
    return f"{signature_fields(request)}\n\n{output.table(SIGNER_HEADERS, signer_rows(request.signers))}"


def sign(args: argparse.Namespace, gw: Gateway, ask: Prompt | None = None) -> None:
    """The caller signs: their password (and MFA code) typed now, never echoed, stored or logged."""
    ask = ask or ask_secret
    if gw.api_key:
        raise CliError("an electronic signature needs a person: unset MOLBRIDGE_API_KEY and `molbridge login`",
                       exit_code=EXIT_AUTHENTICATION)
    mfa_code = args.mfa_code or ""
    if not mfa_code and gw.call(gw.identity.GetMe, identity_pb.GetMeRequest()).data.mfa_enabled:
        mfa_code = ask("MFA code: ")
    password = ask(f"Password to sign document {args.id} ({args.meaning}): ")
    answer = gw.call(gw.signatures.Sign, sign_request(args.id, args.meaning, password, mfa_code))
    _print(args, answer, lambda: f"Signed document {args.id} ({args.meaning})\n\n{_signature_text(answer.data)}")


def verify(args: argparse.Namespace, gw: Gateway) -> None:
    answer = gw.call(
        gw.signatures.VerifySignedDocument, pb.VerifySignedDocumentRequest(id=args.id, version=args.version)
    )
    v = answer.data

    def text() -> str:
        def yes(flag: bool) -> str:
            return "yes" if flag else "NO"

        return output.fields([
            ("version", str(v.version)),
            ("intact", yes(v.intact)),
            ("trusted", yes(v.trusted)),
            ("whole document", yes(v.covers_whole_document)),
            ("certificate", v.signer_certificate or "-"),
            ("signed at", output.timestamp(v.signed_at)),
            ("summary", v.summary or "-"),
        ])

    _print(args, answer, text)
    if not (v.intact and v.trusted and v.covers_whole_document):
        raise CliError(f"the signature of document {args.id}, version {v.version}, does not hold")


def register(subparsers: Any) -> None:
    documents = subparsers.add_parser("documents", help="documents and their signatures").add_subparsers(
        dest="documents_command", required=True, metavar="COMMAND"
    )
    type_help = f"document type: {', '.join(TYPE_ALIASES)} or a full name (e.g. experiment-specification)"

    cmd = add_command(documents, "upload", "upload a file as a new document or a new version", gateway=upload)
    cmd.add_argument("file", type=Path, metavar="FILE")
    cmd.add_argument("--type", type=document_type, help=type_help + " (required for a new document)")
    cmd.add_argument("--title", default="", help="default: the file name")
    cmd.add_argument("--description", default="")
    cmd.add_argument("--submission", default="", metavar="ID", help="the submission it belongs to")
    cmd.add_argument("--expires-on", type=iso_date, default="", metavar="YYYY-MM-DD")
    cmd.add_argument("--document", default="", metavar="ID", help="add a version to this document")

    cmd = add_command(documents, "list", "list your organization's documents and those shared with it",
                      gateway=list_documents)
    cmd.add_argument("--type", type=document_type, help=type_help)
    cmd.add_argument("--status", type=document_status, help="draft, pending-signature, signed, rejected, …")
    cmd.add_argument("--submission", default="", metavar="ID")
    cmd.add_argument("--include-deleted", action="store_true")
    cmd.add_argument("--page", type=int, default=1)
    cmd.add_argument("--page-size", type=int, default=0, help="documents per page (server default 50)")

    cmd = add_command(documents, "get", "show a document and its versions", gateway=get_document)
    cmd.add_argument("id", metavar="ID")
    cmd = add_command(documents, "versions", "list the versions of a document", gateway=versions)
    cmd.add_argument("id", metavar="ID")

    cmd = add_command(documents, "download", "save a document's file", gateway=download)
    cmd.add_argument("id", metavar="ID")
    cmd.add_argument("--version", type=int, default=0, help="version number (default: the current one)")
    cmd.add_argument("--out", type=Path, metavar="PATH",
                     help="file to write, or directory for the file's own name (default: its name, here)")
    cmd.add_argument("--force", action="store_true", help="replace an existing file of the file's own name")

    cmd = add_command(documents, "delete", "delete (archive) a document", gateway=delete)
    cmd.add_argument("id", metavar="ID")

    add_command(documents, "templates", "list the document templates and their fields", gateway=templates)

    cmd = add_command(documents, "generate", "generate a PDF/A document from a template", gateway=generate)
    cmd.add_argument("template", metavar="TEMPLATE", help="template name (see `documents templates`)")
    cmd.add_argument("--field", action="append", default=[], metavar="NAME=VALUE", help="a template field (repeatable)")
    cmd.add_argument("--molecules", type=Path, metavar="FILE.csv",
                     help=f"molecule table: a CSV with columns among {', '.join(MOLECULE_COLUMNS)}")
    cmd.add_argument("--submission", default="", metavar="ID")
    cmd.add_argument("--title", default="")
    cmd.add_argument("--expires-on", type=iso_date, default="", metavar="YYYY-MM-DD")
    cmd.add_argument("--document", default="", metavar="ID", help="add a version to this document")

    cmd = add_command(documents, "request-signature", "send a document for signature",
                      gateway=request_signature)
    cmd.add_argument("id", metavar="ID")
    cmd.add_argument("--signer", action="append", required=True, metavar="SPEC",
                     help="a user id, or org=ID,role=ROLE (any such user), or name=…,email=… (DocuSign); "
                          "add order=N to choose the routing order (default: one after the other)")
    cmd.add_argument("--provider", choices=PROVIDERS, default="builtin")
    cmd.add_argument("--message", default="", help="message for the signers")

    cmd = add_command(documents, "status", "show a document's signature request", gateway=signature_status)
    cmd.add_argument("id", metavar="ID")

    cmd = add_command(documents, "sign", "sign a document (asks for your password, and MFA code if enrolled)",
                      gateway=sign)
    cmd.add_argument("id", metavar="ID")
    cmd.add_argument("--meaning", choices=MEANINGS, required=True, help="what your signature means")
    cmd.add_argument("--mfa-code", default="", help="current TOTP code (asked for when MFA is enabled)")

    cmd = add_command(documents, "verify", "check the cryptographic signature of a signed document",
                      gateway=verify)
    cmd.add_argument("id", metavar="ID")
    cmd.add_argument("--version", type=int, default=0, help="version (default: the latest signed one)")
