"""`molbridge cro-services` and `molbridge submissions` as users run them: the console script in a
subprocess, through the gateway to the CRO service (and, behind it, the molecule and document services).
A CRO admin offers a service; a pharma scientist finds it, creates a submission and follows it."""

from __future__ import annotations

import csv
import io
import json
import re
import uuid
from dataclasses import dataclass

import httpx
import pytest

from tests.e2e.test_cli import Run, cli_runner

EXIT_PERMISSION = 4
EXIT_NOT_FOUND = 5
EXIT_VALIDATION = 6
EXIT_CONFLICT = 7
ETHANOL = "CCO"


@dataclass(frozen=True)
class Parties:
    cro: Run  # the CLI logged in as a cro_admin of a new CRO organization
    pharma: Run  # … as a pharma_scientist of a new pharma organization
    molecule_id: str  # a molecule of the pharma organization


@pytest.fixture(scope="module")
def parties(mesh, tmp_path_factory: pytest.TempPathFactory) -> Parties:  # type: ignore[no-untyped-def]
    suffix = uuid.uuid4().hex[:8]
    with httpx.Client(base_url=mesh.gateway_url + "/api/v1", timeout=30) as api:

        def session(email: str) -> dict[str, str]:
            login = api.post("/auth/login", json={"email": email, "password": mesh.admin_password})
            assert login.status_code == 200, login.text
            return {"authorization": f"Bearer {login.json()['data']['access_token']}"}

        admin = session(mesh.admin_email)

        def member(kind: str, role: str) -> str:
            org = api.post("/organizations", json={"name": f"{kind} {suffix}", "kind": kind}, headers=admin)
            assert org.status_code == 201, org.text
            email = f"{role}-{suffix}@cli.test"
            user = api.post("/users", headers=admin, json={
                "email": email, "full_name": f"{role} {suffix}", "password": mesh.admin_password, "roles": [role],
                "organization_id": org.json()["data"]["id"],
            })
            assert user.status_code == 201, user.text
            return email

        cro_email, pharma_email = member("CRO", "cro_admin"), member("PHARMA", "pharma_scientist")
        molecule = api.post("/molecules", json={"molecule": {"smiles": ETHANOL, "name": f"ethanol {suffix}"}},
                            headers=session(pharma_email))
        assert molecule.status_code == 201, molecule.text
    cro = cli_runner(mesh, tmp_path_factory.mktemp("cro"))  # each user's login in its own config dir
    cro("login", "--email", cro_email)
    pharma = cli_runner(mesh, tmp_path_factory.mktemp("pharma"))
    pharma("login", "--email", pharma_email)
    return Parties(cro, pharma, molecule.json()["data"]["id"])


