"""`molbridge cro-services` and `molbridge submissions` as users run them: the console script in a
subprocess, through the gateway to the CRO service (and, behind it, the molecule and document services).
A CRO admin offers a service; a pharma scientist finds it, creates a submission and follows it; both
sides talk on a submission's thread, one of them watching it live."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import queue
import re
import signal
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from services.cro.domain.vocabulary import SubmissionStatus
from services.cro.store import SCHEMA as CRO_SCHEMA
from services.runtime.auth import Principal
from services.runtime.db import make_engine
from tests.e2e.test_cli import MOLBRIDGE, Run, cli_env, cli_runner
from tests.integration.test_cro_messages import write_submission

EXIT_PERMISSION = 4
EXIT_NOT_FOUND = 5
EXIT_VALIDATION = 6
EXIT_CONFLICT = 7
ETHANOL = "CCO"
WATCH_WAIT_S = 60.0  # generous: the wait ends as soon as the line is there


@dataclass(frozen=True)
class Parties:
    cro: Run  # the CLI logged in as a cro_admin of a new CRO organization
    pharma: Run  # … as a pharma_scientist of a new pharma organization
    molecule_id: str  # a molecule of the pharma organization
    cro_org: str
    pharma_org: str
    scientist_id: str  # the pharma_scientist's user id
    pharma_home: Path  # the pharma_scientist's config dir (XDG_CONFIG_HOME), for a CLI run in the background


@pytest.fixture(scope="module")
def parties(mesh, tmp_path_factory: pytest.TempPathFactory) -> Parties:  # type: ignore[no-untyped-def]
    suffix = uuid.uuid4().hex[:8]
    with httpx.Client(base_url=mesh.gateway_url + "/api/v1", timeout=30) as api:

        def session(email: str) -> dict[str, str]:
            login = api.post("/auth/login", json={"email": email, "password": mesh.admin_password})
            assert login.status_code == 200, login.text
            return {"authorization": f"Bearer {login.json()['data']['access_token']}"}

        admin = session(mesh.admin_email)

        def member(kind: str, role: str) -> tuple[str, str, str]:
            """A new organization of `kind` with a user of `role`: the email, organization id and user id."""
            org = api.post("/organizations", json={"name": f"{kind} {suffix}", "kind": kind}, headers=admin)
            assert org.status_code == 201, org.text
            email = f"{role}-{suffix}@cli.test"
            user = api.post("/users", headers=admin, json={
                "email": email, "full_name": f"{role} {suffix}", "password": mesh.admin_password, "roles": [role],
                "organization_id": org.json()["data"]["id"],
            })
            assert user.status_code == 201, user.text
            return email, org.json()["data"]["id"], user.json()["data"]["id"]

        (cro_email, cro_org, _), (pharma_email, pharma_org, scientist_id) = (
            member("CRO", "cro_admin"), member("PHARMA", "pharma_scientist"))
        molecule = api.post("/molecules", json={"molecule": {"smiles": ETHANOL, "name": f"ethanol {suffix}"}},
                            headers=session(pharma_email))
        assert molecule.status_code == 201, molecule.text
    cro = cli_runner(mesh, tmp_path_factory.mktemp("cro"))  # each user's login in its own config dir
    cro("login", "--email", cro_email)
    pharma_home = tmp_path_factory.mktemp("pharma")
    pharma = cli_runner(mesh, pharma_home)
    pharma("login", "--email", pharma_email)
    return Parties(cro, pharma, molecule.json()["data"]["id"], cro_org, pharma_org, scientist_id, pharma_home)


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


@pytest.fixture(scope="module")
def submitted(parties: Parties, mesh) -> str:  # type: ignore[no-untyped-def]
    """A SUBMITTED submission of the pharma organization to the CRO, written by the CRO service's own
    repository into the mesh's database (the journey there is the submission tests' business)."""
    scientist = Principal(parties.scientist_id, parties.pharma_org, "PHARMA", frozenset({"pharma_scientist"}))

    async def write() -> str:
        engine = make_engine(mesh.database_url, CRO_SCHEMA)
        try:
            return await write_submission(engine, parties.pharma_org, parties.cro_org, SubmissionStatus.SUBMITTED,
                                          scientist)
        finally:
            await engine.dispose()

    return asyncio.run(write())


def unread_counts(run: Run) -> dict[str, str]:
    listed = run("messages", "unread", "--output", "csv").stdout
    return {row["SUBMISSION"]: row["UNREAD"] for row in csv.DictReader(io.StringIO(listed))}


def test_both_sides_post_read_and_count_unread_messages(parties: Parties, submitted: str) -> None:
    posted = parties.pharma("submissions", "post", submitted, "Samples ship on Monday.").stdout
    assert re.search(r"\] PHARMA \S+: Samples ship on Monday\.$", posted.strip()), posted
    assert unread_counts(parties.cro).get(submitted) == "1"

    thread = parties.cro("submissions", "messages", submitted).stdout.splitlines()
    assert thread[-2].endswith(f"PHARMA {parties.scientist_id}: Samples ship on Monday."), thread
    assert thread[-1] == "1 message", thread
    answered = parties.cro("submissions", "post", submitted, "Received, thank you.", "--json").stdout
    answer = json.loads(answered)["data"]
    assert (answer["side"], answer["text"]) == ("CRO", "Received, thank you.")

    rows = list(csv.DictReader(io.StringIO(
        parties.pharma("submissions", "messages", submitted, "--output", "csv").stdout)))
    assert [(r["SIDE"], r["TEXT"]) for r in rows] == [("PHARMA", "Samples ship on Monday."),
                                                     ("CRO", "Received, thank you.")]

    marked = parties.cro("submissions", "read", submitted).stdout
    assert marked.strip() == f"Marked read: 0 unread messages left on submission {submitted}", marked
    assert submitted not in unread_counts(parties.cro)
    assert unread_counts(parties.pharma).get(submitted) == "1"  # the CRO's answer
    parties.pharma("submissions", "read", submitted, "--up-to", answer["id"])
    assert submitted not in unread_counts(parties.pharma)


class Background:
    """`molbridge args…` running in the background, its stdout read line by line as it comes."""

    def __init__(self, mesh, config_home: Path, *args: str) -> None:  # type: ignore[no-untyped-def]
        self.process = subprocess.Popen([str(MOLBRIDGE), *args], env=cli_env(mesh, config_home), text=True,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def line_with(self, text: str) -> str:
        """The next line of stdout that contains `text` (earlier lines are passed over)."""
        while True:
            try:
                line = self.lines.get(timeout=WATCH_WAIT_S)
            except queue.Empty:
                raise AssertionError(f"no line with {text!r} within {WATCH_WAIT_S} s") from None
            if text in line:
                return line

    def interrupt(self) -> tuple[int, str]:
        """Ctrl-C: the exit status and what it wrote to stderr."""
        self.process.send_signal(signal.SIGINT)
        _, stderr = self.process.communicate(timeout=WATCH_WAIT_S)
        self._reader.join(WATCH_WAIT_S)
        return self.process.returncode, stderr

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


@pytest.fixture
def background(mesh) -> Iterator[list[Background]]:  # type: ignore[no-untyped-def]
    started: list[Background] = []
    yield started
    for run in started:
        run.stop()


def test_a_watch_prints_what_the_other_side_posts_until_interrupted(
    parties: Parties, submitted: str, mesh, background: list[Background]  # type: ignore[no-untyped-def]
) -> None:
    parties.cro("submissions", "post", submitted, "Plate 1 is queued.")
    watch = Background(mesh, parties.pharma_home, "submissions", "messages", submitted, "--watch")
    background.append(watch)
    watch.line_with("CRO ")  # the thread so far, then new messages as they come
    parties.cro("submissions", "post", submitted, "Plate 1 is running.")
    assert watch.line_with("Plate 1 is running.").endswith(": Plate 1 is running.")
    returncode, stderr = watch.interrupt()
    assert returncode == 130, stderr  # Ctrl-C
    assert "Traceback" not in stderr and f"(watching submission {submitted}" in stderr, stderr
