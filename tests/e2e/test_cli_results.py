"""`molbridge results …` as users run it: the console script in a subprocess, through the gateway to the CRO
service's results. The way to IN_PROGRESS (documents, quote, approval, agreement) is taken over REST
(cro_rest.start_experiment); from there the CRO's technician uploads a results file with the CLI (preview,
progress, QC summary, error report); a `reject_all` upload interrupted with Ctrl-C (exit 130) keeps
processing in the background and fails (`results watch`: exit 1); the pharma scientist reviews, lists
the values with their molecules, compares them with the predictions (the PNGs saved) and reads the
model's accuracy."""

from __future__ import annotations

import csv
import io
import json
import re
import signal
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.e2e.cro_rest import (
    Parties,
    new_service,
    predict,
    results_csv,
    sample_codes,
    start_experiment,
)
from tests.e2e.molecule_rest import created
from tests.e2e.test_cli import MOLBRIDGE, Run, cli_env, cli_runner
from tests.e2e.test_identity_gateway import PASSWORD, login

EXIT_PERMISSION = 4
EXIT_NOT_FOUND = 5
MODEL = "baseline"
SMILES = ("CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1")


@dataclass(frozen=True)
class World:
    cro: Run  # the CLI logged in as the CRO's technician
    cro_home: Path  # its config dir, for a CLI run in the background
    pharma: Run  # … as the pharma organization's scientist
    submission_id: str
    codes: list[str]  # the sample codes, as the CRO sees them
    results_file: Path  # two good rows per sample and one bad row (an unknown sample, row 7)


def logged_in(mesh, home: Path, session: dict) -> Run:  # type: ignore[no-untyped-def]
    """The CLI with its own config dir, logged in as the user of `session` (password PASSWORD)."""
    email = session["user"]["email"]
    done = subprocess.run([str(MOLBRIDGE), "login", "--email", email], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, env=cli_env(mesh, home) | {"MOLBRIDGE_PASSWORD": PASSWORD})
    assert done.returncode == 0, done.stderr
    return cli_runner(mesh, home)


@pytest.fixture(scope="module")
def world(mesh, tmp_path_factory: pytest.TempPathFactory) -> World:  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=mesh.gateway_url + "/api/v1", timeout=30) as api:
        p = Parties(api, login(api, mesh.admin_email, mesh.admin_password))
        service = new_service(api, p.cro, name=f"CLI solubility {uuid.uuid4().hex[:6]}")
        batch = created(api.post("/molecules/batch", json={"molecules": [{"smiles": s} for s in SMILES]},
                                 headers=p.scientist_headers))
        ids = [o["molecule_id"] for o in batch]
        predict(api, p.scientist_headers, ids, ["solubility"], MODEL)
        submission = created(api.post("/submissions", json={
            "name": "CLI results", "cro_service_id": service["id"],
            "molecules": [{"molecule_id": i, "concentration": "10 mM"} for i in ids],
            "specifications": {"temperature": 25, "properties": ["solubility"]}, "request_id": uuid.uuid4().hex,
        }, headers=p.scientist_headers))
        start_experiment(api, p, submission["id"])
        codes = sample_codes(api, p.technician_headers, submission["id"])
    rows = [[code, "solubility", value, "mg/mL", "", "", ""] for code, value in zip(codes, ("1.5", "250", "40"),
                                                                                     strict=True)]
    rows += [[codes[0], "solubility", "1700", "µg/mL", "", "", "second run"],
             [codes[1], "solubility", "0.3", "mg/mL", "", "", ""],
             [codes[2], "solubility", "0.05", "mg/mL", "<", "", ""],
             ["S-NONE-01", "solubility", "2", "mg/mL", "", "", ""]]
    results_file = tmp_path_factory.mktemp("results") / "solubility.csv"
    results_file.write_bytes(results_csv(rows))
    cro_home = tmp_path_factory.mktemp("cro")
    return World(logged_in(mesh, cro_home, p.technician), cro_home,
                 logged_in(mesh, tmp_path_factory.mktemp("pharma"), p.scientist), submission["id"], codes,
                 results_file)


