"""Every REST route of the gateway × every caller × own / another organization's resources, through Envoy.

The routes come from the descriptor set the gateway is rendered from (the google.api.http annotations of
protos/), so a new route cannot be forgotten: EXPECTED must name exactly those routes. For each route it
says whether the route is public and which callers the rules let through; the test derives every cell:
- no token → 401 AUTHENTICATION_ERROR, except on the public routes (policy.toml `[auth] public_paths`);
- a caller the rules refuse → 403 AUTHORIZATION_ERROR, whatever the resource (permission before existence);
- another organization's resource → exactly the answer for a random id that exists nowhere (404
  RESOURCE_NOT_FOUND, same envelope, nothing of the other organization in it);
- a list never carries another organization's ids.
The submission actions × roles × states are test_cro_access_matrix's.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from gateway.envoy import protoset
from gateway.envoy.policy import load_policy
from services.runtime.settings import REPO_ROOT
from tests.e2e import test_identity_gateway
from tests.e2e.cro_rest import Parties, new_service, upload
from tests.e2e.molecule_rest import Org, created, upload_file
from tests.e2e.test_identity_gateway import PASSWORD, bearer, login, new_org

api = test_identity_gateway.api
admin = test_identity_gateway.admin

SYSTEM_ADMIN, PHARMA_ADMIN, SCIENTIST = "system_admin", "pharma_admin", "pharma_scientist"
CRO_ADMIN, TECHNICIAN, AUDITOR, API_KEY = "cro_admin", "cro_technician", "auditor", "api_key"
# The API key is a pharma organization's, granted pharma_scientist: it may what a scientist may, except
# what needs a person (USER_ONLY).
CALLERS = (SYSTEM_ADMIN, PHARMA_ADMIN, SCIENTIST, CRO_ADMIN, TECHNICIAN, AUDITOR, API_KEY)

EVERYONE = frozenset(CALLERS)
# What stays inside its organization even for system_admin (404 as for a random id), while it sees every
# organization's users, documents, submissions, results and CRO services. FINDING: DOMAIN.md says both
# "system_admin (everything)" and "nobody ever sees another organization's molecules, libraries,
# predictions or documents": the services split the difference this way; a decision moves kinds here.
ORGANIZATION_ONLY = frozenset({"molecule", "library", "prediction", "import", "webhook", "upload", "number"})
PEOPLE = EVERYONE - {API_KEY}
PHARMA_WRITERS = frozenset({SYSTEM_ADMIN, PHARMA_ADMIN, SCIENTIST, API_KEY})
PHARMA_ADMINS = frozenset({SYSTEM_ADMIN, PHARMA_ADMIN})
ORG_ADMINS = frozenset({SYSTEM_ADMIN, PHARMA_ADMIN, CRO_ADMIN})
CRO_WRITERS = frozenset({SYSTEM_ADMIN, CRO_ADMIN, TECHNICIAN})
CRO_ADMINS = frozenset({SYSTEM_ADMIN, CRO_ADMIN})
NOT_AUDITOR = EVERYONE - {AUDITOR}
ONLY_SYSTEM_ADMIN = frozenset({SYSTEM_ADMIN})
AUDIT_READERS = ORG_ADMINS | {AUDITOR}  # an org admin reads its organization's trail


@dataclass(frozen=True)
class Rule:
    """Who the rules let through one route (the others: 403), and, for a public route, that it answers
    without a token. `body`: a request body valid enough that the answer is the access rule's."""

    allowed: frozenset[str]
    public: bool = False
    body: dict | None = None
    query: dict | None = None  # query parameters a request needs
    # "catalogue": another organization's resource is offered to everyone on purpose (active CRO
    # services): read 200, written 403. "search": the path is a query, not a resource (the audit
    # history of any target): 200 for whoever may ask. "unchecked": FINDING, the parent is not looked
    # up (for some callers): 200 and an empty page for any id, or 404; never another organization's data.
    kind: str = "resource"
    # The documented answer to an allowed read of the caller's own (fresh) resource when its state has
    # nothing to show yet: 404 with this ErrorInfo detail (e.g. no signature requested).
    unready: str = ""


