"""The submission package and the NDA's end, on real PostgreSQL and NATS with the real identity, molecule
and document services (the world of test_cro_service.py):

- SUBMIT enqueues the package (its documents' versions and SHA-256 taken with the submitter's
  credentials); the worker's declared subscription, fed by the CRO outbox relay through JetStream,
  writes the canonical manifest to object storage under its hash and takes the system step to
  PENDING_REVIEW, once: a redelivered item changes nothing, and a crash after the storage write (the
  object is there, the database knows nothing) rebuilds the very same bytes.
- The CRO side reads the package blinded (no structures, molecule ids or registration numbers) until the
  structures are revealed; when the NDA expires (the document service's sweep, its DocumentStatusChanged
  relayed from the document outbox) the CRO service hides them again and records it, once.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from molbridge.events.v1.audit_pb2 import AuditRecorded
from molbridge.events.v1.cro_pb2 import SubmissionPackageRequested, SubmissionTransitioned
from molbridge.events.v1.document_pb2 import DocumentStatusChanged

from bus import connect, ensure_streams, event_subject, work_subject
from bus.envelope import build_envelope
from services.cro import worker
from services.cro.domain.submissions import SubmissionMolecule
from services.cro.service.submissions import PACKAGE_QUEUE, ActionInput
from services.cro.store import SCHEMA as CRO_SCHEMA
from services.document.store import SCHEMA as DOCUMENT_SCHEMA
from services.runtime.db import make_engine
from services.runtime.errors import NotFoundError
from services.runtime.process import Outbox, Process, running
from services.runtime.settings import Settings
from tests.integration.test_cro_service import Actor, Parties, World, parties
from tests.integration.test_cro_service import world as cro_world  # noqa: F401  (the module's fixture)
from tests.pdfs import blank_pdf
from tests.waiting import eventually_async as eventually

SPECIFICATIONS = {"temperature": 37, "buffer": "PBS"}
STRUCTURE_FIELDS = {"smiles", "inchi_key", "molecule_id", "registration_number"}


@asynccontextmanager
async def cro_bus(world: World, nats_url: str) -> AsyncIterator[None]:
    """The CRO worker's and server's subscriptions as bootstrap declares them, the CRO outbox relay, and the
    document outbox relay (DocumentStatusChanged reaches the bus as in the mesh)."""
    url = world.cro_engine.url.render_as_string(hide_password=False)
    document_engine = make_engine(url, DOCUMENT_SCHEMA)
    settings = Settings.from_env("cro-test", {"NATS_URL": nats_url, "MOLBRIDGE_CRO_TEST_HEALTH_ADDR": "off"})
    relay = Settings.from_env("document-relay", {"NATS_URL": nats_url, "MOLBRIDGE_DOCUMENT_RELAY_HEALTH_ADDR": "off"})
    cro = Process(
        subscriptions=[*worker.package_subscriptions(world.cro.packages), *world.cro.subscriptions],
        outbox=Outbox(world.cro_engine, CRO_SCHEMA),
    )
    try:
        async with running("cro-test", cro, settings), running(
            "document-relay", Process(outbox=Outbox(document_engine, DOCUMENT_SCHEMA)), relay
        ):
            yield
    finally:
        await document_engine.dispose()



async def upload(world: World, owner: Actor, submission_id: str, document_type: str, expires_on: str = "") -> str:
    async def body() -> AsyncIterator[bytes]:
        yield blank_pdf()

    headers = {
        "x-document-type": document_type,
        "x-document-title": document_type.title(),
        "x-submission-id": submission_id,
        "content-disposition": f'attachment; filename="{document_type.lower()}.pdf"',
    }
    if expires_on:
        headers["x-expires-on"] = expires_on
    return (await world.documents.documents.upload(owner.principal, "application/pdf", body(), headers=headers)).id


async def ready_draft(world: World, p: Parties, *, nda_expires_on: str = "") -> tuple[str, list[str], list[str]]:
    """A DRAFT with two molecules and its documents present and signed: (submission id, molecule ids, document ids)."""
    ids = await world.molecules(p.scientist, "CCO", "c1ccccc1O")
    draft = await world.cro.submissions.create(
        p.scientist.principal, p.scientist.credentials, name="Kinase panel", service_id=p.service_id,
        molecules=[SubmissionMolecule(i, "10 mM in DMSO") for i in ids], specifications=SPECIFICATIONS,
    )
    submission_id = draft.submission.id
    nda = await upload(world, p.scientist, submission_id, "NON_DISCLOSURE_AGREEMENT", nda_expires_on)
    mta = await upload(world, p.scientist, submission_id, "MATERIAL_TRANSFER_AGREEMENT")
    spec = await upload(world, p.scientist, submission_id, "EXPERIMENT_SPECIFICATION")
    for document in (nda, mta):
        await world.signed(p.scientist, document, p.pharma_admin)
    return submission_id, ids, [nda, mta, spec]


async def submit(world: World, p: Parties, submission_id: str) -> None:
    await world.cro.submissions.act(
        p.scientist.principal, p.scientist.credentials, submission_id, ActionInput(action="SUBMIT")
    )


async def status(world: World, p: Parties, submission_id: str) -> str:
    return (await world.cro.submissions.get(p.scientist.principal, submission_id)).submission.status.value


async def package_steps(world: World, submission_id: str) -> list[Any]:
    return [
        e for e in await world.events(SubmissionTransitioned)
        if e.submission_id == submission_id and e.action == "PACKAGE_BUILT"
    ]


async def test_the_worker_builds_the_package_once_and_the_cro_reads_it_blinded(
    cro_world: World, nats_server: Any  # noqa: F811
) -> None:
    world = cro_world
    p = await parties(world)
    submission_id, ids, documents = await ready_draft(world, p)
    async with cro_bus(world, nats_server.url):
        await submit(world, p, submission_id)
        await eventually(lambda: _status_is(world, p, submission_id, "PENDING_REVIEW"))

        # The pharma side: the whole record.
        stored, manifest = await world.cro.submissions.package(p.scientist.principal, submission_id)
        data = await world.cro.storage.get_bytes(stored.storage_key)
        view = await world.cro.submissions.get(p.scientist.principal, submission_id)
        assert hashlib.sha256(data).hexdigest() == stored.sha256 == view.submission.package_sha256
        assert data == json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        assert stored.sha256 in stored.storage_key
        assert manifest["submission"]["id"] == submission_id and manifest["specifications"] == SPECIFICATIONS
        service = {"id": p.service_id, "name": "Kinase binding panel", "service_type": "BINDING_ASSAY"}
        assert manifest["service"] == service
        packaged = [(m["molecule_id"], m["sample_code"], m["smiles"], m["registration_number"])
                    for m in manifest["molecules"]]
        assert packaged == [(m.molecule_id, m.sample_code, m.smiles, m.registration_number) for m in view.molecules]
        assert all(m["inchi_key"] and m["concentration"] == "10 mM in DMSO" for m in manifest["molecules"])
        assert [m["molecule_id"] for m in manifest["molecules"]] == ids
        expected = {}
        for document_id in documents:
            document = await world.documents.documents.get(p.scientist.principal, document_id)
            expected[document_id] = (document.document_type.value, document.current.version, document.current.sha256)
        assert {d["document_id"]: (d["document_type"], d["version"], d["sha256"]) for d in manifest["documents"]} == (
            expected
        )

        # The CRO side: sample codes, formula, weight and specifications, no structures nor pharma identifiers.
        cro_stored, blinded = await world.cro.submissions.package(p.technician.principal, submission_id)
        assert cro_stored.sha256 == stored.sha256
        assert all(not STRUCTURE_FIELDS & set(m) for m in blinded["molecules"])
        assert [m["sample_code"] for m in blinded["molecules"]] == [m.sample_code for m in view.molecules]
        assert all(m["formula"] and m["molecular_weight"] for m in blinded["molecules"])
        assert blinded["specifications"] == SPECIFICATIONS and len(blinded["documents"]) == 3
        with pytest.raises(NotFoundError):
            await world.cro.submissions.package(p.outsider.principal, submission_id)

        # A redelivered work item (a copy JetStream keeps) and a direct rebuild change nothing.
        nats = await connect(nats_server.url)
        try:
            item = SubmissionPackageRequested(submission_id=submission_id)
            envelope = build_envelope(event_id=str(uuid.uuid4()), source="cro", payload=item, occurred_at=_now())
            await nats.jetstream().publish(work_subject(PACKAGE_QUEUE), envelope.SerializeToString())
            await eventually(lambda: _consumed_all(nats, worker.PACKAGE_DURABLE))
        finally:
            await nats.close()
        assert await world.cro.packages.build(item)
        again, _ = await world.cro.submissions.package(p.scientist.principal, submission_id)
        assert again == stored
        assert len(await package_steps(world, submission_id)) == 1
        built = [e for e in await world.events(AuditRecorded)
                 if e.target_id == submission_id and e.action == "submission.package_built"]
        assert [(a.details["from"], a.details["to"]) for a in built] == [("SUBMITTED", "PENDING_REVIEW")]
        assert await status(world, p, submission_id) == "PENDING_REVIEW"


async def test_a_crash_after_the_storage_write_rebuilds_the_same_bytes(cro_world: World, nats_server: Any) -> None:  # noqa: F811
    world = cro_world
    p = await parties(world)
    submission_id, _, _ = await ready_draft(world, p)
    await submit(world, p, submission_id)  # no worker runs: the item waits in the outbox
    # What an attempt that died after its storage write left: the object, and nothing in the database.
    [item] = [i for i in await world.events(SubmissionPackageRequested) if i.submission_id == submission_id]
    assert len(item.documents) == 3
    crashed = await world.cro.packages.prepare(item)
    assert crashed is not None
    await world.cro.storage.put_bytes(crashed.storage_key, crashed.data)
    assert await status(world, p, submission_id) == "SUBMITTED"
    async with cro_bus(world, nats_server.url):
        await eventually(lambda: _status_is(world, p, submission_id, "PENDING_REVIEW"))
    stored, _ = await world.cro.submissions.package(p.scientist.principal, submission_id)
    assert (stored.sha256, stored.storage_key) == (crashed.sha256, crashed.storage_key)
    assert await world.cro.storage.get_bytes(stored.storage_key) == crashed.data
    assert len(await package_steps(world, submission_id)) == 1


async def test_an_expired_nda_hides_the_structures_again(cro_world: World, nats_server: Any) -> None:  # noqa: F811
    world = cro_world
    p = await parties(world)
    expires_on = date.today() + timedelta(days=1)
    submission_id, _, documents = await ready_draft(world, p, nda_expires_on=expires_on.isoformat())
    subs = world.cro.submissions
    async with cro_bus(world, nats_server.url):
        await submit(world, p, submission_id)
        await eventually(lambda: _status_is(world, p, submission_id, "PENDING_REVIEW"))
        await subs.set_structures_revealed(p.scientist.principal, p.scientist.credentials, submission_id, revealed=True)
        _, revealed = await subs.package(p.technician.principal, submission_id)
        assert all(m["smiles"] for m in revealed["molecules"])

        assert await world.documents.documents.expire_due(expires_on + timedelta(days=2)) >= 1  # the sweep
        await eventually(lambda: _blinded(world, p, submission_id))

        _, blinded = await subs.package(p.technician.principal, submission_id)
        assert all(not STRUCTURE_FIELDS & set(m) for m in blinded["molecules"])
        hidden = [e for e in await world.events(AuditRecorded)
                  if e.target_id == submission_id and e.action == "submission.structures_hidden"]
        assert [(a.details["reason"], a.details["document_id"]) for a in hidden] == [("NDA expired", documents[0])]

        # The same DocumentStatusChanged delivered twice more, and the MTA archived: recorded once.
        nats = await connect(nats_server.url)
        try:
            js = nats.jetstream()
            await ensure_streams(js)
            change = DocumentStatusChanged(
                document_id=documents[0], organization_id=p.scientist.org, submission_id=submission_id,
                document_type="NON_DISCLOSURE_AGREEMENT", from_status="SIGNED", to_status="EXPIRED", version=2,
            )
            other = DocumentStatusChanged(
                document_id=documents[1], organization_id=p.scientist.org, submission_id=submission_id,
                document_type="MATERIAL_TRANSFER_AGREEMENT", from_status="SIGNED", to_status="ARCHIVED", version=2,
            )
            for payload in (change, change, other):
                envelope = build_envelope(
                    event_id=str(uuid.uuid4()), source="document", payload=payload,
                    occurred_at=_now(), organization_id=p.scientist.org,
                )
                await js.publish(event_subject("document", DocumentStatusChanged), envelope.SerializeToString())
            await eventually(lambda: _consumed_all(nats, "cro-nda-status", stream="EVENTS"))
        finally:
            await nats.close()
        hidden = [e for e in await world.events(AuditRecorded)
                  if e.target_id == submission_id and e.action == "submission.structures_hidden"]
        assert len(hidden) == 1


# -- helpers ---------------------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


async def _status_is(world: World, p: Parties, submission_id: str, expected: str) -> bool:
    return await status(world, p, submission_id) == expected


async def _blinded(world: World, p: Parties, submission_id: str) -> bool:
    return (await world.cro.submissions.get(p.technician.principal, submission_id)).blinded


async def _consumed_all(nats: Any, durable: str, stream: str = "WORK") -> bool:
    info = await nats.jetstream().consumer_info(stream, durable)
    return bool(info.num_pending == 0 and info.num_ack_pending == 0)

