"""The audit trail through the real gateway: verification names a row edited in PostgreSQL (and is whole
again once it is put back), anchors, an object's history with the events that name it, the CSV export,
an auditor of a PHARMA organization who reads its own trail only, and `molbridge audit verify|export`."""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from services.runtime.db import sqlalchemy_url
from tests.e2e import test_identity_gateway
from tests.e2e.cro_rest import eventually
from tests.e2e.molecule_rest import Org, assert_error, created, data
from tests.e2e.test_cli import cli_runner
from tests.e2e.test_documents_rest import PDF, upload_raw
from tests.e2e.test_identity_gateway import bearer

api = test_identity_gateway.api
admin = test_identity_gateway.admin


@pytest.fixture(scope="module")
def identity_db(mesh) -> Iterator[Engine]:  # type: ignore[no-untyped-def]
    """The identity schema, written to directly: what someone with database access could do."""
    engine = create_engine(sqlalchemy_url(mesh.database_url, async_driver=False))
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def pharma(api: httpx.Client, admin: dict) -> Org:
    return Org.create(api, admin)


@pytest.fixture(scope="module")
def cro(api: httpx.Client, admin: dict) -> Org:
    return Org(*test_identity_gateway.new_org(api, admin, "CRO"))


@pytest.fixture(scope="module")
def auditor(api: httpx.Client, pharma: Org) -> Org:
    """The PHARMA organization's auditor (created by its admin), logged in."""
    return Org(pharma.id, pharma.add_user(api, "auditor"))


@pytest.fixture(scope="module")
def submission_document(api: httpx.Client, pharma: Org) -> tuple[str, dict]:
    """A document of a submission (the submission id is only named by it): the submission's history lists it."""
    submission_id = str(uuid.uuid4())
    document = created(upload_raw(api, pharma, PDF, "nda.pdf", document_type="NON_DISCLOSURE_AGREEMENT",
                                  submission_id=submission_id))
    return submission_id, document


def trail_entry(api: httpx.Client, headers: dict[str, str], action: str, target_id: str) -> dict:
    """The entry, once the audit consumer has stored it."""
    def found() -> list[dict]:
        return list(data(api.get("/audit-events", params={"action": action, "target_id": target_id},
                                 headers=headers)))
    return eventually(found, f"{action} of {target_id} in the trail")[0]


def verify(api: httpx.Client, headers: dict[str, str]) -> dict:
    return dict(data(api.get("/audit-events/verify", headers=headers)))


def test_verification_names_a_row_edited_in_postgresql(
    api: httpx.Client, admin: dict, pharma: Org, cro: Org, auditor: Org,
    submission_document: tuple[str, dict], identity_db: Engine,
) -> None:
    _, document = submission_document
    entry = trail_entry(api, bearer(admin), "document.created", document["id"])
    before = verify(api, bearer(admin))
    assert before["ok"] is True and "first_break" not in before, before
    assert int(before["entries_checked"]) >= int(entry["sequence"]) and int(before["head"]["sequence"]) >= 1

    anchor = data(api.post("/audit-events/anchors", json={}, headers=bearer(admin)))
    assert anchor["object_key"] == f"audit-anchors/{anchor['sequence']}.json"
    assert verify(api, bearer(admin))["anchors_checked"] >= 1
    assert_error(api.post("/audit-events/anchors", json={}, headers=auditor.headers), 403, "AUTHORIZATION_ERROR")

    sequence = int(entry["sequence"])
    with identity_db.begin() as connection:
        original = connection.execute(text("SELECT details FROM identity.audit_log WHERE sequence = :s"),
                                      {"s": sequence}).scalar_one()
        connection.execute(text("UPDATE identity.audit_log SET details = '{}', action = 'document.archived' "
                                "WHERE sequence = :s"), {"s": sequence})
    try:
        broken = verify(api, bearer(admin))
        assert broken["ok"] is False, broken
        found = broken["first_break"]
        assert (found["kind"], int(found["sequence"]), found["entry_id"]) == ("HASH_MISMATCH", sequence, entry["id"])
        assert found["expected_hash"] != found["stored_hash"] == entry["hash"]
        # The pharma auditor sees the entry is theirs; the CRO's admin learns only where the chain breaks.
        assert verify(api, auditor.headers)["first_break"]["entry_id"] == entry["id"]
        assert verify(api, cro.headers)["first_break"].get("entry_id", "") == ""
    finally:
        with identity_db.begin() as connection:
            connection.execute(text("UPDATE identity.audit_log SET details = CAST(:d AS jsonb), "
                                    "action = 'document.created' WHERE sequence = :s"),
                               {"d": json.dumps(original), "s": sequence})
    assert verify(api, bearer(admin))["ok"] is True


