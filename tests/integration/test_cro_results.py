"""Results (issue 12) on real PostgreSQL and NATS with the real identity, molecule and document services (the
world of test_cro_service.py): the CRO uploads a results CSV, previews it against the submission and
processes it; the worker validates it (its use case on the queued item, or its declared subscription fed
through JetStream); the pharma side reviews. Versions, supersession, withdrawal, rejection and re-upload,
ResultsAccepted once, blinded CRO views, organization isolation and a worker killed mid-file."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from datetime import date, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from molbridge.events.v1.audit_pb2 import AuditRecorded
from molbridge.events.v1.cro_pb2 import ResultProcessingRequested, ResultsAccepted, SubmissionTransitioned

from services.cro import worker
from services.cro.domain.submissions import SubmissionMolecule
from services.cro.service.result_processing import ResultProcessor
from services.cro.service.results import ProcessInput
from services.cro.service.submissions import ActionInput
from services.cro.store import SCHEMA as CRO_SCHEMA
from services.runtime.errors import AuthorizationError, NotFoundError, PreconditionError, ValidationError
from services.runtime.pagination import PageRequest
from services.runtime.process import Outbox, Process, running
from services.runtime.settings import Settings
from tests.integration.test_cro_packages import eventually
from tests.integration.test_cro_service import Actor, Parties, World, package_built, parties
from tests.integration.test_cro_service import world as cro_world  # noqa: F401  (the module's fixture)

PAGE = PageRequest(1, 100)
SPECIFICATIONS = {"temperature": 20, "properties": ["ic50", "solubility"]}
HEADER = ["Sample", "Property", "Value", "Units", "Qualifier", "Replicate", "Notes"]


async def in_progress(world: World, p: Parties, *smiles: str) -> tuple[str, list[str], dict[str, str]]:
    """A submission IN_PROGRESS: (id, molecule ids, molecule id → sample code)."""
    subs = world.cro.submissions
    ids = await world.molecules(p.scientist, *smiles)
    draft = await subs.create(
        p.scientist.principal, p.scientist.credentials, name="Results journey", service_id=p.service_id,
        molecules=[SubmissionMolecule(i) for i in ids], specifications=SPECIFICATIONS,
    )
    submission_id = draft.submission.id
    for kind in ("NON_DISCLOSURE_AGREEMENT", "MATERIAL_TRANSFER_AGREEMENT", "EXPERIMENT_SPECIFICATION"):
        document = await world.document(p.scientist, submission_id, kind)
        if kind != "EXPERIMENT_SPECIFICATION":
            await world.signed(p.scientist, document, p.pharma_admin)
    await subs.act(p.scientist.principal, p.scientist.credentials, submission_id, ActionInput(action="SUBMIT"))
    await package_built(world, submission_id)
    price = ActionInput(action="PROVIDE_PRICING", price="900", turnaround_days=7,
                        valid_until=(date.today() + timedelta(days=30)).isoformat())
    await subs.act(p.cro_admin.principal, p.cro_admin.credentials, submission_id, price)
    await subs.act(p.pharma_admin.principal, p.pharma_admin.credentials, submission_id, ActionInput(action="APPROVE"))
    agreement = await world.document(p.scientist, submission_id, "SERVICE_AGREEMENT")
    await world.signed(p.scientist, agreement, p.pharma_admin, p.cro_admin)
    started = await subs.act(p.technician.principal, p.technician.credentials, submission_id,
                             ActionInput(action="START_EXPERIMENT"))
    assert started.submission.status.value == "IN_PROGRESS"
    return submission_id, ids, started.submission.sample_codes


def csv_bytes(rows: list[list[str]], header: list[str] = HEADER) -> bytes:
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode()


async def upload(world: World, who: Actor, data: bytes, filename: str = "results.csv") -> str:
    async def body() -> AsyncIterator[bytes]:
        yield data[: len(data) // 2]
        yield data[len(data) // 2 :]

    stored = await world.cro.results.upload(
        who.principal, "text/csv", body(), disposition=f'attachment; filename="{filename}"'
    )
    assert stored.filename == filename and len(stored.sha256) == 64
    return stored.storage_key


async def queued(world: World, result_id: str) -> ResultProcessingRequested:
    [item] = [i for i in await world.events(ResultProcessingRequested) if i.result_id == result_id]
    return item


async def processed(world: World, result_id: str) -> None:
    """The worker's use case on the item ProcessResults queued (test_worker_through_jetstream runs the worker)."""
    assert await world.cro.result_processor.process(await queued(world, result_id))


