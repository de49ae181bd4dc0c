"""What every fault module runs and checks: a CSV import, a prediction job, submission journeys and webhook
deliveries in flight while processes crash, with every answer clients get recorded.

- `Seen` records every answer by the fault running at the time; an answer other than a 2xx or a 503
  SERVICE_UNAVAILABLE with Retry-After is `bad` (so is a timeout: a hang), but for a 502 INTEGRATION_ERROR
  while an external system (the AI engine, a webhook receiver) is the one taken away.
- `PatientClient` is an httpx client that waits as the answers say (Retry-After) and asks again on 502/503:
  the existing REST helpers (cro_rest, molecule_rest) run through it unchanged.
- `Workload.baseline()` runs each piece once with no fault: the oracle the faulted run must equal exactly
  (counts per audit action, notification type, email subject and webhook event type).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg

from tests.conftest import Mesh
from tests.e2e.cro_rest import Parties, new_service, start_experiment
from tests.e2e.molecule_rest import Org, created, data, start_import, upload_file
from tests.e2e.notification_rest import register
from tests.e2e.test_identity_gateway import login
from tests.integration.molecule_imports import csv_bytes, molsets_smiles
from tests.traffic import Traffic
from tests.waiting import eventually
from tests.webhook_receiver import WebhookReceiver

WAIT_S = 180.0  # a bound for a hang; webhook retries back off from 10 s, so recovery takes tens of seconds
RETRY_CAP_S = 1.0  # the client honours Retry-After, capped so that a test does not idle
PREDICTED = ["solubility", "logp"]
PREDICTION_MOLECULES = 1000


@dataclass
class Seen:
    """Every answer clients got, by the fault running at the time (`phase`)."""

    phase: str = "before"
    external: bool = False  # the fault running takes away an external system: 502 is its documented answer
    by_phase: dict[str, Counter[int]] = field(default_factory=dict)
    odd: list[str] = field(default_factory=list)  # every non-2xx: phase, request, status, code
    bad: list[str] = field(default_factory=list)  # what a client must never see
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, request: httpx.Request, response: httpx.Response | None, error: str = "") -> None:
        status = response.status_code if response is not None else 0
        what = f"{self.phase}: {request.method} {request.url.path} -> {status or error}"
        with self.lock:
            self.by_phase.setdefault(self.phase, Counter())[status] += 1
            if response is None:
                self.bad.append(what)
                return
            if status < 300:
                return
            code = _error_code(response)
            self.odd.append(f"{what} {code}")
            allowed = (status == 503 and code == "SERVICE_UNAVAILABLE" and response.headers.get("retry-after")) or (
                status == 502 and code == "INTEGRATION_ERROR" and self.external)
            if not allowed:
                self.bad.append(f"{what} {response.text[:300]}")

    def summary(self) -> dict[str, dict[int, int]]:
        with self.lock:
            return {phase: dict(sorted(counts.items())) for phase, counts in self.by_phase.items()}


def _error_code(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return "(not the error envelope)"


class PatientClient(httpx.Client):
    """Asks again after a 502/503 as its Retry-After says, until WAIT_S; records every answer in `seen`."""

    def __init__(self, base_url: str, seen: Seen) -> None:
        super().__init__(base_url=base_url, timeout=60)
        self.seen = seen

    def request(self, method: str, url: Any, **kwargs: Any) -> httpx.Response:  # type: ignore[override]
        deadline = time.monotonic() + WAIT_S
        while True:
            request = self.build_request(method, url, **{k: v for k, v in kwargs.items()
                                                           if k not in ("follow_redirects", "auth")})
            try:
                response = self.send(request)
            except httpx.TimeoutException as error:
                self.seen.record(request, None, f"timeout (a hang): {error!r}")
                raise
            self.seen.record(request, response)
            if response.status_code not in (502, 503) or time.monotonic() > deadline:
                return response
            time.sleep(min(float(response.headers.get("retry-after") or 1), RETRY_CAP_S))


@dataclass
class Fault:
    """One fault as the report shows it: how long it lasted and how soon every probe answered 2xx again."""

    name: str
    down_s: float = 0.0
    recovered_s: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)


class Journeys:
    """Submission journeys (two molecules, documents signed, SUBMIT → … → IN_PROGRESS) one after another in
    a thread until stopped; the one under way when stopped is finished."""

    def __init__(self, start: Callable[[str], tuple[str, list[str]]]) -> None:
        self.start = start
        self.done: list[tuple[str, list[str]]] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.done.append(self.start(f"Fault journey {len(self.done) + 1}"))
        except BaseException as error:  # noqa: BLE001 (re-raised by the test thread)
            self.errors.append(error)

    def __enter__(self) -> Journeys:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=WAIT_S * 4)
        assert not self._thread.is_alive(), "a submission journey hangs"
        if self.errors:
            raise self.errors[0]


class Database:
    """Read-only checks straight in the stack's PostgreSQL (every schema)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url) as connection:
            return list(connection.execute(sql, params).fetchall())

    def scalar(self, sql: str, *params: Any) -> Any:
        return self.rows(sql, *params)[0][0]


