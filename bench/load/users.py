"""The virtual users: what scientists and both sides of a submission do in a day, each action chosen by
weight with a think time between actions (1-3 s, as a person reads the page). Every request carries its
own W3C traceparent, so a slow one can be looked up in the span files afterwards."""

from __future__ import annotations

import asyncio
import csv
import io
import random
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.load.seed import Account, PharmaOrg, World
from bench.load.stats import Sample

THINK_S = (1.0, 3.0)
POLL_S = 1.0  # a page watching an import or a prediction job asks again every second
WATCH_LIMIT_S = 60.0
UPLOAD_ROWS = 20
PREDICTED = 100  # molecules per prediction request
SORT_KEYS = ("name", "created_at", "ic50", "solubility", "registration_number")
SUBSTRUCTURES = ("c1ccccc1", "C(=O)N", "c1ccncc1", "[#7]C(=O)[#8]", "S(=O)(=O)N", "c1ccc2ncsc2c1")
IMPORT_DONE = ("completed", "failed", "cancelled")


@dataclass
class Recorder:
    """The samples of a phase, and the HTTP client the users share."""

    client: httpx.AsyncClient
    samples: list[Sample] = field(default_factory=list)

    async def call(
        self, method: str, route: str, url: str, account: Account, *, expect: Sequence[int] = (200,), **kwargs: Any
    ) -> Any:
        """The request's `data` (or whole JSON body without one); None when it failed (and is counted)."""
        trace_id = secrets.token_hex(16)
        headers = {**account.headers, "traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}
        started, began = time.time(), time.perf_counter()
        status, body = 0, None
        try:
            response = await self.client.request(method, url, headers=headers, **kwargs)
            status = response.status_code
            if status in expect and response.headers.get("content-type", "").startswith("application/json"):
                body = response.json()
        except httpx.HTTPError:
            pass
        ok = status in expect
        self.samples.append(Sample(route, started, (time.perf_counter() - began) * 1000, status, ok, trace_id))
        if not ok:
            return None
        return body.get("data", body) if isinstance(body, dict) else True


Action = Callable[[], Awaitable[None]]


class VirtualUser:
    """Picks weighted actions until cancelled."""

    def __init__(self, recorder: Recorder, account: Account, rng: random.Random) -> None:
        self.http, self.account, self.rng = recorder, account, rng

    def actions(self) -> list[tuple[Action, int]]:
        raise NotImplementedError

    async def run(self) -> None:
        actions = self.actions()
        chosen = [a for a, _ in actions]
        weights = [w for _, w in actions]
        while True:
            await self.rng.choices(chosen, weights)[0]()
            await asyncio.sleep(self.rng.uniform(*THINK_S))

    async def call(self, method: str, route: str, url: str, **kwargs: Any) -> Any:
        return await self.http.call(method, route, url, self.account, **kwargs)


class Scientist(VirtualUser):
    """Browses, filters, searches and opens molecules; now and then uploads a small CSV and watches the
    import, or asks for predictions of 100 molecules and watches the job."""

    def __init__(self, recorder: Recorder, account: Account, rng: random.Random, org: PharmaOrg, world: World) -> None:
        super().__init__(recorder, account, rng)
        self.org, self.world = org, world

    def actions(self) -> list[tuple[Action, int]]:
        return [(self.browse, 10), (self.filter, 5), (self.open_molecule, 8), (self.similar, 3),
                (self.substructure, 2), (self.upload_csv, 1), (self.predict, 1)]

    async def browse(self) -> None:
        params = {"page": self.rng.randint(1, 20), "page_size": 25, "sort_by": self.rng.choice(SORT_KEYS),
                  "sort_desc": self.rng.choice(("true", "false"))}
        await self.call("GET", "GET /molecules", "/molecules", params=params)

    async def filter(self) -> None:
        body = {"filters": [{"property": "ic50", "operator": "lt", "value": self.rng.uniform(10, 5000)},
                            {"property": "solubility", "operator": "gt", "value": self.rng.uniform(0, 50)}],
                "sort_by": "ic50", "page_size": 25}
        await self.call("POST", "POST /molecules/filter", "/molecules/filter", json=body)

    async def open_molecule(self) -> None:
        molecule_id = self.rng.choice(self.org.molecule_ids)
        await self.call("GET", "GET /molecules/{id}", f"/molecules/{molecule_id}")
        await self.call("GET", "GET /molecules/{id}/image", f"/molecules/{molecule_id}/image",
                        params={"format": "svg", "width": 300, "height": 200})

    async def similar(self) -> None:
        body = {"smiles": self.rng.choice(self.world.smiles), "threshold": 0.6, "limit": 20}
        await self.call("POST", "POST /molecules/search/similarity", "/molecules/search/similarity", json=body)

    async def substructure(self) -> None:
        body = {"smarts": self.rng.choice(SUBSTRUCTURES), "limit": 20}
        await self.call("POST", "POST /molecules/search/substructure", "/molecules/search/substructure", json=body)

    async def upload_csv(self) -> None:
        out = io.StringIO(newline="")
        writer = csv.writer(out)
        writer.writerow(["smiles", "ic50_nm"])
        for smiles in self.rng.sample(self.world.fresh_smiles, UPLOAD_ROWS):
            writer.writerow([smiles, f"{self.rng.uniform(1, 1000):.1f}"])
        stored = await self.call("POST", "POST /molecules/upload/csv", "/molecules/upload/csv", expect=(201,),
                                 files={"file": ("mine.csv", out.getvalue().encode(), "text/csv")})
        if not stored:
            return
        mapping = {"smiles": "smiles", "ic50_nm": "ic50"}
        body = {"mapping": mapping, "mode": "keep_valid", "request_id": uuid.uuid4().hex}
        job = await self.call("POST", "POST /molecules/upload/csv/{key}/import",
                              f"/molecules/upload/csv/{stored['storage_key']}/import", expect=(201,), json=body)
        await self._watch(job, "GET /molecules/imports/{id}", "/molecules/imports/{}", "job_id", IMPORT_DONE)

    async def predict(self) -> None:
        ids = self.rng.sample(self.org.molecule_ids, min(PREDICTED, len(self.org.molecule_ids)))
        job = await self.call("POST", "POST /predictions", "/predictions", expect=(200, 201, 202),
                              json={"molecule_ids": ids, "properties": ["logp", "solubility"]})
        done = await self._watch(job, "GET /predictions/{id}/status", "/predictions/{}/status", "job_id",
                                 ("completed", "failed"))
        if done:
            await self.call("GET", "GET /predictions/{id}/results", f"/predictions/{job['job_id']}/results",
                            params={"page_size": 100})

    async def _watch(self, job: Any, route: str, url: str, key: str, terminal: Sequence[str]) -> bool:
        """Polls like an open page until the job ends; True once it completed."""
        if not job:
            return False
        deadline = time.monotonic() + WATCH_LIMIT_S
        while time.monotonic() < deadline:
            await asyncio.sleep(POLL_S)
            found = await self.call("GET", route, url.format(job[key]))
            if found and found["status"] in terminal:
                return bool(found["status"] == "completed")
        return False


class Messenger(VirtualUser):
    """One side of the IN_PROGRESS submission (a pharma scientist or a CRO technician): reads the thread,
    checks the unread counts, answers, marks the thread read."""

    def __init__(self, recorder: Recorder, account: Account, rng: random.Random, submission_id: str) -> None:
        super().__init__(recorder, account, rng)
        self.thread = f"/submissions/{submission_id}/messages"

    def actions(self) -> list[tuple[Action, int]]:
        return [(self.post, 2), (self.read_thread, 4), (self.unread, 4), (self.mark_read, 1)]

    async def post(self) -> None:
        text = f"{self.account.role}: update {self.rng.randint(1, 10_000)} on the samples"
        await self.call("POST", "POST /submissions/{id}/messages", self.thread, expect=(201,),
                        json={"text": text, "request_id": uuid.uuid4().hex})

    async def read_thread(self) -> None:
        await self.call("GET", "GET /submissions/{id}/messages", self.thread, params={"page_size": 50})

    async def unread(self) -> None:
        await self.call("GET", "GET /messages/unread-counts", "/messages/unread-counts")

    async def mark_read(self) -> None:
        await self.call("POST", "POST /submissions/{id}/messages/read", f"{self.thread}/read", json={})


def cast(recorder: Recorder, world: World, users: int, seed: int = 1) -> list[VirtualUser]:
    """`users` virtual users: three scientists (of either pharma organization) for every messenger, the
    messengers split between the submission's two sides; accounts are shared round-robin."""
    rng = random.Random(seed)
    cast: list[VirtualUser] = []
    sides = zip(world.pharmas[0].scientists, world.technicians, strict=False)
    messengers = [account for pair in sides for account in pair]  # pharma, CRO, pharma, CRO, …
    for n in range(users):
        user_rng = random.Random(rng.random())
        if n % 4 == 3:
            account = messengers[(n // 4) % len(messengers)]
            cast.append(Messenger(recorder, account, user_rng, world.submission_id))
        else:
            org = world.pharmas[n % 2]
            cast.append(Scientist(recorder, org.scientists[(n // 2) % len(org.scientists)], user_rng, org, world))
    return cast
