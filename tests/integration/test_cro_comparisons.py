"""Predicted vs measured on real PostgreSQL: result rows written with the tables (the results store is not
this test's subject), predictions stored with the prediction store and read over gRPC from the real
PredictionService with the caller's forwarded token, and ResultService's comparison RPCs (the ComparisonRpcs
mixin) served over gRPC. Every figure is checked against an independent computation written here (numpy and
scipy, not the domain code)."""

from __future__ import annotations

import math
import struct
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc
import numpy as np
import pytest
from molbridge.cro.v1 import result_service_pb2 as pb
from molbridge.cro.v1 import result_service_pb2_grpc as pb_grpc
from scipy import stats
from sqlalchemy.ext.asyncio import AsyncEngine

from services.cro.bootstrap import MIGRATIONS as CRO_MIGRATIONS
from services.cro.server.comparisons import ComparisonRpcs
from services.cro.service.comparisons import ComparisonService
from services.cro.store import SCHEMA as CRO_SCHEMA
from services.cro.store import transactions as cro_transactions
from services.cro.store.tables import (
    cro_services,
    result_files,
    result_values,
    results,
    submission_molecules,
    submissions,
)
from services.prediction.bootstrap import MIGRATIONS as PREDICTION_MIGRATIONS
from services.prediction.domain.jobs import Prediction
from services.prediction.store import SCHEMA as PREDICTION_SCHEMA
from services.runtime.auth import Principal
from services.runtime.db import make_engine
from services.runtime.prediction_client import PredictionClient
from services.runtime.process import Process, running
from services.runtime.settings import Settings
from stack.ports import free_port
from tests.integration.prediction_world import TokenSigner, served_predictions, store_predictions

EARLY = datetime(2026, 1, 10, 9, 0, tzinfo=UTC)
LATE = datetime(2026, 2, 10, 9, 0, tzinfo=UTC)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ComparisonServicer(ComparisonRpcs, pb_grpc.ResultServiceServicer):
    """The mixin served as ResultServicer serves it (listed before the generated base)."""

    def __init__(self, comparisons: ComparisonService) -> None:
        self._comparisons = comparisons


@dataclass(frozen=True)
class Measured:
    molecule_id: str
    sample_code: str
    registration_number: str
    property: str
    qualifier: str | None
    value: float | None
    units: str


@dataclass
class World:
    cro: AsyncEngine
    predictions_db: AsyncEngine
    stub: pb_grpc.ResultServiceStub
    signer: TokenSigner
    pharma: str
    cro_org: str
    service_id: str

    def meta(self, principal: Principal) -> list[tuple[str, str]]:
        return self.signer.metadata(principal)

    async def submission(self, molecules: Sequence[tuple[str, str, str]]) -> str:
        """A submission of the pharma organization to the CRO with (molecule, sample code, registration)."""
        submission_id = str(uuid.uuid4())
        async with self.cro.begin() as connection:
            await connection.execute(
                submissions.insert().values(
                    id=submission_id,
                    organization_id=self.pharma,
                    cro_organization_id=self.cro_org,
                    cro_service_id=self.service_id,
                    service_type="ADMET",
                    name="Comparison test",
                    status="RESULTS_REVIEWED",
                    sample_prefix="CMP",
                    currency="EUR",
                    created_by="tester",
                )
            )
            await connection.execute(
                submission_molecules.insert(),
                [
                    {
                        "submission_id": submission_id,
                        "molecule_id": molecule_id,
                        "organization_id": self.pharma,
                        "position": i,
                        "sample_code": code,
                        "registration_number": registration,
                    }
                    for i, (molecule_id, code, registration) in enumerate(molecules)
                ],
            )
        return submission_id

    async def result(
        self,
        submission_id: str,
        values: Sequence[Measured],
        *,
        status: str = "COMPLETED",
        decision: str = "",
        reviewed_at: datetime | None = None,
        withdrawn: bool = False,
        version: int = 1,
    ) -> str:
        result_id, key = str(uuid.uuid4()), f"results/{uuid.uuid4()}"
        async with self.cro.begin() as connection:
            await connection.execute(
                result_files.insert().values(
                    storage_key=key,
                    organization_id=self.cro_org,
                    filename="r.csv",
                    size_bytes=1,
                    sha256="0" * 64,
                    created_by="tech",
                )
            )
            await connection.execute(
                results.insert().values(
                    id=result_id,
                    submission_id=submission_id,
                    organization_id=self.pharma,
                    cro_organization_id=self.cro_org,
                    version=version,
                    status=status,
                    withdrawn=withdrawn,
                    storage_key=key,
                    file_sha256="0" * 64,
                    input_sha256=uuid.uuid4().hex,
                    mode="keep_valid",
                    review_decision=decision,
                    reviewed_at=reviewed_at,
                    uploaded_by="tech",
                )
            )
            if values:
                await connection.execute(
                    result_values.insert(),
                    [
                        {
                            "result_id": result_id,
                            "molecule_id": v.molecule_id,
                            "property": v.property,
                            "sample_code": v.sample_code,
                            "units": v.units,
                            "qualifier": v.qualifier,
                            "value": v.value,
                            "n": 0 if v.qualifier in ("<", ">", None) else 2,
                            "n_censored": 2 if v.qualifier in ("<", ">", None) else 0,
                        }
                        for v in values
                    ],
                )
        return result_id