def R(  # noqa: N802 (a table's constructor)
    allowed: frozenset[str], *, query: dict | None = None, kind: str = "resource", unready: str = "", **body: object
) -> Rule:
    return Rule(allowed, body=dict(body) if body else None, query=query, kind=kind, unready=unready)


PUBLIC = Rule(EVERYONE, public=True)
NEW_NAME = {"name": "Renamed by the access matrix"}

# Every route of the gateway (verb, path template) → its rule. DOMAIN.md's roles: system_admin does
# everything; pharma_admin ⊃ pharma_scientist; cro_admin ⊃ cro_technician; auditor reads (audit trail).
EXPECTED: dict[tuple[str, str], Rule] = {
    # identity
    ("POST", "/auth/login"): PUBLIC,
    ("POST", "/auth/logout"): R(EVERYONE),
    ("POST", "/auth/refresh"): PUBLIC,
    ("POST", "/auth/password-reset/request"): PUBLIC,
    ("POST", "/auth/password-reset/confirm"): PUBLIC,
    ("POST", "/auth/mfa/verify"): PUBLIC,
    ("POST", "/auth/mfa/enroll"): R(PEOPLE),
    ("POST", "/auth/mfa/confirm"): R(PEOPLE, code="000000"),
    ("GET", "/auth/jwks"): PUBLIC,
    ("POST", "/organizations"): R(ONLY_SYSTEM_ADMIN, name="Matrix org", kind="PHARMA"),
    ("GET", "/organizations"): R(EVERYONE),
    ("GET", "/organizations/{id}"): R(EVERYONE),
    ("GET", "/users"): R(EVERYONE),
    ("POST", "/users"): R(ORG_ADMINS),
    ("GET", "/users/me"): R(PEOPLE),
    ("PUT", "/users/me"): R(PEOPLE, full_name="Matrix"),
    ("POST", "/users/me/password"): R(PEOPLE),
    ("GET", "/users/{id}"): R(EVERYONE),
    ("PUT", "/users/{id}"): R(ORG_ADMINS, full_name="Matrix"),
    ("DELETE", "/users/{id}"): R(ORG_ADMINS),
    ("POST", "/api-keys"): R(ORG_ADMINS, name="matrix"),
    ("GET", "/api-keys"): R(ORG_ADMINS),
    ("DELETE", "/api-keys/{id}"): R(ORG_ADMINS),
    ("GET", "/audit-events"): R(AUDIT_READERS),
    ("GET", "/audit-events/verify"): R(AUDIT_READERS),
    ("GET", "/audit-events/export"): R(AUDIT_READERS),
    ("GET", "/audit-events/history/{target_type}/{target_id}"): R(AUDIT_READERS, kind="search"),
    ("POST", "/audit-events/anchors"): R(ONLY_SYSTEM_ADMIN),
    # notifications
    ("GET", "/notifications"): R(EVERYONE),
    ("GET", "/notifications/unread-count"): R(EVERYONE),
    ("POST", "/notifications/{id}/read"): R(EVERYONE),
    ("POST", "/notifications/read-all"): R(EVERYONE),
    ("GET", "/notifications/watch"): R(EVERYONE),
    ("GET", "/notifications/preferences"): R(EVERYONE),
    ("PUT", "/notifications/preferences"): R(EVERYONE, reset_to_defaults=True),
    ("POST", "/webhooks"): R(ORG_ADMINS, url="http://127.0.0.1:9/hook"),
    ("GET", "/webhooks"): R(ORG_ADMINS),
    ("GET", "/webhooks/{id}"): R(ORG_ADMINS),
    ("PUT", "/webhooks/{id}"): R(ORG_ADMINS, description="matrix"),
    ("DELETE", "/webhooks/{id}"): R(ORG_ADMINS),
    ("POST", "/webhooks/{id}/rotate-secret"): R(ORG_ADMINS),
    ("GET", "/webhooks/{id}/deliveries"): R(ORG_ADMINS),
    ("POST", "/webhooks/{id}/deliveries/{delivery_id}/redeliver"): R(ORG_ADMINS),
    ("POST", "/webhooks/{id}/test"): R(ORG_ADMINS),
    # documents
    ("POST", "/documents/upload"): R(NOT_AUDITOR),
    ("GET", "/documents"): R(EVERYONE),
    ("GET", "/submissions/{submission_id}/documents"): R(EVERYONE, kind="unchecked"),
    ("GET", "/documents/{id}"): R(EVERYONE),
    ("PUT", "/documents/{id}"): R(NOT_AUDITOR, title="matrix"),
    ("DELETE", "/documents/{id}"): R(NOT_AUDITOR),
    ("GET", "/documents/{id}/download"): R(EVERYONE),
    ("GET", "/documents/{id}/download-link"): R(EVERYONE),
    ("GET", "/document-templates"): R(EVERYONE),
    ("GET", "/document-templates/{name}/preview"): R(EVERYONE),
    ("POST", "/documents/generate"): R(NOT_AUDITOR, template="nda"),
    ("GET", "/documents/requirements"): R(EVERYONE, query={"service_type": "ADME", "submission_id": str(uuid.uuid4())}),
    ("POST", "/documents/{id}/signature"): R(NOT_AUDITOR),
    ("GET", "/documents/{id}/signature/status"): R(EVERYONE, unready="NO_SIGNATURE_REQUEST"),
    ("POST", "/documents/{id}/signature/sign"): R(NOT_AUDITOR, password="Not-The-Pass-1!", meaning="approved"),
    ("POST", "/documents/{id}/signature/decline"): R(NOT_AUDITOR, reason="matrix"),
    ("POST", "/documents/{id}/signature/void"): R(NOT_AUDITOR, reason="matrix"),
    ("POST", "/documents/{id}/signature/signing-url"): R(NOT_AUDITOR, return_url="http://127.0.0.1:3000/done"),
    ("GET", "/documents/{id}/signature/verify"): R(EVERYONE, unready="NOT_SIGNED"),
    ("POST", "/documents/signature/webhook"): PUBLIC,
    # predictions
    ("POST", "/predictions"): R(PHARMA_WRITERS),
    ("GET", "/predictions/{job_id}/status"): R(EVERYONE),
    ("GET", "/predictions/{job_id}/results"): R(EVERYONE),
    ("GET", "/predictions/{job_id}/results.csv"): R(EVERYONE),
    ("GET", "/predictions/models"): R(EVERYONE),
    ("GET", "/molecules/{molecule_id}/predictions"): R(EVERYONE, kind="unchecked"),
    # molecules
    ("GET", "/molecules"): R(EVERYONE),
    ("POST", "/molecules/filter"): R(EVERYONE),
    ("POST", "/molecules"): R(PHARMA_WRITERS, molecule={"smiles": "CCO"}),
    ("POST", "/molecules/batch"): R(PHARMA_WRITERS, molecules=[{"smiles": "CCO"}]),
    ("GET", "/molecules/properties"): R(EVERYONE),
    ("GET", "/molecules/{id}"): R(EVERYONE),
    ("GET", "/molecules/by-number/{number}"): R(EVERYONE),
    ("GET", "/molecules/registration-prefix"): R(EVERYONE),
    ("PUT", "/molecules/registration-prefix"): R(PHARMA_ADMINS),
    ("PUT", "/molecules/{id}"): R(PHARMA_WRITERS, **NEW_NAME),
    ("DELETE", "/molecules/{id}"): R(PHARMA_WRITERS),
    ("POST", "/molecules/{molecule_id}/flags"): R(PHARMA_WRITERS, type="FAVORITE"),
    ("DELETE", "/molecules/{molecule_id}/flags/{type}"): R(PHARMA_WRITERS),
    ("GET", "/molecules/{id}/image"): R(EVERYONE),
    ("POST", "/molecules/upload/csv"): R(PHARMA_WRITERS),
    ("GET", "/molecules/upload/csv/{storage_key}/preview"): R(PHARMA_WRITERS),
    ("POST", "/molecules/upload/csv/{storage_key}/import"): R(PHARMA_WRITERS, mapping={"smiles": "smiles"}),
    ("GET", "/molecules/imports"): R(EVERYONE),
    ("GET", "/molecules/imports/{job_id}"): R(EVERYONE),
    ("GET", "/molecules/imports/{job_id}/watch"): R(EVERYONE),
    ("POST", "/molecules/imports/{job_id}:cancel"): R(PHARMA_WRITERS),
    ("GET", "/molecules/imports/{job_id}/errors"): R(EVERYONE),
    ("GET", "/molecules/imports/{job_id}/errors-link"): R(EVERYONE),
    ("POST", "/molecules/search/similarity"): R(EVERYONE, smiles="CCO"),
    ("POST", "/molecules/search/substructure"): R(EVERYONE, smiles="CCO"),
    ("POST", "/molecules/search/exact"): R(EVERYONE, smiles="CCO"),
    # libraries
    ("POST", "/libraries"): R(NOT_AUDITOR),
    ("GET", "/libraries"): R(EVERYONE),
    ("GET", "/libraries/my"): R(EVERYONE),
    ("POST", "/libraries/filter"): R(EVERYONE),
    ("GET", "/libraries/{id}"): R(EVERYONE),
    ("PUT", "/libraries/{id}"): R(NOT_AUDITOR, description="matrix"),
    ("DELETE", "/libraries/{id}"): R(NOT_AUDITOR),
    ("POST", "/libraries/{library_id}/molecules/{molecule_id}"): R(NOT_AUDITOR),
    ("POST", "/molecules/{molecule_id}/libraries/{library_id}"): R(NOT_AUDITOR),
    ("DELETE", "/libraries/{library_id}/molecules/{molecule_id}"): R(NOT_AUDITOR),
    ("DELETE", "/molecules/{molecule_id}/libraries/{library_id}"): R(NOT_AUDITOR),
    ("POST", "/libraries/{library_id}/molecules/batch"): R(NOT_AUDITOR, molecule_ids=[]),
    ("DELETE", "/libraries/{library_id}/molecules/batch"): R(NOT_AUDITOR, molecule_ids=[]),
    ("GET", "/libraries/{library_id}/molecules"): R(EVERYONE),
    ("GET", "/libraries/{library_id}/access"): R(EVERYONE),
    ("PUT", "/libraries/{library_id}/access"): R(NOT_AUDITOR),
    ("GET", "/libraries/{id}/distributions"): R(EVERYONE, query={"property": "logp"}),
    ("GET", "/libraries/{id}/distributions/plot"): R(EVERYONE, query={"property": "logp"}),
    # results
    ("POST", "/results/upload"): R(CRO_WRITERS),
    ("GET", "/results/upload/{storage_key}/preview"): R(CRO_WRITERS),
    ("POST", "/results/upload/{storage_key}/process"): R(CRO_WRITERS),
    ("GET", "/results"): R(EVERYONE),
    ("GET", "/submissions/{submission_id}/results"): R(EVERYONE),
    ("GET", "/results/{id}"): R(EVERYONE),
    ("PUT", "/results/{id}"): R(CRO_WRITERS, notes="matrix"),
    ("DELETE", "/results/{id}"): R(CRO_WRITERS),
    ("GET", "/results/{id}/watch"): R(EVERYONE),
    ("GET", "/results/{id}/values"): R(EVERYONE),
    ("GET", "/results/{id}/errors"): R(EVERYONE),
    ("PUT", "/results/{id}/status"): R(PHARMA_WRITERS, decision="ACCEPTED"),
    ("GET", "/results/{id}/compare-predictions"): R(EVERYONE),
    ("GET", "/results/{id}/compare-predictions/plot"): R(
        EVERYONE, query={"property": "ic50", "model_name": "baseline", "model_version": "1"}),
    ("GET", "/molecules/{molecule_id}/results"): R(EVERYONE, kind="unchecked"),
    ("GET", "/predictions/models/{model_name}/accuracy"): R(EVERYONE),
    # CRO services and submissions
    ("GET", "/cro-services"): R(EVERYONE, kind="catalogue"),
    ("POST", "/cro-services"): R(CRO_ADMINS),
    ("GET", "/cro-services/{id}"): R(EVERYONE, kind="catalogue"),
    ("PUT", "/cro-services/{id}"): R(CRO_ADMINS, kind="catalogue", description="matrix"),
    ("DELETE", "/cro-services/{id}"): R(CRO_ADMINS, kind="catalogue"),
    ("GET", "/submissions"): R(EVERYONE),
    ("GET", "/molecules/{molecule_id}/submissions"): R(EVERYONE, kind="unchecked"),
    ("POST", "/submissions"): R(PHARMA_WRITERS, name="matrix", cro_service_id=str(uuid.uuid4()),
                                   molecules=[{"molecule_id": str(uuid.uuid4())}]),
    ("GET", "/submissions/{id}"): R(EVERYONE),
    ("PUT", "/submissions/{id}"): R(PHARMA_WRITERS, **NEW_NAME),
    ("POST", "/submissions/{id}/actions"): R(NOT_AUDITOR, action="CANCEL", reason="matrix"),
    ("GET", "/submissions/{id}/document-requirements"): R(EVERYONE),
    ("GET", "/submissions/status-counts"): R(EVERYONE),
    ("GET", "/submissions/{id}/quotes"): R(EVERYONE),
    ("GET", "/submissions/{id}/package"): R(EVERYONE, unready="PACKAGE_NOT_FOUND"),
    ("POST", "/submissions/{id}/reveal-structures"): R(PHARMA_WRITERS, revealed=True),
    ("GET", "/submissions/{id}/messages"): R(EVERYONE),
    ("POST", "/submissions/{id}/messages"): R(NOT_AUDITOR, text="matrix"),
    ("POST", "/submissions/{id}/messages/read"): R(NOT_AUDITOR),
    ("GET", "/messages/unread-counts"): R(EVERYONE),
    ("GET", "/submissions/{id}/messages/watch"): R(EVERYONE),
    ("GET", "/health"): PUBLIC,
}