@dataclass
class ImportFile:
    rows: list[tuple[str, str, float]]  # SMILES, name, solubility

    @classmethod
    def molsets(cls, count: int) -> ImportFile:
        return cls([(s, f"fault-{i}", round((i % 997) / 10, 1)) for i, s in enumerate(molsets_smiles(count))])

    def content(self) -> bytes:
        return csv_bytes(["SMILES", "Name", "Solubility"], [[s, n, str(v)] for s, n, v in self.rows])


MAPPING = {"SMILES": "smiles", "Name": "name", "Solubility": "solubility"}


class Workload:
    """The organizations, the receiver and the pieces of work of one fault module."""

    def __init__(self, mesh: Mesh, receiver: WebhookReceiver, rows: int) -> None:
        self.mesh = mesh
        self.receiver = receiver
        self.seen = Seen()
        self.api = PatientClient(mesh.gateway_url + "/api/v1", self.seen)
        self.db = Database(mesh.database_url)
        self.file = ImportFile.molsets(rows)
        self.admin = login(self.api, mesh.admin_email, mesh.admin_password)
        self.parties = Parties(self.api, self.admin)
        self.clean_org = Org.create(self.api, self.admin)  # the clean import's, and the predictions'
        self.import_org = Org.create(self.api, self.admin)  # the faulted import's
        self._journey_smiles = iter(molsets_smiles(rows + 2000)[rows:])  # two new structures per journey
        self.webhooks = [register(self.api, self.parties.cro.headers, receiver)["id"]]
        secrets = list(receiver.secrets)
        self.webhooks.append(register(self.api, self.parties.pharma.headers, receiver)["id"])
        receiver.secrets += secrets
        self.faults: list[Fault] = []
        self.prediction_job = ""
        self.traffic: Traffic | None = None  # the readers, while the faults run

    # ------------------------------------------------------------------ the pieces of work

    def start_import(self, headers: dict[str, str]) -> str:
        stored = upload_file(self.api, headers, self.file.content(), "faults.csv")
        return str(start_import(self.api, headers, stored["storage_key"], MAPPING)["job_id"])

    def wait_import(self, headers: dict[str, str], job_id: str) -> dict:
        return dict(eventually(lambda: (job := data(self.api.get(f"/molecules/imports/{job_id}", headers=headers)))
                               ["status"] in ("completed", "failed", "cancelled") and job,
                               f"import {job_id} ended", WAIT_S))

    def start_prediction(self, molecule_ids: list[str]) -> str:
        queued = self.api.post("/predictions", json={"molecule_ids": molecule_ids, "properties": PREDICTED},
                               headers=self.clean_org.headers)
        return str(created(queued)["job_id"])

    def wait_prediction(self, job_id: str) -> dict:
        def finished() -> dict | None:
            status = data(self.api.get(f"/predictions/{job_id}/status", headers=self.clean_org.headers))
            return dict(status) if status["status"] in ("completed", "failed") else None

        return dict(eventually(finished, f"prediction {job_id} finished", WAIT_S))

    def journey(self, name: str) -> tuple[str, list[str]]:
        """A submission of two new molecules taken to IN_PROGRESS (cro_rest.start_experiment): its id and the
        molecules'."""
        p = self.parties
        service = new_service(self.api, p.cro, name=f"Panel for {name}")
        molecules = created(self.api.post("/molecules/batch", json={"molecules": [
            {"smiles": next(self._journey_smiles)} for _ in range(2)]}, headers=p.scientist_headers))
        ids = [m["molecule_id"] for m in molecules]
        draft = created(self.api.post("/submissions", json={
            "name": name, "cro_service_id": service["id"], "molecules": [{"molecule_id": i} for i in ids],
            "specifications": {"temperature": 37}, "request_id": uuid.uuid4().hex}, headers=p.scientist_headers))
        start_experiment(self.api, p, draft["id"])
        return str(draft["id"]), ids

    def traffic_routes(self) -> list[tuple[str, dict[str, str]]]:
        pharma, cro = self.parties.pharma.headers, self.parties.cro.headers
        routes = [("/users/me", pharma), ("/molecules?page_size=5", pharma), ("/submissions?page_size=5", cro),
                  ("/notifications?page_size=5", pharma), ("/documents?page_size=5", pharma),
                  (f"/webhooks/{self.webhooks[0]}/deliveries", cro)]
        if self.prediction_job:
            routes.append((f"/predictions/{self.prediction_job}/status", self.clean_org.headers))
        return routes

    # ------------------------------------------------------------------ faults

    @contextmanager
    def fault(self, name: str, *, external: bool = False) -> Iterator[Fault]:
        """Runs one fault (the body takes something away and brings it back), then waits until every probe
        answers 2xx again; the answers seen meanwhile are the fault's. `external`: an external system."""
        fault = Fault(name)
        self.seen.phase, self.seen.external = name, external
        began = time.monotonic()
        yield fault
        restored = time.monotonic()
        fault.down_s = round(restored - began, 1)
        traffic = self.traffic
        assert traffic is not None, "faults run while the traffic does"
        eventually(lambda: traffic.last_green > restored, f"every probe 2xx again after {name}", WAIT_S)
        fault.recovered_s = round(traffic.last_green - restored, 1)
        fault.statuses = self.seen.summary().get(name, {})
        self.seen.phase, self.seen.external = "after", False
        self.faults.append(fault)

    def kill_and_restart(self, name: str, down_s: float = 2.0) -> None:
        with self.fault(f"kill -9 {name}"):
            self.mesh.kill(name)
            time.sleep(down_s)
            self.mesh.restart(name)


