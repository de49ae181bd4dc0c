"""Identity end to end: real Envoy in front of the real identity process, REST and gRPC on one port."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator

import grpc
import httpx
import pyotp
import pytest
from molbridge.identity.v1 import identity_service_pb2 as pb
from molbridge.identity.v1 import identity_service_pb2_grpc as pb_grpc

from services.runtime.errors import AuthenticationError
from services.runtime.identity_client import RemoteIdentity

PASSWORD = "E2e-Strong-Pass-42!"


@pytest.fixture(scope="module")
def api(mesh) -> Iterator[httpx.Client]:  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=mesh.gateway_url + "/api/v1", timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def stub(mesh) -> Iterator[pb_grpc.IdentityServiceStub]:  # type: ignore[no-untyped-def]
    with grpc.insecure_channel(mesh.grpc_target) as channel:
        yield pb_grpc.IdentityServiceStub(channel)


def login(api: httpx.Client, email: str, password: str) -> dict:
    response = api.post("/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return response.json()["data"]


def bearer(session: dict) -> dict[str, str]:
    return {"authorization": f"Bearer {session['access_token']}"}


@pytest.fixture(scope="module")
def admin(api: httpx.Client, mesh) -> dict:  # type: ignore[no-untyped-def]
    return login(api, mesh.admin_email, mesh.admin_password)


def new_org(api: httpx.Client, admin: dict, kind: str = "PHARMA") -> tuple[str, dict]:
    """An organization with its own admin, logged in."""
    name = f"Org {uuid.uuid4().hex[:8]}"
    org = api.post("/organizations", json={"name": name, "kind": kind}, headers=bearer(admin))
    assert org.status_code == 201, org.text  # created
    org_id = org.json()["data"]["id"]
    email = f"admin-{org_id[:8]}@e2e.test"
    user = api.post(
        "/users",
        json={"email": email, "full_name": "Org Admin", "password": PASSWORD, "roles": [f"{kind.lower()}_admin"],
              "organization_id": org_id},
        headers=bearer(admin),
    )
    assert user.status_code == 201, user.text
    return org_id, login(api, email, PASSWORD)


def test_health_is_green_once_every_service_serves(api: httpx.Client) -> None:
    response = api.get("/health")
    assert response.status_code == 200
    services = {
        "cro": "SERVING", "document": "SERVING", "identity": "SERVING", "molecule": "SERVING",
        "notification": "SERVING", "prediction": "SERVING",
    }
    assert response.json() == {"data": {"status": "ok", "services": services}}


def test_login_returns_the_documented_shape(api: httpx.Client, admin: dict, mesh) -> None:  # type: ignore[no-untyped-def]
    assert admin["token_type"] == "bearer" and admin["expires_in"] == 900
    assert admin["access_token"].count(".") == 2 and admin["refresh_token"].startswith("rt_")
    assert admin["user"]["email"] == mesh.admin_email and admin["user"]["roles"] == ["system_admin"]


def test_get_me_over_rest_and_grpc_on_the_same_port(api: httpx.Client, stub, admin: dict) -> None:  # type: ignore[no-untyped-def]
    rest = api.get("/users/me", headers=bearer(admin))
    assert rest.status_code == 200 and rest.json()["data"]["id"] == admin["user"]["id"]
    reply = stub.GetMe(pb.GetMeRequest(), metadata=[("authorization", f"Bearer {admin['access_token']}")])
    assert reply.data.id == admin["user"]["id"]


def test_no_method_is_reachable_without_a_token_on_either_protocol(api: httpx.Client, stub) -> None:  # type: ignore[no-untyped-def]
    for path in ("/users/me", "/users", "/organizations", "/api-keys", "/audit-events"):
        response = api.get(path)
        assert response.status_code == 401, path
        assert response.json()["error"]["code"] == "AUTHENTICATION_ERROR"
    bad = api.get("/users/me", headers={"authorization": "Bearer abc.def.ghi"})
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "AUTHENTICATION_ERROR"
    for call, request in ((stub.GetMe, pb.GetMeRequest()), (stub.ListUsers, pb.ListUsersRequest()),
                          (stub.CreateOrganization, pb.CreateOrganizationRequest(name="x"))):
        with pytest.raises(grpc.RpcError) as error:
            call(request)
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_internal_api_key_lookup_is_not_exposed(stub) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as error:
        stub.AuthenticateApiKey(pb.AuthenticateApiKeyRequest(secret="mbk_guess"))
    assert error.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNIMPLEMENTED,
                                  grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


async def test_signer_confirmation_is_internal_to_the_mesh(  # type: ignore[no-untyped-def]
    api: httpx.Client, stub, admin: dict, mesh
) -> None:
    _, org_admin = new_org(api, admin)
    credentials = {"authorization": f"Bearer {org_admin['access_token']}"}
    request = pb.ConfirmSignerIdentityRequest(password=PASSWORD)
    with pytest.raises(grpc.RpcError) as error:  # not routed by the gateway, even with a valid token
        stub.ConfirmSignerIdentity(request, metadata=list(credentials.items()))
    assert error.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNIMPLEMENTED)
    identity = RemoteIdentity(mesh.service_addr("identity"))  # as the document service calls it
    try:
        signer = await identity.confirm_signer(credentials, PASSWORD, "")
        assert (signer.user_id, signer.printed_name) == (org_admin["user"]["id"], "Org Admin")
        with pytest.raises(AuthenticationError):
            await identity.confirm_signer(credentials, "Not-The-Pass-1!", "")
    finally:
        await identity.close()


def test_error_envelope_for_each_code(api: httpx.Client, admin: dict) -> None:
    weak = api.post("/users", json={"email": "w@e2e.test", "full_name": "W", "password": "weak"}, headers=bearer(admin))
    assert weak.status_code == 400
    error = weak.json()["error"]
    assert error["code"] == "VALIDATION_ERROR" and "digit" in error["message"]
    assert any("fieldViolations" in d or "field_violations" in d for d in error["details"])

    unknown = api.get("/no/such/route", headers=bearer(admin))
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "RESOURCE_NOT_FOUND"

    malformed = api.post("/auth/login", content=b"{not json", headers={"content-type": "application/json"})
    assert malformed.status_code == 400 and malformed.json()["error"]["code"] == "VALIDATION_ERROR"

    missing = api.get(f"/users/{uuid.uuid4()}", headers=bearer(admin))
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "RESOURCE_NOT_FOUND"

    name = f"Dup {uuid.uuid4().hex[:6]}"
    first = api.post("/organizations", json={"name": name, "kind": "CRO"}, headers=bearer(admin))
    assert first.status_code == 201
    duplicate = api.post("/organizations", json={"name": name, "kind": "CRO"}, headers=bearer(admin))
    assert duplicate.status_code == 409 and duplicate.json()["error"]["code"] == "RESOURCE_CONFLICT"

    _, pharma_admin = new_org(api, admin)
    forbidden = api.post("/organizations", json={"name": "Nope", "kind": "CRO"},
                         headers=bearer(pharma_admin))
    assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "AUTHORIZATION_ERROR"

    self_delete = api.delete(f"/users/{pharma_admin['user']['id']}", headers=bearer(pharma_admin))
    assert self_delete.status_code == 409 and self_delete.json()["error"]["code"] == "RESOURCE_CONFLICT"


def test_lists_use_the_paged_envelope(api: httpx.Client, admin: dict) -> None:
    response = api.get("/organizations", params={"page": 1, "page_size": 2}, headers=bearer(admin))
    body = response.json()
    assert response.status_code == 200
    assert body["meta"]["page"] == 1 and body["meta"]["page_size"] == 2 and int(body["meta"]["total"]) >= 1
    assert len(body["data"]) <= 2
    too_big = api.get("/organizations", params={"page_size": 1000}, headers=bearer(admin))
    assert too_big.status_code == 400


def test_refresh_rotates_and_reuse_revokes_the_family(api: httpx.Client, mesh) -> None:  # type: ignore[no-untyped-def]
    first = login(api, mesh.admin_email, mesh.admin_password)
    second = api.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert second.status_code == 200
    rotated = second.json()["data"]
    assert rotated["refresh_token"] != first["refresh_token"] and rotated["access_token"]
    reuse = api.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert reuse.status_code == 401 and "revoked" in reuse.json()["error"]["message"]
    after = api.post("/auth/refresh", json={"refresh_token": rotated["refresh_token"]})
    assert after.status_code == 401


def test_lockout_after_five_failures(api: httpx.Client, admin: dict) -> None:
    _, org_admin = new_org(api, admin)
    email = org_admin["user"]["email"]
    for _ in range(5):
        assert api.post("/auth/login", json={"email": email, "password": "Wrong-Pass-123!"}).status_code == 401
    locked = api.post("/auth/login", json={"email": email, "password": PASSWORD})
    unknown = api.post("/auth/login", json={"email": f"nobody-{uuid.uuid4().hex[:6]}@e2e.test", "password": PASSWORD})
    # A locked account answers like an unknown email: the answer does not tell which emails exist.
    assert locked.status_code == unknown.status_code == 401
    assert locked.json() == unknown.json()


def test_password_reset_through_smtp(api: httpx.Client, admin: dict, mesh) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    _, org_admin = new_org(api, admin)
    email = org_admin["user"]["email"]
    before = len(mesh.mailbox)
    assert api.post("/auth/password-reset/request", json={"email": email}).status_code == 200
    mail = asyncio.run(mesh.wait_for_mail(email, after=before))
    found = re.search(r"reset token: (\S+)", mail.get_content())
    assert found is not None, mail.get_content()
    token = found.group(1)
    done = api.post("/auth/password-reset/confirm", json={"token": token, "new_password": "Reset-E2e-Pass-7!"})
    assert done.status_code == 200, done.text
    assert login(api, email, "Reset-E2e-Pass-7!")["access_token"]
    again = api.post("/auth/password-reset/confirm", json={"token": token, "new_password": "Other-E2e-Pass-7!"})
    assert again.status_code == 400


def test_mfa_enrolment_and_login(api: httpx.Client, admin: dict) -> None:
    _, org_admin = new_org(api, admin)
    enrolled = api.post("/auth/mfa/enroll", json={}, headers=bearer(org_admin))
    assert enrolled.status_code == 200, enrolled.text
    totp = pyotp.TOTP(enrolled.json()["data"]["secret"])
    confirmed = api.post("/auth/mfa/confirm", json={"code": totp.now()}, headers=bearer(org_admin))
    assert confirmed.status_code == 200 and confirmed.json()["data"]["mfa_enabled"] is True
    challenge = login(api, org_admin["user"]["email"], PASSWORD)
    assert challenge["mfa_required"] is True and not challenge.get("access_token")
    wrong = api.post("/auth/mfa/verify", json={"mfa_token": challenge["mfa_token"], "code": "abcdef"})
    assert wrong.status_code == 401


def test_api_keys_work_as_header_and_bearer_on_both_protocols(api: httpx.Client, stub, admin: dict) -> None:  # type: ignore[no-untyped-def]
    org_id, org_admin = new_org(api, admin)
    created = api.post("/api-keys", json={"name": "LIMS", "roles": ["pharma_scientist"]}, headers=bearer(org_admin))
    assert created.status_code == 201, created.text
    secret = created.json()["data"]["secret"]
    key_id = created.json()["data"]["api_key"]["id"]
    listed = api.get("/api-keys", headers=bearer(org_admin)).json()
    assert "secret" not in str(listed) or secret not in str(listed)
    for headers in ({"x-api-key": secret}, {"authorization": f"Bearer {secret}"}):
        users = api.get("/users", headers=headers)
        assert users.status_code == 200, users.text
        assert {u["organization_id"] for u in users.json()["data"]} == {org_id}
    reply = stub.ListUsers(pb.ListUsersRequest(), metadata=[("x-api-key", secret)])
    assert {u.organization_id for u in reply.data} == {org_id}
    assert api.delete(f"/api-keys/{key_id}", headers=bearer(org_admin)).status_code == 200
    revoked = api.get("/users", headers={"x-api-key": secret})
    assert revoked.status_code == 401


def test_organizations_are_isolated(api: httpx.Client, admin: dict) -> None:
    org_a, admin_a = new_org(api, admin)
    org_b, admin_b = new_org(api, admin, "CRO")
    assert api.get(f"/organizations/{org_a}", headers=bearer(admin_b)).status_code == 404
    assert api.get(f"/users/{admin_a['user']['id']}", headers=bearer(admin_b)).status_code == 404
    assert api.get("/users", params={"organization_id": org_a}, headers=bearer(admin_b)).status_code == 404
    mine = api.get("/users", headers=bearer(admin_b)).json()["data"]
    assert {u["organization_id"] for u in mine} == {org_b}
    orgs = api.get("/organizations", headers=bearer(admin_b)).json()["data"]
    assert [o["id"] for o in orgs] == [org_b]
    audit = api.get("/audit-events", headers=bearer(admin_b)).json()["data"]
    assert all(e["organization_id"] == org_b for e in audit)


def test_idempotent_create_with_request_id(api: httpx.Client, admin: dict) -> None:
    body = {"name": f"Idem {uuid.uuid4().hex[:6]}", "kind": "PHARMA", "request_id": uuid.uuid4().hex}
    first = api.post("/organizations", json=body, headers=bearer(admin)).json()["data"]
    second = api.post("/organizations", json=body, headers=bearer(admin)).json()["data"]
    assert first["id"] == second["id"]


def test_jwks_is_public_raw_json(api: httpx.Client) -> None:
    response = api.get("/auth/jwks")
    assert response.status_code == 200
    keys = response.json()["keys"]
    assert keys and all(k["kty"] == "OKP" and k["alg"] == "EdDSA" and "d" not in k for k in keys)


def eventually(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    """Other services learn of a revocation from the bus, moments after identity."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.05)


