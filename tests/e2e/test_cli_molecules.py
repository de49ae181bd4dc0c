"""`molbridge import`, `imports`, `search` and `molecules` as a user runs them: the console script in a
subprocess, through the gateway to the molecule service and its CSV workers on the bus."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from tests.e2e.test_cli import Run, cli_runner

INDEX_WAIT_SECONDS = 30.0  # the search index follows the database through the bus

# Distinctive structures, so that other tests of the session hardly ever register them first.
CARBAMATE = "CC(C)(C)OC(=O)N1CCC(CC1)C(=O)Nc1ccc(F)c(Cl)c1"
BENZOTHIAZOLE = "O=C(Nc1ccc2ncsc2c1)c1ccc(cc1)S(=O)(=O)N1CCOCC1"
QUINAZOLINE = "COc1cc2ncnc(Nc3cccc(Br)c3)c2cc1OC"
SUMMARY = re.compile(
    r"^Import (?P<job>\S+) completed(?: in \S+)?: 4 of 4 rows, "
    r"registered (?P<registered>\d+), merged (?P<merged>\d+), rejected (?P<rejected>\d+)$",
    re.M,
)

T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], what: str) -> T:
    deadline = time.monotonic() + INDEX_WAIT_SECONDS
    while (found := probe()) is None:
        assert time.monotonic() < deadline, f"{what}: not within {INDEX_WAIT_SECONDS} s"
        time.sleep(0.3)
    return found


@dataclass(frozen=True)
class Imported:
    stdout: str
    stderr: str
    job_id: str
    library_id: str
    errors_csv: Path


@pytest.fixture(scope="module")
def molbridge(mesh, tmp_path_factory: pytest.TempPathFactory) -> Run:  # type: ignore[no-untyped-def]
    """The CLI, logged in as the mesh's system admin (who may import for the platform organization)."""
    run = cli_runner(mesh, tmp_path_factory.mktemp("config"))
    run("login", "--email", mesh.admin_email)
    return run


@pytest.fixture(scope="module")
def library_name() -> str:
    return f"cli-e2e-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def imported(molbridge: Run, library_name: str, tmp_path_factory: pytest.TempPathFactory) -> Imported:
    """A four-row CSV, one row with a broken SMILES, imported into a new library."""
    work = tmp_path_factory.mktemp("import")
    csv_path = work / "cli molecules.csv"
    csv_path.write_text(
        "Compound,Structure,Batch,IC50 (nM)\n"
        f"cli-carbamate,{CARBAMATE},B-1,12\n"
        f"cli-benzothiazole,{BENZOTHIAZOLE},B-2,30\n"
        "cli-broken,not_a_smiles,B-3,5\n"
        f"cli-quinazoline,{QUINAZOLINE},B-4,7\n",
        encoding="utf-8",
    )
    errors_csv = work / "errors.csv"
    done = molbridge(
        "import",
        str(csv_path),
        "--library",
        library_name,
        "--create-library",
        "--map",
        "Batch=custom_batch_code",
        "--errors-out",
        str(errors_csv),
    )
    summary = SUMMARY.search(done.stdout)
    assert summary, done.stdout + done.stderr
    created = re.search(rf'Created library "{re.escape(library_name)}" \((\S+)\)', done.stderr)
    assert created, done.stderr
    return Imported(done.stdout, done.stderr, summary["job"], created.group(1), errors_csv)


def molecule_id(molbridge: Run, smiles: str) -> str:
    def probe() -> str | None:
        hits = json.loads(molbridge("--json", "search", "--exact", smiles).stdout).get("data", [])
        return hits[0]["id"] if hits else None

    return wait_for(probe, f"exact search for {smiles}")


def test_import_shows_the_mapping_the_counts_and_saves_the_error_report(imported: Imported) -> None:
    # The mapping table: column, target, where the target came from, an example cell.
    assert re.search(r"^Compound\s+name\s+suggested\s+cli-carbamate$", imported.stdout, re.M), imported.stdout
    assert re.search(r"^Structure\s+smiles\s+suggested\s+CC\(C\)", imported.stdout, re.M), imported.stdout
    assert re.search(r"^Batch\s+custom_batch_code\s+--map\s+B-1$", imported.stdout, re.M), imported.stdout
    assert re.search(r"^IC50 \(nM\)\s+ic50\s+suggested\s+12$", imported.stdout, re.M), imported.stdout

    summary = SUMMARY.search(imported.stdout)
    assert summary is not None
    assert int(summary["registered"]) + int(summary["merged"]) == 3
    assert summary["rejected"] == "1"
    assert f"Error report (1 row): saved to {imported.errors_csv}" in imported.stdout

    report = imported.errors_csv.read_text(encoding="utf-8")
    header, *rows = report.splitlines()
    assert "Structure" in header and len(rows) == 1, report
    assert "not_a_smiles" in rows[0] and "cli-broken" in rows[0], report

    # Not a terminal: plain progress lines, never redrawn in place.
    assert "\r" not in imported.stderr and "\x1b[" not in imported.stderr
    assert re.search(r"^upload cli molecules\.csv 100% ", imported.stderr, re.M), imported.stderr
    assert re.search(
        r"^import 100% 4/4 rows .*registered \d+ {2}merged \d+ {2}rejected 1$", imported.stderr, re.M
    ), imported.stderr


