"""Through the real gateway over REST: another organization gets 404 — never 403, never data — on every
molecule, library and import route, and its lists and searches never show the first one's data; malformed
requests get the DOMAIN.md envelope with a 4xx, never a 500."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from urllib.parse import quote

import httpx
import pytest

from tests.e2e import test_identity_gateway
from tests.e2e.molecule_rest import Org, assert_error, created, data, start_import, upload_file, wait_for_job
from tests.e2e.test_cli_molecules import wait_for

api = test_identity_gateway.api
admin = test_identity_gateway.admin

SECRET = "O=C(Nc1ccc(Cl)cc1)c1ccc(F)cc1"  # the owner's molecule
SECRET_KEY_OF_SALT = "O=C(Nc1ccc(Cl)cc1)c1ccc(F)cc1.Cl"


@dataclass(frozen=True)
class Owned:
    org: Org
    molecule_id: str
    library_id: str
    job_id: str
    storage_key: str


@pytest.fixture(scope="module")
def owner(api: httpx.Client, admin: dict) -> Owned:
    """An organization with one molecule (imported), a library holding it, the import job and the upload."""
    org = Org.create(api, admin)
    library = created(api.post("/libraries", json={"name": "secret series"}, headers=org.headers))
    upload = upload_file(api, org.headers, f"smiles,name\n{SECRET},secret-1\nC1CC(,broken\n".encode())
    started = start_import(
        api, org.headers, upload["storage_key"], {"smiles": "smiles", "name": "name"}, library_id=library["id"]
    )
    job = wait_for_job(api, org.headers, started["job_id"])
    assert (job["registered"], job["rejected"]) == (1, 1)

    def searchable() -> str | None:
        hits = api.post("/molecules/search/similarity", json={"smiles": SECRET}, headers=org.headers).json()
        return hits["data"][0]["id"] if hits.get("data") else None

    return Owned(
        org,
        wait_for(searchable, "the owner's molecule in the search index"),
        library["id"],
        job["job_id"],
        upload["storage_key"],
    )


@pytest.fixture(scope="module")
def intruder(api: httpx.Client, admin: dict) -> Org:
    """Another organization with a library and the same molecule of its own."""
    org = Org.create(api, admin)
    ethanol = {"molecule": {"smiles": "CCO", "name": "intruder-ethanol"}}
    created(api.post("/molecules", json=ethanol, headers=org.headers))
    return org


def routes_of(owned: Owned, intruder_library: str, intruder_molecule: str) -> list[tuple[str, str, dict | None]]:
    """Every route that names one of the owner's resources (method, path, JSON body)."""
    m, lib, job, key = owned.molecule_id, owned.library_id, owned.job_id, owned.storage_key
    return [
        ("GET", f"/molecules/{m}", None),
        ("PUT", f"/molecules/{m}", {"name": "stolen"}),
        ("DELETE", f"/molecules/{m}", None),
        ("GET", f"/molecules/{m}/image", None),
        ("GET", f"/molecules/{m}/image?format=png", None),
        ("POST", f"/molecules/{m}/flags", {"type": "FAVORITE"}),
        ("DELETE", f"/molecules/{m}/flags/FAVORITE", None),
        ("GET", f"/libraries/{lib}", None),
        ("PUT", f"/libraries/{lib}", {"name": "stolen"}),
        ("DELETE", f"/libraries/{lib}", None),
        ("GET", f"/libraries/{lib}/molecules", None),
        ("GET", f"/libraries/{lib}/access", None),
        ("PUT", f"/libraries/{lib}/access", {"user_id": str(uuid.uuid4()), "level": "VIEWER"}),
        ("GET", f"/libraries/{lib}/distributions?property=logp", None),
        ("GET", f"/libraries/{lib}/distributions/plot?property=logp", None),
        ("POST", f"/libraries/{lib}/molecules/{m}", {}),
        ("DELETE", f"/libraries/{lib}/molecules/{m}", None),
        ("POST", f"/molecules/{m}/libraries/{lib}", {}),
        ("DELETE", f"/molecules/{m}/libraries/{lib}", None),
        ("POST", f"/libraries/{lib}/molecules/batch", {"molecule_ids": [m]}),
        ("DELETE", f"/libraries/{lib}/molecules/batch", {"molecule_ids": [m]}),
        # The intruder's own library with the owner's molecule.
        ("POST", f"/libraries/{intruder_library}/molecules/{m}", {}),
        ("POST", f"/molecules/{m}/libraries/{intruder_library}", {}),
        ("POST", f"/libraries/{intruder_library}/molecules/batch", {"molecule_ids": [m, intruder_molecule]}),
        ("DELETE", f"/libraries/{intruder_library}/molecules/batch", {"molecule_ids": [m]}),
        # The owner's library in the intruder's queries and writes.
        ("GET", f"/molecules?library_id={lib}", None),
        ("POST", "/molecules/filter", {"library_id": lib}),
        ("POST", "/molecules", {"molecule": {"smiles": "CCN"}, "library_id": lib}),
        ("POST", "/molecules/batch", {"molecules": [{"smiles": "CCN"}], "library_id": lib}),
        ("POST", "/molecules/search/similarity", {"smiles": SECRET, "library_id": lib}),
        ("POST", "/molecules/search/substructure", {"smiles": "c1ccccc1", "library_id": lib}),
        ("POST", "/molecules/search/exact", {"smiles": SECRET, "library_id": lib}),
        # Imports and uploads.
        ("GET", f"/molecules/imports/{job}", None),
        ("GET", f"/molecules/imports/{job}/watch", None),
        ("GET", f"/molecules/imports/{job}/errors", None),
        ("GET", f"/molecules/imports/{job}/errors-link", None),
        ("POST", f"/molecules/imports/{job}:cancel", {}),
        ("GET", f"/molecules/upload/csv/{key}/preview", None),
        ("POST", f"/molecules/upload/csv/{key}/import", {"mapping": {"smiles": "smiles"}}),
        ("POST", f"/molecules/upload/csv/{key}/import", {"mapping": {"smiles": "smiles"}, "library_id": lib}),
    ]