def test_removed_rights_end_at_once_on_every_service(api: httpx.Client, admin: dict) -> None:
    _, org_admin = new_org(api, admin)

    def member(roles: list[str]) -> dict:
        email = f"member-{uuid.uuid4().hex[:8]}@e2e.test"
        created = api.post("/users", json={"email": email, "full_name": "Member", "password": PASSWORD,
                                           "roles": roles}, headers=bearer(org_admin))
        assert created.status_code == 201, created.text
        return login(api, email, PASSWORD)

    def molecules_status(headers: dict[str, str]) -> int:
        return api.get("/molecules", headers=headers).status_code

    # A deleted admin: the old access token and the admin's API key stop working on every service.
    leaver = member(["pharma_admin"])
    created = api.post("/api-keys", json={"name": "permanent", "roles": ["pharma_admin"]}, headers=bearer(leaver))
    assert created.status_code == 201, created.text
    key = {"x-api-key": created.json()["data"]["secret"]}
    assert molecules_status(bearer(leaver)) == molecules_status(key) == 200  # the key is now cached there too
    deleted = api.delete(f"/users/{leaver['user']['id']}", headers=bearer(org_admin))
    assert deleted.status_code == 200, deleted.text
    refused = api.get("/users/me", headers=bearer(leaver))
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "AUTHENTICATION_ERROR"
    assert api.post("/api-keys", json={"name": "again"}, headers=bearer(leaver)).status_code == 401
    assert api.get("/users/me", headers=key).status_code == 401
    eventually(lambda: molecules_status(bearer(leaver)) == 401, "the molecule service refuses the old token")
    eventually(lambda: molecules_status(key) == 401, "the molecule service drops the cached API key")

    # A demoted admin cannot create admin keys, with the old token or with a new one.
    demoted = member(["pharma_admin"])
    changed = api.put(f"/users/{demoted['user']['id']}", json={"roles": ["pharma_scientist"]},
                      headers=bearer(org_admin))
    assert changed.status_code == 200, changed.text
    stale = api.post("/api-keys", json={"name": "stale", "roles": ["pharma_admin"]}, headers=bearer(demoted))
    assert stale.status_code == 401
    fresh = login(api, demoted["user"]["email"], PASSWORD)
    assert fresh["user"]["roles"] == ["pharma_scientist"]
    denied = api.post("/api-keys", json={"name": "fresh", "roles": ["pharma_admin"]}, headers=bearer(fresh))
    assert denied.status_code == 403, denied.text
    assert molecules_status(bearer(fresh)) == 200

    # Logout ends the access token at once, on identity and then everywhere.
    leaving = member([])
    assert molecules_status(bearer(leaving)) == 200
    out = api.post("/auth/logout", json={"refresh_token": leaving["refresh_token"]}, headers=bearer(leaving))
    assert out.status_code == 200, out.text
    assert api.get("/users/me", headers=bearer(leaving)).status_code == 401
    eventually(lambda: molecules_status(bearer(leaving)) == 401, "the molecule service refuses a logged-out token")