PREFIX = "/api/v1"
_PARAM = re.compile(r"\{([^}=]+)(?:=[^}]*)?\}")


def gateway_routes() -> list[tuple[str, str]]:
    """Every (verb, path below /api/v1) the gateway is rendered with, from the descriptor set."""
    fds = protoset.load(REPO_ROOT / "build" / "descriptor.pb")
    return sorted({(b.verb.upper(), b.path.removeprefix(PREFIX)) for m in protoset.methods(fds) for b in m.bindings})


def test_the_expectations_name_exactly_the_gateways_routes() -> None:
    routes = set(gateway_routes())
    assert not routes - set(EXPECTED), f"routes without an expectation: {sorted(routes - set(EXPECTED))}"
    assert not set(EXPECTED) - routes, f"expectations of no route: {sorted(set(EXPECTED) - routes)}"
    public = {p.removeprefix(PREFIX) for p in load_policy()["auth"]["public_paths"]}
    assert {path for (_, path), rule in EXPECTED.items() if rule.public} == public & {p for _, p in routes}


# Path parameters: which resource each stands for, by the first literal segment of the path.
def kind_of(path: str, param: str) -> str:
    head = path.split("/")[1]
    if param in ("molecule_id",):
        return "molecule"
    if param in ("library_id",):
        return "library"
    if param == "submission_id":
        return "submission"
    if param == "delivery_id":
        return "delivery"
    if path.startswith("/molecules/upload/csv/"):
        return "upload"
    if path.startswith("/results/upload/"):
        return "results_upload"
    if path.startswith("/molecules/imports/"):
        return "import"
    if param in ("type", "number", "name", "model_name", "target_type", "target_id"):
        return param
    return {
        "users": "user", "api-keys": "api_key", "organizations": "organization", "notifications": "notification",
        "webhooks": "webhook", "documents": "document", "predictions": "prediction", "molecules": "molecule",
        "libraries": "library", "results": "result", "cro-services": "cro_service", "submissions": "submission",
    }[head]