def test_another_organization_gets_404_on_every_route(api: httpx.Client, owner: Owned, intruder: Org) -> None:
    h = intruder.headers
    own_library = created(api.post("/libraries", json={"name": "intruder library"}, headers=h))["id"]
    own_molecule = data(api.get("/molecules", headers=h))[0]["id"]
    wrong = []
    for method, path, body in routes_of(owner, own_library, own_molecule):
        response = api.request(method, path, headers=h, **({} if body is None else {"json": body}))
        error = (
            response.json().get("error", {}) if response.headers["content-type"].startswith("application/json") else {}
        )
        if response.status_code != 404 or error.get("code") != "RESOURCE_NOT_FOUND":
            wrong.append((method, path, response.status_code, response.text[:200]))
    assert wrong == []

    # Nothing the intruder did reached the owner's data.
    molecule = data(api.get(f"/molecules/{owner.molecule_id}", headers=owner.org.headers))
    assert molecule["name"] == "secret-1" and molecule["status"] == "AVAILABLE"
    assert molecule["flags"] == [] and molecule["library_ids"] == [owner.library_id]
    library = data(api.get(f"/libraries/{owner.library_id}", headers=owner.org.headers))
    assert library["name"] == "secret series" and library["molecule_count"] == 1
    assert data(api.get(f"/libraries/{own_library}", headers=h))["molecule_count"] == 0