def test_a_missing_library_is_only_created_when_asked(molbridge: Run, tmp_path: Path) -> None:
    csv_path = tmp_path / "one.csv"
    csv_path.write_text(f"smiles\n{CARBAMATE}\n", encoding="utf-8")
    done = molbridge("import", str(csv_path), "--library", f"absent-{uuid.uuid4().hex[:8]}", ok=False)
    assert done.returncode == 1
    assert "no library named" in done.stderr and "--create-library" in done.stderr


def test_the_finished_job_is_listed_and_watching_it_again_ends_at_once(
    molbridge: Run, imported: Imported
) -> None:
    listed = molbridge("imports", "list").stdout
    [row] = [line for line in listed.splitlines() if line.startswith(imported.job_id)]
    assert "completed" in row and "cli molecules.csv" in row, listed

    again = molbridge("imports", "watch", imported.job_id)
    assert SUMMARY.search(again.stdout), again.stdout
    assert "Error report (1 row): " in again.stdout

    errors = molbridge("imports", "errors", imported.job_id).stdout
    assert "not_a_smiles" in errors


def search_until_found(molbridge: Run, molecule_id: str, *query: str) -> str:
    """The output of `molbridge search <query>` once it lists the molecule."""

    def probe() -> str | None:
        out = molbridge("search", *query).stdout
        return out if molecule_id in out else None

    return wait_for(probe, f"search {' '.join(query)}")


def test_similarity_search_finds_the_imported_molecule(molbridge: Run, imported: Imported) -> None:
    wanted = molecule_id(molbridge, CARBAMATE)
    out = search_until_found(molbridge, wanted, "--similar", CARBAMATE, "--threshold", "0.9", "--limit", "10")
    [row] = [line for line in out.splitlines() if line.startswith(wanted)]
    assert row.endswith("1.000"), out  # the molecule itself
    assert re.search(r"^\d+ shown of [\d,]+ found; searched [\d,]+ molecules in [\d.]+ ms", out, re.M), out


def test_substructure_search_finds_the_imported_molecule(molbridge: Run, imported: Imported) -> None:
    wanted = molecule_id(molbridge, BENZOTHIAZOLE)
    out = search_until_found(molbridge, wanted, "--substructure", "c1ccc2ncsc2c1")
    assert re.search(r"^\d+ shown of [\d,]+ found", out, re.M), out


def test_molecule_details_show_identity_library_and_properties(molbridge: Run, imported: Imported) -> None:
    wanted = molecule_id(molbridge, QUINAZOLINE)
    out = molbridge("molecules", "get", wanted).stdout
    assert re.search(rf"^id:\s+{wanted}$", out, re.M), out
    assert re.search(r"^formula:\s+C16H14BrN3O2$", out, re.M), out
    assert re.search(rf"^libraries:.*{imported.library_id}", out, re.M), out
    inchi_key = re.search(r"^inchikey:\s+([A-Z]{14}-[A-Z]{10}-[A-Z])$", out, re.M)
    assert inchi_key, out
    assert re.search(r"^logp\s+-?[\d.]+\s+-\s+calculated$", out, re.M), out
    assert re.search(r"^custom_batch_code\s+B-4\s+-\s+imported$", out, re.M), out

    by_key = json.loads(molbridge("--json", "search", "--exact", inchi_key.group(1).lower()).stdout)
    assert [hit["id"] for hit in by_key["data"]] == [wanted]


def test_molecule_pictures_are_written_in_the_format_of_the_extension(
    molbridge: Run, imported: Imported, tmp_path: Path
) -> None:
    wanted = molecule_id(molbridge, CARBAMATE)
    png = tmp_path / "carbamate.png"
    done = molbridge("molecules", "image", wanted, "--out", str(png), "--width", "400", "--height", "300")
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert "image/png" in done.stdout

    svg = tmp_path / "carbamate.svg"
    molbridge("molecules", "image", wanted, "--out", str(svg))
    assert "<svg" in svg.read_text(encoding="utf-8")

    refused = molbridge("molecules", "image", wanted, "--out", str(tmp_path / "x.jpg"), ok=False)
    assert refused.returncode == 1 and ".svg or .png" in refused.stderr