@dataclass(frozen=True)
class Uploaded:
    result_id: str
    stdout: str
    stderr: str
    errors: Path


@pytest.fixture(scope="module")
def uploaded(world: World, tmp_path_factory: pytest.TempPathFactory) -> Uploaded:
    errors = tmp_path_factory.mktemp("errors") / "rejected.csv"
    done = world.cro("results", "upload", str(world.results_file), "--submission", world.submission_id,
                     "--preview", "--notes", "plate 1", "--errors", str(errors))
    listed = world.cro("results", "list", "--submission", world.submission_id, "--output", "csv").stdout
    (row,) = list(csv.DictReader(io.StringIO(listed)))
    return Uploaded(row["ID"], done.stdout, done.stderr, errors)


def test_the_cro_uploads_previews_follows_and_gets_the_error_report(world: World, uploaded: Uploaded) -> None:
    out = uploaded.stdout
    assert re.search(r"^Sample\s+sample_code\s+suggested\s+S-", out, re.M), out  # the mapping, with an example
    assert "requested properties: solubility" in out
    assert re.search(r"^7\s+Sample\s+UNKNOWN_SAMPLE\s", out, re.M), out  # the previewed rows' validation
    assert re.search(r"^1\s+S-\S+\s+solubility\s+1\.5 mg/mL\s+1\.5 mg/mL", out, re.M), out
    assert "Results version 1 of submission CLI results COMPLETED: 7 rows, 6 values accepted, 1 row rejected" in out
    assert f"Error report (1 row): saved to {uploaded.errors}" in out
    assert "Processing results version 1" in uploaded.stderr and "upload solubility.csv" in uploaded.stderr
    report = list(csv.reader(io.StringIO(uploaded.errors.read_text(encoding="utf-8-sig"))))
    assert len(report) == 2 and "7" in report[1] and "UNKNOWN_SAMPLE" in report[1], report
    assert world.cro("results", "errors", uploaded.result_id).stdout.replace("\r\n", "\n") == (
        uploaded.errors.read_text(encoding="utf-8").replace("\r\n", "\n"))

    status = world.cro("results", "status", uploaded.result_id).stdout
    assert re.search(r"^status:\s+COMPLETED$", status, re.M), status
    assert re.search(r"^qc:\s+WARNING", status, re.M) and re.search(r"^notes:\s+plate 1$", status, re.M), status
    assert re.search(r"^solubility\s+6\s+0\s+3$", status, re.M), status  # accepted, rejected, samples

    values = list(csv.DictReader(io.StringIO(world.cro("results", "values", uploaded.result_id, "--output",
                                                       "csv").stdout)))
    assert "MOLECULE" not in values[0] and len(values) == 3  # blinded; one value per sample
    assert {v["SAMPLE"]: v["VALUE"] for v in values} == {
        world.codes[0]: "1.6 mg/mL", world.codes[1]: "125.2 mg/mL", world.codes[2]: "<40 mg/mL"}

    refused = world.cro("results", "compare", uploaded.result_id, ok=False)
    assert refused.returncode == EXIT_PERMISSION and "PERMISSION_DENIED" in refused.stderr, refused.stderr

    again = world.cro("results", "upload", str(world.results_file), "--submission", world.submission_id)
    assert f"Same file and mapping as the current version 1 ({uploaded.result_id}): nothing changed" in again.stderr
    assert "Results version 1 of submission CLI results COMPLETED" in again.stdout, again.stdout


