"""CSV import jobs against real PostgreSQL and NATS: service layer, worker in-process (real process pool).

Faults with the worker as a real subprocess (kill -9, nats-server restart) are in
test_molecule_import_faults.py.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from molbridge.events.v1.audit_pb2 import AuditRecorded
from molbridge.events.v1.envelope_pb2 import EventEnvelope
from molbridge.events.v1.molecule_pb2 import ImportChunkRequested, ImportFinished, PredictionRequested

from bus import unpack, work_subject
from services.molecule.domain.imports import ImportJob, JobStatus
from services.molecule.service.uploads import upload_object_key
from services.molecule.store.uow import molecule_transactions
from services.molecule.worker.chunks import ChunkWorker, RowPool
from services.runtime.auth import Principal
from services.runtime.errors import (
    AuthorizationError,
    NotFoundError,
    PreconditionError,
    ValidationError,
)
from services.runtime.pagination import PageRequest
from services.runtime.storage import STAGED_TAG, S3Storage
from tests.integration.molecule_imports import (
    ImportWorld,
    csv_bytes,
    import_world,
    molsets_smiles,
    pipeline,
    scientist,
    world_fixture,
)
from tests.integration.s3_server import MotoS3

MIXED_HEADER = ["Structure", "Compound", "IC50 (nM)", "LogP", "custom_batch", "Notes"]
MIXED_MAPPING = {
    "Structure": "smiles",
    "Compound": "name",
    "IC50 (nM)": "ic50",
    "LogP": "logp",
    "custom_batch": "custom_batch",
    "Notes": "ignore",
}
# Row numbers as the file counts them (the blank line is row 17). Expected outcome in the comment.
MIXED_ROWS = [
    ["CC(=O)Oc1ccccc1C(=O)O", "aspirin", "12.5", "1.2", "B1", "ok"],  # 1 registered
    ["Cn1cnc2c1c(=O)n(C)c(=O)n2C", "caffeine", "", "-0.1", "42", ""],  # 2 registered
    ["OCC", "ethanol again", "3", "", "B2", ""],  # 3 merged: the earlier import's CCO
    ["CC(=O)[O-].[Na+]", "sodium acetate", "", "", "B3", "salt"],  # 4 registered as acetic acid
    ["CC(=O)O", "acetic acid", "8", "", "", ""],  # 5 merged into row 4's parent
    ["C[NH3+].[Cl-]", "methylammonium chloride", "", "", "", "charged"],  # 6 registered as CN
    ["CN", "methylamine", "", "", "", ""],  # 7 merged
    ["C1CC", "unclosed", "", "", "", ""],  # 8 rejected
    ["Xy", "no such element", "", "", "", ""],  # 9 rejected
    ["c1cccc1", "bad aromatic", "", "", "", ""],  # 10 rejected
    ["N(C)(C)(C)(C)C", "pentavalent N", "", "", "", ""],  # 11 rejected
    ["", '=HYPERLINK("http://evil.test")', "", "", "", ""],  # 12 rejected: empty SMILES
    ["CCCC", "butane", "2000000", "", "", ""],  # 13 rejected: out of range
    ["CCCCC", "pentane", "abc", "", "", ""],  # 14 rejected: not a number
    ["c1ccccc1", "benzene again", "9", "", "", ""],  # 15 merged: the earlier import's benzene
    ["CC(=O)Oc1ccccc1C(=O)O", "aspirin again", "13", "", "", ""],  # 16 merged: row 1, another chunk
    ["", "", "", "", "", ""],  # 17 blank: skipped, not counted
    ["+SUM(A1)", "formula", "", "", "", ""],  # 18 rejected
    ["CCN(CC)CC", "triethylamine", "", "", "=cmd|' /C calc'!A0", ""],  # 19 registered (custom text kept)
]
REJECTED_ROWS = [8, 9, 10, 11, 12, 13, 14, 18]


@pytest.fixture(scope="session")
def row_pool() -> Iterator[RowPool]:
    pool = RowPool(2)
    yield pool
    pool.close()


world = world_fixture()


async def make_library(world: ImportWorld, owner: Principal, name: str = "Hits") -> str:
    library_id = str(uuid.uuid4())
    await world.execute(
        "INSERT INTO libraries (id, organization_id, owner_id, name) VALUES (:id, :org, :owner, :name)",
        id=library_id,
        org=owner.organization_id,
        owner=owner.subject,
        name=name,
    )
    return library_id


NOT_AUDIT_EVENTS = "SELECT count(*) FROM outbox WHERE subject NOT LIKE '%.audit_recorded'"


async def outbox_events(world: ImportWorld, payload_type: Any) -> list[Any]:
    rows = await world.rows("SELECT payload FROM outbox ORDER BY created_at")
    envelopes = [EventEnvelope.FromString(row.payload) for row in rows]
    return [unpack(e, payload_type) for e in envelopes if e.payload.Is(payload_type.DESCRIPTOR)]


def report_rows(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))


async def test_a_mixed_file_gives_exact_counts_values_and_error_report(
    world: ImportWorld, row_pool: RowPool
) -> None:
    who = scientist()
    library_id = await make_library(world, who)
    async with pipeline(world, row_pool):
        earlier = await world.start(
            who,
            csv_bytes(["smiles", "name", "IC50"], [["c1ccccc1", "benzene", "5"], ["CCO", "ethanol", "7"]]),
            {"smiles": "smiles", "name": "name", "IC50": "ic50"},
        )
        assert (await world.wait(who, earlier.id)).registered == 2
        started = await world.start(
            who,
            csv_bytes(MIXED_HEADER, MIXED_ROWS),
            MIXED_MAPPING,
            library_id=library_id,
            predict=["logd"],
            rows_per_chunk=5,
            filename="mixed batch.csv",
        )
        assert started.status is JobStatus.QUEUED and started.total_rows == 18 and started.chunk_count == 4
        job = await world.wait(who, started.id)

    assert job.status is JobStatus.COMPLETED, job.failure_reason
    assert (job.processed_rows, job.registered, job.merged, job.rejected) == (18, 5, 5, 8)
    assert job.throughput.rows_per_second > 0 and job.throughput.eta_seconds == 0
    assert job.library_id == library_id and job.filename == "mixed batch.csv"
    org = who.organization_id
    assert await world.scalar("SELECT count(*) FROM molecules WHERE organization_id = :o", o=org) == 7
    assert await world.scalar("SELECT count(*) FROM molecule_provenance WHERE job_id = :j", j=job.id) == 10
    assert (
        await world.scalar("SELECT count(*) FROM library_molecules WHERE library_id = :l", l=library_id) == 7
    )

    # The parent is what is stored; the first row's SMILES and name are kept.
    acetic = (
        await world.rows(
            "SELECT smiles, canonical_smiles, name FROM molecules"
            " WHERE organization_id = :o AND formula = 'C2H4O2'",
            o=org,
        )
    )[0]
    assert tuple(acetic) == ("CC(=O)[O-].[Na+]", "CC(=O)O", "sodium acetate")

    def value(name: str, prop: str) -> Any:
        return world.rows(
            """SELECT p.value_num, p.value_text, p.units, p.provenance FROM molecule_properties p
               JOIN molecules m ON m.id = p.molecule_id
               WHERE m.organization_id = :o AND m.name = :n AND p.name = :p AND p.source = 'IMPORTED'""",
            o=org,
            n=name,
            p=prop,
        )

    # A later row (same file, other chunk) and a later file win; provenance says which row.
    [(ic50, _, units, provenance)] = await value("aspirin", "ic50")
    assert (ic50, units, provenance) == (13.0, "nM", {"job_id": job.id, "row": 16})
    [(ic50, _, _, provenance)] = await value("benzene", "ic50")
    assert (ic50, provenance["row"]) == (9.0, 15)
    assert [tuple(v[:2]) for v in await value("caffeine", "custom_batch")] == [(42.0, None)]
    assert [tuple(v[:2]) for v in await value("triethylamine", "custom_batch")] == [
        (None, "=cmd|' /C calc'!A0")
    ]
    calculated = await world.scalar(
        """SELECT count(*) FROM molecule_properties p JOIN molecules m ON m.id = p.molecule_id
           WHERE m.organization_id = :o AND p.source = 'CALCULATED'""",
        o=org,
    )
    assert calculated == 7 * 11

    report = await world.jobs().error_report(who, job.id)
    assert report.filename == "mixed batch-errors.csv" and report.rows == 8
    lines = report_rows(report.data)
    assert lines[0] == ["row", *MIXED_HEADER, "reason"]
    assert [int(line[0]) for line in lines[1:]] == REJECTED_ROWS
    reasons = {int(line[0]): line[-1] for line in lines[1:]}
    assert reasons[8] == "invalid SMILES: unclosed ring"
    assert reasons[9].startswith("invalid SMILES: unknown element 'X'")
    assert reasons[10].startswith("can't kekulize")
    assert reasons[11].startswith("explicit valence for atom # 0 N")
    assert reasons[12] == "empty SMILES"
    assert reasons[13] == "IC50 (nM): out of range for ic50: 2e6 nM (allowed 0–1e6)"
    assert reasons[14] == "IC50 (nM): not a number: 'abc'"
    by_row = {int(line[0]): line for line in lines[1:]}
    assert by_row[12][2] == '\'=HYPERLINK("http://evil.test")'  # formula neutralised
    assert by_row[18][1] == "'+SUM(A1)"
    assert by_row[8][1:7] == MIXED_ROWS[7]  # the original cells

    finished = [e for e in await outbox_events(world, ImportFinished) if e.job_id == job.id]
    assert [(e.status, e.registered, e.merged, e.rejected) for e in finished] == [("completed", 5, 5, 8)]
    [prediction] = await outbox_events(world, PredictionRequested)
    assert prediction.properties == ["logd"] and prediction.reason == f"import:{job.id}"
    assert len(prediction.molecule_ids) == 7 and prediction.requested_by == who.subject
    assert [m.molecule_id for m in prediction.molecules] == list(prediction.molecule_ids)
    assert all(m.smiles for m in prediction.molecules)  # the structures travel to the prediction service

    snapshots = [snapshot async for snapshot in world.jobs().watch_import(who, job.id)]
    assert [(s.status, final) for s, final in snapshots] == [(JobStatus.COMPLETED, True)]


async def test_watch_reports_progress_and_ends_with_a_final_snapshot(
    world: ImportWorld, row_pool: RowPool
) -> None:
    who = scientist()
    rows = [[s] for s in ("CCO", "CCN", "CCC", "c1ccccc1", "CCCl", "CCBr", "CCI", "CCF")]
    job = await world.start(who, csv_bytes(["smiles"], rows), {"smiles": "smiles"}, rows_per_chunk=2)
    snapshots = []

    async def watch() -> None:
        async for snapshot in world.jobs().watch_import(who, job.id, interval=0.02):
            snapshots.append(snapshot)

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.1)
    async with pipeline(world, row_pool):
        await asyncio.wait_for(watcher, 120)
    assert snapshots[0][0].status is JobStatus.QUEUED and not snapshots[0][1]
    assert [final for _, final in snapshots].count(True) == 1 and snapshots[-1][1]
    assert snapshots[-1][0].processed_rows == 8 and snapshots[-1][0].status is JobStatus.COMPLETED
    processed = [s.processed_rows for s, _ in snapshots]
    assert processed == sorted(processed)


async def import_all_or_nothing(
    world: ImportWorld, pool: RowPool, who: Principal, rows: list[list[str]], library_id: str = ""
) -> ImportJob:
    """A reject_all import of (smiles, ic50) rows in chunks of two, run to its end."""
    async with pipeline(world, pool):
        started = await world.start(
            who,
            csv_bytes(["smiles", "ic50"], rows),
            {"smiles": "smiles", "ic50": "ic50"},
            mode="reject_all",
            rows_per_chunk=2,
            library_id=library_id,
        )
        return await world.wait(who, started.id)


async def test_reject_all_registers_nothing_when_any_row_fails(world: ImportWorld, row_pool: RowPool) -> None:
    who = scientist()
    rows = [["CCO", "1"], ["CCN", "2"], ["CCC", "3"], ["C1CC", "4"], ["CCCl", "5"], ["CCBr", "abc"]]
    job = await import_all_or_nothing(world, row_pool, who, rows)
    assert job.status is JobStatus.FAILED and job.mode.value == "reject_all"
    assert job.failure_reason == (
        "2 of 6 rows were rejected; in reject_all mode nothing is registered (see the error report)"
    )
    assert (job.processed_rows, job.registered, job.merged, job.rejected) == (6, 0, 0, 2)
    assert await world.scalar("SELECT count(*) FROM molecules") == 0
    assert await world.scalar("SELECT count(*) FROM molecule_properties") == 0
    assert await world.scalar("SELECT count(*) FROM import_chunks WHERE results IS NOT NULL") == 0
    report = report_rows((await world.jobs().error_report(who, job.id)).data)
    assert [line[0] for line in report[1:]] == ["4", "6"]


async def test_reject_all_registers_everything_in_one_go_when_every_row_is_valid(
    world: ImportWorld, row_pool: RowPool
) -> None:
    who = scientist()
    library_id = await make_library(world, who)
    rows = [["CCO", "1"], ["OCC", "2"], ["CCC", "3"], ["CC(=O)[O-].[Na+]", ""], ["CCCl", "5"]]
    job = await import_all_or_nothing(world, row_pool, who, rows, library_id=library_id)
    assert job.status is JobStatus.COMPLETED, job.failure_reason
    assert (job.processed_rows, job.registered, job.merged, job.rejected) == (5, 4, 1, 0)
    assert job.chunks_done == job.chunk_count == 3
    phases = await world.rows(
        "SELECT phase, count(*), sum(processed_rows) FROM import_chunks GROUP BY phase ORDER BY 1"
    )
    assert [tuple(p) for p in phases] == [("register", 3, 5), ("validate", 3, 5)]
    assert await world.scalar("SELECT count(*) FROM import_chunks WHERE results IS NOT NULL") == 0
    assert await world.scalar("SELECT count(*) FROM molecules") == 4
    assert await world.scalar("SELECT count(*) FROM library_molecules") == 4
    [(value, provenance)] = await world.rows(
        """SELECT value_num, provenance FROM molecule_properties p JOIN molecules m ON m.id = p.molecule_id
           WHERE m.canonical_smiles = 'CCO' AND p.name = 'ic50'"""
    )
    assert (value, provenance["row"]) == (2.0, 2)


async def test_a_redelivered_chunk_changes_nothing(world: ImportWorld, row_pool: RowPool) -> None:
    who = scientist()
    rows = [
        ["CCO", "a"],
        ["OCC", "b"],
        ["C1CC", "c"],
        ["CCN", "d"],
        ["CCO", "e"],
        ["c1ccccc1", "f"],
        ["", "g"],
    ]
    job = await world.start(
        who, csv_bytes(["smiles", "name"], rows), {"smiles": "smiles", "name": "name"}, rows_per_chunk=3
    )
    # The chunk messages as the relay would publish them; no bus here: the handler is called directly.
    stored = await world.rows(
        "SELECT subject, payload FROM outbox WHERE subject NOT LIKE '%.audit_recorded' ORDER BY created_at"
    )  # the upload's and the import's audit events aside
    assert {row.subject for row in stored} == {work_subject(world.queue)}
    requests = [unpack(EventEnvelope.FromString(row.payload), ImportChunkRequested) for row in stored]
    worker = ChunkWorker(molecule_transactions(world.engine), world.storage, row_pool, queue=world.queue)

    async def snapshot() -> tuple[Any, ...]:
        return (
            await world.scalar("SELECT count(*) FROM molecules"),
            await world.scalar("SELECT count(*) FROM molecule_properties"),
            await world.scalar("SELECT count(*) FROM molecule_provenance"),
            await world.scalar("SELECT count(*) FROM import_rejections"),
            await world.scalar("SELECT count(*) FROM outbox"),
            tuple(
                await world.rows(
                    "SELECT processed_rows, registered, merged, rejected, chunks_done, status"
                    " FROM import_jobs"
                )
            ),
        )

    await worker.process(requests[0])
    after_first = await snapshot()
    await worker.process(requests[0])  # redelivered after it committed
    assert await snapshot() == after_first
    await asyncio.gather(worker.process(requests[1]), worker.process(requests[1]))  # two copies at once
    for request in requests[2:]:
        await worker.process(request)
    done = await snapshot()
    for request in requests:  # everything again, the job being complete
        await worker.process(request)
    assert await snapshot() == done
    finished = await world.jobs().get_import(who, job.id)
    assert finished.status is JobStatus.COMPLETED
    assert (finished.processed_rows, finished.registered, finished.merged, finished.rejected) == (7, 3, 2, 2)
    # Redeliveries burned no registration number; each file name is an alias of its molecule.
    numbers = await world.rows("SELECT registration_number FROM molecules ORDER BY 1")
    assert [n for (n,) in numbers] == ["MOL-000001", "MOL-000002", "MOL-000003"]
    assert await world.scalar("SELECT next_value FROM registration_counters") == 4
    aliases = await world.rows(
        "SELECT a.alias, m.canonical_smiles FROM molecule_aliases a JOIN molecules m ON m.id = a.molecule_id"
        " ORDER BY 1"
    )
    assert [tuple(a) for a in aliases] == [("a", "CCO"), ("b", "CCO"), ("d", "CCN"), ("e", "CCO"), ("f", "c1ccccc1")]


async def test_start_import_refuses_bad_requests_by_name(world: ImportWorld) -> None:
    who = scientist()
    content = csv_bytes(["smiles", "IC50"], [["CCO", "1"]])
    upload = await world.upload(who, content)
    jobs = world.jobs()

    async def refused(mapping: dict[str, str], **options: Any) -> ValidationError:
        arguments = {"mode": "", "library_id": "", "predict": ()} | options
        with pytest.raises(ValidationError) as error:
            await jobs.start_import(
                who,
                upload.storage_key,
                mapping,
                arguments["mode"],
                arguments["library_id"],
                arguments["predict"],
                "",
            )
        return error.value

    assert "no column is mapped to smiles" in (await refused({"IC50": "ic50"})).message
    assert 'unknown target "potency"' in (await refused({"smiles": "smiles", "IC50": "potency"})).message
    assert '"Nope" is not a column' in (await refused({"smiles": "smiles", "Nope": "ic50"})).message
    assert "unknown mode" in (await refused({"smiles": "smiles"}, mode="everything")).message
    assert "cannot predict 'tpsa'" in (await refused({"smiles": "smiles"}, predict=["tpsa"])).message
    duplicated = await world.upload(who, b"smiles,SMILES\nCCO,CCO\n")
    with pytest.raises(ValidationError) as error:
        await jobs.start_import(who, duplicated.storage_key, {"smiles": "smiles"}, "", "", (), "")
    assert error.value.detail == "DUPLICATE_COLUMNS"
    header_only = await world.upload(who, b"smiles,name\n")
    with pytest.raises(ValidationError) as error:
        await jobs.start_import(who, header_only.storage_key, {"smiles": "smiles"}, "", "", (), "")
    assert error.value.detail == "NO_DATA_ROWS"
    # Another organization's upload or library does not exist for the caller.
    stranger = scientist()
    with pytest.raises(NotFoundError):
        await jobs.start_import(stranger, upload.storage_key, {"smiles": "smiles"}, "", "", (), "")
    foreign_library = await make_library(world, stranger)
    with pytest.raises(NotFoundError):
        await jobs.start_import(who, upload.storage_key, {"smiles": "smiles"}, "", foreign_library, (), "")
    with pytest.raises(AuthorizationError):  # an auditor reads, it does not import
        await jobs.start_import(
            scientist(who.organization_id, "auditor"),
            upload.storage_key,
            {"smiles": "smiles"},
            "",
            "",
            (),
            "",
        )
    assert await world.scalar("SELECT count(*) FROM import_jobs") == 0
    assert await world.scalar(NOT_AUDIT_EVENTS) == 0  # (each upload's own audit event aside)


async def test_a_retried_start_with_the_same_request_id_is_one_job(world: ImportWorld) -> None:
    who = scientist()
    upload = await world.upload(who, csv_bytes(["smiles"], [["CCO"], ["CCN"]]))
    jobs = world.jobs(rows_per_chunk=1)
    first = await jobs.start_import(who, upload.storage_key, {"smiles": "smiles"}, "", "", (), "req-1")
    again = await jobs.start_import(who, upload.storage_key, {"smiles": "smiles"}, "", "", (), "req-1")
    assert again.id == first.id
    assert await world.scalar(NOT_AUDIT_EVENTS) == 2  # the chunks of one job
    assert [e.action for e in await outbox_events(world, AuditRecorded)] == ["upload.stored", "import.started"]


async def test_jobs_are_visible_only_inside_their_organization(world: ImportWorld) -> None:
    who = scientist()
    colleague = scientist(who.organization_id)
    stranger = scientist()
    system_admin = scientist(None, "system_admin")
    jobs = world.jobs()
    job = await world.start(who, csv_bytes(["smiles"], [["CCO"]]), {"smiles": "smiles"})
    assert (await jobs.get_import(colleague, job.id)).id == job.id
    for outsider in (stranger, system_admin):
        for call in (jobs.get_import, jobs.cancel_import, jobs.error_report, jobs.error_report_link):
            with pytest.raises(NotFoundError):
                await call(outsider, job.id)
        with pytest.raises(NotFoundError):
            await anext(jobs.watch_import(outsider, job.id))
        assert await jobs.list_imports(outsider, PageRequest.of(1, 10)) == ([], 0)
    with pytest.raises(NotFoundError):
        await jobs.get_import(who, "not-a-uuid")
    listed, total = await jobs.list_imports(colleague, PageRequest.of(1, 10))
    assert total == 1 and [j.id for j in listed] == [job.id]


async def test_cancel_stops_the_job_and_its_remaining_chunks(world: ImportWorld, row_pool: RowPool) -> None:
    who = scientist()
    rows = [[s] for s in ("CCO", "CCN", "CCC", "CCCl", "CCBr", "CCI")]
    job = await world.start(who, csv_bytes(["smiles"], rows), {"smiles": "smiles"}, rows_per_chunk=1)
    jobs = world.jobs()
    with pytest.raises(AuthorizationError):  # a colleague may watch it, not stop it
        await jobs.cancel_import(scientist(who.organization_id), job.id)
    cancelled = await jobs.cancel_import(who, job.id)
    assert cancelled.status is JobStatus.CANCELLED and cancelled.finished_at is not None
    assert (await jobs.cancel_import(scientist(who.organization_id, "pharma_admin"), job.id)).status is (
        JobStatus.CANCELLED
    )
    async with pipeline(world, row_pool) as (_, consumer):
        while consumer.acked < 6:  # every chunk is taken and dropped
            await asyncio.sleep(0.05)
    assert await world.scalar("SELECT count(*) FROM molecules") == 0
    assert await world.scalar("SELECT count(*) FROM import_chunks") == 0
    finished = [e.status for e in await outbox_events(world, ImportFinished)]
    assert finished == ["cancelled"]
    done = await world.start(who, csv_bytes(["smiles"], [["CCO"]]), {"smiles": "smiles"})
    async with pipeline(world, row_pool):
        assert (await world.wait(who, done.id)).status is JobStatus.COMPLETED
    with pytest.raises(PreconditionError):
        await jobs.cancel_import(who, done.id)


async def test_a_poison_chunk_fails_its_job_and_the_worker_goes_on(
    world: ImportWorld, row_pool: RowPool
) -> None:
    who = scientist()
    content = csv_bytes(["smiles"], [[s] for s in ("CCO", "CCN", "CCC", "CCCl")])
    # The file changed after planning: the chunk's byte range no longer holds its rows.
    changed = await world.start(who, content, {"smiles": "smiles"}, rows_per_chunk=2)
    await world.storage.put_bytes(upload_object_key(who.organization_id, changed.storage_key), b"smiles\nC\n")
    # The file is gone.
    gone = await world.start(who, content, {"smiles": "smiles"}, rows_per_chunk=2)
    await world.storage.delete(upload_object_key(who.organization_id, gone.storage_key))
    async with pipeline(world, row_pool):
        changed_job = await world.wait(who, changed.id)
        gone_job = await world.wait(who, gone.id)
        fine = await world.start(who, content, {"smiles": "smiles"}, rows_per_chunk=2)
        assert (await world.wait(who, fine.id)).status is JobStatus.COMPLETED
    assert changed_job.status is JobStatus.FAILED
    assert changed_job.failure_reason.startswith(
        "chunk 1 (rows 1–2): "
    ) or changed_job.failure_reason.startswith("chunk 2 (rows 3–4): ")
    assert "the file changed" in changed_job.failure_reason
    assert gone_job.status is JobStatus.FAILED
    assert gone_job.failure_reason.endswith("the uploaded file is no longer in storage")
    statuses = sorted(e.status for e in await outbox_events(world, ImportFinished))
    assert statuses == ["completed", "failed", "failed"]


async def test_a_chemistry_process_that_dies_is_replaced_and_its_chunk_retried(world: ImportWorld) -> None:
    who = scientist()
    smiles = molsets_smiles(1500)
    pool = RowPool(2)  # its own: this one gets broken
    try:
        await pool.warm()
        job = await world.start(who, csv_bytes(["smiles"], [[s] for s in smiles]), {"smiles": "smiles"})
        async with pipeline(world, pool) as (_, consumer):
            await world.until(who, job.id, lambda j: j.status is JobStatus.PROCESSING)
            os.kill(pool.pids()[0], signal.SIGKILL)  # as a crash inside RDKit would
            done = await world.wait(who, job.id)
            assert consumer.nakked >= 1
    finally:
        pool.close()
    assert done.status is JobStatus.COMPLETED, done.failure_reason
    assert (done.processed_rows, done.registered + done.merged, done.rejected) == (1500, 1500, 0)
    assert await world.scalar("SELECT count(*) FROM molecules") == done.registered
    assert await world.scalar("SELECT count(*) FROM molecule_provenance") == 1500


async def test_a_chunk_that_keeps_failing_fails_its_job_after_the_last_delivery(
    world: ImportWorld, row_pool: RowPool
) -> None:
    who = scientist()
    job = await world.start(who, csv_bytes(["smiles"], [["CCO"]]), {"smiles": "smiles"})
    # A job row no worker can use (its mapping names a column the file does not have).
    await world.execute('UPDATE import_jobs SET mapping = \'{"nope": "smiles"}\' WHERE id = :id', id=job.id)
    async with pipeline(world, row_pool, max_deliver=2, backoff=(0.1,)) as (_, consumer):
        failed = await world.wait(who, job.id)
        assert consumer.nakked == 1
    assert failed.status is JobStatus.FAILED
    assert failed.failure_reason.startswith("chunk 1 (rows 1–1): failed 2 times, last with KeyError")


async def test_an_import_through_s3_with_a_presigned_error_report(
    database_url: str, nats_server: Any, tmp_path: Path, row_pool: RowPool
) -> None:
    with MotoS3(tmp_path / "moto.log") as s3:
        storage = S3Storage(f"imports-{uuid.uuid4().hex[:8]}", endpoint_url=s3.url, **s3.credentials)
        storage.create_bucket_if_missing()
        async with (
            import_world(database_url, nats_server.url, tmp_path, storage) as world,
            pipeline(world, row_pool),
        ):
            who = scientist()
            rows = [["CCO", "1"], ["C1CC", "2"], ["CCN", "-3"], ["c1ccccc1", "4"]]
            imported = await world.upload(who, csv_bytes(["smiles", "ic50"], rows), "molecules.csv")
            staged = await world.upload(who, csv_bytes(["smiles"], [["CCO"]]), "never-imported.csv")
            job = await world.jobs(2).start_import(
                who, imported.storage_key, {"smiles": "smiles", "ic50": "ic50"}, "keep_valid", "", (), ""
            )
            done = await world.wait(who, job.id)
            link = await world.jobs().error_report_link(who, job.id)
        assert (done.status, done.registered, done.rejected) == (JobStatus.COMPLETED, 2, 2)

        def tags(key: str) -> list[dict[str, str]]:
            return list(s3.client().get_object_tagging(Bucket=storage.bucket, Key=key)["TagSet"])

        # The bucket's lifecycle expires staged uploads (storage.lifecycle_rules); an imported one is kept.
        assert tags(staged.object_key) == [{"Key": STAGED_TAG[0], "Value": STAGED_TAG[1]}]
        assert tags(imported.object_key) == []
        assert link.url.startswith(s3.url) and link.expires_at is not None
        async with httpx.AsyncClient() as client:
            reply = await client.get(link.url)
        assert reply.status_code == 200
        assert 'filename="molecules-errors.csv"' in reply.headers["content-disposition"]
        assert [line[0] for line in report_rows(reply.content)] == ["row", "2", "3"]


async def test_error_report_link_points_at_the_api_when_storage_cannot_sign(world: ImportWorld) -> None:
    who = scientist()
    job = await world.start(who, csv_bytes(["smiles"], [["CCO"]]), {"smiles": "smiles"})
    link = await world.jobs().error_report_link(who, job.id)
    assert link.url == f"http://gw.test/api/v1/molecules/imports/{job.id}/errors" and link.expires_at is None
    report = await world.jobs().error_report(who, job.id)
    assert report_rows(report.data) == [["row", "smiles", "reason"]] and report.rows == 0