# Values of the parameters that name no organization's resource.
FIXED = {"type": "FAVORITE", "name": "nda", "model_name": "baseline",
         "target_type": "molecule"}


def random_value(kind: str) -> str:
    if kind == "number":
        return "ZZZ-999999"
    if kind in ("upload", "results_upload"):
        return uuid.uuid4().hex
    return FIXED.get(kind) or str(uuid.uuid4())


@dataclass
class World:
    """The callers (headers by name) and, per organization side, the id of one resource of each kind."""

    headers: dict[str, dict[str, str]]
    own: dict[str, dict[str, str]] = field(default_factory=dict)  # caller → kind → id
    other: dict[str, str] = field(default_factory=dict)  # kind → id of another organization's resource
    # caller → kind → id of a resource of the caller's organization (system_admin: any organization's)
    other_texts: set[str] = field(default_factory=set)  # what must never show in a caller's answers


@dataclass(frozen=True)
class Cell:
    verb: str
    path: str
    caller: str
    scope: str  # "anonymous", "random", "other", "list"

    def __str__(self) -> str:
        return f"{self.verb} {self.path} by {self.caller} ({self.scope})"


@dataclass(frozen=True)
class Answer:
    status: int
    code: str  # the envelope's error code, or "" for a success
    text: str


def fill(path: str, values: dict[str, str]) -> str:
    return _PARAM.sub(lambda m: values[m.group(1)], path)