async def status_of(world: World, p: Parties, submission_id: str) -> str:
    return (await world.cro.submissions.get(p.scientist.principal, submission_id)).submission.status.value


def journey_rows(codes: list[str]) -> list[list[str]]:
    a, b, c = codes
    return [
        [a, "IC50", "0.5", "uM", "", "1", ""],  # 500 nM
        [a, "IC50", "700", "nM", "=", "2", "plate 2"],  # mean 600, sd 141.42…
        [b, "IC50", ">10000", "nM", "", "1", ""],  # censored
        [b, "IC50", "8", "uM", ">", "2", ""],  # > 8000 nM: the tightest bound no replicate contradicts
        [c, "Solubility", "~0.25", "mg/mL", "", "", ""],
        [a, "Solubility", "120", "ug/mL", "", "", ""],  # 0.12 mg/mL
        ["ZZZZ-9999", "IC50", "1", "nM", "", "", ""],  # unknown sample
        [c, "IC50", "=cmd|' /C calc'!A0", "nM", "", "", ""],  # not a number, neutralised in the report
        [c, "IC50", "5", "um", "", "", ""],  # micrometre: incompatible units
    ]


async def test_the_results_journey_from_upload_to_accepted_values(cro_world: World) -> None:  # noqa: F811
    world = cro_world
    p = await parties(world)
    results = world.cro.results
    submission_id, ids, codes_by_id = await in_progress(world, p, "CCO", "CCN", "CCC")
    codes = [codes_by_id[i] for i in ids]
    key = await upload(world, p.technician, csv_bytes(journey_rows(codes)))

    # Preview against the submission: the CRO sees sample codes, never molecule ids.
    preview = await results.preview(p.technician.principal, key, submission_id=submission_id)
    assert preview.headers == HEADER and preview.format == "LONG" and preview.delimiter == ","
    assert preview.suggested_mapping["Sample"] == "sample_code" and preview.suggested_mapping["Units"] == "units"
    assert preview.requested_properties == ("ic50", "solubility")
    assert {m.molecule_id for m in preview.measurements} == {""}
    assert [(m.row_number, m.value) for m in preview.measurements][:2] == [(1, 500.0), (2, 700.0)]
    assert {(e.row_number, e.code) for e in preview.errors} == {
        (7, "UNKNOWN_SAMPLE"), (8, "NOT_A_NUMBER"), (9, "INCOMPATIBLE_UNITS")
    }
    with pytest.raises(NotFoundError):  # another organization's upload
        await results.preview(p.outsider.principal, key)

    # Process: a PENDING version and one work item; the same again changes nothing.
    version, created = await results.process(p.technician.principal, ProcessInput(key, submission_id, notes="run 1"))
    assert created and (version.status.value, version.version, version.current) == ("PENDING", 1, False)
    again, created_again = await results.process(p.technician.principal, ProcessInput(key, submission_id))
    assert (again.id, created_again) == (version.id, False)
    with pytest.raises(ValidationError) as bad_mapping:
        await results.process(p.technician.principal, ProcessInput(key, submission_id, mapping={"Sample": "colour"}))
    assert "mapping.Sample" in dict(bad_mapping.value.field_violations)
    with pytest.raises(NotFoundError):  # the file is the CRO's
        await results.process(p.scientist.principal, ProcessInput(key, submission_id))
    with pytest.raises(AuthorizationError):  # the pharma side does not upload results
        await upload(world, p.scientist, csv_bytes(journey_rows(codes)))

    await processed(world, version.id)
    await processed(world, version.id)  # a redelivered item changes nothing
    done = await results.get(p.technician.principal, version.id)
    assert (done.status.value, done.current, done.qc_flag, done.total_rows, done.processed_rows) == (
        "COMPLETED", True, "WARNING", 9, 9
    )
    assert (done.values_accepted, done.rows_rejected, done.error_count) == (6, 3, 3)
    assert done.qc["missing"] == [[codes[1], "solubility"], [codes[2], "ic50"]] and not done.qc["clean"]
    assert await status_of(world, p, submission_id) == "RESULTS_UPLOADED"
    uploaded = [e for e in await world.events(SubmissionTransitioned)
                if e.submission_id == submission_id and e.action == "UPLOAD_RESULTS"]
    assert [(e.from_status, e.to_status) for e in uploaded] == [("IN_PROGRESS", "RESULTS_UPLOADED")]

    # Values: replicates aggregated, censored kept as bounds, units canonical; the CRO's view is blinded.
    pharma_values, total = await results.values(p.scientist.principal, version.id, PAGE)
    assert total == 4
    by_key = {(v.aggregate.sample_code, v.aggregate.property): v for v in pharma_values}
    ic50_a = by_key[(codes[0], "ic50")]
    assert (ic50_a.aggregate.qualifier, ic50_a.aggregate.value, ic50_a.aggregate.n) == ("=", 600.0, 2)
    assert ic50_a.aggregate.sd == pytest.approx(141.4213562)
    assert ic50_a.aggregate.molecule_id == ids[0] and ic50_a.registration_number
    assert [r.replicate for r in ic50_a.replicates] == ["1", "2"]
    ic50_b = by_key[(codes[1], "ic50")].aggregate
    assert (ic50_b.qualifier, ic50_b.value, ic50_b.n, ic50_b.n_censored) == (">", 8000.0, 0, 2)
    assert by_key[(codes[2], "solubility")].aggregate.qualifier == "~"
    assert by_key[(codes[0], "solubility")].aggregate.value == pytest.approx(0.12)
    cro_values, _ = await results.values(p.technician.principal, version.id, PAGE)
    assert {(v.aggregate.molecule_id, v.registration_number) for v in cro_values} == {("", "")}
    assert {m.molecule_id for v in cro_values for m in v.replicates} == {""}
    only, one = await results.values(p.technician.principal, version.id, PAGE, property_name="solubility",
                                     sample_code=codes[2].lower())
    assert one == 1 and only[0].aggregate.value == 0.25

    # The error report: row, column, code, reason, the original cells made safe for a spreadsheet.
    report = await results.error_report(p.technician.principal, version.id)
    table = list(csv.reader(io.StringIO(report.data.decode("utf-8-sig"))))
    assert table[0] == ["row", "column", "code", "reason", *HEADER]
    assert [(r[0], r[2]) for r in table[1:]] == [("7", "UNKNOWN_SAMPLE"), ("8", "NOT_A_NUMBER"),
                                                 ("9", "INCOMPATIBLE_UNITS")]
    assert table[2][6] == "'=cmd|' /C calc'!A0" and table[3][4:8] == [codes[2], "IC50", "5", "um"]

    # Isolation: a third organization sees nothing.
    for call in (results.get, results.error_report):
        with pytest.raises(NotFoundError):
            await call(p.outsider.principal, version.id)
    with pytest.raises(NotFoundError):
        await results.values(p.outsider.principal, version.id, PAGE)
    assert (await results.list_results(p.outsider.principal, PAGE))[1] == 0
    assert [v.id for v in (await results.list_results(p.scientist.principal, PAGE, submission_id=submission_id))[0]] \
        == [version.id]
    assert (await results.list_results(p.technician.principal, PAGE, statuses=["COMPLETED"]))[1] >= 1

    # A corrected upload is version 2: current, version 1 superseded (kept).
    corrected = journey_rows(codes)[:6] + [[codes[1], "Solubility", "0.5", "mg/mL", "", "", ""],
                                           [codes[2], "IC50", "42", "nM", "", "", ""]]
    key2 = await upload(world, p.technician, csv_bytes(corrected), "results-v2.csv")
    v2, _ = await results.process(p.technician.principal, ProcessInput(key2, submission_id))
    await processed(world, v2.id)
    v2 = await results.get(p.scientist.principal, v2.id)
    v1 = await results.get(p.scientist.principal, version.id)
    assert (v2.version, v2.current, v2.qc_flag, v2.qc["clean"]) == (2, True, "PASSED", True)
    assert (v1.current, v1.superseded_by) == (False, v2.id)

    # Withdrawn before review: version 1 is current again.
    with pytest.raises(AuthorizationError):
        await results.withdraw(p.scientist.principal, v2.id)
    withdrawn = await results.withdraw(p.technician.principal, v2.id)
    assert (withdrawn.withdrawn, withdrawn.current) == (True, False)
    v1 = await results.get(p.scientist.principal, version.id)
    assert (v1.current, v1.superseded_by) == (True, "")

    # The CRO's QC flag needs a note; the pharma side rejects with a reason; the CRO uploads again.
    flagged = await results.update(p.technician.principal, version.id, notes="re-read", qc_flag="FAILED",
                                   qc_note="control out of range")
    assert (flagged.qc_flag, flagged.qc_note, flagged.notes) == ("FAILED", "control out of range", "re-read")
    with pytest.raises(ValidationError):
        await results.review(p.scientist.principal, version.id, decision="REJECTED", reason="")
    rejected = await results.review(p.scientist.principal, version.id, decision="REJECTED", reason="plate effects")
    assert (rejected.status.value, rejected.review_reason) == ("REJECTED", "plate effects")
    assert await status_of(world, p, submission_id) == "RESULTS_UPLOADED"
    key3 = await upload(world, p.technician, csv_bytes(corrected), "results-v3.csv")
    v3, created3 = await results.process(p.technician.principal, ProcessInput(key3, submission_id))
    assert created3 and v3.version == 3
    with pytest.raises(PreconditionError):  # not processed yet
        await results.review(p.scientist.principal, v3.id, decision="ACCEPTED", reason="")
    await processed(world, v3.id)

    # Accepted: RESULTS_REVIEWED and ResultsAccepted once, with the molecules decoded from the samples.
    accepted = await results.review(p.scientist.principal, v3.id, decision="ACCEPTED", reason="")
    assert accepted.review_decision == "ACCEPTED" and accepted.status.value == "COMPLETED"
    with pytest.raises(PreconditionError):
        await results.review(p.scientist.principal, v3.id, decision="ACCEPTED", reason="")
    assert await status_of(world, p, submission_id) == "RESULTS_REVIEWED"
    [event] = [e for e in await world.events(ResultsAccepted) if e.submission_id == submission_id]
    assert (event.result_id, event.result_version, event.organization_id) == (v3.id, 3, p.scientist.org)
    sent = {(v.molecule_id, v.property): (v.qualifier, v.value, v.units, v.n) for v in event.values}
    assert sent[(ids[0], "ic50")] == ("=", 600.0, "nM", 2)
    assert sent[(ids[1], "ic50")] == (">", 8000.0, "nM", 2)
    assert sent[(ids[2], "ic50")] == ("=", 42.0, "nM", 1)
    with pytest.raises(PreconditionError):  # reviewed: the CRO can no longer change it
        await results.withdraw(p.technician.principal, v3.id)

    # A molecule's results: the pharma side only.
    mine, count = await results.molecule_results(p.scientist.principal, ids[2], PAGE)
    assert count == 3 and [m.version.version for m in mine][:1] == [3]
    for found in mine:  # each value with its own version's replicates of this molecule and property
        replicates = found.value.replicates
        assert replicates and len(replicates) == found.value.aggregate.n + found.value.aggregate.n_censored
        assert {(r.molecule_id, r.property) for r in replicates} == {(ids[2], found.value.aggregate.property)}
    with pytest.raises(NotFoundError):
        await results.molecule_results(p.technician.principal, ids[2], PAGE)
    assert (await results.molecule_results(p.outsider.principal, ids[2], PAGE))[1] == 0

    audits = {e.action for e in await world.events(AuditRecorded) if e.target_id in {version.id, v2.id, v3.id}}
    assert {"result.processing_requested", "result.completed", "result.withdrawn", "result.updated",
            "result.rejected", "result.accepted"} <= audits