def molecule_ids(db: Database, organization_id: str, count: int) -> list[str]:
    rows = db.rows("SELECT id::text FROM molecule.molecules WHERE organization_id = %s ORDER BY registration_number "
                   "LIMIT %s", organization_id, count)
    return [r[0] for r in rows]


def audit_counts(db: Database, target_id: str) -> Counter[str]:
    return Counter(r[0] for r in db.rows("SELECT action FROM identity.audit_log WHERE target_id = %s "
                                         "OR details @> jsonb_build_object('submission_id', %s::text)",
                                         target_id, target_id))


def notification_counts(db: Database, submission_id: str) -> Counter[tuple[str, str]]:
    rows = db.rows("SELECT recipient_id, type FROM notification.notifications WHERE submission_id = %s", submission_id)
    return Counter((r[0], r[1]) for r in rows)


def mail_counts(mesh: Mesh, submission_id: str, name: str) -> Counter[tuple[str, str]]:
    counts: Counter[tuple[str, str]] = Counter()
    for message in list(mesh.mailbox):
        text = message.get_body(("plain",))
        if text is not None and submission_id in text.get_content():
            counts[(str(message["To"]), str(message["Subject"]).replace(name, "<name>"))] += 1
    return counts


def webhook_counts(receiver: WebhookReceiver, submission_id: str) -> Counter[str]:
    return Counter(r.json()["type"] for r in receiver.delivered
                   if r.json().get("data", {}).get("submission_id") == submission_id)


# ---------------------------------------------------------------------- the run and its exact checks

@dataclass
class Baseline:
    """What the same work does with no fault: the oracle."""

    import_job: dict
    prediction_job: str
    journey: str
    audit: Counter[str]
    notifications: Counter[tuple[str, str]]
    mails: Counter[tuple[str, str]]
    webhooks: Counter[str]


def settled(w: Workload) -> None:
    """Every outbox row published, every email sent and every webhook delivered; then a pause in which a
    late duplicate would show up."""
    db = w.db
    schemas = [r[0] for r in db.rows("SELECT table_schema FROM information_schema.tables WHERE table_name = 'outbox'")]

    def quiet() -> bool:
        unpublished = sum(db.scalar(f"SELECT count(*) FROM {s}.outbox WHERE published_at IS NULL")  # noqa: S608
                          for s in schemas)
        unsent = db.scalar("SELECT (SELECT count(*) FROM notification.webhook_deliveries WHERE status <> 'DELIVERED')"
                           " + (SELECT count(*) FROM notification.email_deliveries"
                           "    WHERE status IN ('PENDING', 'RETRYING'))")
        return bool(unpublished == 0 and unsent == 0)

    eventually(quiet, "outboxes published, emails sent, webhooks delivered", WAIT_S)
    time.sleep(2.0)
    assert quiet()


