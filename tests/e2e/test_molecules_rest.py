"""Issue 3 through the real gateway over REST, as the browser calls it: a CSV import watched as server-sent
events, its error report, then the molecules it made — listed, filtered, read, flagged, drawn and searched."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import httpx
import pytest

from tests.e2e import test_identity_gateway
from tests.e2e.molecule_rest import (
    EventStream,
    Org,
    assert_error,
    created,
    data,
    field_violations,
    read_events,
    start_import,
    upload_file,
    wait_for_job,
)
from tests.e2e.test_cli_molecules import wait_for

# The gateway client (base URL …/api/v1) and the platform admin's session, as the identity tests have them.
api = test_identity_gateway.api
admin = test_identity_gateway.admin

ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"
CAFFEINE = "Cn1cnc2c1c(=O)n(C)c(=O)n2C"
IBUPROFEN = "CC(C)Cc1ccc(cc1)C(C)C(=O)O"
ASPIRIN_KEY = "BSYNRYMUTXBXSQ-UHFFFAOYSA-N"

# Every kind of row: new, invalid SMILES, a salt of a row above, a duplicate, a value out of range, a salt
# of a molecule registered before the import, an empty SMILES, a value that is not a number. Cells that a
# spreadsheet would run as formulas sit in rejected rows, so the error report must neutralise them.
MIXED_CSV = (
    "Compound,SMILES,IC50 (nM),LogP,Notes\n"
    f"rest-aspirin,{ASPIRIN},12,1.2,first\n"
    'rest-broken,C1CC(,3,1,"=HYPERLINK(""http://evil.test"",""open"")"\n'
    "rest-aspirin-sodium,CC(=O)Oc1ccccc1C(=O)[O-].[Na+],,,salt\n"
    f"rest-aspirin-again,{ASPIRIN},,,duplicate\n"
    "rest-out-of-range,c1ccc2ccccc2c1,5000000,1,@SUM(1+1)\n"
    f"rest-caffeine-hcl,{CAFFEINE}.Cl,300,,hydrochloride\n"
    f"rest-ibuprofen,{IBUPROFEN},45.5,,+ok\n"
    "rest-empty,,1,1,-2-3\n"
    "rest-nan,CCN,abc,1,\n"
)
MAPPING = {"Compound": "name", "SMILES": "smiles", "IC50 (nM)": "ic50", "LogP": "logp", "Notes": "custom_notes"}
# The issue's Molecule JSON.
MOLECULE_KEYS = {
    "id", "name", "smiles", "canonical_smiles", "inchi_key", "formula", "molecular_weight", "status",
    "properties", "flags", "library_ids", "created_at", "updated_at", "registration_number",
}  # fmt: skip


@dataclass(frozen=True)
class Imported:
    org: Org
    library_id: str
    caffeine_id: str  # registered before the import
    started: dict  # StartImport's answer
    watched: EventStream  # WatchImport from the start
    job: dict  # the ended job


@pytest.fixture(scope="module")
def alpha(api: httpx.Client, admin: dict) -> Imported:
    """A new organization: caffeine registered by hand, then MIXED_CSV imported into a new library
    (uploaded as a browser form does), watched through the gateway until its final event."""
    org = Org.create(api, admin)
    caffeine = created(
        api.post("/molecules", json={"molecule": {"smiles": CAFFEINE, "name": "rest-caffeine"}}, headers=org.headers)
    )
    library = created(api.post("/libraries", json={"name": "REST alpha"}, headers=org.headers))
    upload = upload_file(api, org.headers, MIXED_CSV.encode(), "alpha mixed.csv")
    started = start_import(
        api,
        org.headers,
        upload["storage_key"],
        MAPPING,
        mode="keep_valid",
        library_id=library["id"],
        predict=["solubility"],
    )
    watched = read_events(api, f"/molecules/imports/{started['job_id']}/watch", org.headers)
    job = wait_for_job(api, org.headers, started["job_id"])
    return Imported(org, library["id"], caffeine["id"], started, watched, job)


def listed(api: httpx.Client, headers: dict[str, str], expected: int, **params: object) -> dict:
    """GET /molecules once it lists `expected` molecules (the query index follows imports through the bus)."""

    def probe() -> dict | None:
        body = api.get("/molecules", params=params, headers=headers).json()
        return body if body["meta"]["total"] == expected else None

    return wait_for(probe, f"{expected} molecules listed")


def by_name(api: httpx.Client, alpha: Imported) -> dict[str, dict]:
    body = listed(api, alpha.org.headers, 3, page_size=100)
    return {m["name"]: m for m in body["data"]}


def filtered(api: httpx.Client, headers: dict[str, str], **query: object) -> tuple[list[str], dict]:
    body = api.post("/molecules/filter", json=query, headers=headers)
    assert body.status_code == 200, body.text
    return [m["name"] for m in body.json()["data"]], body.json()["meta"]


# --- the import -------------------------------------------------------------------------------------------


def test_import_counts_every_kind_of_row_exactly(alpha: Imported) -> None:
    assert alpha.started["status"] == "queued" and alpha.started["total_rows"] == 9
    job = alpha.job
    assert job["status"] == "completed", job
    assert (job["total_rows"], job["processed_rows"]) == (9, 9)
    assert (job["registered"], job["merged"], job["rejected"]) == (2, 3, 4)
    assert job["library_id"] == alpha.library_id and job["filename"] == "alpha mixed.csv"
    assert job["mode"] == "keep_valid" and job["failure_reason"] == "" and job["eta_seconds"] == 0


def test_watch_is_a_server_sent_event_stream_ending_with_a_final_event(api: httpx.Client, alpha: Imported) -> None:
    watched = alpha.watched
    assert watched.status_code == 200 and watched.content_type.startswith("text/event-stream")
    *progress, last = watched.events
    assert last["final"] is True and last["data"]["status"] == "completed"
    assert all(event["final"] is False and event["data"]["status"] in ("queued", "processing") for event in progress), (
        watched.events
    )
    counts = ("processed_rows", "registered", "merged", "rejected")
    assert [last["data"][c] for c in counts] == [alpha.job[c] for c in counts]

    again = read_events(api, f"/molecules/imports/{alpha.job['job_id']}/watch", alpha.org.headers)
    assert [e["final"] for e in again.events] == [True] and again.events[0]["data"]["registered"] == 2


def test_error_report_is_csv_of_rejected_rows_with_reasons_and_no_live_formulas(
    api: httpx.Client, alpha: Imported
) -> None:
    response = api.get(f"/molecules/imports/{alpha.job['job_id']}/errors", headers=alpha.org.headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert 'filename="alpha mixed-errors.csv"' in response.headers["content-disposition"]
    header, *rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert header == ["row", "Compound", "SMILES", "IC50 (nM)", "LogP", "Notes", "reason"]
    by_row = {int(row[0]): row for row in rows}
    assert sorted(by_row) == [2, 5, 8, 9]
    assert by_row[2][1] == "rest-broken" and by_row[2][6].startswith("invalid SMILES")
    assert "out of range" in by_row[5][6] and "ic50" in by_row[5][6]
    assert by_row[8][6] == "empty SMILES"
    assert "not a number" in by_row[9][6]
    # Formula cells are neutralised with a leading apostrophe.
    assert by_row[2][5] == '\'=HYPERLINK("http://evil.test","open")'
    assert by_row[5][5] == "'@SUM(1+1)" and by_row[8][5] == "'-2-3"
    assert not any(cell.startswith(("=", "+", "@", "-")) for row in rows for cell in row[1:])


def test_error_report_link_downloads_it_with_the_callers_token(api: httpx.Client, alpha: Imported, mesh) -> None:  # type: ignore[no-untyped-def]
    job_id = alpha.job["job_id"]
    link = data(api.get(f"/molecules/imports/{job_id}/errors-link", headers=alpha.org.headers))
    assert link["url"].startswith(mesh.gateway_url + "/api/v1/")
    inline = api.get(f"/molecules/imports/{job_id}/errors", headers=alpha.org.headers).content
    # As a browser's fetch() from the frontend's origin: it may read the file name of the download.
    downloaded = httpx.get(link["url"], headers={**alpha.org.headers, "origin": "http://localhost:3000"})
    assert downloaded.status_code == 200 and downloaded.content == inline
    assert downloaded.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert "content-disposition" in downloaded.headers["access-control-expose-headers"]
    assert_error(httpx.get(link["url"]), 401, "AUTHENTICATION_ERROR")


def test_jobs_are_listed_and_an_ended_one_cannot_be_cancelled(api: httpx.Client, alpha: Imported) -> None:
    body = api.get("/molecules/imports", params={"page_size": 10}, headers=alpha.org.headers).json()
    assert body["meta"] == {"page": 1, "page_size": 10, "total": 1}
    assert [job["job_id"] for job in body["data"]] == [alpha.job["job_id"]]
    cancel = api.post(f"/molecules/imports/{alpha.job['job_id']}:cancel", json={}, headers=alpha.org.headers)
    assert_error(cancel, 409, "RESOURCE_CONFLICT")


def test_a_running_import_is_cancelled_and_its_stream_ends_with_that(api: httpx.Client, admin: dict) -> None:
    org = Org.create(api, admin)
    # Six chunks of rows that are quick to reject: no worker finishes them before the cancel arrives, and
    # the chunks already taken cost little.
    upload = upload_file(api, org.headers, b"smiles\n" + b"x\n" * 30_000, "long.csv")
    started = start_import(api, org.headers, upload["storage_key"], {"smiles": "smiles"})
    cancelled = data(api.post(f"/molecules/imports/{started['job_id']}:cancel", json={}, headers=org.headers))
    assert cancelled["status"] == "cancelled" and cancelled["total_rows"] == 30_000
    watched = read_events(api, f"/molecules/imports/{started['job_id']}/watch", org.headers)
    assert [(e["final"], e["data"]["status"]) for e in watched.events] == [(True, "cancelled")]
    again = data(api.post(f"/molecules/imports/{started['job_id']}:cancel", json={}, headers=org.headers))
    assert again["status"] == "cancelled"  # a retried cancel answers as it is


def test_reject_all_registers_nothing_when_a_row_fails(api: httpx.Client, admin: dict) -> None:
    org = Org.create(api, admin)
    upload = upload_file(api, org.headers, b"smiles\nCCCCCCCCCCO\nC1CC(\n", "strict.csv")
    started = start_import(api, org.headers, upload["storage_key"], {"smiles": "smiles"}, mode="reject_all")
    job = wait_for_job(api, org.headers, started["job_id"])
    assert job["status"] == "failed" and "reject_all" in job["failure_reason"]
    assert (job["registered"], job["merged"], job["rejected"]) == (0, 0, 1)
    watched = read_events(api, f"/molecules/imports/{started['job_id']}/watch", org.headers)
    assert [(e["final"], e["data"]["status"]) for e in watched.events] == [(True, "failed")]
    assert api.get("/molecules", headers=org.headers).json()["meta"]["total"] == 0


# --- molecules ----------------------------------------------------------------------------------------------


def test_molecules_are_listed_with_the_paged_meta(api: httpx.Client, alpha: Imported) -> None:
    listed(api, alpha.org.headers, 3)
    first = api.get("/molecules", params={"page": 1, "page_size": 2, "sort_by": "name"}, headers=alpha.org.headers)
    assert first.status_code == 200
    assert first.json()["meta"] == {"page": 1, "page_size": 2, "total": 3}
    assert [m["name"] for m in first.json()["data"]] == ["rest-aspirin", "rest-caffeine"]
    second = api.get("/molecules", params={"page": 2, "page_size": 2, "sort_by": "name"}, headers=alpha.org.headers)
    assert [m["name"] for m in second.json()["data"]] == ["rest-ibuprofen"]
    descending = api.get("/molecules", params={"sort_by": "name", "sort_desc": "true"}, headers=alpha.org.headers)
    assert [m["name"] for m in descending.json()["data"]][0] == "rest-ibuprofen"
    in_library = api.get("/molecules", params={"library_id": alpha.library_id}, headers=alpha.org.headers)
    assert in_library.json()["meta"]["total"] == 3  # the merged caffeine joined the library too


def test_filter_operators_and_sorting_by_a_property(api: httpx.Client, alpha: Imported) -> None:
    headers = alpha.org.headers
    listed(api, headers, 3)
    gt = {"property": "ic50", "operator": "gt", "value": 20}
    names, meta = filtered(api, headers, filters=[gt], sort_by="ic50", sort_desc=True)
    assert names == ["rest-caffeine", "rest-ibuprofen"] and meta["total"] == 2
    names, _ = filtered(api, headers, filters=[{"property": "ic50", "operator": "lt", "value": 100}], sort_by="ic50")
    assert names == ["rest-aspirin", "rest-ibuprofen"]
    names, _ = filtered(api, headers, filters=[{"property": "name", "operator": "contains", "value": "PROF"}])
    assert names == ["rest-ibuprofen"]
    names, _ = filtered(
        api,
        headers,
        filters=[{"property": "name", "operator": "in", "value": ["rest-aspirin", "rest-caffeine"]}],
        sort_by="name",
    )
    assert names == ["rest-aspirin", "rest-caffeine"]
    # Calculated and imported values alike; conditions combine.
    names, _ = filtered(
        api,
        headers,
        sort_by="molecular_weight",
        sort_desc=True,
        filters=[
            {"property": "molecular_weight", "operator": "gte", "value": 180},
            {"property": "custom_notes", "operator": "neq", "value": "hydrochloride"},
        ],
    )
    assert names == ["rest-ibuprofen", "rest-aspirin"]
    names, meta = filtered(api, headers, library_id=alpha.library_id, page_size=1, sort_by="ic50")
    assert names == ["rest-aspirin"] and meta == {"page": 1, "page_size": 1, "total": 3}


def test_molecule_json_has_the_shape_of_the_issue(api: httpx.Client, alpha: Imported) -> None:
    aspirin_id = by_name(api, alpha)["rest-aspirin"]["id"]
    molecule = data(api.get(f"/molecules/{aspirin_id}", headers=alpha.org.headers))
    assert set(molecule) >= MOLECULE_KEYS, MOLECULE_KEYS - set(molecule)
    assert molecule["id"] == aspirin_id and molecule["name"] == "rest-aspirin"
    assert molecule["smiles"] == ASPIRIN and molecule["canonical_smiles"] == ASPIRIN
    assert molecule["inchi_key"] == ASPIRIN_KEY and molecule["formula"] == "C9H8O4"
    assert molecule["molecular_weight"] == pytest.approx(180.159, abs=0.01)
    assert molecule["status"] == "AVAILABLE"
    assert molecule["library_ids"] == [alpha.library_id] and molecule["flags"] == []
    assert molecule["created_at"].endswith("Z") and molecule["updated_at"].endswith("Z")
    values = {}
    for p in molecule["properties"]:
        assert set(p) == {"name", "value", "units", "source"}, p
        values[(p["name"], p["source"])] = (p["value"], p["units"])
    assert values[("ic50", "IMPORTED")] == (12, "nM")
    assert values[("logp", "IMPORTED")] == (1.2, "")
    assert ("logp", "CALCULATED") in values
    assert values[("tpsa", "CALCULATED")][1] == "Å²"
    assert values[("custom_notes", "IMPORTED")][0] == "duplicate"  # the last merged row's


def test_registration_numbers_are_shown_looked_up_filtered_and_sorted(api: httpx.Client, alpha: Imported) -> None:
    headers = alpha.org.headers
    molecules = by_name(api, alpha)
    # The prefix comes from the organization's name ("Org …"). Caffeine was registered before the
    # import; the import numbered its new molecules in row order.
    assert {name: m["registration_number"] for name, m in molecules.items()} == {
        "rest-caffeine": "ORG-000001",
        "rest-aspirin": "ORG-000002",
        "rest-ibuprofen": "ORG-000003",
    }
    assert data(api.get("/molecules/by-number/org-000002", headers=headers))["id"] == molecules["rest-aspirin"]["id"]
    # The file's name column is kept as an alias, also of rows merged into a molecule.
    by_alias = data(api.get("/molecules/by-number/rest-caffeine-hcl", headers=headers))
    assert by_alias["id"] == alpha.caffeine_id and by_alias["registration_number"] == "ORG-000001"
    assert_error(api.get("/molecules/by-number/ORG-999999", headers=headers), 404, "RESOURCE_NOT_FOUND")
    names, meta = filtered(
        api, headers, filters=[{"property": "registration_number", "operator": "eq", "value": "ORG-000003"}]
    )
    assert names == ["rest-ibuprofen"] and meta["total"] == 1
    names, _ = filtered(api, headers, sort_by="registration_number", sort_desc=True)
    assert names == ["rest-ibuprofen", "rest-aspirin", "rest-caffeine"]
    # Numbers were issued, so the prefix is fixed now.
    assert data(api.get("/molecules/registration-prefix", headers=headers)) == {"prefix": "ORG", "locked": True}
    refused = api.put("/molecules/registration-prefix", json={"prefix": "ALPHA"}, headers=headers)
    assert_error(refused, 409, "RESOURCE_CONFLICT")


def test_property_catalogue(api: httpx.Client, alpha: Imported) -> None:
    catalogue = {p["name"]: p for p in data(api.get("/molecules/properties", headers=alpha.org.headers))}
    domain = {
        "molecular_weight",
        "exact_mass",
        "logp",
        "tpsa",
        "num_atoms",
        "num_heavy_atoms",
        "num_rings",
        "num_rotatable_bonds",
        "num_h_donors",
        "num_h_acceptors",
        "solubility",
        "melting_point",
        "boiling_point",
        "pka",
        "pkb",
        "ic50",
        "ec50",
        "binding_affinity",
        "permeability",
        "clearance",
        "half_life",
        "bioavailability",
        "volume_of_distribution",
    }
    assert domain <= set(catalogue), domain - set(catalogue)
    ic50 = catalogue["ic50"]
    assert (ic50["units"], ic50["min_value"], ic50["max_value"]) == ("nM", 0, 1e6)
    assert ic50["predictable"] is True and ic50["calculated"] is False
    assert catalogue["tpsa"]["calculated"] is True and catalogue["logp"]["min_value"] == -10


def test_create_batch_update_and_archive(api: httpx.Client, admin: dict) -> None:
    org = Org.create(api, admin)
    h = org.headers
    paracetamol = created(
        api.post(
            "/molecules",
            json={
                "molecule": {
                    "smiles": "CC(=O)Nc1ccc(O)cc1",
                    "name": "paracetamol",
                    "properties": [{"name": "ic50", "value": 80}],
                }
            },
            headers=h,
        )
    )
    assert paracetamol["name"] == "paracetamol" and paracetamol["formula"] == "C8H9NO2"
    # The hydrochloride is the same parent: merged into the same record, never a second one.
    salt = created(api.post("/molecules", json={"molecule": {"smiles": "CC(=O)Nc1ccc(O)cc1.Cl"}}, headers=h))
    assert salt["id"] == paracetamol["id"]

    outcomes = created(
        api.post(
            "/molecules/batch",
            json={
                "molecules": [
                    {"smiles": "OC(=O)c1ccccc1O", "name": "salicylic acid"},
                    {"smiles": "not a smiles", "name": "broken"},
                    {"smiles": "CC(=O)Nc1ccc(O)cc1", "name": "paracetamol again"},
                    {"smiles": "c1ccccc1", "properties": [{"name": "ic50", "value": -1}]},
                ]
            },
            headers=h,
        )
    )
    assert [o["outcome"] for o in outcomes] == ["registered", "rejected", "merged", "rejected"]
    assert outcomes[2]["molecule_id"] == paracetamol["id"] and outcomes[1]["molecule_id"] == ""
    assert "SMILES" in outcomes[1]["reason"] and "out of range" in outcomes[3]["reason"]

    updated = data(
        api.put(
            f"/molecules/{paracetamol['id']}",
            json={"name": "acetaminophen", "properties": [{"name": "ic50", "value": 95, "units": "nM"}]},
            headers=h,
        )
    )
    assert updated["name"] == "acetaminophen"
    assert {(p["name"], p["value"]) for p in updated["properties"] if p["source"] == "IMPORTED"} == {
        ("ic50", 95)
    }
    out_of_range = api.put(
        f"/molecules/{paracetamol['id']}", json={"properties": [{"name": "ic50", "value": 2e6}]}, headers=h
    )
    assert "properties[0].value" in field_violations(assert_error(out_of_range, 400, "VALIDATION_ERROR"))

    archived = data(api.delete(f"/molecules/{paracetamol['id']}", headers=h))
    assert archived["status"] == "ARCHIVED"
    assert data(api.get(f"/molecules/{paracetamol['id']}", headers=h))["status"] == "ARCHIVED"
    remaining = api.get("/molecules", headers=h).json()
    assert [m["name"] for m in remaining["data"]] == ["salicylic acid"] and remaining["meta"]["total"] == 1
    reserved = api.put(f"/molecules/{paracetamol['id']}", json={"status": "TESTING"}, headers=h)
    assert_error(reserved, 400, "VALIDATION_ERROR")


def test_priority_flags_with_level_and_notes(api: httpx.Client, alpha: Imported) -> None:
    headers = alpha.org.headers
    ibuprofen_id = by_name(api, alpha)["rest-ibuprofen"]["id"]
    flagged = data(
        api.post(
            f"/molecules/{ibuprofen_id}/flags",
            json={"type": "PRIORITY", "level": "HIGH", "notes": "order more"},
            headers=headers,
        )
    )
    [flag] = flagged["flags"]
    assert (flag["type"], flag["level"], flag["notes"]) == ("PRIORITY", "HIGH", "order more")
    assert flag["user_id"] == alpha.org.user_id

    no_level = api.post(f"/molecules/{ibuprofen_id}/flags", json={"type": "PRIORITY"}, headers=headers)
    assert "level" in field_violations(assert_error(no_level, 400, "VALIDATION_ERROR"))

    names, _ = filtered(api, headers, flags=["PRIORITY"])
    assert names == ["rest-ibuprofen"]
    by_query = api.get("/molecules", params={"flag": "PRIORITY"}, headers=headers).json()
    assert [m["id"] for m in by_query["data"]] == [ibuprofen_id]

    cleared = data(api.delete(f"/molecules/{ibuprofen_id}/flags/PRIORITY", headers=headers))
    assert cleared["flags"] == []
    assert filtered(api, headers, flags=["PRIORITY"])[0] == []


def test_pictures_are_svg_by_default_and_png_on_request(api: httpx.Client, alpha: Imported) -> None:
    aspirin_id = by_name(api, alpha)["rest-aspirin"]["id"]
    svg = api.get(f"/molecules/{aspirin_id}/image", headers=alpha.org.headers)
    assert svg.status_code == 200 and svg.headers["content-type"] == "image/svg+xml"
    assert b"<svg" in svg.content
    png = api.get(
        f"/molecules/{aspirin_id}/image",
        params={"format": "png", "width": 200, "height": 120},
        headers=alpha.org.headers,
    )
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = int.from_bytes(png.content[16:20], "big"), int.from_bytes(png.content[20:24], "big")
    assert (width, height) == (200, 120)
    for params in ({"format": "gif"}, {"width": 10}, {"height": 100000}):
        bad = api.get(f"/molecules/{aspirin_id}/image", params=params, headers=alpha.org.headers)
        assert_error(bad, 400, "VALIDATION_ERROR")


# --- search ----------------------------------------------------------------------------------------------------


def search(api: httpx.Client, headers: dict[str, str], kind: str, **body: object) -> dict:
    response = api.post(f"/molecules/search/{kind}", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def indexed(api: httpx.Client, alpha: Imported) -> dict[str, dict]:
    """The imported molecules by name, once the search index has all three (it follows the bus)."""
    molecules = by_name(api, alpha)

    def probe() -> bool | None:
        hits = search(api, alpha.org.headers, "substructure", smarts="[#6]", limit=10)
        return True if hits["meta"]["total"] == 3 else None

    wait_for(probe, "the search index has the import")
    return molecules


def test_similarity_search_ranks_best_first_and_combines_with_filters(api: httpx.Client, alpha: Imported) -> None:
    molecules = indexed(api, alpha)
    hits = search(api, alpha.org.headers, "similarity", smiles=ASPIRIN, threshold=0.1)
    similarities = [hit["similarity"] for hit in hits["data"]]
    assert hits["data"][0]["id"] == molecules["rest-aspirin"]["id"] and similarities[0] == pytest.approx(1.0)
    assert similarities == sorted(similarities, reverse=True) and all(s >= 0.1 for s in similarities)
    assert hits["meta"]["total"] == len(hits["data"]) and hits["meta"]["truncated"] is False

    above = search(
        api,
        alpha.org.headers,
        "similarity",
        smiles=ASPIRIN,
        threshold=0.1,
        filters=[{"property": "ic50", "operator": "gt", "value": 20}],
    )
    assert molecules["rest-aspirin"]["id"] not in [hit["id"] for hit in above["data"]]
    default = search(api, alpha.org.headers, "similarity", smiles=ASPIRIN)  # threshold 0.7
    assert [hit["id"] for hit in default["data"]] == [molecules["rest-aspirin"]["id"]]


def test_substructure_search_counts_every_match(api: httpx.Client, alpha: Imported) -> None:
    molecules = indexed(api, alpha)
    benzene = search(api, alpha.org.headers, "substructure", smarts="c1ccccc1")
    assert benzene["meta"]["total"] == 2
    assert {hit["id"] for hit in benzene["data"]} == {
        molecules["rest-aspirin"]["id"],
        molecules["rest-ibuprofen"]["id"],
    }
    # The search stops at `limit` matches and says so: total is then a lower bound.
    limited = search(api, alpha.org.headers, "substructure", smiles="c1ccccc1", limit=1)
    assert len(limited["data"]) == 1 and limited["meta"]["truncated"] is True and limited["meta"]["total"] >= 1
    filtered_hits = search(
        api,
        alpha.org.headers,
        "substructure",
        smarts="c1ccccc1",
        filters=[{"property": "ic50", "operator": "lt", "value": 20}],
    )
    assert [hit["id"] for hit in filtered_hits["data"]] == [molecules["rest-aspirin"]["id"]]


def test_exact_search_finds_the_parent_of_a_salt(api: httpx.Client, alpha: Imported) -> None:
    molecules = indexed(api, alpha)
    aspirin_id = molecules["rest-aspirin"]["id"]
    for body in (
        {"smiles": "CC(=O)Oc1ccccc1C(=O)[O-].[Na+]"},
        {"inchi_key": ASPIRIN_KEY},
        {"smiles": ASPIRIN, "library_id": alpha.library_id},
    ):
        assert [hit["id"] for hit in search(api, alpha.org.headers, "exact", **body)["data"]] == [aspirin_id], body
    unmatched = search(
        api, alpha.org.headers, "exact", smiles=ASPIRIN, filters=[{"property": "ic50", "operator": "gt", "value": 20}]
    )
    assert unmatched["data"] == []


def test_searches_refuse_invalid_structures(api: httpx.Client, alpha: Imported) -> None:
    for kind, body, field in (
        ("similarity", {"smiles": "C1CC("}, "smiles"),
        ("substructure", {"smarts": "[[["}, "smarts"),
        ("exact", {"smiles": "xyz"}, "smiles"),
        ("exact", {"inchi_key": "not-a-key"}, "inchi_key"),
        ("similarity", {"smiles": "CCO", "threshold": 1.5}, "threshold"),
    ):
        response = api.post(f"/molecules/search/{kind}", json=body, headers=alpha.org.headers)
        assert field in field_violations(assert_error(response, 400, "VALIDATION_ERROR")), (kind, body)