@pytest.fixture(scope="module")
def service(parties: Parties, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A solubility service the CRO admin created from the CLI, with a specification schema."""
    schema = tmp_path_factory.mktemp("schema") / "schema.json"
    schema.write_text(json.dumps({
        "type": "object", "required": ["temperature_c"],
        "properties": {"temperature_c": {"type": "number", "minimum": 4, "maximum": 60}},
    }), encoding="utf-8")
    created = parties.cro("cro-services", "create", "--name", f"Solubility {uuid.uuid4().hex[:6]}", "--type",
                          "solubility", "--price", "1250.00", "--currency", "eur", "--turnaround", "14",
                          "--schema", str(schema), "--description", "Kinetic solubility, PBS pH 7.4", "--json")
    data: dict = json.loads(created.stdout)["data"]
    return data


def test_a_cro_admin_creates_a_service_that_pharma_users_find(parties: Parties, service: dict) -> None:
    assert (service["service_type"], service["base_price"], service["currency"], service["turnaround_days"],
            service["active"]) == ("SOLUBILITY", "1250.00", "EUR", 14, True)
    assert service["specification_schema"]["required"] == ["temperature_c"]

    listed = parties.cro("cro-services", "list", "--type", "solubility", "--output", "csv")
    rows = list(csv.DictReader(io.StringIO(listed.stdout)))
    mine = next(row for row in rows if row["ID"] == service["id"])
    assert (mine["NAME"], mine["TYPE"], mine["PRICE"], mine["TURNAROUND"], mine["ACTIVE"]) == (
        service["name"], "SOLUBILITY", "1250.00 EUR", "14 d", "yes")

    found = parties.pharma("cro-services", "list", "--type", "solubility", "--max-price", "2000")
    assert any(line.startswith(service["id"]) for line in found.stdout.splitlines()), found.stdout
    shown = parties.pharma("cro-services", "get", service["id"]).stdout
    assert "Kinetic solubility, PBS pH 7.4" in shown and '"temperature_c"' in shown  # the schema, as JSON


def test_a_pharma_scientist_creates_a_submission_and_reads_its_status(parties: Parties, service: dict) -> None:
    created = parties.pharma("submissions", "create", "--name", "Solubility round 1", "--service", service["id"],
                             "--molecule", f"{parties.molecule_id}:10 mM", "--spec-field", "temperature_c=37",
                             "--budget", "2000", "--json")
    submission = json.loads(created.stdout)["data"]
    assert (submission["status"], submission["cro_service_id"], submission["budget"]) == (
        "DRAFT", service["id"], "2000.00")  # the service keeps two decimals
    assert submission["specifications"] == {"temperature_c": 37}

    shown = parties.pharma("submissions", "get", submission["id"]).stdout
    assert re.search(r"^status:\s+DRAFT$", shown, re.M), shown
    molecules = shown.split("\n\n")[-1].splitlines()
    # A DRAFT's molecules: no sample code, formula or structure until SUBMIT snapshots them.
    assert molecules[0].split() == ["SAMPLE", "MOLECULE", "FORMULA", "MW", "CONCENTRATION"]
    assert molecules[1].split() == ["-", parties.molecule_id, "-", "-", "10", "mM"]

    status = parties.pharma("submissions", "status", submission["id"]).stdout
    may = re.search(r"^may now:\s+(.*)$", status, re.M)
    assert may and "SUBMIT" in may.group(1).split(", ") and "APPROVE" not in may.group(1), status
    assert re.search(r"^DRAFT\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$", status, re.M), status

    drafts = parties.pharma("submissions", "list", "--status", "draft", "--service", service["id"], "--output", "csv")
    assert [row["ID"] for row in csv.DictReader(io.StringIO(drafts.stdout))] == [submission["id"]]
    counts = parties.pharma("submissions", "status-counts", "--output", "csv").stdout
    assert ["DRAFT", "1"] in list(csv.reader(io.StringIO(counts)))

    hidden = parties.cro("submissions", "get", submission["id"], ok=False)  # a DRAFT is not sent yet
    assert hidden.returncode == EXIT_NOT_FOUND, hidden.stderr


def test_a_refused_action_prints_the_rule_and_fails(parties: Parties, service: dict) -> None:
    created = parties.pharma("submissions", "create", "--name", "Not mine to approve", "--service", service["id"],
                             "--spec-field", "temperature_c=25", "--json")
    submission_id = json.loads(created.stdout)["data"]["id"]
    refused = parties.pharma("submissions", "approve", submission_id, ok=False)
    assert refused.returncode == EXIT_PERMISSION, refused.stderr
    assert "only pharma_admin" in refused.stderr and "may APPROVE" in refused.stderr, refused.stderr
    assert "PERMISSION_DENIED" in refused.stderr
    still = json.loads(parties.pharma("submissions", "status", submission_id, "--json").stdout)["data"]
    assert still["status"] == "DRAFT"

    empty = parties.pharma("submissions", "submit", submission_id, ok=False)
    assert empty.returncode == EXIT_VALIDATION and "molecules: add at least one molecule" in empty.stderr, empty.stderr

    parties.pharma("submissions", "update", submission_id, "--molecule", f"{parties.molecule_id}:5 mg",
                   "--name", "Round 2")
    needs = parties.pharma("submissions", "requirements", submission_id, "--output", "csv").stdout
    types = {row["DOCUMENT TYPE"]: row["SATISFIED"] for row in csv.DictReader(io.StringIO(needs))}
    assert types.get("NON_DISCLOSURE_AGREEMENT") == "no", needs
    unsigned = parties.pharma("submissions", "submit", submission_id, ok=False)
    assert unsigned.returncode == EXIT_CONFLICT, unsigned.stderr
    assert "the required documents are not complete" in unsigned.stderr
    assert "NON_DISCLOSURE_AGREEMENT" in unsigned.stderr, unsigned.stderr

    cancelled = parties.pharma("submissions", "cancel", submission_id, "--reason", "no documents yet")
    assert cancelled.stdout.startswith(f"CANCEL: submission {submission_id} is CANCELLED"), cancelled.stdout