def test_lists_and_searches_never_show_another_organizations_data(
    api: httpx.Client, owner: Owned, intruder: Org
) -> None:
    h = intruder.headers
    molecules = api.get("/molecules", params={"page_size": 100}, headers=h).json()
    assert [m["name"] for m in molecules["data"]] == ["intruder-ethanol"] and molecules["meta"]["total"] == 1
    everything = api.post(
        "/molecules/filter",
        json={"filters": [{"property": "molecular_weight", "operator": "gt", "value": 0}]},
        headers=h,
    ).json()
    assert owner.molecule_id not in {m["id"] for m in everything["data"]}
    for path in ("/libraries", "/libraries/my"):
        listed = api.get(path, params={"page_size": 100}, headers=h).json()
        assert owner.library_id not in {x["id"] for x in listed["data"]}
        assert all(x["organization_id"] == intruder.id for x in listed["data"])
    by_name = api.post("/libraries/filter", json={"name_contains": "secret"}, headers=h).json()
    assert by_name["data"] == [] and by_name["meta"]["total"] == 0
    owner_filter = api.post("/libraries/filter", json={"owner_id": owner.org.user_id}, headers=h).json()
    assert owner_filter["data"] == []
    imports = api.get("/molecules/imports", headers=h).json()
    assert imports["data"] == [] and imports["meta"]["total"] == 0

    searches = [
        ("similarity", {"smiles": SECRET, "threshold": 0.01}),
        ("substructure", {"smarts": "[#6]"}),
        ("exact", {"smiles": SECRET}),
        ("exact", {"smiles": SECRET_KEY_OF_SALT}),
    ]
    for kind, body in searches:
        hits = data(api.post(f"/molecules/search/{kind}", json=body, headers=h))
        assert owner.molecule_id not in {hit["id"] for hit in hits}, kind
    key = data(api.get(f"/molecules/{owner.molecule_id}", headers=owner.org.headers))["inchi_key"]
    assert data(api.post("/molecules/search/exact", json={"inchi_key": key}, headers=h)) == []

    # The same structure registered by the intruder is its own record, not the owner's.
    mine = created(api.post("/molecules", json={"molecule": {"smiles": SECRET_KEY_OF_SALT}}, headers=h))
    assert mine["id"] != owner.molecule_id and mine["organization_id"] == intruder.id
    assert mine["library_ids"] == [] and mine["inchi_key"] == key


def test_calls_without_a_token_are_401(api: httpx.Client, owner: Owned) -> None:
    for method, path in (
        ("GET", "/molecules"),
        ("GET", f"/molecules/{owner.molecule_id}"),
        ("GET", f"/molecules/{owner.molecule_id}/image"),
        ("POST", "/molecules/upload/csv"),
        ("GET", f"/molecules/imports/{owner.job_id}/watch"),
        ("GET", f"/libraries/{owner.library_id}"),
        ("POST", "/molecules/search/similarity"),
    ):
        assert_error(api.request(method, path), 401, "AUTHENTICATION_ERROR")