def test_an_objects_history_includes_the_events_that_name_it(
    api: httpx.Client, pharma: Org, auditor: Org, submission_document: tuple[str, dict],
) -> None:
    submission_id, document = submission_document
    trail_entry(api, auditor.headers, "document.created", document["id"])
    events = list(data(api.get(f"/audit-events/history/submission/{submission_id}", headers=auditor.headers)))
    assert [(e["action"], e["target_id"]) for e in events] == [("document.created", document["id"])]
    assert events[0]["details"]["submission_id"] == submission_id
    own = list(data(api.get(f"/audit-events/history/document/{document['id']}", headers=pharma.headers)))
    assert own[0]["action"] == "document.created" and len(own[0]["trace_id"]) == 32


def test_a_pharma_auditor_reads_its_own_organization_only_and_writes_nothing(
    api: httpx.Client, pharma: Org, cro: Org, auditor: Org, submission_document: tuple[str, dict],
) -> None:
    trail_entry(api, auditor.headers, "document.created", submission_document[1]["id"])
    page = api.get("/audit-events", params={"page_size": 100}, headers=auditor.headers)
    assert {e["organization_id"] for e in data(page)} == {pharma.id}
    assert_error(api.get("/audit-events", params={"organization_id": cro.id}, headers=auditor.headers),
                 403, "AUTHORIZATION_ERROR")
    assert_error(api.get("/audit-events/export", params={"organization_id": cro.id}, headers=auditor.headers),
                 403, "AUTHORIZATION_ERROR")
    assert_error(upload_raw(api, auditor, PDF, "x.pdf", document_type="QUALITY_CONTROL"), 403, "AUTHORIZATION_ERROR")
    assert_error(api.get("/audit-events", params={"occurred_after": "yesterday"}, headers=auditor.headers),
                 400, "VALIDATION_ERROR")


def test_export_streams_the_filtered_trail_as_csv(
    api: httpx.Client, pharma: Org, auditor: Org, submission_document: tuple[str, dict],
) -> None:
    _, document = submission_document
    trail_entry(api, auditor.headers, "document.created", document["id"])
    response = api.get("/audit-events/export", params={"target_type": "document", "target_id": document["id"]},
                       headers=auditor.headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert "audit-events.csv" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["action"] for r in rows] == ["document.created"]
    assert rows[0]["organization_id"] == pharma.id and json.loads(rows[0]["details"])["status"] == "DRAFT"


def test_cli_verifies_and_exports(mesh, tmp_path: Path, submission_document: tuple[str, dict]) -> None:  # type: ignore[no-untyped-def]
    run = cli_runner(mesh, tmp_path / "config")
    run("login", "--email", mesh.admin_email)
    assert "status:" in run("audit", "verify").stdout
    out = tmp_path / "trail.csv"
    done = run("audit", "export", "-o", str(out), "--target-id", submission_document[1]["id"])
    assert f"Wrote {out}" in done.stdout
    assert out.read_text().splitlines()[0].startswith("sequence,occurred_at,")
    refused = run("audit", "export", "--since", "not-a-date", ok=False)
    assert refused.returncode == 6 and "occurred_after" in refused.stderr
