"""The molecule service's audit trail on a real PostgreSQL (and NATS for the import worker): every change —
registering one molecule or a batch, updating, deleting, flags, the registration prefix, uploads, imports
started, cancelled, completed or failed, predicted values applied — records exactly one AuditRecorded in its
own transaction, with the actor, organization, target and before → after (or a digest); a refused change
records none."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import PurePosixPath

import pytest
from molbridge.events.v1.prediction_pb2 import PredictedValue, PredictionCompleted

from services.molecule.domain.imports import JobStatus
from services.molecule.index.columnar import QueryIndex
from services.molecule.service.molecules import MoleculeService, NewMolecule, PropertyInput
from services.molecule.service.numbering import Numbering
from services.molecule.service.predictions import store_predictions
from services.molecule.store.tables import SCHEMA
from services.molecule.store.uow import molecule_transactions
from services.molecule.worker.chunks import RowPool
from services.runtime.auth import Principal
from services.runtime.errors import ValidationError
from tests.integration.audit_outbox import Audited, audited, audited_actions
from tests.integration.molecule_imports import ImportWorld, csv_bytes, pipeline, scientist, world_fixture

world = world_fixture()
MAPPING = {"Structure": "smiles", "Compound": "name"}


@pytest.fixture(scope="module")
def row_pool() -> Iterator[RowPool]:
    pool = RowPool(1)
    yield pool
    pool.close()


def molecules(world: ImportWorld) -> MoleculeService:
    transactions = molecule_transactions(world.engine)
    return MoleculeService(transactions, QueryIndex(world.engine), Numbering(transactions, None))


async def trail(world: ImportWorld, target_id: str) -> list[Audited]:
    return await audited(world.engine, SCHEMA, "molecule", target_id)


def by(who: Principal, entry: Audited) -> bool:
    return (entry.actor_id, entry.organization_id) == (who.subject, who.organization_id)


async def test_registering_updating_flagging_and_deleting_a_molecule_is_audited(world: ImportWorld) -> None:
    who = scientist()
    service = molecules(world)
    created = await service.create(who, NewMolecule("CCO", "ethanol", [PropertyInput("logp", -0.1)]))
    [entry] = await trail(world, created.id)
    assert (entry.action, entry.event.target_type) == ("molecule.created", "molecule") and by(who, entry)
    assert entry.details == {"outcome": "registered", "name": "ethanol", "smiles": "CCO", "library_id": ""}

    await service.update(who, created.id, name="EtOH", values=[PropertyInput("logp", -0.3)])
    updated = (await trail(world, created.id))[1:]
    assert [e.action for e in updated] == ["molecule.updated"] and by(who, updated[0])
    assert updated[0].details == {
        "name.before": "ethanol", "name.after": "EtOH", "value.logp.before": "-0.1", "value.logp.after": "-0.3",
    }  # fmt: skip

    await service.set_flag(who, created.id, "PRIORITY", "HIGH", "look first")
    await service.delete_flag(who, created.id, "PRIORITY")
    await service.delete_flag(who, created.id, "PRIORITY")  # no flag left: nothing changes, nothing recorded
    await service.delete(who, created.id)
    later = (await trail(world, created.id))[2:]
    assert [e.action for e in later] == ["molecule.flag_set", "molecule.flag_removed", "molecule.deleted"]
    assert all(by(who, e) for e in later)
    assert later[0].details == {"flag_type": "PRIORITY", "level": "HIGH", "notes": "look first"}
    assert later[1].details == {"flag_type": "PRIORITY"}
    assert later[2].details == {"status.before": "AVAILABLE", "status.after": "ARCHIVED"}


async def test_refused_changes_record_nothing(world: ImportWorld) -> None:
    who = scientist()
    service = molecules(world)
    created = await service.create(who, NewMolecule("c1ccccc1", "benzene"))
    with pytest.raises(ValidationError):
        await service.update(who, created.id, values=[PropertyInput("logp", "not a number")])
    with pytest.raises(ValidationError):
        await service.set_flag(who, created.id, "NO_SUCH_FLAG")
    with pytest.raises(ValidationError):
        await service.set_registration_prefix(admin_of(who), "no spaces allowed")
    assert [e.action for e in await trail(world, created.id)] == ["molecule.created"]
    assert await trail(world, who.organization_id) == []


async def test_a_batch_is_one_event_with_a_digest(world: ImportWorld) -> None:
    who = scientist()
    outcomes = await molecules(world).batch_create(
        who, [NewMolecule("CCN"), NewMolecule("CCCN"), NewMolecule("C1CC"), NewMolecule("NCC")]
    )
    ids = [o.molecule_id for o in outcomes if o.molecule_id]
    assert [o.outcome for o in outcomes] == ["registered", "registered", "rejected", "merged"]
    entries = [e for e in await _batches(world) if by(who, e)]
    assert len(entries) == 1 and entries[0].event.target_type == "molecule_batch"
    details = entries[0].details
    assert (details["count"], details["registered"], details["merged"], details["rejected"]) == ("2", "2", "1", "1")
    assert sorted(details["ids"].split(",")) == sorted(set(ids)) and len(details["ids_sha256"]) == 64


async def _batches(world: ImportWorld) -> list[Audited]:
    """Every molecule.batch_created (their targets are fresh batch ids: filtered by actor by the caller)."""
    return await audited_actions(world.engine, SCHEMA, "molecule", "molecule.batch_created")


def admin_of(who: Principal) -> Principal:
    return Principal(str(uuid.uuid4()), who.organization_id, "PHARMA", frozenset({"pharma_admin"}))


async def test_setting_the_registration_prefix_is_audited(world: ImportWorld) -> None:
    admin = admin_of(scientist())
    await molecules(world).set_registration_prefix(admin, "ACME")
    [entry] = await trail(world, admin.organization_id)
    assert (entry.action, entry.event.target_type) == ("registration_prefix.set", "organization") and by(admin, entry)
    assert entry.details == {"prefix.before": "MOL", "prefix.after": "ACME", "origin": "set"}


async def test_uploads_and_imports_are_audited(world: ImportWorld, row_pool: RowPool) -> None:
    who = scientist()
    content = csv_bytes(["Structure", "Compound"], [["CCO", "ethanol"], ["C1CC", "broken"], ["CCCl", "chloro"]])
    upload = await world.upload(who, content, "hits.csv")
    [stored] = await trail(world, upload.storage_key)
    assert (stored.action, stored.event.target_type) == ("upload.stored", "upload") and by(who, stored)
    assert stored.details == {"filename": "hits.csv", "size_bytes": str(len(content)), "content_type": "text/csv"}

    jobs = world.jobs()
    async with pipeline(world, row_pool):
        job = await jobs.start_import(who, upload.storage_key, MAPPING, "keep_valid", "", [], "")
        assert (await world.wait(who, job.id)).status is JobStatus.COMPLETED
    started, completed = await trail(world, job.id)
    assert (started.action, started.event.target_type) == ("import.started", "import") and by(who, started)
    assert started.details == {
        "storage_key": upload.storage_key, "filename": "hits.csv", "mode": "keep_valid", "rows": "3", "chunks": "1",
        "library_id": "", "predict": "",
    }  # fmt: skip
    assert completed.action == "import.completed" and by(who, completed)  # the worker acts for the job's creator
    assert completed.details == {"status": "completed", "registered": "2", "merged": "0", "rejected": "1"}


async def test_a_cancelled_and_a_failed_import_are_audited(world: ImportWorld, row_pool: RowPool) -> None:
    who = scientist()
    admin = admin_of(who)
    content = csv_bytes(["Structure", "Compound"], [["CCO", "ethanol"]])
    cancelled = await world.start(who, content, MAPPING)  # no worker yet: it stays queued
    await world.jobs().cancel_import(admin, cancelled.id)
    await world.jobs().cancel_import(admin, cancelled.id)  # a retried cancel changes nothing
    started, ended = await trail(world, cancelled.id)
    assert started.action == "import.started" and by(who, started)
    assert ended.action == "import.cancelled" and by(admin, ended)
    assert ended.details == {"status": "cancelled", "registered": "0", "merged": "0", "rejected": "0"}

    doomed = await world.start(who, content, MAPPING)
    upload = await world.uploads.get_upload(who, doomed.storage_key)
    (world.data_dir / "objects" / PurePosixPath(upload.object_key)).unlink()  # the file is gone: every read fails
    async with pipeline(world, row_pool, max_deliver=1):
        assert (await world.wait(who, doomed.id)).status is JobStatus.FAILED
    started, failed = await trail(world, doomed.id)
    assert failed.action == "import.failed" and failed.event.outcome == failed.event.FAILURE and by(who, failed)
    assert failed.details["status"] == "failed" and failed.details["reason"].startswith("chunk 1")


async def test_predicted_values_applied_are_audited(world: ImportWorld) -> None:
    who = scientist()
    created = await molecules(world).create(who, NewMolecule("CCCO", "propanol"))
    foreign = str(uuid.uuid4())  # not this organization's: ignored, not in the digest
    job_id = str(uuid.uuid4())
    event = PredictionCompleted(
        organization_id=who.organization_id, job_id=job_id, batch_index=2,
        values=[PredictedValue(molecule_id=m, property="logp", value=0.3, model_name="baseline", model_version="1")
                for m in (created.id, foreign)],
    )  # fmt: skip
    async with molecule_transactions(world.engine)() as uow:
        await store_predictions(uow, event, actor_id=who.subject)
    [entry] = await trail(world, job_id)
    assert (entry.action, entry.event.target_type) == ("molecule.predictions_applied", "prediction_job")
    assert by(who, entry)
    assert {k: v for k, v in entry.details.items() if k != "ids_sha256"} == {
        "batch_index": "2", "values": "1", "count": "1", "ids": created.id,
    }  # fmt: skip