@pytest.fixture(scope="module")
def world(api: httpx.Client, admin: dict) -> Iterator[World]:
    home = Parties(api, admin)
    other_cro_id, other_cro_session = new_org(api, admin, "CRO")
    other_cro = Org(other_cro_id, other_cro_session)
    key = created(api.post("/api-keys", json={"name": "matrix", "roles": ["pharma_scientist"]},
                           headers=home.pharma.headers))
    headers = {
        SYSTEM_ADMIN: bearer(platform_user(api, admin, SYSTEM_ADMIN)), PHARMA_ADMIN: home.pharma.headers,
        SCIENTIST: home.scientist_headers,
        CRO_ADMIN: home.cro.headers, TECHNICIAN: home.technician_headers,
        AUDITOR: bearer(platform_user(api, admin, AUDITOR)), API_KEY: {"x-api-key": key["secret"]},
    }
    w = World(headers)
    w.other = other_resources(api, home.outsider, other_cro)
    mine = other_resources(api, home.pharma, home.cro)  # the same kinds in the callers' organizations
    cro_side = {"cro_service": mine["cro_service"], "results_upload": mine["results_upload"],
                "organization": home.cro.id, "user": home.cro.user_id}
    pharma_side = {k: v for k, v in mine.items() if k not in ("cro_service", "results_upload")}
    w.own = {PHARMA_ADMIN: pharma_side, SCIENTIST: pharma_side, API_KEY: pharma_side, CRO_ADMIN: cro_side,
             TECHNICIAN: cro_side,
             SYSTEM_ADMIN: {k: v for k, v in (pharma_side | cro_side).items() if k not in ORGANIZATION_ONLY}}
    w.other.pop("number")  # registration numbers are per organization: another one's may equal ours
    w.other_texts = {v for k, v in w.other.items() if k not in FIXED} | {
        home.outsider.id, other_cro.id}
    yield w


