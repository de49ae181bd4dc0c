"""CSV upload, preview and import requests through the real gateway over REST: multipart and raw bodies
streamed to storage, the limits, dialect detection, and every mapping mistake as a 400 that names it."""

from __future__ import annotations

import os

import httpx
import pytest

from tests.conftest import MESH_MAX_IMPORT_ROWS, MESH_MAX_UPLOAD_BYTES
from tests.e2e import test_identity_gateway
from tests.e2e.molecule_rest import (
    Org,
    assert_error,
    created,
    data,
    field_violations,
    start_import,
    upload_file,
    wait_for_job,
)
from tests.e2e.test_identity_gateway import bearer

api = test_identity_gateway.api
admin = test_identity_gateway.admin

UPLOAD = "/molecules/upload/csv"


@pytest.fixture(scope="module")
def org(api: httpx.Client, admin: dict) -> Org:
    return Org.create(api, admin)


def upload_raw(
    api: httpx.Client, org: Org, body: bytes, content_type: str = "text/csv", **headers: str
) -> httpx.Response:
    return api.post(UPLOAD, content=body, headers={**org.headers, "content-type": content_type, **headers})


def preview(api: httpx.Client, org: Org, body: bytes, **params: int) -> dict:
    key = created(upload_raw(api, org, body))["storage_key"]
    return dict(data(api.get(f"{UPLOAD}/{key}/preview", params=params, headers=org.headers)))


def test_multipart_form_upload_answers_key_name_and_size(api: httpx.Client, org: Org) -> None:
    content = b"SMILES,Name\nCCO,ethanol\n"
    stored = upload_file(api, org.headers, content, "bench results.csv")
    assert set(stored) == {"storage_key", "filename", "size_bytes"}
    assert stored["filename"] == "bench results.csv" and int(stored["size_bytes"]) == len(content)
    assert len(stored["storage_key"]) == 32


def test_raw_csv_body_upload(api: httpx.Client, org: Org) -> None:
    content = b"smiles\nCCO\nCCN\n"
    plain = created(upload_raw(api, org, content))
    assert plain["filename"] == "upload.csv" and int(plain["size_bytes"]) == len(content)
    named = created(upload_raw(api, org, content, **{"content-disposition": 'attachment; filename="../run 7.csv"'}))
    assert named["filename"] == "run 7.csv"  # the last path segment only


def test_a_file_of_many_gateway_messages_is_stored_exactly(api: httpx.Client, org: Org) -> None:
    # Envoy streams the body in messages of at most 1 MiB: the multipart boundary and the file's bytes
    # straddle them.
    rows = b"".join(b"%sO,row %d\n" % (b"C" * (i % 9 + 1), i) for i in range(400_000))
    content = b"smiles,name\n" + rows
    assert len(content) > 3 * 1024 * 1024
    for stored in (
        upload_file(api, org.headers, content, "large.csv"),
        created(upload_raw(api, org, content)),
    ):
        assert int(stored["size_bytes"]) == len(content)
        shown = data(api.get(f"{UPLOAD}/{stored['storage_key']}/preview", params={"rows": 2}, headers=org.headers))
        assert shown["headers"] == ["smiles", "name"]
        assert [row["cells"] for row in shown["rows"]] == [["CO", "row 0"], ["CCO", "row 1"]]


def test_a_file_that_is_not_text_is_refused(api: httpx.Client, org: Org) -> None:
    junk = b"\x89PNG\r\n\x1a\n" + os.urandom(4096)
    for response in (
        upload_raw(api, org, junk),
        upload_raw(api, org, os.urandom(8192), "application/octet-stream"),
        api.post(UPLOAD, files={"file": ("plot.csv", junk, "text/csv")}, headers=org.headers),
    ):
        error = assert_error(response, 400, "VALIDATION_ERROR")
        assert error["details"][0]["metadata"]["detail"] == "NOT_TEXT"
    empty = assert_error(upload_raw(api, org, b""), 400, "VALIDATION_ERROR")
    assert "empty" in empty["message"]
    wrong_type = assert_error(upload_raw(api, org, b"a,b\n", "application/json"), 400, "VALIDATION_ERROR")
    assert "text/csv" in wrong_type["message"]
    no_file = api.post(UPLOAD, files={"attachment": ("x.csv", b"smiles\nC\n", "text/csv")}, headers=org.headers)
    assert "file" in field_violations(assert_error(no_file, 400, "VALIDATION_ERROR"))


