"""`molbridge documents …` without a gateway: argument parsing, the upload's metadata and messages, signer
and field parsing, download naming and writing, and what the tables show."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.api.httpbody_pb2 import HttpBody
from molbridge.document.v1 import document_service_pb2 as pb

from cli import output
from cli.client import CliError
from cli.documents import (
    DOCUMENT_HEADERS,
    SIGNER_HEADERS,
    UPLOAD_HEADERS,
    document_rows,
    parse_fields,
    parse_molecules,
    parse_signer,
    sign_request,
    signer_rows,
    upload_metadata,
    version_rows,
)
from cli.main import build_parser
from cli.progress import RateMeter
from cli.transfer import (
    PARTIAL_SUFFIX,
    UPLOAD_CHUNK_BYTES,
    download_target,
    file_messages,
    filename_of,
    save_stream,
    transfer_segments,
)

PROTO = Path(__file__).parents[2] / "protos/molbridge/document/v1/document_service.proto"
DOCUMENT_ID = "0b7c4f0e-9a51-4c61-8d0e-2f4b7f1f0a11"
USER_ID = "5e0f7d2a-1c3b-4a5d-9e8f-7a6b5c4d3e2f"


def parse(*argv: str):  # type: ignore[no-untyped-def]
    return build_parser().parse_args(["documents", *argv])


# --- arguments -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("nda", pb.Document.NON_DISCLOSURE_AGREEMENT),
        ("MTA", pb.Document.MATERIAL_TRANSFER_AGREEMENT),
        ("sds", pb.Document.SAFETY_DATA_SHEET),
        ("experiment-specification", pb.Document.EXPERIMENT_SPECIFICATION),
        ("SERVICE_AGREEMENT", pb.Document.SERVICE_AGREEMENT),
    ],
)
def test_document_types_by_short_or_full_name(word: str, expected: int) -> None:
    args = parse("upload", "contract.pdf", "--type", word, "--title", "Alpha NDA", "--expires-on", "2027-01-31")
    assert (args.file, args.type, args.title, args.expires_on) == (Path("contract.pdf"), expected, "Alpha NDA",
                                                                   "2027-01-31")


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["upload", "a.pdf", "--type", "contract"], "unknown document type 'contract' (choose from mta, nda, sds,"),
        (["upload", "a.pdf", "--type", "type-unspecified"], "unknown document type"),
        (["list", "--status", "lost"], "unknown status 'lost' (choose from draft, pending-signature"),
        (["upload", "a.pdf", "--expires-on", "31/01/2027"], "'31/01/2027' is not a date (YYYY-MM-DD)"),
        (["sign", DOCUMENT_ID, "--meaning", "approved", "--password", "secret"], "unrecognized arguments"),
        (["sign", DOCUMENT_ID], "the following arguments are required: --meaning"),
        (["sign", DOCUMENT_ID, "--meaning", "liked"], "invalid choice: 'liked'"),
        (["request-signature", DOCUMENT_ID], "the following arguments are required: --signer"),
    ],
)
def test_bad_arguments_are_usage_errors(argv: list[str], complaint: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_status:
        parse(*argv)
    assert exit_status.value.code == 2
    assert complaint in capsys.readouterr().err


def test_every_command_is_there_with_its_options() -> None:
    listed = parse("list", "--type", "nda", "--status", "pending-signature", "--include-deleted", "--page", "2")
    assert (listed.type, listed.status, listed.include_deleted, listed.page) == (
        pb.Document.NON_DISCLOSURE_AGREEMENT, pb.Document.PENDING_SIGNATURE, True, 2,
    )
    download = parse("download", DOCUMENT_ID, "--version", "2", "--out", "here.pdf")
    assert (download.id, download.version, download.out, download.force) == (DOCUMENT_ID, 2, Path("here.pdf"), False)
    sign = parse("sign", DOCUMENT_ID, "--meaning", "reviewed", "--mfa-code", "123456", "--json")
    assert (sign.meaning, sign.mfa_code, sign.json) == ("reviewed", "123456", True)
    assert not hasattr(sign, "password")  # only ever typed at the prompt
    generated = parse("generate", "nda", "--field", "counterparty_name=Acme Labs", "--submission", "s1")
    assert (generated.template, generated.field, generated.submission) == ("nda", ["counterparty_name=Acme Labs"],
                                                                           "s1")
    requested = parse("request-signature", DOCUMENT_ID, "--signer", USER_ID, "--signer", "org=o1,role=cro_admin")
    assert (requested.signer, requested.provider) == ([USER_ID, "org=o1,role=cro_admin"], "builtin")
    for command in ("get", "versions", "delete", "status", "verify"):
        assert parse(command, DOCUMENT_ID).id == DOCUMENT_ID
    assert parse("templates").gateway_handler.__name__ == "templates"


# --- upload ----------------------------------------------------------------------------------------------


def test_the_upload_metadata_uses_the_contracts_keys() -> None:
    metadata, later = upload_metadata(
        document_type=pb.Document.NON_DISCLOSURE_AGREEMENT, title="Alpha NDA", description="Mutual",
        submission_id="s-1", expires_on="2027-01-31",
    )
    assert metadata == [
        ("x-document-type", "NON_DISCLOSURE_AGREEMENT"),
        ("x-document-title", "Alpha NDA"),
        ("x-document-description", "Mutual"),
        ("x-submission-id", "s-1"),
        ("x-expires-on", "2027-01-31"),
    ]
    assert later == {}
    contract = PROTO.read_text()
    assert all(f"`{key}`" in contract for key in UPLOAD_HEADERS.values())  # as the proto comment names them
    assert upload_metadata(document_type=pb.Document.RESULTS_REPORT) == ([("x-document-type", "RESULTS_REPORT")], {})


def test_what_metadata_cannot_carry_is_set_after_the_upload() -> None:
    nda = pb.Document.NON_DISCLOSURE_AGREEMENT
    metadata, later = upload_metadata(document_type=nda, title="Accord de confidentialité")
    assert metadata == [("x-document-type", "NON_DISCLOSURE_AGREEMENT")]
    assert later == {"title": "Accord de confidentialité"}
    with pytest.raises(CliError, match="--submission 'sü': only printable ASCII"):
        upload_metadata(document_type=nda, submission_id="sü")


def test_a_new_version_sends_the_document_id_and_updates_the_rest() -> None:
    metadata, later = upload_metadata(document_id=DOCUMENT_ID, title="v2", expires_on="2028-01-01")
    assert metadata == [("x-document-id", DOCUMENT_ID)]
    assert later == {"title": "v2", "expires_on": "2028-01-01"}
    with pytest.raises(CliError, match="--type and --submission: a new version"):
        upload_metadata(document_id=DOCUMENT_ID, document_type=pb.Document.NON_DISCLOSURE_AGREEMENT,
                        submission_id="s-1")


def test_upload_messages_stay_within_one_mebibyte_and_report_progress(tmp_path: Path) -> None:
    path = tmp_path / "big.pdf"
    content = b"%PDF-1.7\n" + bytes(range(256)) * (10 * 1024)  # about 2.5 MiB
    path.write_bytes(content)
    seen: list[int] = []
    messages = list(file_messages(path, content_type="application/octet-stream", on_progress=seen.append))
    assert all(m.ByteSize() <= 1024 * 1024 for m in messages)
    assert len(messages) == -(-len(content) // UPLOAD_CHUNK_BYTES) == 3
    assert messages[0].content_type == "application/octet-stream" and not messages[1].content_type
    assert b"".join(m.data for m in messages) == content
    assert seen == [UPLOAD_CHUNK_BYTES, 2 * UPLOAD_CHUNK_BYTES, len(content)]


def test_transfer_segments_show_bytes_rate_and_eta() -> None:
    ticks = iter([0.0, 2.0])
    meter = RateMeter(clock=lambda: next(ticks))
    assert transfer_segments(2_000_000, 6_000_000, meter) == ["2.0 MB/6.0 MB", "1.0 MB/s", "ETA 00:04"]
    unknown_total = RateMeter(clock=lambda: 0.0)
    assert transfer_segments(1500, None, unknown_total) == ["1.5 kB", "-- MB/s"]


# --- signing and generation ------------------------------------------------------------------------------


def test_signers_by_user_by_role_or_by_email() -> None:
    assert parse_signer(USER_ID, 1) == pb.SignerSpec(user_id=USER_ID, routing_order=1)
    assert parse_signer("org=o1, role=cro_admin", 2) == pb.SignerSpec(organization_id="o1", role="cro_admin",
                                                                       routing_order=2)
    assert parse_signer("name=Ann Lee,email=ann@cro.test,order=1", 3) == pb.SignerSpec(
        name="Ann Lee", email="ann@cro.test", routing_order=1
    )
    for bad, complaint in (
        ("someone", "expected a user id or KEY=VALUE pairs"),
        ("colour=blue", "expected a user id or KEY=VALUE pairs"),
        ("user=u1,order=first", "order must be a whole number from 1"),
        ("org=o1", "name a user, an org with a role"),
    ):
        with pytest.raises(CliError, match=complaint):
            parse_signer(bad, 1)


def test_the_sign_request_carries_the_typed_secrets_and_nothing_prints_them() -> None:
    request = sign_request(DOCUMENT_ID, "approved", "Sign-Pass-123!", " 123456 ")
    assert (request.id, request.meaning, request.password, request.mfa_code) == (
        DOCUMENT_ID, "approved", "Sign-Pass-123!", "123456",
    )
    answer = pb.SignResponse(data=pb.SignatureRequest(id="r1", signers=[pb.Signer(position=1, meaning="approved")]))
    assert "Sign-Pass-123!" not in output.as_json(answer)


def test_template_fields_and_molecules(tmp_path: Path) -> None:
    assert parse_fields(["counterparty_name=Acme Labs", "terms=a=b", "empty="]) == {
        "counterparty_name": "Acme Labs", "terms": "a=b", "empty": "",
    }
    with pytest.raises(CliError, match="expected NAME=VALUE"):
        parse_fields(["counterparty"])
    with pytest.raises(CliError, match="given twice"):
        parse_fields(["a=1", "a=2"])
    table = tmp_path / "molecules.csv"
    table.write_text("label,smiles,molecular_weight,amount\nMB-1,CCO,46.07,10 mg\nMB-2,,,\n", encoding="utf-8")
    assert parse_molecules(table) == [
        pb.TemplateMolecule(label="MB-1", smiles="CCO", molecular_weight=46.07, amount="10 mg"),
        pb.TemplateMolecule(label="MB-2"),
    ]
    table.write_text("label,weight\nMB-1,46\n", encoding="utf-8")
    with pytest.raises(CliError, match="unknown columns weight"):
        parse_molecules(table)
    table.write_text("label,molecular_weight\nMB-1,heavy\n", encoding="utf-8")
    with pytest.raises(CliError, match="line 2: molecular_weight must be a number"):
        parse_molecules(table)


# --- download --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("disposition", "name"),
    [
        ('attachment; filename="nda.pdf"', "nda.pdf"),
        ("attachment; filename=\"accord?.pdf\"; filename*=UTF-8''accord%C3%A9.pdf", "accordé.pdf"),
        ('attachment; filename="../../etc/passwd"', "passwd"),
        ('attachment; filename="..\\\\reports\\\\q1.pdf"', "q1.pdf"),
        ('attachment; filename=".."', None),
        ("", None),
    ],
)
def test_the_download_name_comes_from_content_disposition_without_its_directories(
    disposition: str, name: str | None
) -> None:
    assert filename_of(disposition) == name


def test_where_a_download_goes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert download_target(None, "nda.pdf", "document-1", force=False) == tmp_path / "nda.pdf"
    assert download_target(None, None, "document-1", force=False) == tmp_path / "document-1"
    (tmp_path / "nda.pdf").write_bytes(b"old")
    with pytest.raises(CliError, match="exists: pass --force"):
        download_target(None, "nda.pdf", "document-1", force=False)
    assert download_target(None, "nda.pdf", "document-1", force=True) == tmp_path / "nda.pdf"
    assert download_target(tmp_path / "mine.pdf", "nda.pdf", "d", force=False) == tmp_path / "mine.pdf"
    folder = tmp_path / "out"
    folder.mkdir()
    assert download_target(folder, "nda.pdf", "d", force=False) == folder / "nda.pdf"


def test_a_download_is_written_whole_or_not_at_all(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "nda.pdf"
    parts = [HttpBody(content_type="application/pdf", data=b"%PDF-1.7 "), HttpBody(data=b"rest")]
    assert save_stream(iter(parts), path) == 13
    assert path.read_bytes() == b"%PDF-1.7 rest" and not list(tmp_path.glob(f"*{PARTIAL_SUFFIX}"))
    assert re.search(r"download nda\.pdf .*13 B", capsys.readouterr().err)

    def broken() -> Iterator[HttpBody]:
        yield HttpBody(data=b"%PDF-1.7 ")
        raise RuntimeError("stream reset")

    with pytest.raises(RuntimeError):
        save_stream(broken(), tmp_path / "cut.pdf")
    assert not (tmp_path / "cut.pdf").exists() and not list(tmp_path.glob(f"*{PARTIAL_SUFFIX}"))
    with pytest.raises(CliError, match="cannot write"):
        save_stream(iter(parts), tmp_path / "missing-dir" / "x.pdf")


# --- tables ----------------------------------------------------------------------------------------------


def test_tables_show_the_documents_versions_and_signers() -> None:
    version = pb.DocumentVersion(version=2, filename="nda.pdf", content_type="application/pdf", size_bytes=12_345,
                                 origin="signed", signed=True, sha256="ab" * 32)
    document = pb.Document(id="d1", document_type=pb.Document.NON_DISCLOSURE_AGREEMENT, title="Alpha NDA",
                           status=pb.Document.SIGNED, current_version=2, current=version)
    assert document_rows([document]) == [
        ["d1", "NON_DISCLOSURE_AGREEMENT", "Alpha NDA", "SIGNED", "2", "12.3 kB", "-"]
    ]
    assert len(DOCUMENT_HEADERS) == len(document_rows([document])[0])
    assert version_rows([version]) == [
        ["2", "nda.pdf", "application/pdf", "12.3 kB", "signed", "yes", "abababababab…", "-"]
    ]
    signers = [
        pb.Signer(position=1, routing_order=1, spec=pb.SignerSpec(user_id="u1"), status=pb.Signer.SIGNED,
                  printed_name="Ada Signer", meaning="approved"),
        pb.Signer(position=2, routing_order=2, spec=pb.SignerSpec(organization_id="o2", role="cro_admin"),
                  status=pb.Signer.WAITING),
    ]
    rows = signer_rows(signers)
    assert rows[0][:6] == ["1", "1", "u1", "SIGNED", "Ada Signer", "approved"]
    assert rows[1][:6] == ["2", "2", "cro_admin of o2", "WAITING", "-", "-"]
    assert len(SIGNER_HEADERS) == len(rows[0])