def platform_user(api: httpx.Client, admin: dict, role: str) -> dict:
    """A user of the platform organization, logged in (the matrix's own: its cells change what they may)."""
    email = f"{role}-{uuid.uuid4().hex[:8]}@e2e.test"
    made = api.post("/users", json={"email": email, "full_name": role, "password": PASSWORD, "roles": [role]},
                    headers=bearer(admin))
    assert made.status_code == 201, made.text
    return login(api, email, PASSWORD)


def other_resources(api: httpx.Client, pharma: Org, cro: Org) -> dict[str, str]:
    """One resource of each kind in another pharma organization and another CRO organization."""
    h = pharma.headers
    molecule = created(api.post("/molecules/batch", json={"molecules": [{"smiles": "c1ccccc1O"}]}, headers=h))[0]
    library = created(api.post("/libraries", json={"name": f"Matrix {uuid.uuid4().hex[:6]}",
                                                    "visibility": "ORGANIZATION"}, headers=h))
    added = api.post(f"/libraries/{library['id']}/molecules/{molecule['molecule_id']}", json={}, headers=h)
    assert added.status_code == 200, added.text
    service = new_service(api, cro, name=f"Other panel {uuid.uuid4().hex[:6]}")
    draft = created(api.post("/submissions", json={
        "name": "Other submission", "cro_service_id": service["id"],
        "molecules": [{"molecule_id": molecule["molecule_id"]}], "specifications": {"temperature": 25},
        "request_id": uuid.uuid4().hex}, headers=h))
    document = upload(api, h, draft["id"], "NON_DISCLOSURE_AGREEMENT")
    job = created(api.post("/predictions", json={"molecule_ids": [molecule["molecule_id"]], "properties": ["logp"]},
                           headers=h))
    stored = upload_file(api, h, b"smiles\nCCO\n")
    imported = created(api.post(f"/molecules/upload/csv/{stored['storage_key']}/import",
                                json={"mapping": {"smiles": "smiles"}}, headers=h))
    webhook = created(api.post("/webhooks", json={"url": "http://127.0.0.1:9/hook"}, headers=h))
    api_key = created(api.post("/api-keys", json={"name": "other", "roles": ["pharma_scientist"]}, headers=h))
    results_upload = created(api.post("/results/upload", files={"file": ("r.csv", b"a,b\n1,2\n", "text/csv")},
                                      headers=cro.headers))
    got = api.get(f"/molecules/{molecule['molecule_id']}", headers=h).json()["data"]
    return {
        "molecule": molecule["molecule_id"], "library": library["id"], "submission": draft["id"],
        "document": document, "prediction": job["job_id"], "upload": stored["storage_key"],
        "import": imported["job_id"], "webhook": webhook["id"], "api_key": api_key["api_key"]["id"],
        "user": pharma.user_id, "organization": pharma.id, "cro_service": service["id"],
        "results_upload": results_upload["storage_key"], "number": got["registration_number"],
        "target_id": molecule["molecule_id"],
    }