def person(organization_id: str, kind: str, role: str) -> Principal:
    return Principal(f"{role}-{uuid.uuid4().hex[:6]}", organization_id, kind, frozenset({role}))


@pytest.fixture
async def world(database_url: str) -> AsyncIterator[World]:
    PREDICTION_MIGRATIONS.upgrade(database_url)
    CRO_MIGRATIONS.upgrade(database_url)
    cro_engine = make_engine(database_url, CRO_SCHEMA)
    prediction_engine = make_engine(database_url, PREDICTION_SCHEMA)
    signer = TokenSigner()
    pharma, cro_org = str(uuid.uuid4()), str(uuid.uuid4())
    service_id = str(uuid.uuid4())
    async with cro_engine.begin() as connection:
        await connection.execute(
            cro_services.insert().values(
                id=service_id,
                organization_id=cro_org,
                name="ADMET panel",
                service_type="ADMET",
                base_price=100,
                currency="EUR",
                turnaround_days=10,
                created_by="tester",
            )
        )
    try:
        async with served_predictions(prediction_engine, signer) as prediction_address:
            predictions = PredictionClient(prediction_address)
            address = f"127.0.0.1:{free_port()}"
            # The other RPCs stay the generated UNIMPLEMENTED ones (mypy's stubs call them abstract).
            servicer = ComparisonServicer(ComparisonService(cro_transactions(cro_engine), predictions))  # type: ignore[abstract]
            process = Process(
                servicers=[(pb_grpc.add_ResultServiceServicer_to_server, servicer)], authenticator=signer.authenticator
            )
            try:
                settings = Settings.from_env("cro", {"MOLBRIDGE_CRO_ADDR": address})
                async with running("cro", process, settings), grpc.aio.insecure_channel(address) as channel:
                    stub = pb_grpc.ResultServiceStub(channel)
                    yield World(cro_engine, prediction_engine, stub, signer, pharma, cro_org, service_id)
            finally:
                await predictions.close()
    finally:
        await cro_engine.dispose()
        await prediction_engine.dispose()


# --- the independent computation ------------------------------------------------------------------------------


def expected_scores(predicted: Sequence[float], measured: Sequence[float], *, log: bool) -> dict[str, float]:
    p = np.log10(predicted) if log else np.asarray(predicted, dtype=float)
    m = np.log10(measured) if log else np.asarray(measured, dtype=float)
    e = p - m
    return {
        "mae": float(np.mean(np.abs(e))),
        "rmse": float(np.sqrt(np.mean(e**2))),
        "bias": float(np.mean(e)),
        "r2": float(1 - np.sum(e**2) / np.sum((m - m.mean()) ** 2)),
        "spearman": float(stats.spearmanr(p, m).statistic),
        "within": int(np.sum(np.abs(e) <= 0.5)),
    }


def assert_scores(summary: pb.ComparisonSummary, expected: dict[str, float], n: int) -> None:
    assert summary.n == n
    for name in ("mae", "rmse", "bias", "r2", "spearman"):
        assert summary.HasField(name), name
        assert getattr(summary, name) == pytest.approx(expected[name], rel=1e-9, abs=1e-12), name
    assert summary.within == expected["within"]
    assert summary.within_counted == n
    assert summary.within_share == pytest.approx(expected["within"] / n)


# --- the scenario -------------------------------------------------------------------------------------------------


