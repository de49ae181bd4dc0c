"""Predicted vs measured (issue 12): a result version's values against the pharma organization's predictions,
the PNG plots of one comparison, and a model's accuracy over the organization's accepted results.

Decisions:
- Predictions are the pharma organization's: they are read from the prediction service with the caller's own
  credentials (so it scopes them to the caller's organization), and only the pharma side of the result's
  submission compares (any member: whoever may see the submission's results may see how the models did).
  The CRO side is refused (403 naming the rule); anyone else does not see the result (404).
- Only a version with values compares: PENDING/PROCESSING (not yet validated), FAILED and withdrawn
  versions are a 409 naming their status. A REJECTED version still has its values and compares.
- A value whose qualifier is NULL (replicates censored both ways) or that has no value is not paired.
- One comparison has one unit: the measured values are in the property's canonical units, and a prediction
  reported in other units is not paired (it would compare numbers of different things); logged. "–" and ""
  both mean dimensionless.
- pandas and matplotlib work runs off the event loop (asyncio.to_thread).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote, urlencode

from services.cro.adapters.plots import check_size, residual_histogram_png, scatter_png
from services.cro.domain.comparison import (
    Comparison,
    ModelAccuracy,
    PairOutcome,
    PredictionPair,
    ReviewedResult,
    accuracy_over_time,
    compare,
    parse_qualifier,
)
from services.cro.store.comparisons import MeasuredValue, ResultHeader
from services.cro.store.uow import CroTransactions
from services.runtime.auth import Principal
from services.runtime.errors import AuthorizationError, NotFoundError, PreconditionError, ValidationError
from services.runtime.prediction_client import PredictedValue

log = logging.getLogger("molbridge.cro.comparisons")

SCATTER = "scatter"
RESIDUALS = "residuals"
PLOT_KINDS = (SCATTER, RESIDUALS)
DEFAULT_WIDTH = 640
DEFAULT_HEIGHT = 480
PHARMA_ONLY = "predictions are the pharma organization's: only its members compare them with results"
# Versions whose values are not (or no longer) there to compare.
NOT_VALIDATED = frozenset({"PENDING", "PROCESSING"})
FAILED = "FAILED"
DIMENSIONLESS = frozenset({"", "-", "–", "—"})


class PredictionLookup(Protocol):
    """The prediction service's BatchListPredictions (services/runtime/prediction_client.py fits it)."""

    async def batch_list(
        self,
        credentials: Mapping[str, str],
        molecule_ids: Sequence[str],
        properties: Sequence[str] = (),
        model_name: str = "",
    ) -> list[PredictedValue]: ...


@dataclass(frozen=True)
class PairView:
    """A pair's outcome with how the submission names its molecule."""

    outcome: PairOutcome
    sample_code: str
    registration_number: str


@dataclass(frozen=True)
class ComparisonView:
    comparison: Comparison
    pairs: tuple[PairView, ...]  # empty when summary_only
    scatter_plot_path: str
    residual_plot_path: str


class ComparisonService:
    def __init__(self, uow: CroTransactions, predictions: PredictionLookup) -> None:
        self._uow = uow
        self._predictions = predictions

    async def compare(
        self,
        principal: Principal,
        credentials: Mapping[str, str],
        result_id: str,
        property_name: str = "",
        model_name: str = "",
        summary_only: bool = False,
    ) -> list[ComparisonView]:
        """One comparison per property, model name and version of the version's values (sorted by those)."""
        header, values = await self._comparable(principal, result_id, property_name)
        comparisons = await self._comparisons(credentials, values, model_name)
        by_molecule = {v.molecule_id: v for v in values}
        return [_view(header.id, c, by_molecule, summary_only) for c in comparisons]

    async def plot(
        self,
        principal: Principal,
        credentials: Mapping[str, str],
        result_id: str,
        property_name: str,
        model_name: str,
        model_version: str,
        kind: str = SCATTER,
        width: int = 0,
        height: int = 0,
    ) -> bytes:
        """A PNG of one comparison: the scatter plot or the residual histogram (width × height pixels)."""
        kind = kind.strip().lower() or SCATTER
        width, height = width or DEFAULT_WIDTH, height or DEFAULT_HEIGHT
        keys = (("property", property_name), ("model_name", model_name), ("model_version", model_version))
        violations = [(name, "required") for name, value in keys if not value]
        if kind not in PLOT_KINDS:
            violations.append(("kind", f"one of {', '.join(PLOT_KINDS)}"))
        if violations:
            raise ValidationError("invalid plot request", field_violations=violations)
        check_size(width, height)
        header, values = await self._comparable(principal, result_id, property_name)
        comparisons = await self._comparisons(credentials, values, model_name)
        chosen = next((c for c in comparisons if c.model_version == model_version), None)
        if chosen is None:  # say what there is to draw (every property and model of the version)
            _, values = await self._comparable(principal, result_id, "")
            comparisons = await self._comparisons(credentials, values, "")
            raise NotFoundError(
                f"result {header.id} has no comparison of {property_name} by {model_name} {model_version}; "
                f"it has: {_existing(comparisons)}",
                metadata={"property": property_name, "model_name": model_name, "model_version": model_version},
            )
        render = scatter_png if kind == SCATTER else residual_histogram_png
        return await asyncio.to_thread(render, chosen, width=width, height=height)

    async def model_accuracy(
        self, principal: Principal, credentials: Mapping[str, str], model_name: str, property_name: str = ""
    ) -> list[ModelAccuracy]:
        """Per property, the model's versions by first use, scored on the organization's accepted results."""
        if not model_name.strip():
            raise ValidationError("model_name is required", field_violations=[("model_name", "required")])
        async with self._uow() as uow:
            accepted = await uow.comparisons.accepted(principal.organization_id)
            values = await uow.comparisons.accepted_values(principal.organization_id, property_name)
        if not values:
            return []
        predicted = await self._predictions.batch_list(
            credentials, [v.molecule_id for v in values], sorted({v.property for v in values}), model_name
        )
        by_result: dict[str, list[MeasuredValue]] = {}
        for value in values:
            by_result.setdefault(value.result_id, []).append(value)
        reviewed = [
            (header, _pairs(by_result[header.id], predicted))
            for header in accepted
            if header.reviewed_at is not None and header.id in by_result
        ]
        return await asyncio.to_thread(_accuracy, reviewed)

    async def _comparable(
        self, principal: Principal, result_id: str, property_name: str
    ) -> tuple[ResultHeader, list[MeasuredValue]]:
        """The version and its values, once the caller may compare it and it has values to compare."""
        async with self._uow() as uow:
            header = await uow.comparisons.result(result_id)
            if header is None or not _sees(principal, header):
                raise NotFoundError(f"result {result_id} not found")
            if principal.organization_id != header.organization_id:
                raise AuthorizationError(PHARMA_ONLY, detail="PREDICTIONS_PHARMA_ONLY")
            _check_comparable(header)
            return header, await uow.comparisons.values(header.id, property_name)

    async def _comparisons(
        self, credentials: Mapping[str, str], values: Sequence[MeasuredValue], model_name: str
    ) -> list[Comparison]:
        if not values:
            return []
        predicted = await self._predictions.batch_list(
            credentials, [v.molecule_id for v in values], sorted({v.property for v in values}), model_name
        )
        pairs = _pairs(values, predicted)
        return await asyncio.to_thread(compare, pairs)