async def ask(client: httpx.AsyncClient, verb: str, path: str, headers: dict[str, str], rule: Rule) -> Answer:
    """One request; a live stream (SSE) is not read when it opened."""
    request = client.build_request(verb, PREFIX + path, headers=headers, params=rule.query,
                                   json=(rule.body or {}) if verb in ("POST", "PUT") else None)
    response = await client.send(request, stream=True)
    try:
        if response.status_code < 400 and response.headers.get("content-type", "").startswith("text/event-stream"):
            return Answer(response.status_code, "", "")
        await response.aread()
        if response.status_code < 400:
            return Answer(response.status_code, "", response.text)
        try:
            code = response.json()["error"]["code"]
        except (ValueError, KeyError, TypeError):
            code = "NOT AN ENVELOPE"
        return Answer(response.status_code, code, response.text)
    finally:
        await response.aclose()


# A write the caller may make met the rules: done, refused for its input or state, or naming (in its
# body) something that does not exist.
REACHED_THE_RULES = {(200, ""), (201, ""), (400, "VALIDATION_ERROR"), (404, "RESOURCE_NOT_FOUND"),
                     (409, "RESOURCE_CONFLICT")}


def expected(rule: Rule, cell: Cell, fixed_only: bool) -> set[tuple[int, str]]:
    """The answers the rules allow for a cell of an authenticated caller (on no existing resource of
    the caller's organization)."""
    if cell.scope == "own":
        if cell.caller not in rule.allowed:
            return {(403, "AUTHORIZATION_ERROR")}
        return {(404, "RESOURCE_NOT_FOUND")} if rule.unready else {(200, "")}
    if cell.scope == "none":  # a collection, a create, the caller's own settings
        if cell.caller not in rule.allowed:
            return {(403, "AUTHORIZATION_ERROR")}
        return {(200, "")} if cell.verb == "GET" else REACHED_THE_RULES
    if cell.caller not in rule.allowed:
        if rule.kind == "catalogue" and cell.scope == "other" and cell.verb == "GET":
            return {(200, "")}
        # A refused role meets 403, or 404 when the service looks the resource up first: both say
        # nothing of another organization (the "other" cell must equal the "random" one anyway).
        return {(403, "AUTHORIZATION_ERROR"), (404, "RESOURCE_NOT_FOUND")}
    if rule.kind == "unchecked":
        return {(200, ""), (404, "RESOURCE_NOT_FOUND")}
    if rule.kind == "search" or fixed_only:
        return {(200, "")}
    if rule.kind == "catalogue" and cell.scope == "other":
        return {(200, "")} if cell.verb == "GET" else {(403, "AUTHORIZATION_ERROR")}
    return {(404, "RESOURCE_NOT_FOUND")}


def masked(text: str, values: dict[str, str]) -> str:
    """An answer with the ids the caller sent replaced by their parameter's name (an error may name the
    id it was asked for: that is no leak)."""
    for name, value in values.items():
        text = text.replace(value, "{" + name + "}")
    return text


