"""Libraries through the real gateway over REST: their life cycle, molecules in and out (one at a time by
both route forms, and in batches), access levels and sharing within the organization, distributions."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import httpx
import pytest

from tests.e2e import test_identity_gateway
from tests.e2e.molecule_rest import Org, assert_error, created, data

api = test_identity_gateway.api
admin = test_identity_gateway.admin

# name -> (SMILES, IC50 in nM)
MOLECULES = {
    "lib-phenol": ("Oc1ccccc1", 10.0),
    "lib-aniline": ("Nc1ccccc1", 20.0),
    "lib-toluene": ("Cc1ccccc1", 40.0),
    "lib-pyridine": ("c1ccncc1", 80.0),
}


@dataclass(frozen=True)
class Beta:
    org: Org
    colleague: dict  # a pharma_scientist of the same organization
    ids: dict[str, str]  # molecule name -> id

    @property
    def colleague_headers(self) -> dict[str, str]:
        return test_identity_gateway.bearer(self.colleague)


@pytest.fixture(scope="module")
def beta(api: httpx.Client, admin: dict) -> Beta:
    org = Org.create(api, admin)
    batch = [
        {"smiles": smiles, "name": name, "properties": [{"name": "ic50", "value": ic50}]}
        for name, (smiles, ic50) in MOLECULES.items()
    ]
    outcomes = created(api.post("/molecules/batch", json={"molecules": batch}, headers=org.headers))
    assert [o["outcome"] for o in outcomes] == ["registered"] * len(MOLECULES)
    ids = {name: o["molecule_id"] for name, o in zip(MOLECULES, outcomes, strict=True)}
    return Beta(org, org.add_user(api, "pharma_scientist"), ids)


def new_library(api: httpx.Client, beta: Beta, molecule_ids: list[str] | None = None, **fields: object) -> dict:
    """A new library of the beta organization's admin, holding these molecules."""
    body = {"name": f"lib {uuid.uuid4().hex[:8]}", **fields}
    library = dict(created(api.post("/libraries", json=body, headers=beta.org.headers)))
    if molecule_ids:
        path = f"/libraries/{library['id']}/molecules/batch"
        library = dict(data(api.post(path, json={"molecule_ids": molecule_ids}, headers=beta.org.headers)))
    return library


def library_ids_of(api: httpx.Client, headers: dict[str, str], molecule_id: str) -> list[str]:
    return list(data(api.get(f"/molecules/{molecule_id}", headers=headers))["library_ids"])


def test_library_life_cycle(api: httpx.Client, beta: Beta) -> None:
    h = beta.org.headers
    created = new_library(api, beta, description="hits of run 7", category="SCREENING")
    assert created["category"] == "SCREENING" and created["visibility"] == "PRIVATE"
    assert created["owner_id"] == beta.org.user_id and created["organization_id"] == beta.org.id
    assert created["molecule_count"] == 0 and created["access_level"] == "OWNER"
    assert data(api.get(f"/libraries/{created['id']}", headers=h)) == created

    duplicate = api.post("/libraries", json={"name": created["name"]}, headers=h)
    assert_error(duplicate, 409, "RESOURCE_CONFLICT")

    renamed = data(
        api.put(
            f"/libraries/{created['id']}",
            json={"name": created["name"] + " (final)", "visibility": "ORGANIZATION"},
            headers=h,
        )
    )
    assert renamed["name"].endswith("(final)") and renamed["description"] == "hits of run 7"
    assert renamed["visibility"] == "ORGANIZATION"

    mine = api.get("/libraries/my", params={"page_size": 100}, headers=h).json()
    assert created["id"] in [x["id"] for x in mine["data"]] and mine["meta"]["total"] == len(mine["data"])
    visible = api.get("/libraries", params={"page_size": 100}, headers=h).json()
    assert created["id"] in [x["id"] for x in visible["data"]]
    found = api.post(
        "/libraries/filter", json={"name_contains": "(FINAL)", "categories": ["SCREENING"]}, headers=h
    ).json()
    assert [x["id"] for x in found["data"]] == [created["id"]] and found["meta"]["total"] == 1

    data(api.post(f"/libraries/{created['id']}/molecules/{beta.ids['lib-phenol']}", json={}, headers=h))
    deleted = data(api.delete(f"/libraries/{created['id']}", headers=h))
    assert deleted["id"] == created["id"]
    assert_error(api.get(f"/libraries/{created['id']}", headers=h), 404, "RESOURCE_NOT_FOUND")
    # Its molecules stay, outside the library.
    assert library_ids_of(api, h, beta.ids["lib-phenol"]) == []


