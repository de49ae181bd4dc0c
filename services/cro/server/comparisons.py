"""ResultService's predicted-vs-measured RPCs (ComparePredictions, GetComparisonPlot, GetModelAccuracy) as a
mixin: proto ↔ service/comparisons.py, nothing else. ResultServicer inherits it (list it BEFORE
pb_grpc.ResultServiceServicer so these methods win over the generated UNIMPLEMENTED ones) and sets
`self._comparisons`."""

from __future__ import annotations

from typing import TypeAlias

import grpc
from google.api.httpbody_pb2 import HttpBody
from molbridge.cro.v1 import result_service_pb2 as pb

from services.cro.domain import comparison as domain
from services.cro.service.comparisons import ComparisonService, ComparisonView, PairView
from services.runtime.auth import current_principal
from services.runtime.molecule_client import forwarded_credentials
from services.runtime.protomap import timestamp

Context: TypeAlias = grpc.aio.ServicerContext

PNG = "image/png"


class ComparisonRpcs:
    _comparisons: ComparisonService

    async def ComparePredictions(
        self, request: pb.ComparePredictionsRequest, context: Context
    ) -> pb.ComparePredictionsResponse:
        views = await self._comparisons.compare(
            current_principal(),
            forwarded_credentials(context.invocation_metadata()),
            request.id,
            request.property,
            request.model_name,
            request.summary_only,
        )
        return pb.ComparePredictionsResponse(data=[comparison_pb(v) for v in views])

    async def GetComparisonPlot(self, request: pb.GetComparisonPlotRequest, context: Context) -> HttpBody:
        png = await self._comparisons.plot(
            current_principal(),
            forwarded_credentials(context.invocation_metadata()),
            request.id,
            request.property,
            request.model_name,
            request.model_version,
            request.kind,
            request.width,
            request.height,
        )
        return HttpBody(content_type=PNG, data=png)

    async def GetModelAccuracy(
        self, request: pb.GetModelAccuracyRequest, context: Context
    ) -> pb.GetModelAccuracyResponse:
        accuracies = await self._comparisons.model_accuracy(
            current_principal(),
            forwarded_credentials(context.invocation_metadata()),
            request.model_name,
            request.property,
        )
        return pb.GetModelAccuracyResponse(data=[model_accuracy_pb(a) for a in accuracies])


def comparison_pb(view: ComparisonView) -> pb.Comparison:
    c = view.comparison
    return pb.Comparison(
        property=c.property,
        model_name=c.model_name,
        model_version=c.model_version,
        units=c.units,
        scale=c.scale.value,
        summary=summary_pb(c.summary),
        pairs=[pair_pb(p) for p in view.pairs],
        scatter_plot_path=view.scatter_plot_path,
        residual_plot_path=view.residual_plot_path,
    )


def summary_pb(summary: domain.Summary) -> pb.ComparisonSummary:
    m, within = summary.metrics, summary.within
    message = pb.ComparisonSummary(
        n=m.n,
        undefined=dict(m.undefined),
        within_rule=within.rule.value,
        within=within.within,
        within_counted=within.counted,
        censored_consistent=summary.censored.consistent,
        censored_inconsistent=summary.censored.inconsistent,
        confidence=confidence_pb(summary.confidence),
        approximate=summary.approximate,
        not_positive=summary.not_positive,
        not_finite=summary.not_finite,
    )
    _set_optional(message, mae=m.mae, rmse=m.rmse, r2=m.r2, spearman=m.spearman, bias=m.bias)
    _set_optional(message, within_share=within.share)
    return message


def confidence_pb(split: domain.ConfidenceSplit) -> pb.ConfidenceSplit:
    message = pb.ConfidenceSplit(without_confidence=split.without_confidence, undefined=dict(split.undefined))
    _set_optional(message, threshold=split.threshold, error_correlation=split.error_correlation)
    if split.high is not None:
        message.high.CopyFrom(_group_pb(split.high))
    if split.low is not None:
        message.low.CopyFrom(_group_pb(split.low))
    return message


def _group_pb(group: domain.ConfidenceGroup) -> pb.ConfidenceGroup:
    return pb.ConfidenceGroup(
        n=group.n,
        mean_confidence=group.mean_confidence,
        min_confidence=group.min_confidence,
        max_confidence=group.max_confidence,
        mae=group.mae,
        rmse=group.rmse,
    )


def pair_pb(view: PairView) -> pb.ComparisonPair:
    o = view.outcome
    message = pb.ComparisonPair(
        molecule_id=o.molecule_id,
        sample_code=view.sample_code,
        registration_number=view.registration_number,
        qualifier=o.qualifier.value,
        status=o.status.value,
    )
    _set_optional(
        message,
        predicted=o.predicted,
        confidence=o.confidence,
        measured=o.measured,
        difference=o.difference,
        abs_difference=o.abs_difference,
        relative_difference=o.relative_difference,
        log10_difference=o.log10_difference,
    )
    return message


def model_accuracy_pb(accuracy: domain.ModelAccuracy) -> pb.ModelAccuracy:
    return pb.ModelAccuracy(
        model_name=accuracy.model_name,
        property=accuracy.property,
        units=accuracy.units,
        scale=accuracy.scale.value,
        versions=[
            pb.VersionAccuracy(
                model_version=v.model_version,
                first_used=timestamp(v.first_used),
                overall=summary_pb(v.overall),
                results=[
                    pb.ResultScore(
                        result_id=r.result_id,
                        submission_id=r.submission_id,
                        reviewed_at=timestamp(r.reviewed_at),
                        summary=summary_pb(r.summary),
                    )
                    for r in v.results
                ],
            )
            for v in accuracy.versions
        ],
    )


def _set_optional(message: object, **values: float | None) -> None:
    """Optional doubles: set only when known (an unset field is absent in the JSON, never NaN)."""
    for name, value in values.items():
        if value is not None:
            setattr(message, name, value)