@dataclass
class Scenario:
    ids: list[str]
    codes: list[str]
    registrations: list[str]
    submission: str
    result: str


async def scenario(world: World) -> Scenario:
    """Six molecules measured (ic50 in nM: three numbers one approximate, a `<`, a `>`, one conflicting; logp
    for three) and predicted by chemprop 1.0 and 2.0 (and 3.0 for one logp only)."""
    ids = [str(uuid.uuid4()) for _ in range(6)]
    codes = [f"CMP-{i:03d}" for i in range(1, 7)]
    registrations = [f"MB-{i:06d}" for i in range(101, 107)]
    submission = await world.submission(list(zip(ids, codes, registrations, strict=True)))

    def measured(i: int, prop: str, qualifier: str | None, value: float | None) -> Measured:
        return Measured(ids[i], codes[i], registrations[i], prop, qualifier, value, "nM" if prop == "ic50" else "")

    values = [
        measured(0, "ic50", "=", 100.0),
        measured(1, "ic50", "=", 1000.0),
        measured(2, "ic50", "~", 50.0),
        measured(3, "ic50", "<", 10.0),
        measured(4, "ic50", ">", 1000.0),
        measured(5, "ic50", None, None),  # replicates censored both ways: not paired
        measured(0, "logp", "=", 2.0),
        measured(1, "logp", "=", 3.5),
        measured(2, "logp", "=", 1.0),
    ]
    result = await world.result(submission, values, decision="ACCEPTED", reviewed_at=LATE)
    db = world.predictions_db
    ic50_v1 = [(200.0, 0.9), (800.0, 0.5), (60.0, 0.2), (5.0, 0.8), (500.0, 0.6), (100.0, 0.7)]
    await store_predictions(
        db,
        world.pharma,
        [Prediction(ids[i], "ic50", v, "nM", c, "chemprop", "1.0") for i, (v, c) in enumerate(ic50_v1)]
        + [Prediction(ids[i], "logp", v, "", 0.5, "chemprop", "1.0") for i, v in enumerate((2.5, 3.0, 1.2))],
    )
    await store_predictions(
        db,
        world.pharma,
        [Prediction(ids[i], "ic50", v, "nM", 0.5, "chemprop", "2.0") for i, v in enumerate((150.0, 900.0, 40.0))]
        + [Prediction(ids[0], "logp", 2.2, "", 0.5, "chemprop", "3.0")],
    )
    # Another organization's prediction of the same molecule id is never read.
    await store_predictions(db, str(uuid.uuid4()), [Prediction(ids[0], "ic50", 1.0, "nM", 1.0, "chemprop", "1.0")])
    return Scenario(ids, codes, registrations, submission, result)