async def test_reject_all_fails_the_version_and_keeps_no_value(cro_world: World) -> None:  # noqa: F811
    world = cro_world
    p = await parties(world)
    submission_id, ids, codes_by_id = await in_progress(world, p, "CCCO", "CCCN", "CCCC")
    codes = [codes_by_id[i] for i in ids]
    key = await upload(world, p.technician, csv_bytes(journey_rows(codes)))
    version, _ = await world.cro.results.process(
        p.technician.principal, ProcessInput(key, submission_id, mode="reject_all")
    )
    await processed(world, version.id)
    failed = await world.cro.results.get(p.technician.principal, version.id)
    assert (failed.status.value, failed.current, failed.values_accepted, failed.error_count) == ("FAILED", False, 0, 3)
    assert "reject_all" in failed.failure_reason
    assert (await world.cro.results.values(p.scientist.principal, version.id, PAGE))[1] == 0
    assert await status_of(world, p, submission_id) == "IN_PROGRESS"
    # The same file in keep_valid mode is another input: a new version.
    kept, created = await world.cro.results.process(p.technician.principal, ProcessInput(key, submission_id))
    assert created and kept.version == 2


async def test_a_worker_killed_mid_file_loses_and_duplicates_nothing(cro_world: World) -> None:  # noqa: F811
    world = cro_world
    p = await parties(world)
    submission_id, ids, codes_by_id = await in_progress(world, p, "CCCCO", "CCCCN")
    codes = [codes_by_id[i] for i in ids]
    rows = [[codes[n % 2], "IC50", str(100 + n), "nM", "", str(n), ""] for n in range(600)]
    key = await upload(world, p.technician, csv_bytes(rows))
    version, _ = await world.cro.results.process(p.technician.principal, ProcessInput(key, submission_id))
    slow = ResultProcessor(world.cro.uow, world.cro.storage, world.cro.submissions.record, rows_per_chunk=3)
    item = await queued(world, version.id)

    task = asyncio.create_task(slow.process(item))

    async def some_chunks_committed() -> None:
        while (await world.cro.results.get(p.technician.principal, version.id)).processed_rows < 30:
            await asyncio.sleep(0.005)

    await asyncio.wait_for(some_chunks_committed(), 60)
    task.cancel()  # the worker dies mid-file
    with pytest.raises(asyncio.CancelledError):
        await task
    interrupted = await world.cro.results.get(p.technician.principal, version.id)
    assert interrupted.status.value == "PROCESSING" and 0 < interrupted.processed_rows < 600

    assert await slow.process(item)  # the redelivery
    done = await world.cro.results.get(p.technician.principal, version.id)
    assert (done.status.value, done.processed_rows, done.values_accepted) == ("COMPLETED", 600, 600)
    values, total = await world.cro.results.values(p.scientist.principal, version.id, PAGE)
    assert total == 2 and sorted(v.aggregate.n for v in values) == [300, 300]
    async with world.cro_engine.connect() as connection:
        stored = await connection.execute(
            sa.text(f"SELECT count(*) FROM {CRO_SCHEMA}.result_measurements WHERE result_id = :id"),
            {"id": version.id},
        )
        assert stored.scalar_one() == 600