def test_an_interrupted_upload_keeps_processing_and_a_reject_all_version_fails(
    world: World, uploaded: Uploaded, mesh, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    header, *rows = world.results_file.read_text(encoding="utf-8").splitlines()
    reordered = tmp_path / "reordered.csv"  # another file (the same one would answer the current version)
    reordered.write_text("\n".join([header, *reversed(rows)]) + "\n", encoding="utf-8")
    worker = mesh.supervisor.get("cro-worker")
    worker.stop()  # nothing processes the version: the upload waits on its progress until Ctrl-C
    try:
        upload = subprocess.Popen(
            [str(MOLBRIDGE), "results", "upload", str(reordered), "--submission", world.submission_id, "--mode",
             "reject_all"], env=cli_env(mesh, world.cro_home), text=True, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert upload.stderr is not None
            lines: list[str] = []
            while not lines or not lines[-1].startswith("results pending"):  # the progress line: watching
                lines.append(upload.stderr.readline())
                assert lines[-1], f"the upload ended before its progress showed: {lines}"
            upload.send_signal(signal.SIGINT)
            _, stderr = upload.communicate(timeout=60)
        finally:
            if upload.poll() is None:
                upload.kill()
                upload.communicate()
    finally:
        worker.start()
    assert upload.returncode == 130, stderr
    assert "Traceback" not in stderr, stderr
    version = re.search(r"Processing results version 2 \((\S+)\)", "".join(lines))
    assert version, lines
    result_id = version.group(1)
    assert f"stopped watching; results {result_id} keep processing in the background" in stderr, stderr

    failed = world.cro("results", "watch", result_id, ok=False)  # the restarted worker processes it
    assert failed.returncode == 1, failed.stderr
    assert f"molbridge: results {result_id} failed: " in failed.stderr, failed.stderr
    assert "Results version 2 of submission CLI results FAILED" in failed.stdout, failed.stdout
    listed = world.cro("results", "list", "--submission", world.submission_id, "--current", "--json").stdout
    assert [r["id"] for r in json.loads(listed)["data"]] == [uploaded.result_id]  # still the current version


def test_the_pharma_side_reviews_compares_and_reads_the_accuracy(
    world: World, uploaded: Uploaded, tmp_path: Path
) -> None:
    unreasoned = world.pharma("results", "review", uploaded.result_id, "--reject", ok=False)
    assert unreasoned.returncode == 1 and "--reject needs --reason" in unreasoned.stderr, unreasoned.stderr
    accepted = world.pharma("results", "review", uploaded.result_id, "--accept").stdout
    assert accepted.startswith("Accepted results version 1 of submission CLI results"), accepted
    assert re.search(r"^review:\s+ACCEPTED", accepted, re.M), accepted

    values = world.pharma("results", "values", uploaded.result_id).stdout.splitlines()
    assert values[0].split()[:3] == ["SAMPLE", "MOLECULE", "PROPERTY"], values

    compared = world.pharma("results", "compare", uploaded.result_id, "--plot", str(tmp_path)).stdout
    lines = compared.splitlines()
    assert lines[0].split()[:6] == ["PROPERTY", "MODEL", "VERSION", "SCALE", "N", "MAE"], compared
    row = lines[1].split()
    assert row[0] == "solubility" and row[1] == MODEL and row[3] == "LOG10" and row[4] == "2", compared
    assert "errors on log10(mg/mL); within 0.5 log units" in compared
    pngs = sorted(path.name for path in tmp_path.glob("*.png"))
    assert [name.rsplit("-", 1)[1] for name in pngs] == ["residuals.png", "scatter.png"], pngs
    assert all(path.read_bytes().startswith(b"\x89PNG") for path in tmp_path.glob("*.png"))

    accuracy = world.pharma("results", "accuracy", MODEL, "--property", "solubility", "--output", "csv").stdout
    (version,) = list(csv.DictReader(io.StringIO(accuracy)))
    assert (version["PROPERTY"], version["RESULTS"], version["N"]) == ("solubility", "1", "2"), accuracy

    missing = world.pharma("results", "status", str(uuid.uuid4()), ok=False)
    assert missing.returncode == EXIT_NOT_FOUND and missing.stderr.count("molbridge:") == 1, missing.stderr