async def test_the_comparison_equals_an_independent_computation(world: World) -> None:
    s = await scenario(world)
    scientist = person(world.pharma, "PHARMA", "pharma_scientist")
    reply = await world.stub.ComparePredictions(
        pb.ComparePredictionsRequest(id=s.result), metadata=world.meta(scientist)
    )
    keys = [(c.property, c.model_name, c.model_version) for c in reply.data]
    assert keys == [
        ("ic50", "chemprop", "1.0"),
        ("ic50", "chemprop", "2.0"),
        ("logp", "chemprop", "1.0"),
        ("logp", "chemprop", "3.0"),
    ]
    ic50_v1, ic50_v2, logp_v1, logp_v3 = reply.data

    # ic50 by 1.0: three numeric pairs (the `~` one counted as a number) on log10 values.
    assert (ic50_v1.units, ic50_v1.scale, ic50_v1.summary.within_rule) == ("nM", "LOG10", "WITHIN_0_5_LOG_UNITS")
    assert_scores(ic50_v1.summary, expected_scores([200, 800, 60], [100, 1000, 50], log=True), 3)
    summary = ic50_v1.summary
    assert (summary.censored_consistent, summary.censored_inconsistent, summary.approximate) == (1, 1, 1)
    assert (summary.not_positive, summary.not_finite) == (0, 0)
    # Confidence: split at the median of 0.9, 0.5, 0.2; errors of each half.
    errors = {0.9: math.log10(200 / 100), 0.5: math.log10(800 / 1000), 0.2: math.log10(60 / 50)}
    split = summary.confidence
    assert split.threshold == pytest.approx(0.5)
    assert (split.high.n, split.low.n, split.without_confidence) == (2, 1, 0)
    assert split.high.mae == pytest.approx((abs(errors[0.9]) + abs(errors[0.5])) / 2)
    assert split.low.mae == pytest.approx(abs(errors[0.2]))
    assert split.high.rmse == pytest.approx(math.sqrt((errors[0.9] ** 2 + errors[0.5] ** 2) / 2))
    expected_rho = stats.spearmanr([0.9, 0.5, 0.2], [abs(e) for e in errors.values()]).statistic
    assert split.error_correlation == pytest.approx(float(expected_rho))

    # Every pair but the conflicting value, with the submission's names for the molecule.
    pairs = {p.sample_code: p for p in ic50_v1.pairs}
    assert set(pairs) == set(s.codes[:5])
    assert {p.registration_number for p in ic50_v1.pairs} == set(s.registrations[:5])
    assert {p.molecule_id for p in ic50_v1.pairs} == set(s.ids[:5])
    statuses = {code: (p.status, p.qualifier) for code, p in pairs.items()}
    assert statuses == {
        "CMP-001": ("INCLUDED", "="),
        "CMP-002": ("INCLUDED", "="),
        "CMP-003": ("INCLUDED", "~"),
        "CMP-004": ("CENSORED_CONSISTENT", "<"),
        "CMP-005": ("CENSORED_INCONSISTENT", ">"),
    }
    first = pairs["CMP-001"]
    assert (first.predicted, first.measured, first.confidence) == (200.0, 100.0, 0.9)
    assert (first.difference, first.abs_difference, first.relative_difference) == (100.0, 100.0, 1.0)
    assert first.log10_difference == pytest.approx(math.log10(2))
    censored = pairs["CMP-004"]
    assert (censored.predicted, censored.measured) == (5.0, 10.0)
    for absent in ("difference", "abs_difference", "relative_difference", "log10_difference"):
        assert not censored.HasField(absent)
    assert ic50_v1.scatter_plot_path == (
        f"/results/{s.result}/compare-predictions/plot?property=ic50&model_name=chemprop&model_version=1.0&kind=scatter"
    )
    assert ic50_v1.residual_plot_path.endswith("&kind=residuals")

    assert_scores(ic50_v2.summary, expected_scores([150, 900, 40], [100, 1000, 50], log=True), 3)
    assert len(ic50_v2.pairs) == 3  # 2.0 predicted three molecules only
    assert (logp_v1.scale, logp_v1.units) == ("LOG_UNITS", "")
    assert_scores(logp_v1.summary, expected_scores([2.5, 3.0, 1.2], [2.0, 3.5, 1.0], log=False), 3)
    # One pair: no R², no ρ, and the reason is said, never a NaN.
    assert logp_v3.summary.n == 1 and logp_v3.summary.mae == pytest.approx(0.2)
    assert not logp_v3.summary.HasField("r2") and not logp_v3.summary.HasField("spearman")
    assert set(logp_v3.summary.undefined) == {"r2", "spearman"}
    assert not logp_v3.summary.confidence.HasField("threshold") and not logp_v3.summary.confidence.HasField("high")

    # Filters and summary_only.
    only = await world.stub.ComparePredictions(
        pb.ComparePredictionsRequest(id=s.result, property="logp", model_name="chemprop", summary_only=True),
        metadata=world.meta(scientist),
    )
    assert [(c.property, c.model_version, len(c.pairs)) for c in only.data] == [("logp", "1.0", 0), ("logp", "3.0", 0)]
    assert only.data[0].summary == logp_v1.summary
    nothing = await world.stub.ComparePredictions(
        pb.ComparePredictionsRequest(id=s.result, model_name="admet"), metadata=world.meta(scientist)
    )
    assert list(nothing.data) == []
    # Any member of the pharma organization may look (what the submission's views allow that side).
    auditor = person(world.pharma, "PHARMA", "auditor")
    seen = await world.stub.ComparePredictions(pb.ComparePredictionsRequest(id=s.result), metadata=world.meta(auditor))
    assert len(seen.data) == 4

    # Units: a prediction in other units than the measured (canonical) ones is not paired; "–" is "".
    await store_predictions(
        world.predictions_db,
        world.pharma,
        [
            Prediction(s.ids[0], "ic50", 0.2, "uM", 0.5, "chemprop", "4.0"),
            Prediction(s.ids[0], "logp", 1.5, "–", 0.5, "crippen", "1.0"),
        ],
    )
    later = await world.stub.ComparePredictions(
        pb.ComparePredictionsRequest(id=s.result, summary_only=True), metadata=world.meta(scientist)
    )
    assert [(c.property, c.model_name, c.model_version, c.units, c.summary.n) for c in later.data] == [
        ("ic50", "chemprop", "1.0", "nM", 3),
        ("ic50", "chemprop", "2.0", "nM", 3),
        ("logp", "chemprop", "1.0", "", 3),
        ("logp", "chemprop", "3.0", "", 1),
        ("logp", "crippen", "1.0", "", 1),
    ]