def malformed_requests(owned: Owned) -> list[tuple[str, str, object]]:
    """(method, path, JSON body or raw bytes or None): bad ids, unknown enums, bad paging, wrong types."""
    mol, lib, job = owned.molecule_id, owned.library_id, owned.job_id
    property_values: list[object] = [{"x": 1}, [1, 2], None, "abc", True, -5]
    requests: list[tuple[str, str, object]] = []
    for bad_id in (
        "not-a-uuid",
        "00000000-0000-0000-0000-000000000000",
        "1",
        "' OR 1=1 --",
        "x" * 300,
        uuid.uuid4().hex,
        "%00",
        "\x00",
        "a/b",
    ):
        i = quote(bad_id, safe="")
        # Every route that names a resource, with the bad id in each place (and raw in a body).
        requests += routes_of(Owned(owned.org, i, i, i, i), i, i)
        requests.append(("POST", f"/libraries/{lib}/molecules/batch", {"molecule_ids": [bad_id]}))
    requests += [
        # Paging and query parameters.
        ("GET", "/molecules?page=-1", None),
        ("GET", "/molecules?page_size=100000", None),
        ("GET", "/molecules?page_size=-5", None),
        ("GET", "/molecules?page=abc", None),
        ("GET", "/molecules?page=99999999999", None),
        ("GET", "/molecules?sort_by=nope", None),
        ("GET", "/molecules?status=NOPE", None),
        ("GET", "/molecules?status=99", None),
        ("GET", "/molecules?flag=NOPE", None),
        ("GET", "/molecules?library_id=xyz", None),
        ("GET", "/molecules?no_such_parameter=1", None),
        ("GET", "/libraries?page=-1", None),
        ("GET", "/libraries/my?page_size=1000", None),
        ("GET", "/molecules/imports?page_size=101", None),
        ("GET", f"/libraries/{lib}/molecules?sort_by=nope", None),
        ("GET", f"/libraries/{lib}/molecules?page=-2", None),
        ("GET", f"/molecules/{mol}/image?format=bmp", None),
        ("GET", f"/molecules/{mol}/image?width=-1", None),
        ("GET", f"/libraries/{lib}/distributions?property=ic50&bins=-3", None),
        ("GET", f"/libraries/{lib}/distributions/plot?property=ic50&width=100000", None),
        # No such route or method, and bodies over the gateway's limit for unary requests.
        ("PATCH", f"/molecules/{mol}", {"name": "x"}),
        ("GET", "/molecules/upload/csv", None),
        ("GET", f"/libraries/{lib}/molecules/batch", None),
        ("POST", f"/molecules/{mol}/image", {}),
        ("GET", "/molecules/imports/x/y/z", None),
        ("POST", "/molecules/filter", {"filters": [{"property": "name", "operator": "eq", "value": "x" * 2_000_000}]}),
        # Filters.
        ("POST", "/molecules/filter", {"filters": [{}]}),
        ("POST", "/molecules/filter", {"filters": [{"property": "ic50", "operator": "like", "value": 1}]}),
        ("POST", "/molecules/filter", {"filters": [{"property": "nope", "operator": "gt", "value": 1}]}),
        ("POST", "/molecules/filter", {"filters": [{"property": "ic50", "operator": "gt", "value": "abc"}]}),
        ("POST", "/molecules/filter", {"filters": [{"property": "ic50", "operator": "gt", "value": {"a": 1}}]}),
        ("POST", "/molecules/filter", {"filters": [{"property": "ic50", "operator": "gt"}]}),
        ("POST", "/molecules/filter", {"filters": [{"property": "ic50", "operator": "in", "value": []}]}),
        ("POST", "/molecules/filter", {"filters": [{"property": "ic50", "operator": "in", "value": [[1]]}]}),
        ("POST", "/molecules/filter", {"filters": [{"property": "name", "operator": "gt", "value": 1}]}),
        ("POST", "/molecules/filter", {"filters": [{"property": "ic50", "operator": "gt", "value": 1, "source": 42}]}),
        ("POST", "/molecules/filter", {"filters": "everything"}),
        ("POST", "/molecules/filter", {"page": "one"}),
        ("POST", "/molecules/filter", {"page": -1}),
        ("POST", "/molecules/filter", {"page_size": 101}),
        ("POST", "/molecules/filter", {"status": ["NOPE"]}),
        ("POST", "/molecules/filter", {"status": [99]}),
        ("POST", "/molecules/filter", {"flags": [77]}),
        ("POST", "/molecules/filter", b'{"filters":[{"property":"ic50","operator":"gt","value":1e400}]}'),
        ("POST", "/molecules/filter", b"{not json"),
        ("POST", "/molecules/filter", b"[1, 2]"),
        # Registration.
        ("POST", "/molecules", {}),
        ("POST", "/molecules", {"molecule": {"smiles": ""}}),
        ("POST", "/molecules", {"molecule": {"smiles": "C" * 100000}}),
        ("POST", "/molecules", {"molecule": {"smiles": "C", "name": "n" * 10000}}),
        ("POST", "/molecules", {"molecule": {"smiles": "\u0000"}}),
        ("POST", "/molecules", {"molecule": {"smiles": "[H][H]"}}),
        ("POST", "/molecules", {"molecule": {"smiles": "*"}}),
        (
            "POST",
            "/molecules",
            {"molecule": {"smiles": "C", "properties": [{"name": "ic50", "units": "kg", "value": 1}]}},
        ),
        ("POST", "/molecules", {"molecule": {"smiles": "C", "properties": [{"name": "bogus", "value": 1}]}}),
        (
            "POST",
            "/molecules",
            {"molecule": {"smiles": "C", "properties": [{"name": "ic50", "value": 1, "source": 3}]}},
        ),
        ("POST", "/molecules", {"molecule": {"smiles": 5}}),
        ("POST", "/molecules", "a string"),
        ("POST", "/molecules/batch", {}),
        ("POST", "/molecules/batch", {"molecules": [{"smiles": "C"}] * 1001}),
        ("PUT", f"/molecules/{mol}", {"status": "BOGUS"}),
        ("PUT", f"/molecules/{mol}", {"status": 42}),
        ("POST", f"/molecules/{mol}/flags", {"type": "PRIORITY", "level": 9}),
        ("POST", f"/molecules/{mol}/flags", {}),
        ("DELETE", f"/molecules/{mol}/flags/NOT_A_FLAG", None),
        # Libraries.
        ("POST", "/libraries", {}),
        ("POST", "/libraries", {"name": " "}),
        ("POST", "/libraries", {"name": "x" * 101}),
        ("POST", "/libraries", {"name": "a", "category": 99}),
        ("POST", "/libraries", {"name": "a", "category": "NOPE"}),
        ("POST", "/libraries", {"name": "a", "visibility": 7}),
        ("PUT", f"/libraries/{lib}", {"visibility": 7}),
        ("PUT", f"/libraries/{lib}/access", {"user_id": "not-a-user", "level": "EDITOR"}),
        ("PUT", f"/libraries/{lib}/access", {"user_id": str(uuid.uuid4()), "level": 12}),
        ("POST", "/libraries/filter", {"categories": [99]}),
        ("POST", "/libraries/filter", {"visibility": 9}),
        ("POST", f"/libraries/{lib}/molecules/batch", {"molecule_ids": "all"}),
        # Searches.
        ("POST", "/molecules/search/similarity", {}),
        ("POST", "/molecules/search/similarity", {"smiles": "CCO", "threshold": -1}),
        ("POST", "/molecules/search/similarity", {"smiles": "CCO", "threshold": "NaN"}),
        ("POST", "/molecules/search/similarity", {"smiles": "CCO", "limit": -1}),
        ("POST", "/molecules/search/similarity", {"smiles": "CCO", "limit": 100000}),
        ("POST", "/molecules/search/similarity", {"smiles": "CCO", "filters": [{"property": "bad"}]}),
        ("POST", "/molecules/search/substructure", {}),
        ("POST", "/molecules/search/substructure", {"smiles": "C" * 20000}),
        ("POST", "/molecules/search/substructure", {"smarts": "[$(*)"}),
        ("POST", "/molecules/search/exact", {}),
        ("POST", "/molecules/search/exact", {"inchi_key": "garbage"}),
        # Imports.
        ("POST", f"/molecules/upload/csv/{owned.storage_key}/import", {"mapping": "smiles"}),
        ("POST", f"/molecules/upload/csv/{owned.storage_key}/import", {"mapping": {"smiles": 5}}),
        (
            "POST",
            f"/molecules/upload/csv/{owned.storage_key}/import",
            {"mapping": {"smiles": "smiles"}, "predict": "x"},
        ),
        ("GET", f"/molecules/upload/csv/{owned.storage_key}/preview?rows=abc", None),
        ("POST", f"/molecules/imports/{job}:cancel", {"job_id": "other"}),
    ]
    requests += [("PUT", f"/molecules/{mol}", {"properties": [{"name": "ic50", "value": v}]}) for v in property_values]
    requests += [
        ("POST", "/molecules", {"molecule": {"smiles": "CCC", "properties": [{"name": "ic50", "value": v}]}})
        for v in property_values
    ]
    requests += [
        ("POST", "/molecules/batch", {"molecules": [{"smiles": "CCC", "properties": [{"name": "ic50", "value": v}]}]})
        for v in property_values
    ]
    return requests


def test_malformed_requests_get_the_envelope_and_never_a_500(api: httpx.Client, owner: Owned) -> None:
    h = owner.org.headers
    wrong = []
    for method, path, body in malformed_requests(owner):
        if isinstance(body, bytes):
            response = api.request(method, path, content=body, headers={**h, "content-type": "application/json"})
        else:
            response = api.request(method, path, headers=h, **({} if body is None else {"json": body}))
        json_body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
        is_error = 400 <= response.status_code < 500 and set(json_body) == {"error"}
        # Some are fine (batch outcomes, …): 201 for the creates, 200 for the rest.
        is_success = response.status_code in (200, 201) and "data" in json_body
        if not (is_error or is_success):
            wrong.append((method, path, str(body)[:80], response.status_code, response.text[:200]))
    assert wrong == []