def baseline(w: Workload) -> Baseline:
    headers = w.clean_org.headers
    job = w.wait_import(headers, w.start_import(headers))
    assert job["status"] == "completed", job
    ids = molecule_ids(w.db, w.clean_org.id, PREDICTION_MOLECULES)
    prediction = w.start_prediction(ids)
    assert w.wait_prediction(prediction)["status"] == "completed"
    journey, _ = w.journey("Baseline journey")
    settled(w)
    return Baseline(job, prediction, journey, audit_counts(w.db, journey), notification_counts(w.db, journey),
                    mail_counts(w.mesh, journey, "Baseline journey"), webhook_counts(w.receiver, journey))


def run_with_faults(
    w: Workload, faults: Callable[[Workload], None]
) -> tuple[Baseline, dict, list[tuple[str, list[str]]]]:
    """The baseline, then the same work started again and `faults` run while it is in flight; returns the
    baseline, the faulted import job and the journeys' submissions, once everything has settled."""
    clean = baseline(w)
    headers = w.import_org.headers
    import_job = w.start_import(headers)
    w.prediction_job = w.start_prediction(molecule_ids(w.db, w.clean_org.id, PREDICTION_MOLECULES))
    with Traffic(w.mesh.gateway_url + "/api/v1", w.traffic_routes, w.seen.record) as w.traffic, \
            Journeys(w.journey) as journeys:
        eventually(lambda: w.traffic and w.traffic.last_green > 0, "traffic answered")
        faults(w)
    w.traffic = None
    w.seen.phase = "after"
    job = w.wait_import(headers, import_job)
    settled(w)
    return clean, job, journeys.done


def converges(actual: Callable[[], Any], expected: Any, what: str) -> None:
    """`actual()` reaches `expected` (consumers may still be at work once the outboxes are published) and
    still equals it a moment later (a late duplicate would show then)."""
    deadline = time.monotonic() + WAIT_S
    while (found := actual()) != expected and time.monotonic() < deadline:
        time.sleep(0.5)
    assert found == expected, f"{what}: {found} instead of {expected}"
    time.sleep(1.0)
    assert (found := actual()) == expected, f"{what} changed later: {found} instead of {expected}"


def check_import(w: Workload, clean: dict, job: dict) -> None:
    """The faulted import equals the clean one and the CSV: every row once, every molecule once."""
    db, org, rows = w.db, w.import_org.id, len(w.file.rows)
    assert job["status"] == "completed", job
    for key in ("total_rows", "processed_rows", "registered", "merged", "rejected"):
        assert job[key] == clean[key], (key, job, clean)
    assert job["processed_rows"] == rows
    molecules = db.rows("SELECT id::text, inchi_key, name, smiles FROM molecule.molecules WHERE organization_id = %s",
                        org)
    assert len(molecules) == job["registered"] == len({m[1] for m in molecules})
    clean_keys = db.rows("SELECT inchi_key FROM molecule.molecules WHERE organization_id = %s", w.clean_org.id)
    keys = {r[0] for r in clean_keys}
    assert {m[1] for m in molecules} == keys

    provenance = db.rows("SELECT molecule_id::text, original_smiles FROM molecule.molecule_provenance "
                         "WHERE job_id = %s", job["job_id"])
    accepted = rows - job["rejected"]
    assert len(provenance) == accepted == len({p[1] for p in provenance}), "a row stored twice or lost"
    csv_rows = {s: (n, v) for s, n, v in w.file.rows}
    assert {p[1] for p in provenance} <= set(csv_rows)
    per_molecule = Counter(p[0] for p in provenance)
    solubility = dict(db.rows("SELECT p.molecule_id::text, p.value_num FROM molecule.molecule_properties p "
                              "JOIN molecule.molecules m ON m.id = p.molecule_id WHERE m.organization_id = %s "
                              "AND p.name = 'solubility' AND p.source = 'IMPORTED'", org))
    by_id = {m[0]: m for m in molecules}
    for molecule_id, smiles in provenance:
        if per_molecule[molecule_id] == 1:  # a merged structure keeps one of its rows' values
            name, value = csv_rows[smiles]
            assert (by_id[molecule_id][2], by_id[molecule_id][3], solubility[molecule_id]) == (name, smiles, value)

    def calculated(organization_id: str) -> Counter[tuple[str, str, float]]:
        return Counter(db.rows("SELECT m.inchi_key, p.name, p.value_num FROM molecule.molecule_properties p JOIN "
                               "molecule.molecules m ON m.id = p.molecule_id WHERE m.organization_id = %s "
                               "AND p.source = 'CALCULATED'", organization_id))

    assert calculated(org) == calculated(w.clean_org.id)


