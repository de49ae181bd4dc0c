"""Imports survive their infrastructure failing: the CSV worker runs as a real subprocess
(`python -m services.molecule.worker`, two chemistry processes) on real molsets structures.

After each fault the job must finish with exactly the counts a clean run gives: every row processed
once, one molecule per parent, one provenance row per valid row, one import_chunks row per chunk.
"""

from __future__ import annotations

import signal
from typing import Any

from services.molecule.domain.imports import ImportJob, JobStatus
from services.runtime.auth import Principal
from tests.integration.molecule_imports import (
    ImportWorld,
    csv_bytes,
    kill_group,
    molsets_smiles,
    scientist,
    world_fixture,
)

ROWS = 4000
DUPLICATES = 100  # repeated structures, so that merging happens across chunks too
ROWS_PER_CHUNK = 250


world = world_fixture()


def molsets_file() -> tuple[bytes, int]:
    smiles = molsets_smiles(ROWS)
    rows = [[s, f"mol-{i}"] for i, s in enumerate(smiles)]
    rows += [[smiles[i * (ROWS // DUPLICATES)], f"again-{i}"] for i in range(DUPLICATES)]
    return csv_bytes(["smiles", "name"], rows), len(rows)


async def start(world: ImportWorld, who: Principal) -> tuple[ImportJob, int]:
    content, rows = molsets_file()
    job = await world.start(who, content, {"smiles": "smiles", "name": "name"}, rows_per_chunk=ROWS_PER_CHUNK)
    return job, rows


async def assert_exact(world: ImportWorld, job: ImportJob, rows: int) -> None:
    assert job.status is JobStatus.COMPLETED, job.failure_reason
    org = job.organization_id
    molecules = await world.scalar("SELECT count(*) FROM molecules WHERE organization_id = :o", o=org)
    keys = await world.scalar(
        "SELECT count(DISTINCT inchi_key) FROM molecules WHERE organization_id = :o", o=org
    )
    rejected = await world.scalar("SELECT count(*) FROM import_rejections WHERE job_id = :j", j=job.id)
    assert job.processed_rows == job.total_rows == rows
    assert job.registered == molecules == keys
    assert job.rejected == rejected
    assert job.merged == rows - molecules - rejected and job.merged >= DUPLICATES
    assert (
        await world.scalar("SELECT count(*) FROM molecule_provenance WHERE job_id = :j", j=job.id)
        == rows - rejected
    )
    assert (
        await world.scalar("SELECT count(*) FROM import_chunks WHERE job_id = :j", j=job.id)
        == job.chunk_count
    )
    assert (
        await world.scalar("SELECT sum(processed_rows) FROM import_chunks WHERE job_id = :j", j=job.id)
        == rows
    )
    assert (
        await world.scalar("SELECT count(*) FROM molecule_properties WHERE source = 'CALCULATED'")
        == 11 * molecules
    )
    assert job.chunks_done == job.chunk_count


async def test_killing_a_worker_mid_import_loses_and_duplicates_nothing(world: ImportWorld) -> None:
    who = scientist()
    job, rows = await start(world, who)
    with world.worker_process("doomed") as doomed:
        await world.until(who, job.id, lambda j: j.processed_rows >= 1000)
        kill_group(doomed, signal.SIGKILL)  # the process and its chemistry pool, mid-chunk
        doomed.wait()
    partial = await world.jobs().get_import(who, job.id)
    assert partial.status is JobStatus.PROCESSING and partial.processed_rows < rows
    with world.worker_process("rescuer"):
        finished = await world.wait(who, job.id)
    await assert_exact(world, finished, rows)


async def test_restarting_nats_mid_import_loses_and_duplicates_nothing(
    world: ImportWorld, nats_server: Any
) -> None:
    who = scientist()
    job, rows = await start(world, who)
    with world.worker_process():
        await world.until(who, job.id, lambda j: j.processed_rows >= 1000)
        nats_server.restart()
        finished = await world.wait(who, job.id)
    await assert_exact(world, finished, rows)


async def test_two_workers_share_a_job_and_a_cancel_stops_both(world: ImportWorld) -> None:
    who = scientist()
    job, rows = await start(world, who)
    with world.worker_process("one"), world.worker_process("two"):
        await world.until(who, job.id, lambda j: j.processed_rows >= 500)
        cancelled = await world.jobs().cancel_import(who, job.id)
        # Chunks in flight when the cancel committed roll back; later ones are dropped unprocessed.
        frozen = (
            await world.scalar("SELECT count(*) FROM import_chunks"),
            await world.scalar("SELECT count(*) FROM molecules"),
        )
        await world.drained()
    assert cancelled.status is JobStatus.CANCELLED and cancelled.processed_rows < rows
    now = await world.jobs().get_import(who, job.id)
    assert (now.status, now.processed_rows, now.registered) == (
        JobStatus.CANCELLED,
        cancelled.processed_rows,
        cancelled.registered,
    )
    assert frozen == (
        await world.scalar("SELECT count(*) FROM import_chunks"),
        await world.scalar("SELECT count(*) FROM molecules"),
    )
    assert frozen[1] == cancelled.registered