async def run_cells(world: World, base_url: str) -> tuple[list[str], int]:
    wrong: list[str] = []
    limit = asyncio.Semaphore(16)
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:

        async def cell(c: Cell, values: dict[str, str], headers: dict[str, str], rule: Rule) -> tuple[Cell, Answer]:
            async with limit:
                answer = await ask(client, c.verb, fill(c.path, values), headers, rule)
            return c, Answer(answer.status, answer.code, masked(answer.text, values))

        jobs = []
        for verb, template in gateway_routes():
            rule = EXPECTED.get((verb, template))
            if rule is None or (verb, template) == ("POST", "/auth/logout"):
                continue
            params = _PARAM.findall(template)
            randoms = {p: random_value(kind_of(template, p)) for p in params}
            jobs.append(cell(Cell(verb, template, "anonymous", "anonymous"), randoms, {}, rule))
            if rule.public:
                continue
            if not params:
                jobs.extend(cell(Cell(verb, template, caller, "none"), {}, world.headers[caller], rule)
                            for caller in CALLERS)
                continue
            others = {p: world.other.get(kind_of(template, p), randoms[p]) for p in params}
            names_a_resource = others != randoms
            for caller in CALLERS:
                h = world.headers[caller]
                jobs.append(cell(Cell(verb, template, caller, "random"), randoms, h, rule))
                own = {p: world.own.get(caller, {}).get(kind_of(template, p), FIXED.get(kind_of(template, p), ""))
                       for p in params}
                # Its own resources: every read, and the writes the caller may not make (they change
                # nothing); the writes it may make are the services' own tests'.
                if names_a_resource and all(own.values()) and (verb == "GET" or caller not in rule.allowed):
                    jobs.append(cell(Cell(verb, template, caller, "own"), own, h, rule))
                # system_admin sees every organization's resources but ORGANIZATION_ONLY's kinds.
                if names_a_resource and (caller != SYSTEM_ADMIN or any(
                        kind_of(template, p) in ORGANIZATION_ONLY for p in params)):
                    jobs.append(cell(Cell(verb, template, caller, "other"), others, h, rule))
        answers = await asyncio.gather(*jobs)
    by_cell = dict(answers)
    for c, a in answers:
        rule = EXPECTED[(c.verb, c.path)]
        got = f"got {a.status} {a.code} {a.text[:300]}"
        if c.scope == "anonymous":
            # A public route reaches its service, which may still refuse what was sent (a bad MFA
            # token, an unsigned webhook: 401 from the service, never the gateway's).
            if rule.public and (a.status == 403 or a.status >= 500 or '"domain":"gateway.molbridge"' in a.text
                                and a.status == 401):
                wrong.append(f"{c}: a public route, {got}")
            elif not rule.public and (a.status, a.code) != (401, "AUTHENTICATION_ERROR"):
                wrong.append(f"{c}: expected 401 AUTHENTICATION_ERROR, {got}")
            continue
        fixed_only = all(kind_of(c.path, p) in FIXED for p in _PARAM.findall(c.path))
        want = expected(rule, c, fixed_only)
        if (a.status, a.code) not in want or (
                c.scope == "own" and rule.unready and a.status == 404 and f'"detail":"{rule.unready}"' not in a.text):
            wrong.append(f"{c}: expected {' or '.join(f'{s} {e}'.strip() for s, e in sorted(want))}, {got}")
        if rule.kind == "catalogue" and c.scope in ("other", "none") or c.caller == SYSTEM_ADMIN or (
                c.caller == AUDITOR and c.path.startswith("/audit-events")):
            continue  # offered to everyone on purpose; the platform's admins and auditors see every organization
        leaked = sorted(t for t in world.other_texts if t in a.text)
        if leaked:
            wrong.append(f"{c}: the answer shows the other organization's {leaked}")
        if c.scope == "other":
            random = by_cell[Cell(c.verb, c.path, c.caller, "random")]
            if (a.status, a.text) != (random.status, random.text):
                wrong.append(f"{c}: not the answer to a random id ({random.status} {random.text[:300]}), {got}")
    return wrong, len(answers)


def test_every_route_by_every_caller(mesh, world: World) -> None:  # type: ignore[no-untyped-def]
    wrong, count = asyncio.run(run_cells(world, mesh.gateway_url))
    assert not wrong, f"{len(wrong)} of {count} cells wrong:\n" + "\n".join(sorted(wrong))