def test_one_molecule_in_and_out_by_either_route(api: httpx.Client, beta: Beta) -> None:
    h = beta.org.headers
    library = new_library(api, beta)
    phenol, aniline = beta.ids["lib-phenol"], beta.ids["lib-aniline"]
    assert data(api.post(f"/libraries/{library['id']}/molecules/{phenol}", json={}, headers=h))["molecule_count"] == 1
    assert data(api.post(f"/molecules/{aniline}/libraries/{library['id']}", json={}, headers=h))["molecule_count"] == 2
    assert library["id"] in library_ids_of(api, h, aniline)
    again = data(api.post(f"/libraries/{library['id']}/molecules/{phenol}", json={}, headers=h))
    assert again["molecule_count"] == 2  # adding twice is no error and no duplicate

    assert data(api.delete(f"/molecules/{phenol}/libraries/{library['id']}", headers=h))["molecule_count"] == 1
    assert data(api.delete(f"/libraries/{library['id']}/molecules/{aniline}", headers=h))["molecule_count"] == 0
    assert library["id"] not in library_ids_of(api, h, aniline)
    assert data(api.get(f"/molecules/{aniline}", headers=h))["status"] == "AVAILABLE"


def test_batch_routes_reach_the_batch_methods(api: httpx.Client, beta: Beta) -> None:
    """`…/molecules/batch` must not be taken for AddMolecule/RemoveMolecule with molecule_id "batch"."""
    h = beta.org.headers
    library = new_library(api, beta)
    path = f"/libraries/{library['id']}/molecules/batch"
    added = data(api.post(path, json={"molecule_ids": list(beta.ids.values())}, headers=h))
    assert added["molecule_count"] == len(MOLECULES)
    removed = api.request(
        "DELETE", path, json={"molecule_ids": [beta.ids["lib-phenol"], beta.ids["lib-toluene"]]}, headers=h
    )
    assert data(removed)["molecule_count"] == 2
    members = api.get(f"/libraries/{library['id']}/molecules", params={"sort_by": "name"}, headers=h).json()
    assert [m["name"] for m in members["data"]] == ["lib-aniline", "lib-pyridine"] and members["meta"]["total"] == 2

    # An unknown id is named in the batch method's 404; the single-molecule method would name "batch".
    unknown = str(uuid.uuid4())
    error = assert_error(api.post(path, json={"molecule_ids": [unknown]}, headers=h), 404, "RESOURCE_NOT_FOUND")
    metadata = error["details"][0]["metadata"]
    assert unknown in metadata["molecule_ids"] and "batch" not in metadata["molecule_ids"]
    empty = api.post(path, json={"molecule_ids": []}, headers=h)
    assert_error(empty, 400, "VALIDATION_ERROR")


def test_library_molecules_are_paged_and_sorted_by_a_property(api: httpx.Client, beta: Beta) -> None:
    h = beta.org.headers
    library = new_library(api, beta, molecule_ids=list(beta.ids.values()))
    page = api.get(
        f"/libraries/{library['id']}/molecules",
        params={"sort_by": "ic50", "sort_desc": "true", "page": 1, "page_size": 3},
        headers=h,
    ).json()
    assert [m["name"] for m in page["data"]] == ["lib-pyridine", "lib-toluene", "lib-aniline"]
    assert page["meta"] == {"page": 1, "page_size": 3, "total": 4}
    assert all(library["id"] in m["library_ids"] for m in page["data"])