def _sees(principal: Principal, header: ResultHeader) -> bool:
    """Who may know the version exists: both sides of the submission and a system admin."""
    sides = (header.organization_id, header.cro_organization_id)
    return principal.is_system_admin or principal.organization_id in sides


def _check_comparable(header: ResultHeader) -> None:
    if header.withdrawn:
        state = "withdrawn"
    elif header.status == FAILED:
        state = "FAILED"
    elif header.status in NOT_VALIDATED:
        state = f"{header.status} (not validated yet)"
    else:
        return
    raise PreconditionError(
        f"result {header.id} is {state}: it has no values to compare with predictions",
        detail="RESULT_NOT_COMPARABLE",
        metadata={"status": header.status, "withdrawn": str(header.withdrawn).lower()},
    )


def _pairs(values: Iterable[MeasuredValue], predicted: Iterable[PredictedValue]) -> list[PredictionPair]:
    """Each prediction with the measured value of the same molecule and property, in the same units."""
    measured = {(v.molecule_id, v.property): v for v in values if v.qualifier is not None and v.value is not None}
    pairs = []
    other_units: Counter[tuple[str, str, str, str, str]] = Counter()
    for p in predicted:
        value = measured.get((p.molecule_id, p.property))
        if value is None or value.value is None or value.qualifier is None:
            continue
        if _units(p.units) != _units(value.units):
            other_units[(p.property, p.model_name, p.model_version, p.units, value.units)] += 1
            continue
        pairs.append(
            PredictionPair(
                molecule_id=p.molecule_id,
                property=p.property,
                model_name=p.model_name,
                model_version=p.model_version,
                predicted=p.value,
                confidence=p.confidence,
                measured=value.value,
                qualifier=parse_qualifier(value.qualifier),
                units=value.units,
            )
        )
    for (name, model, version, predicted_units, measured_units), count in sorted(other_units.items()):
        log.warning(
            "%d prediction(s) of %s by %s %s in %r, measured in %r: not paired",
            count,
            name,
            model,
            version,
            predicted_units,
            measured_units,
        )
    return pairs


def _units(text: str) -> str:
    """DOMAIN.md writes dimensionless units as "–"; stored values use ""."""
    text = text.strip()
    return "" if text in DIMENSIONLESS else text


def _accuracy(reviewed: Sequence[tuple[ResultHeader, list[PredictionPair]]]) -> list[ModelAccuracy]:
    results = [
        ReviewedResult(header.id, header.reviewed_at, compare(pairs), header.submission_id)
        for header, pairs in reviewed
        if header.reviewed_at is not None
    ]
    return accuracy_over_time(results)


def _view(
    result_id: str, comparison: Comparison, by_molecule: Mapping[str, MeasuredValue], summary_only: bool
) -> ComparisonView:
    pairs: tuple[PairView, ...] = ()
    if not summary_only:
        pairs = tuple(
            PairView(o, by_molecule[o.molecule_id].sample_code, by_molecule[o.molecule_id].registration_number)
            for o in comparison.pairs
        )
    return ComparisonView(
        comparison,
        pairs,
        plot_path(result_id, comparison, SCATTER),
        plot_path(result_id, comparison, RESIDUALS),
    )


def plot_path(result_id: str, comparison: Comparison, kind: str) -> str:
    """Where GetComparisonPlot answers for this comparison (a path below /api/v1)."""
    query = urlencode(
        {
            "property": comparison.property,
            "model_name": comparison.model_name,
            "model_version": comparison.model_version,
            "kind": kind,
        },
        quote_via=quote,
    )
    return f"/results/{result_id}/compare-predictions/plot?{query}"


def _existing(comparisons: Sequence[Comparison]) -> str:
    if not comparisons:
        return "no comparisons (no predictions of its measured molecules and properties)"
    return "; ".join(f"{c.property} by {c.model_name} {c.model_version}" for c in comparisons)
