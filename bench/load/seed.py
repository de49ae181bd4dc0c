"""The load run's world, made through the gateway with the e2e tests' REST helpers: two pharma organizations
and a CRO with several users each, a few thousand molsets molecules imported by CSV into each pharma
organization, and a submission IN_PROGRESS between the first pharma organization and the CRO."""

from __future__ import annotations

import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.ingest import MAPPING, write_csv
from bench.stack import ADMIN_EMAIL, ADMIN_PASSWORD, say
from stack.mesh import Stack
from tests.e2e.cro_rest import Parties, in_progress
from tests.e2e.molecule_rest import TERMINAL, Org, data, start_import, upload_file
from tests.e2e.test_identity_gateway import PASSWORD, login

IMPORT_WAIT_S = 600.0
KNOWN_IDS = 1000  # molecule ids per organization the users pick from (detail, image, predictions)


@dataclass
class Account:
    email: str
    role: str
    headers: dict[str, str]

    def relogin(self, api: httpx.Client) -> None:
        """A fresh access token (they live 15 minutes; a phase starts with one)."""
        self.headers = {"authorization": f"Bearer {login(api, self.email, PASSWORD)['access_token']}"}


@dataclass
class PharmaOrg:
    id: str
    scientists: list[Account]
    molecule_ids: list[str]


@dataclass
class World:
    pharmas: list[PharmaOrg]
    technicians: list[Account]  # of the CRO
    submission_id: str  # IN_PROGRESS between pharmas[0] and the CRO
    smiles: list[str]  # seeded molecules' SMILES (similarity queries)
    fresh_smiles: list[str]  # not yet registered (the users' own small uploads)

    def accounts(self) -> list[Account]:
        return [a for org in self.pharmas for a in org.scientists] + self.technicians


def _account(api: httpx.Client, org: Org, role: str) -> Account:
    session = org.add_user(api, role)
    return Account(str(session["user"]["email"]), role, {"authorization": f"Bearer {session['access_token']}"})


def import_molecules(api: httpx.Client, headers: dict[str, str], smiles: list[str], work: Path) -> None:
    """A CSV of `smiles` (with ic50 and solubility) uploaded and imported; returns once the listing shows them."""
    path = work / f"seed-{uuid.uuid4().hex[:6]}.csv"
    write_csv(path, smiles)
    stored = upload_file(api, headers, path.read_bytes(), path.name)
    job = start_import(api, headers, stored["storage_key"], MAPPING, mode="keep_valid", request_id=uuid.uuid4().hex)
    deadline = time.monotonic() + IMPORT_WAIT_S
    while job["status"] not in TERMINAL:
        if time.monotonic() > deadline:
            raise RuntimeError(f"seed import {job['job_id']} still {job['status']} after {IMPORT_WAIT_S:.0f} s")
        time.sleep(1)
        job = data(api.get(f"/molecules/imports/{job['job_id']}", headers=headers))
    if job["status"] != "completed":
        raise RuntimeError(f"seed import ended {job['status']}: {job.get('failure_reason')}")
    expected = int(job["registered"]) + int(job["merged"])
    while data_total(api, headers) < expected:  # the query index follows the import through the bus
        if time.monotonic() > deadline:
            raise RuntimeError(f"the listing never showed the {expected} imported molecules")
        time.sleep(1)


def data_total(api: httpx.Client, headers: dict[str, str]) -> int:
    response = api.get("/molecules", params={"page_size": 1}, headers=headers)
    response.raise_for_status()
    return int(response.json()["meta"]["total"])


def molecule_ids(api: httpx.Client, headers: dict[str, str], limit: int = KNOWN_IDS) -> list[str]:
    ids: list[str] = []
    page = 1
    while len(ids) < limit:
        rows = data(api.get("/molecules", params={"page": page, "page_size": 100}, headers=headers))
        if not rows:
            break
        ids += [row["id"] for row in rows]
        page += 1
    return ids[:limit]


def seed(stack: Stack, smiles: list[str], *, per_org: int, users_per_org: int) -> World:
    """`smiles` holds at least 2 * per_org + some more (kept for the users' uploads)."""
    began = time.monotonic()
    with httpx.Client(base_url=stack.gateway_url + "/api/v1", timeout=120) as api, \
            tempfile.TemporaryDirectory(prefix="molbridge-load-") as work:
        admin = login(api, ADMIN_EMAIL, ADMIN_PASSWORD)
        parties = Parties(api, admin)  # pharma (+ a scientist), CRO (+ a technician), a second pharma
        orgs = [parties.pharma, parties.outsider]
        scientists = [[_account(api, org, "pharma_scientist") for _ in range(users_per_org)] for org in orgs]
        technicians = [_account(api, parties.cro, "cro_technician") for _ in range(users_per_org)]
        say(f"seed: 3 organizations, {3 * users_per_org} users; importing {per_org:,} molecules into each pharma …")
        for n, org in enumerate(orgs):
            import_molecules(api, org.headers, smiles[n * per_org:(n + 1) * per_org], Path(work))
        say("seed: a submission IN_PROGRESS between the first pharma organization and the CRO …")
        submission_id, _ = in_progress(api, parties, "Load test panel")
        pharmas = [PharmaOrg(org.id, accounts, molecule_ids(api, org.headers))
                   for org, accounts in zip(orgs, scientists, strict=True)]
    say(f"seed: done in {time.monotonic() - began:.0f} s")
    return World(pharmas, technicians, submission_id, smiles[:2 * per_org], smiles[2 * per_org:])