def test_access_levels_and_sharing_within_the_organization(api: httpx.Client, beta: Beta) -> None:
    h, colleague = beta.org.headers, beta.colleague_headers
    colleague_id = beta.colleague["user"]["id"]
    library = new_library(api, beta, molecule_ids=[beta.ids["lib-toluene"]])
    lib_path = f"/libraries/{library['id']}"
    add_phenol = f"{lib_path}/molecules/{beta.ids['lib-phenol']}"

    # Private: the colleague does not even see it.
    assert_error(api.get(lib_path, headers=colleague), 404, "RESOURCE_NOT_FOUND")
    assert library["id"] not in [x["id"] for x in api.get("/libraries", headers=colleague).json()["data"]]
    assert_error(api.get(f"{lib_path}/molecules", headers=colleague), 404, "RESOURCE_NOT_FOUND")
    assert_error(
        api.get("/molecules", params={"library_id": library["id"]}, headers=colleague), 404, "RESOURCE_NOT_FOUND"
    )

    sharing = api.put(f"{lib_path}/access", json={"user_id": colleague_id, "level": "VIEWER"}, headers=h)
    shared = data(sharing)
    assert sharing.json()["meta"] == {"page": 1, "page_size": 50, "total": 2}  # the first page of grants
    assert {g["user_id"]: g["level"] for g in shared["grants"]} == {
        beta.org.user_id: "OWNER",
        colleague_id: "VIEWER",
    }
    assert data(api.get(lib_path, headers=colleague))["access_level"] == "VIEWER"
    assert data(api.get(f"{lib_path}/access", headers=colleague))["level"] == "VIEWER"
    # The grants are paged: the owner first, then the explicit grants by user id.
    first = api.get(f"{lib_path}/access", params={"page": 1, "page_size": 1}, headers=colleague)
    assert [g["user_id"] for g in data(first)["grants"]] == [beta.org.user_id]
    assert first.json()["meta"] == {"page": 1, "page_size": 1, "total": 2}
    second = data(api.get(f"{lib_path}/access", params={"page": 2, "page_size": 1}, headers=colleague))
    assert [(g["user_id"], g["level"]) for g in second["grants"]] == [(colleague_id, "VIEWER")]
    too_big = api.get(f"{lib_path}/access", params={"page_size": 101}, headers=colleague)
    assert_error(too_big, 400, "VALIDATION_ERROR")
    assert [m["name"] for m in data(api.get(f"{lib_path}/molecules", headers=colleague))] == ["lib-toluene"]
    error = assert_error(api.post(add_phenol, json={}, headers=colleague), 403, "AUTHORIZATION_ERROR")
    assert "EDITOR" in error["message"]
    assert_error(api.put(lib_path, json={"name": "taken over"}, headers=colleague), 403, "AUTHORIZATION_ERROR")
    assert_error(api.delete(lib_path, headers=colleague), 403, "AUTHORIZATION_ERROR")
    regrant = {"user_id": colleague_id, "level": "EDITOR"}
    assert_error(api.put(f"{lib_path}/access", json=regrant, headers=colleague), 403, "AUTHORIZATION_ERROR")

    data(api.put(f"{lib_path}/access", json=regrant, headers=h))
    assert data(api.post(add_phenol, json={}, headers=colleague))["molecule_count"] == 2
    assert_error(api.delete(lib_path, headers=colleague), 403, "AUTHORIZATION_ERROR")  # only the owner deletes

    revoked = data(api.put(f"{lib_path}/access", json={"user_id": colleague_id}, headers=h))
    assert colleague_id not in [g["user_id"] for g in revoked["grants"]]
    assert_error(api.get(lib_path, headers=colleague), 404, "RESOURCE_NOT_FOUND")

    # Visible to the organization: everyone reads it, nobody else writes.
    data(api.put(lib_path, json={"visibility": "ORGANIZATION"}, headers=h))
    assert data(api.get(lib_path, headers=colleague))["access_level"] == "VIEWER"
    add_aniline = f"{lib_path}/molecules/{beta.ids['lib-aniline']}"
    assert_error(api.post(add_aniline, json={}, headers=colleague), 403, "AUTHORIZATION_ERROR")

    stranger = {"user_id": str(uuid.uuid4()), "level": "VIEWER"}
    assert_error(api.put(f"{lib_path}/access", json=stranger, headers=h), 404, "RESOURCE_NOT_FOUND")


def test_distribution_as_json_and_as_a_png_plot(api: httpx.Client, beta: Beta) -> None:
    h = beta.org.headers
    library = new_library(api, beta, molecule_ids=list(beta.ids.values()))
    hist = data(api.get(f"/libraries/{library['id']}/distributions", params={"property": "ic50", "bins": 7}, headers=h))
    assert hist["property"] == "ic50" and hist["units"] == "nM"
    assert len(hist["edges"]) == 8 and len(hist["counts"]) == 7
    assert hist["edges"][0] == 10 and hist["edges"][-1] == 80
    assert sum(hist["counts"]) == hist["with_value"] == 4 and hist["missing"] == 0
    assert hist["mean"] == 37.5 and hist["median"] == 30

    plot = api.get(
        f"/libraries/{library['id']}/distributions/plot",
        params={"property": "logp", "width": 480, "height": 320},
        headers=h,
    )
    assert plot.status_code == 200 and plot.headers["content-type"] == "image/png"
    assert plot.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert (int.from_bytes(plot.content[16:20], "big"), int.from_bytes(plot.content[20:24], "big")) == (480, 320)

    for params in ({"property": "not_a_property"}, {"property": "ic50", "bins": 1000}, {}):
        bad = api.get(f"/libraries/{library['id']}/distributions", params=params, headers=h)
        assert_error(bad, 400, "VALIDATION_ERROR")