async def test_the_worker_processes_items_through_jetstream(cro_world: World, nats_server: Any) -> None:  # noqa: F811
    world = cro_world
    p = await parties(world)
    submission_id, ids, codes_by_id = await in_progress(world, p, "CCCCCO")
    code = codes_by_id[ids[0]]
    key = await upload(world, p.technician, csv_bytes([[code, "IC50", "<1", "nM", "", "", ""]]))
    settings = Settings.from_env("cro-results-test", {"NATS_URL": nats_server.url,
                                                      "MOLBRIDGE_CRO_RESULTS_TEST_HEALTH_ADDR": "off"})
    process = Process(
        subscriptions=worker.result_subscriptions(world.cro.result_processor),
        outbox=Outbox(world.cro_engine, CRO_SCHEMA),
    )
    async with running("cro-results-test", process, settings):
        version, _ = await world.cro.results.process(p.technician.principal, ProcessInput(key, submission_id))

        async def completed() -> bool:
            return (await world.cro.results.get(p.technician.principal, version.id)).status.value == "COMPLETED"

        await eventually(completed)
        watched = [(v.status.value, final) async for v, final in world.cro.results.watch(p.technician.principal,
                                                                                         version.id)]
        assert watched == [("COMPLETED", True)]
    values, _ = await world.cro.results.values(p.scientist.principal, version.id, PAGE)
    assert [(v.aggregate.qualifier, v.aggregate.value) for v in values] == [("<", 1.0)]


async def test_an_older_version_finishing_last_does_not_replace_a_newer_one(cro_world: World) -> None:  # noqa: F811
    world = cro_world
    p = await parties(world)
    submission_id, ids, codes_by_id = await in_progress(world, p, "CCCCCCO")
    code = codes_by_id[ids[0]]
    first_key = await upload(world, p.technician, csv_bytes([[code, "IC50", "5", "nM", "", "", ""]]))
    second_key = await upload(world, p.technician, csv_bytes([[code, "IC50", "6", "nM", "", "", ""]]))
    older, _ = await world.cro.results.process(p.technician.principal, ProcessInput(first_key, submission_id))
    newer, _ = await world.cro.results.process(p.technician.principal, ProcessInput(second_key, submission_id))
    await processed(world, newer.id)
    await processed(world, older.id)
    older_now = await world.cro.results.get(p.scientist.principal, older.id)
    newer_now = await world.cro.results.get(p.scientist.principal, newer.id)
    assert (newer_now.current, older_now.current, older_now.superseded_by) == (True, False, newer.id)
    assert older_now.status.value == "COMPLETED" and await status_of(world, p, submission_id) == "RESULTS_UPLOADED"