def check_prediction(w: Workload, clean: Baseline) -> None:
    """Every molecule predicted once per property, with the values the clean job got."""
    status = w.wait_prediction(w.prediction_job)
    assert status["status"] == "completed" and status["completed"] == status["total"] == PREDICTION_MOLECULES
    assert status["failed"] == 0, status

    def results(job_id: str) -> dict[tuple[str, str], float]:
        found = w.db.rows("SELECT molecule_id::text, property, value FROM prediction.results WHERE job_id = %s", job_id)
        return {(r[0], r[1]): r[2] for r in found}

    faulted = results(w.prediction_job)
    assert len(faulted) == PREDICTION_MOLECULES * len(PREDICTED)
    assert faulted == results(clean.prediction_job)

    def told(job_id: str) -> Counter[str]:
        return Counter(r[0] for r in w.db.rows("SELECT type FROM notification.notifications WHERE subject_id = %s",
                                               job_id))

    converges(lambda: told(w.prediction_job), told(clean.prediction_job), f"the notifications of {w.prediction_job}")
    converges(lambda: audit_counts(w.db, w.prediction_job), audit_counts(w.db, clean.prediction_job),
              f"the audit records of prediction {w.prediction_job}")


def check_journeys(w: Workload, clean: Baseline, submissions: list[tuple[str, list[str]]]) -> None:
    """Each submission IN_PROGRESS with exactly the audit records, notifications, emails and webhook events a
    journey without faults has."""
    assert submissions, "no journey finished"
    for index, (submission_id, molecules) in enumerate(submissions, start=1):
        check_journey(w, clean, submission_id, molecules, f"Fault journey {index}")


def check_journey(w: Workload, clean: Baseline, submission_id: str, molecules: list[str], name: str) -> None:
    status = w.db.scalar("SELECT status FROM cro.submissions WHERE id = %s", submission_id)
    assert status == "IN_PROGRESS", (submission_id, status)
    statuses = w.db.rows("SELECT status FROM molecule.molecules WHERE id = ANY(%s::uuid[])", molecules)
    assert [m[0] for m in statuses] == ["TESTING", "TESTING"], (submission_id, statuses)
    converges(lambda: audit_counts(w.db, submission_id), clean.audit, f"audit records of {name}")
    converges(lambda: notification_counts(w.db, submission_id), clean.notifications, f"notifications of {name}")
    converges(lambda: mail_counts(w.mesh, submission_id, name), clean.mails, f"emails of {name}")
    converges(lambda: webhook_counts(w.receiver, submission_id), clean.webhooks, f"webhook events of {name}")


def check_deliveries(w: Workload) -> None:
    """Every webhook delivery row delivered, and received exactly as many times as there are rows for its event
    (one per endpoint): nothing lost, nothing sent twice. No audit record twice."""
    rows = Counter(r[0] for r in w.db.rows("SELECT event_id FROM notification.webhook_deliveries "
                                           "WHERE status = 'DELIVERED' AND NOT test"))
    received = Counter(str(r.json()["id"]) for r in w.receiver.delivered)
    assert received == rows
    twice = w.db.rows("SELECT action, target_id, count(*) FROM identity.audit_log WHERE action NOT LIKE 'auth.%%' "
                      "GROUP BY action, target_id, details HAVING count(*) > 1")
    assert twice == [], twice


def prove(w: Workload, faults: Callable[[Workload], None], module: str) -> None:
    """Runs `faults` under the workload, writes the report, and checks everything exactly."""
    clean, job, journeys = run_with_faults(w, faults)
    report(w, module)
    assert w.seen.bad == [], w.seen.bad
    check_import(w, clean.import_job, job)
    check_prediction(w, clean)
    check_journeys(w, clean, journeys)
    check_deliveries(w)


def report(w: Workload, module: str) -> None:
    """build/faults/<module>.json: each fault, how long it took away its part and how soon every probe was
    2xx again, the answers seen meanwhile; every non-2xx answer."""
    import json
    from pathlib import Path

    out = Path(__file__).resolve().parents[2] / "build" / "faults"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{module}.json").write_text(json.dumps({
        "faults": [vars(f) for f in w.faults], "answers": w.seen.summary(), "non_2xx": w.seen.odd,
        "bad": w.seen.bad}, indent=2, default=str))