def test_a_file_over_the_upload_limit_is_refused_naming_the_limit(api: httpx.Client, org: Org) -> None:
    line = b"CCO,an ethanol row padded to a realistic width\n"
    body = b"smiles,name\n" + line * (MESH_MAX_UPLOAD_BYTES // len(line) + 1)
    for response in (
        upload_raw(api, org, body),
        api.post(UPLOAD, files={"file": ("big.csv", body, "text/csv")}, headers=org.headers),
    ):
        error = assert_error(response, 400, "VALIDATION_ERROR")
        assert f"{MESH_MAX_UPLOAD_BYTES:,} bytes" in error["message"], error


def test_a_file_over_the_row_limit_is_refused_at_import_naming_the_limit(api: httpx.Client, org: Org) -> None:
    key = created(upload_raw(api, org, b"smiles\n" + b"C\n" * (MESH_MAX_IMPORT_ROWS + 1)))["storage_key"]
    response = api.post(f"{UPLOAD}/{key}/import", json={"mapping": {"smiles": "smiles"}}, headers=org.headers)
    error = assert_error(response, 400, "VALIDATION_ERROR")
    assert f"{MESH_MAX_IMPORT_ROWS:,}" in error["message"], error


def test_preview_strips_the_bom_detects_semicolons_and_suggests_targets(api: httpx.Client, org: Org) -> None:
    body = "\ufeffStructure;MW;LogP;IC50 (nM);Batch\r\nCCO;46.07;-0.31;12,5;B-1\r\nCCN;45.08;-0.13;7;B-2\r\n"
    shown = preview(api, org, body.encode("utf-8"))
    assert shown["headers"] == ["Structure", "MW", "LogP", "IC50 (nM)", "Batch"]
    assert shown["delimiter"] == ";" and shown["encoding"] == "utf-8-sig"
    assert [row["cells"] for row in shown["rows"]] == [
        ["CCO", "46.07", "-0.31", "12,5", "B-1"],
        ["CCN", "45.08", "-0.13", "7", "B-2"],
    ]
    assert shown["suggested_mapping"] == {
        "Structure": "smiles",
        "MW": "molecular_weight",
        "LogP": "logp",
        "IC50 (nM)": "ic50",
        "Batch": "custom_batch",
    }


def test_preview_reads_latin1_tabs_and_quoted_fields(api: httpx.Client, org: Org) -> None:
    body = 'smi\tCompound\tComment\r\nCCO\tcafé-1\t"dose, high\nsecond line"\r\nCCN\tnaïve\t""\r\n'
    shown = preview(api, org, body.encode("latin-1"), rows=1)
    assert shown["delimiter"] == "\t" and shown["encoding"] in ("latin-1", "iso-8859-1", "cp1252")
    assert shown["headers"] == ["smi", "Compound", "Comment"]
    assert [row["cells"] for row in shown["rows"]] == [["CCO", "café-1", "dose, high\nsecond line"]]
    assert shown["suggested_mapping"]["smi"] == "smiles" and shown["suggested_mapping"]["Compound"] == "name"


def test_mapping_mistakes_are_400s_naming_the_problem(api: httpx.Client, org: Org) -> None:
    key = created(upload_raw(api, org, b"SMILES,Name,IC50\nCCO,ethanol,3\n"))["storage_key"]
    cases = [
        ({"mapping": {"Name": "name"}}, "mapping", "smiles"),
        ({"mapping": {"SMILES": "smiles", "IC50": "ic_fifty"}}, "mapping.IC50", "ic_fifty"),
        ({"mapping": {"SMILES": "smiles", "Weight": "molecular_weight"}}, "mapping.Weight", "not a column"),
        ({"mapping": {"SMILES": "smiles", "Name": "smiles"}}, "mapping", "smiles"),
        ({"mapping": {"SMILES": "smiles"}, "mode": "all_or_nothing"}, "mode", "reject_all"),
        ({"mapping": {"SMILES": "smiles"}, "predict": ["tpsa"]}, "predict", "tpsa"),
        ({}, "mapping", "smiles"),
    ]
    for body, field, named in cases:
        response = api.post(f"{UPLOAD}/{key}/import", json=body, headers=org.headers)
        violations = field_violations(assert_error(response, 400, "VALIDATION_ERROR"))
        assert field in violations and named in violations[field], (body, violations)
    missing_library = api.post(
        f"{UPLOAD}/{key}/import",
        json={"mapping": {"SMILES": "smiles"}, "library_id": "4f0c8c5e-5a4e-4a8e-9f5e-0d6f7a1b2c3d"},
        headers=org.headers,
    )
    assert_error(missing_library, 404, "RESOURCE_NOT_FOUND")


def test_duplicate_headers_are_refused_at_preview_and_import(api: httpx.Client, org: Org) -> None:
    key = created(upload_raw(api, org, b"smiles,ic50,ic50\nCCO,1,2\n"))["storage_key"]
    for response in (
        api.get(f"{UPLOAD}/{key}/preview", headers=org.headers),
        api.post(f"{UPLOAD}/{key}/import", json={"mapping": {"smiles": "smiles"}}, headers=org.headers),
    ):
        error = assert_error(response, 400, "VALIDATION_ERROR")
        assert '"ic50"' in error["message"] and "duplicate" in error["message"]


def test_an_import_answers_with_the_queued_job_at_once(api: httpx.Client, org: Org) -> None:
    key = created(upload_raw(api, org, b"SMILES\nCCCCCCO\n"))["storage_key"]
    job = start_import(api, org.headers, key, {"SMILES": "smiles"}, request_id="retry-me")
    assert job["status"] == "queued" and job["total_rows"] == 1 and job["mode"] == "keep_valid"
    again = start_import(api, org.headers, key, {"SMILES": "smiles"}, request_id="retry-me")
    assert again["job_id"] == job["job_id"]  # a retried request starts nothing new


def test_an_organization_chooses_its_prefix_and_imported_ids_become_aliases(api: httpx.Client, admin: dict) -> None:
    fresh = Org.create(api, admin)
    scientist = bearer(fresh.add_user(api))
    assert_error(
        api.put("/molecules/registration-prefix", json={"prefix": "XY"}, headers=scientist), 403, "AUTHORIZATION_ERROR"
    )
    bad = assert_error(
        api.put("/molecules/registration-prefix", json={"prefix": "X-1"}, headers=fresh.headers),
        400,
        "VALIDATION_ERROR",
    )
    assert "prefix" in field_violations(bad)
    chosen = data(api.put("/molecules/registration-prefix", json={"prefix": "beta"}, headers=fresh.headers))
    assert chosen["prefix"] == "BETA"  # unused yet: `locked` false
    assert data(api.get("/molecules/registration-prefix", headers=fresh.headers))["prefix"] == "BETA"
    body = b"cmpd_id,smiles\nBX-7,CCO\nBX-8,c1ccccc1\n"
    key = created(upload_raw(api, fresh, body))["storage_key"]
    suggested = data(api.get(f"{UPLOAD}/{key}/preview", headers=fresh.headers))["suggested_mapping"]
    assert suggested == {"cmpd_id": "name", "smiles": "smiles"}
    job = wait_for_job(api, fresh.headers, start_import(api, fresh.headers, key, suggested)["job_id"])
    assert job["status"] == "completed" and job["registered"] == 2, job
    by_alias = data(api.get("/molecules/by-number/BX-8", headers=scientist))
    assert by_alias["registration_number"] == "BETA-000002" and by_alias["canonical_smiles"] == "c1ccccc1"
    assert data(api.get("/molecules/by-number/beta-000001", headers=scientist))["name"] == "BX-7"