async def test_who_may_compare_and_what_can_be_compared(world: World) -> None:
    s = await scenario(world)
    scientist = person(world.pharma, "PHARMA", "pharma_scientist")

    async def refused(result_id: str, who: Principal) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await world.stub.ComparePredictions(pb.ComparePredictionsRequest(id=result_id), metadata=world.meta(who))
        return caught.value

    cro_side = await refused(s.result, person(world.cro_org, "CRO", "cro_admin"))
    assert cro_side.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "pharma organization" in (cro_side.details() or "")
    stranger = await refused(s.result, person(str(uuid.uuid4()), "PHARMA", "pharma_admin"))
    assert stranger.code() == grpc.StatusCode.NOT_FOUND
    for unknown in (str(uuid.uuid4()), "not-a-uuid"):
        assert (await refused(unknown, scientist)).code() == grpc.StatusCode.NOT_FOUND

    value = [Measured(s.ids[0], s.codes[0], s.registrations[0], "ic50", "=", 100.0, "nM")]
    failed = await world.result(s.submission, [], status="FAILED", version=2)
    conflict = await refused(failed, scientist)
    assert conflict.code() == grpc.StatusCode.FAILED_PRECONDITION and "FAILED" in (conflict.details() or "")
    withdrawn = await world.result(s.submission, value, withdrawn=True, version=3)
    conflict = await refused(withdrawn, scientist)
    assert conflict.code() == grpc.StatusCode.FAILED_PRECONDITION and "withdrawn" in (conflict.details() or "")
    pending = await world.result(s.submission, [], status="PENDING", version=4)
    assert (await refused(pending, scientist)).code() == grpc.StatusCode.FAILED_PRECONDITION
    # A version the pharma side rejected still has its values: it compares.
    rejected = await world.result(
        s.submission, value, status="REJECTED", decision="REJECTED", reviewed_at=LATE, version=5
    )
    reply = await world.stub.ComparePredictions(
        pb.ComparePredictionsRequest(id=rejected), metadata=world.meta(scientist)
    )
    assert [(c.model_version, c.summary.n) for c in reply.data] == [("1.0", 1), ("2.0", 1)]


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


