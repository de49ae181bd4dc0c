"""`molbridge documents` as a user runs it: the console script in a subprocess, through the gateway to the
document service, files streamed both ways."""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from pathlib import Path

import httpx
import pytest
from pypdf import PdfWriter

from tests.e2e.test_cli import Run, cli_runner

EXIT_VALIDATION = 6


def pdf_bytes(pages: int) -> bytes:
    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(width=595, height=842)
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def scientist(mesh, tmp_path_factory: pytest.TempPathFactory) -> Run:  # type: ignore[no-untyped-def]
    """The CLI logged in as a pharma scientist of a new organization (documents are theirs to upload)."""
    email = f"docs-{uuid.uuid4().hex[:8]}@cli.test"
    with httpx.Client(base_url=mesh.gateway_url + "/api/v1", timeout=30) as api:
        login = api.post("/auth/login", json={"email": mesh.admin_email, "password": mesh.admin_password})
        auth = {"authorization": f"Bearer {login.json()['data']['access_token']}"}
        org = api.post("/organizations", json={"name": f"Docs {email}", "kind": "PHARMA"}, headers=auth)
        assert org.status_code == 201, org.text
        user = api.post(
            "/users",
            json={"email": email, "full_name": "Doc Scientist", "password": mesh.admin_password,
                  "roles": ["pharma_scientist"], "organization_id": org.json()["data"]["id"]},
            headers=auth,
        )
        assert user.status_code == 201, user.text
    run = cli_runner(mesh, tmp_path_factory.mktemp("config"))  # its password is the admin's: one env for both
    run("login", "--email", email)
    return run


def test_upload_list_and_download_round_trip(scientist: Run, tmp_path: Path) -> None:
    first, second = pdf_bytes(1), pdf_bytes(2)
    source = tmp_path / "Alpha NDA.pdf"
    source.write_bytes(first)
    uploaded = scientist("documents", "upload", str(source), "--type", "nda", "--title", "Accord Alpha é",
                         "--expires-on", "2031-12-31", "--json")
    document = json.loads(uploaded.stdout)["data"]
    assert "upload Alpha NDA.pdf" in uploaded.stderr  # the progress line
    assert (document["document_type"], document["title"], document["expires_on"]) == (
        "NON_DISCLOSURE_AGREEMENT", "Accord Alpha é", "2031-12-31",
    )
    current = document["current"]
    assert (current["filename"], current["content_type"]) == ("Alpha NDA.pdf", "application/pdf")
    assert current["sha256"] == hashlib.sha256(first).hexdigest()

    listed = scientist("documents", "list", "--type", "nda")
    row = next(line for line in listed.stdout.splitlines() if line.startswith(document["id"]))
    assert "NON_DISCLOSURE_AGREEMENT" in row and "Accord Alpha é" in row and "DRAFT" in row

    second_source = tmp_path / "Alpha NDA v2.pdf"
    second_source.write_bytes(second)
    again = scientist("documents", "upload", str(second_source), "--document", document["id"], "--json")
    assert json.loads(again.stdout)["data"]["current_version"] == 2
    versions = scientist("documents", "versions", document["id"], "--output", "csv")
    assert [line.split(",")[:2] for line in versions.stdout.splitlines()[1:]] == [
        ["2", "Alpha NDA v2.pdf"], ["1", "Alpha NDA.pdf"],
    ]

    into = tmp_path / "downloads"
    into.mkdir()
    scientist("documents", "download", document["id"], "--out", str(into))
    assert (into / "Alpha NDA v2.pdf").read_bytes() == second  # named by the service's content-disposition
    refused = scientist("documents", "download", document["id"], "--out", str(into), ok=False)
    assert refused.returncode == 1 and "exists: pass --force" in refused.stderr
    scientist("documents", "download", document["id"], "--version", "1", "--out", str(tmp_path / "v1.pdf"))
    assert (tmp_path / "v1.pdf").read_bytes() == first
    assert not list(into.glob("*.part")) and not list(tmp_path.glob("*.part"))


def test_a_file_that_is_no_document_is_refused(scientist: Run, tmp_path: Path) -> None:
    program = tmp_path / "setup.pdf"
    program.write_bytes(b"MZ" + bytes(4096))  # a Windows executable, whatever its name says
    refused = scientist("documents", "upload", str(program), "--type", "nda", ok=False)
    assert refused.returncode == EXIT_VALIDATION, refused.stderr
    assert "INVALID_ARGUMENT" in refused.stderr


def test_templates_are_listed_and_generate_a_pdf(scientist: Run, tmp_path: Path) -> None:
    listed = scientist("documents", "templates")
    assert any(line.split()[:1] == ["nda"] for line in listed.stdout.splitlines())
    fields = {
        "pharma_organization": "Northwind Therapeutics Ltd.", "pharma_address": "12 Harbour Road, Cambridge",
        "pharma_signatory_name": "Ada Signer", "pharma_signatory_title": "Head of Chemistry",
        "cro_organization": "Acme Labs", "cro_address": "1 Lab Street, Basel",
        "cro_signatory_name": "Ann Lee", "cro_signatory_title": "Director", "effective_date": "2030-01-15",
        "term_years": "3", "governing_law": "England and Wales",
    }
    generated = scientist("documents", "generate", "nda", *(f"--field={k}={v}" for k, v in fields.items()),
                          "--json")
    document = json.loads(generated.stdout)["data"]
    assert (document["template"], document["document_type"]) == ("nda", "NON_DISCLOSURE_AGREEMENT")
    assert document["current"]["content_type"] == "application/pdf"
    scientist("documents", "download", document["id"], "--out", str(tmp_path / "nda.pdf"))
    assert (tmp_path / "nda.pdf").read_bytes().startswith(b"%PDF-")
    missing = scientist("documents", "generate", "nda", "--field", "term_years=3", ok=False)
    assert missing.returncode == EXIT_VALIDATION and "governing_law" in missing.stderr


def test_request_sign_status_and_verify(scientist: Run, mesh, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The built-in signer from the terminal: the password is typed at the prompt (never an option)."""
    me = json.loads(scientist("whoami", "--json").stdout)["data"]
    source = tmp_path / "Protocol.pdf"
    source.write_bytes(pdf_bytes(1))
    uploaded = scientist("documents", "upload", str(source), "--type", "experiment-specification", "--json")
    document = json.loads(uploaded.stdout)["data"]
    scientist("documents", "request-signature", document["id"], "--signer", me["id"])
    waiting = scientist("documents", "status", document["id"], "--json")
    assert json.loads(waiting.stdout)["data"]["status"] == "SENT"

    wrong = scientist("documents", "sign", document["id"], "--meaning", "author", typed="not my password\n", ok=False)
    assert wrong.returncode != 0 and "not my password" not in wrong.stdout + wrong.stderr
    signed = scientist("documents", "sign", document["id"], "--meaning", "author", typed=mesh.admin_password + "\n")
    assert mesh.admin_password not in signed.stdout + signed.stderr  # never echoed
    status = json.loads(scientist("documents", "status", document["id"], "--json").stdout)["data"]
    assert status["status"] == "COMPLETED" and status["signers"][0]["meaning"] == "author"
    assert status["signers"][0]["printed_name"] == "Doc Scientist"
    verified = scientist("documents", "verify", document["id"])
    assert "intact" in verified.stdout and "NO" not in verified.stdout
    scientist("documents", "download", document["id"], "--out", str(tmp_path / "signed.pdf"))
    assert (tmp_path / "signed.pdf").read_bytes().startswith(pdf_bytes(1)[:8])