async def test_plots_are_pngs_of_the_asked_size(world: World) -> None:
    s = await scenario(world)
    meta = world.meta(person(world.pharma, "PHARMA", "pharma_scientist"))

    def request(**fields: Any) -> pb.GetComparisonPlotRequest:
        base: dict[str, Any] = {"id": s.result, "property": "ic50", "model_name": "chemprop", "model_version": "1.0"}
        return pb.GetComparisonPlotRequest(**(base | fields))

    scatter = await world.stub.GetComparisonPlot(request(width=300, height=200), metadata=meta)
    assert scatter.content_type == "image/png" and png_size(scatter.data) == (300, 200)
    residuals = await world.stub.GetComparisonPlot(request(kind="residuals"), metadata=meta)
    assert residuals.content_type == "image/png" and png_size(residuals.data) == (640, 480)
    assert residuals.data != scatter.data
    # The same request gives the same bytes.
    again = await world.stub.GetComparisonPlot(request(width=300, height=200), metadata=meta)
    assert again.data == scatter.data

    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await world.stub.GetComparisonPlot(request(model_version="9.9"), metadata=meta)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    details = unknown.value.details() or ""
    assert "9.9" in details and "ic50 by chemprop 1.0" in details and "logp by chemprop 3.0" in details
    for bad in ({"kind": "pie"}, {"width": 10}, {"height": 5000}, {"model_version": ""}):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await world.stub.GetComparisonPlot(request(**bad), metadata=meta)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
    with pytest.raises(grpc.aio.AioRpcError) as cro_side:
        await world.stub.GetComparisonPlot(request(), metadata=world.meta(person(world.cro_org, "CRO", "cro_admin")))
    assert cro_side.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_model_accuracy_orders_versions_by_first_use(world: World) -> None:
    s = await scenario(world)  # accepted LATE; chemprop 1.0 and 2.0 on ic50
    # An earlier accepted result scored by 2.0 only: 2.0 was in use first.
    early_ids = [str(uuid.uuid4()) for _ in range(2)]
    early_submission = await world.submission([(m, f"OLD-{i}", f"MB-9{i}") for i, m in enumerate(early_ids)])
    early = await world.result(
        early_submission,
        [
            Measured(m, f"OLD-{i}", f"MB-9{i}", "ic50", "=", v, "nM")
            for i, (m, v) in enumerate(zip(early_ids, (20.0, 400.0), strict=True))
        ],
        decision="ACCEPTED",
        reviewed_at=EARLY,
    )
    db = world.predictions_db
    await store_predictions(
        db,
        world.pharma,
        [Prediction(m, "ic50", v, "nM", 0.5, "chemprop", "2.0") for m, v in zip(early_ids, (10.0, 500.0), strict=True)],
    )
    # Neither a rejected nor another organization's result counts.
    await world.result(
        s.submission,
        [Measured(s.ids[0], s.codes[0], s.registrations[0], "ic50", "=", 1.0, "nM")],
        status="REJECTED",
        decision="REJECTED",
        reviewed_at=EARLY,
        version=2,
    )

    scientist = person(world.pharma, "PHARMA", "pharma_scientist")
    reply = await world.stub.GetModelAccuracy(
        pb.GetModelAccuracyRequest(model_name="chemprop", property="ic50"), metadata=world.meta(scientist)
    )
    assert len(reply.data) == 1
    accuracy = reply.data[0]
    assert (accuracy.model_name, accuracy.property, accuracy.units, accuracy.scale) == (
        "chemprop",
        "ic50",
        "nM",
        "LOG10",
    )
    assert [v.model_version for v in accuracy.versions] == ["2.0", "1.0"]
    v2, v1 = accuracy.versions
    assert v2.first_used.ToDatetime(tzinfo=UTC) == EARLY and v1.first_used.ToDatetime(tzinfo=UTC) == LATE
    assert [(r.result_id, r.submission_id) for r in v2.results] == [(early, early_submission), (s.result, s.submission)]
    assert [r.reviewed_at.ToDatetime(tzinfo=UTC) for r in v2.results] == [EARLY, LATE]
    # Pooled over both results, not averaged.
    assert_scores(v2.overall, expected_scores([10, 500, 150, 900, 40], [20, 400, 100, 1000, 50], log=True), 5)
    assert_scores(v2.results[0].summary, expected_scores([10, 500], [20, 400], log=True), 2)
    assert [r.result_id for r in v1.results] == [s.result]
    assert_scores(v1.overall, expected_scores([200, 800, 60], [100, 1000, 50], log=True), 3)
    assert (v1.overall.censored_consistent, v1.overall.censored_inconsistent) == (1, 1)

    every = await world.stub.GetModelAccuracy(
        pb.GetModelAccuracyRequest(model_name="chemprop"), metadata=world.meta(scientist)
    )
    assert [(a.property, [v.model_version for v in a.versions]) for a in every.data] == [
        ("ic50", ["2.0", "1.0"]),
        ("logp", ["1.0", "3.0"]),
    ]
    # The CRO organization accepted nothing as a pharma organization; another model scored nothing.
    cro_side = person(world.cro_org, "CRO", "cro_admin")
    assert (
        list(
            (
                await world.stub.GetModelAccuracy(
                    pb.GetModelAccuracyRequest(model_name="chemprop"), metadata=world.meta(cro_side)
                )
            ).data
        )
        == []
    )
    assert (
        list(
            (
                await world.stub.GetModelAccuracy(
                    pb.GetModelAccuracyRequest(model_name="admet"), metadata=world.meta(scientist)
                )
            ).data
        )
        == []
    )
    with pytest.raises(grpc.aio.AioRpcError) as nameless:
        await world.stub.GetModelAccuracy(pb.GetModelAccuracyRequest(), metadata=world.meta(scientist))
    assert nameless.value.code() == grpc.StatusCode.INVALID_ARGUMENT
