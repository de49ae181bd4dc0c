"""Predicted vs measured (issue 12): how well each prediction model did on the values a CRO measured. Pure:
pairs in, plain data out (no I/O, no grpc); the tables are pandas.

Input is one `PredictionPair` per (molecule, property, model version): the prediction, its confidence and
the reviewed measurement, both in the property's canonical units (DOMAIN.md; the upload converts). The
answer is one `Comparison` per (property, model name, model version).

Decisions:
- Scale. `LOG10_PROPERTIES` (ic50, ec50, binding_affinity, solubility, permeability, clearance,
  half_life, volume_of_distribution) span orders of magnitude and their errors are multiplicative, so
  every metric is computed on log10 values (MAE 0.3 = "off by a factor 2 on average"). A pair with a
  value ≤ 0 has no logarithm: it is left out of the metrics, status NOT_POSITIVE, and counted.
  `LOG_UNIT_PROPERTIES` (logp, logd, pka, pkb) are logarithms already and are compared as they are.
  Every other property (bioavailability, melting_point, custom_*, …) is LINEAR: compared as it is.
- The "within" share: on LOG10 and LOG_UNIT properties, |predicted − measured| ≤ 0.5 log10 units
  (≈ 3.16-fold for LOG10); on LINEAR ones, 2-fold (measured/2 ≤ predicted ≤ 2·measured), counted only
  over pairs where both values are > 0 (a fold of a non-positive value means nothing). The boundary is
  within. `WithinShare.rule` says which rule applied.
- Censored measurements (`<`, `>`) are never numbers: they stay out of n, MAE, RMSE, R², ρ, bias and
  the within share, and are classified instead: measured `<10` with predicted ≤ 10 is CONSISTENT,
  predicted > 10 INCONSISTENT (`>` mirrors it; the bound itself is consistent, a detection limit cannot
  tell it apart). The classification is made on raw values, which agrees with log space wherever both
  exist. `~` (approximate) values are used as numbers and counted in `approximate`.
- Metrics on the n included pairs, error e = predicted − measured (in the comparison scale):
  MAE = mean|e|, RMSE = √mean(e²), bias = mean(e) (> 0: the model predicts too high).
  R² = 1 − Σe² / Σ(measured − mean measured)², the coefficient of determination of the predictions
  taken as they are (no regression fitted), so it is negative when predictions are worse than always
  guessing the measured mean. Spearman ρ = Pearson correlation of the average ranks (ties share ranks).
- Nothing undefined is ever NaN: a metric that cannot be computed is None and `undefined[name]` says
  why (n = 0: all of them; n < 2: R² and ρ; all measured values equal: R² and ρ; all predicted values
  equal: ρ). Non-finite inputs (NaN, ±inf) are dropped with status NOT_FINITE and counted.
- Each pair reports `difference` = predicted − measured in the property's units, `abs_difference`, the
  `relative_difference` = difference / |measured| (None when measured is 0) and, for LOG10 properties,
  `log10_difference` (the error the metrics use). Censored pairs have no differences.
- Confidence: included pairs with a confidence in [0, 1] are split at their median confidence: values
  ≥ median are "high", below are "low" — unless nothing is below the median (many ties at the bottom),
  then the ties go to "low". Both groups are non-empty exactly when the confidences are not all equal.
  A median, not a fixed 0.5: it asks whether the more confident half is more accurate whatever the
  model's calibration. `error_correlation` = Spearman ρ of confidence vs |error| (negative = confidence
  means something). A confidence that is missing, NaN or outside [0, 1] is not used (`without_confidence`).
- One comparison has one unit: pairs of a (property, model version) in different units are a
  ValidationError, never silently mixed.
- Accuracy over time (`accuracy_over_time`): for each model name and property, its versions ordered by
  first use (the earliest review date of a result scoring it; ties by version text), each with the
  metrics of every result (ordered by review date) and the metrics over all its pairs pooled (not an
  average of per-result metrics, so a small result weighs little). A molecule measured in two results
  counts twice.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

import numpy as np
import pandas as pd

from services.cro.domain.vocabulary import CENSORED, Qualifier
from services.runtime.errors import ValidationError

LOG10_PROPERTIES = frozenset(
    {
        "ic50",
        "ec50",
        "binding_affinity",
        "solubility",
        "permeability",
        "clearance",
        "half_life",
        "volume_of_distribution",
    }
)
LOG_UNIT_PROPERTIES = frozenset({"logp", "logd", "pka", "pkb"})
WITHIN_LOG_UNITS = 0.5
WITHIN_FOLD = 2.0
# Float slack so a value exactly on the boundary (10**0.5 vs 1, 2 vs 1) stays within.
_BOUNDARY_SLACK = 1e-9

N_ZERO = "no numeric pairs"
N_BELOW_TWO = "needs at least 2 numeric pairs"
MEASURED_CONSTANT = "all measured values are equal: no variance to explain"
PREDICTED_CONSTANT = "all predicted values are equal: no ranking"
CONFIDENCE_TOO_FEW = "needs at least 2 numeric pairs with a confidence"
CONFIDENCE_CONSTANT = "all confidences are equal: nothing to split"




class Scale(StrEnum):
    LOG10 = "LOG10"  # compared as log10 of the values
    LOG_UNITS = "LOG_UNITS"  # the values are logarithms already
    LINEAR = "LINEAR"


class WithinRule(StrEnum):
    HALF_LOG_UNIT = "WITHIN_0_5_LOG_UNITS"
    TWO_FOLD = "WITHIN_2_FOLD"


class PairStatus(StrEnum):
    INCLUDED = "INCLUDED"  # in the numeric metrics
    CENSORED_CONSISTENT = "CENSORED_CONSISTENT"
    CENSORED_INCONSISTENT = "CENSORED_INCONSISTENT"
    NOT_POSITIVE = "NOT_POSITIVE"  # a LOG10 property with a value ≤ 0
    NOT_FINITE = "NOT_FINITE"  # NaN or infinite predicted or measured value


def parse_qualifier(text: str) -> Qualifier:
    """`=`, `~`, `<` or `>` (surrounding spaces ignored); an empty text is `=`."""
    try:
        return Qualifier(text.strip() or "=")
    except ValueError:
        raise ValidationError(
            f"unknown qualifier {text!r}: use =, ~, < or >", detail="UNKNOWN_QUALIFIER", metadata={"qualifier": text}
        ) from None


def scale_of(property_name: str) -> Scale:
    if property_name in LOG10_PROPERTIES:
        return Scale.LOG10
    if property_name in LOG_UNIT_PROPERTIES:
        return Scale.LOG_UNITS
    return Scale.LINEAR


def within_rule(scale: Scale) -> WithinRule:
    return WithinRule.TWO_FOLD if scale is Scale.LINEAR else WithinRule.HALF_LOG_UNIT


@dataclass(frozen=True)
class PredictionPair:
    """A prediction and the reviewed measurement of the same molecule and property, same units."""

    molecule_id: str
    property: str
    model_name: str
    model_version: str
    predicted: float
    confidence: float | None
    measured: float
    qualifier: Qualifier = Qualifier.EQUAL
    units: str = ""


@dataclass(frozen=True)
class PairOutcome:
    molecule_id: str
    predicted: float | None  # None when not finite
    confidence: float | None  # None when missing or outside [0, 1]
    measured: float | None
    qualifier: Qualifier
    status: PairStatus
    difference: float | None = None  # predicted − measured, property units
    abs_difference: float | None = None
    relative_difference: float | None = None  # difference / |measured|
    log10_difference: float | None = None  # LOG10 properties: log10(predicted) − log10(measured)

    @property
    def error(self) -> float | None:
        """The difference the metrics use (log10 for LOG10 properties); None unless INCLUDED."""
        if self.status is not PairStatus.INCLUDED:
            return None
        return self.log10_difference if self.log10_difference is not None else self.difference


@dataclass(frozen=True)
class Metrics:
    n: int
    mae: float | None
    rmse: float | None
    r2: float | None
    spearman: float | None
    bias: float | None
    undefined: Mapping[str, str] = field(default_factory=dict)  # metric name → why it is None


@dataclass(frozen=True)
class WithinShare:
    rule: WithinRule
    within: int
    counted: int  # pairs the rule applies to (2-fold: both values > 0)
    share: float | None  # within / counted; None when counted = 0


@dataclass(frozen=True)
class CensoredSummary:
    consistent: int
    inconsistent: int

    @property
    def total(self) -> int:
        return self.consistent + self.inconsistent


@dataclass(frozen=True)
class ConfidenceGroup:
    n: int
    mean_confidence: float
    min_confidence: float
    max_confidence: float
    mae: float
    rmse: float


@dataclass(frozen=True)
class ConfidenceSplit:
    threshold: float | None  # the median confidence
    high: ConfidenceGroup | None
    low: ConfidenceGroup | None
    error_correlation: float | None  # Spearman ρ of confidence vs |error|
    without_confidence: int  # included pairs whose confidence is not usable
    undefined: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Summary:
    """Everything computed from a set of pair outcomes of one property."""

    metrics: Metrics
    within: WithinShare
    censored: CensoredSummary
    confidence: ConfidenceSplit
    approximate: int  # `~` values used as numbers
    not_positive: int
    not_finite: int


@dataclass(frozen=True)
class Comparison:
    property: str
    model_name: str
    model_version: str
    units: str
    scale: Scale
    summary: Summary
    pairs: tuple[PairOutcome, ...]  # in input order


def compare(pairs: Iterable[PredictionPair]) -> list[Comparison]:
    """One Comparison per (property, model name, model version), sorted by those three."""
    groups: dict[tuple[str, str, str], list[PredictionPair]] = {}
    for pair in pairs:
        groups.setdefault((pair.property, pair.model_name, pair.model_version), []).append(pair)
    comparisons = []
    for (property_name, model_name, model_version), members in sorted(groups.items()):
        units = _single_units(property_name, (pair.units for pair in members))
        scale = scale_of(property_name)
        outcomes = tuple(outcome(pair, scale) for pair in members)
        comparisons.append(
            Comparison(property_name, model_name, model_version, units, scale, summarise(outcomes, scale), outcomes)
        )
    return comparisons


def outcome(pair: PredictionPair, scale: Scale) -> PairOutcome:
    """Classify one pair and compute its differences."""
    qualifier = parse_qualifier(pair.qualifier)
    confidence = _finite(pair.confidence)
    if confidence is not None and not 0 <= confidence <= 1:
        confidence = None
    predicted, measured = _finite(pair.predicted), _finite(pair.measured)
    plain = PairOutcome(pair.molecule_id, predicted, confidence, measured, qualifier, PairStatus.NOT_FINITE)
    if predicted is None or measured is None:
        return plain
    if qualifier in CENSORED:
        consistent = predicted <= measured if qualifier is Qualifier.LESS else predicted >= measured
        return replace(plain, status=PairStatus.CENSORED_CONSISTENT if consistent else PairStatus.CENSORED_INCONSISTENT)
    difference = predicted - measured
    if not math.isfinite(difference):  # 1e308 − (−1e308): no usable difference
        return plain
    log10_difference = None
    status = PairStatus.INCLUDED
    if scale is Scale.LOG10:
        if predicted > 0 and measured > 0:
            log10_difference = math.log10(predicted) - math.log10(measured)
        else:
            status = PairStatus.NOT_POSITIVE
    return replace(
        plain,
        status=status,
        difference=difference,
        abs_difference=abs(difference),
        relative_difference=_finite(difference / abs(measured)) if measured != 0 else None,
        log10_difference=log10_difference,
    )


def summarise(outcomes: Sequence[PairOutcome], scale: Scale) -> Summary:
    """Metrics, within share, censored counts and confidence split of pair outcomes of one property."""
    frame = _numeric_frame(outcomes, scale)
    statuses = pd.Series([o.status for o in outcomes], dtype=object)
    return Summary(
        metrics=_metrics(frame),
        within=_within_share(frame, scale),
        censored=CensoredSummary(
            consistent=int((statuses == PairStatus.CENSORED_CONSISTENT).sum()),
            inconsistent=int((statuses == PairStatus.CENSORED_INCONSISTENT).sum()),
        ),
        confidence=_confidence_split(frame),
        approximate=sum(o.qualifier is Qualifier.APPROXIMATE and o.status is PairStatus.INCLUDED for o in outcomes),
        not_positive=int((statuses == PairStatus.NOT_POSITIVE).sum()),
        not_finite=int((statuses == PairStatus.NOT_FINITE).sum()),
    )


def _numeric_frame(outcomes: Sequence[PairOutcome], scale: Scale) -> pd.DataFrame:
    """The INCLUDED pairs: raw values, values in the comparison scale, error and confidence."""
    included = [o for o in outcomes if o.status is PairStatus.INCLUDED]
    frame = pd.DataFrame(
        {
            "predicted_raw": [o.predicted for o in included],
            "measured_raw": [o.measured for o in included],
            "confidence": [o.confidence for o in included],
        },
        dtype=np.float64,
    )
    transform = np.log10 if scale is Scale.LOG10 else (lambda column: column)
    frame["predicted"] = transform(frame["predicted_raw"])
    frame["measured"] = transform(frame["measured_raw"])
    frame["error"] = frame["predicted"] - frame["measured"]
    return frame


def _metrics(frame: pd.DataFrame) -> Metrics:
    """n, MAE, RMSE, R², Spearman ρ and bias of a frame with `predicted`, `measured`, `error` columns."""
    n = len(frame)
    if n == 0:
        reason = {name: N_ZERO for name in ("mae", "rmse", "r2", "spearman", "bias")}
        return Metrics(0, None, None, None, None, None, reason)
    error, measured, predicted = frame["error"], frame["measured"], frame["predicted"]
    undefined: dict[str, str] = {}
    r2 = spearman = None
    if n < 2:
        undefined["r2"] = undefined["spearman"] = N_BELOW_TWO
    elif measured.nunique() == 1:  # not Σ(x − x̄)² == 0: a float mean of equal values may miss them
        undefined["r2"] = undefined["spearman"] = MEASURED_CONSTANT
    else:
        r2 = 1.0 - float((error**2).sum()) / float(((measured - measured.mean()) ** 2).sum())
        if predicted.nunique() == 1:
            undefined["spearman"] = PREDICTED_CONSTANT
        else:
            spearman = _rank_correlation(predicted, measured)
    return Metrics(
        n=n,
        mae=_finite(error.abs().mean()),
        rmse=_finite(math.sqrt((error**2).mean())),
        r2=_finite(r2),
        spearman=_finite(spearman),
        bias=_finite(error.mean()),
        undefined=undefined,
    )


def _within_share(frame: pd.DataFrame, scale: Scale) -> WithinShare:
    rule = within_rule(scale)
    if rule is WithinRule.HALF_LOG_UNIT:
        counted = frame
        within = frame["error"].abs() <= WITHIN_LOG_UNITS + _BOUNDARY_SLACK
    else:
        counted = frame[(frame["predicted_raw"] > 0) & (frame["measured_raw"] > 0)]
        ratio = counted["predicted_raw"] / counted["measured_raw"]
        within = (ratio <= WITHIN_FOLD * (1 + _BOUNDARY_SLACK)) & (ratio * WITHIN_FOLD * (1 + _BOUNDARY_SLACK) >= 1)
    hits, total = int(within.sum()), len(counted)
    return WithinShare(rule, hits, total, hits / total if total else None)


def _confidence_split(frame: pd.DataFrame) -> ConfidenceSplit:
    rated = frame.dropna(subset=["confidence"])
    without = len(frame) - len(rated)
    if len(rated) < 2:
        reason = CONFIDENCE_TOO_FEW
    elif rated["confidence"].nunique() == 1:
        reason = CONFIDENCE_CONSTANT
    else:
        threshold = float(rated["confidence"].median())
        high_mask = rated["confidence"] >= threshold
        if high_mask.all():  # nothing below the median: the ties at the bottom are the low group
            high_mask = rated["confidence"] > threshold
        undefined = {}
        correlation = None
        if rated["error"].abs().nunique() == 1:
            undefined["error_correlation"] = "all errors are equal: no ranking"
        else:
            correlation = _finite(_rank_correlation(rated["confidence"], rated["error"].abs()))
        return ConfidenceSplit(
            threshold=threshold,
            high=_confidence_group(rated[high_mask]),
            low=_confidence_group(rated[~high_mask]),
            error_correlation=correlation,
            without_confidence=without,
            undefined=undefined,
        )
    undefined = {name: reason for name in ("threshold", "high", "low", "error_correlation")}
    return ConfidenceSplit(None, None, None, None, without, undefined)


def _confidence_group(group: pd.DataFrame) -> ConfidenceGroup:
    confidence, error = group["confidence"], group["error"]
    return ConfidenceGroup(
        n=len(group),
        mean_confidence=float(confidence.mean()),
        min_confidence=float(confidence.min()),
        max_confidence=float(confidence.max()),
        mae=float(error.abs().mean()),
        rmse=math.sqrt(float((error**2).mean())),
    )


def _rank_correlation(left: pd.Series, right: pd.Series) -> float:
    """Spearman ρ: Pearson correlation of average ranks (no scipy needed)."""
    return float(left.rank(method="average").corr(right.rank(method="average"), method="pearson"))


def _finite(value: float | None) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _single_units(property_name: str, units: Iterable[str]) -> str:
    found = sorted(set(units))
    if len(found) > 1:
        raise ValidationError(
            f"{property_name} is compared in one unit only, found {', '.join(repr(u) for u in found)}",
            detail="MIXED_UNITS",
            metadata={"property": property_name, "units": ", ".join(found)},
        )
    return found[0] if found else ""


# --- model accuracy over time ---------------------------------------------------------------------


@dataclass(frozen=True)
class ReviewedResult:
    """The comparisons of one reviewed result, and when it was reviewed."""

    result_id: str
    reviewed_at: datetime
    comparisons: Sequence[Comparison]
    submission_id: str = ""


@dataclass(frozen=True)
class ResultScore:
    result_id: str
    reviewed_at: datetime
    summary: Summary
    submission_id: str = ""


@dataclass(frozen=True)
class VersionAccuracy:
    model_version: str
    first_used: datetime
    overall: Summary  # all its pairs across the results, pooled
    results: tuple[ResultScore, ...]  # by review date


@dataclass(frozen=True)
class ModelAccuracy:
    model_name: str
    property: str
    units: str
    scale: Scale
    versions: tuple[VersionAccuracy, ...]  # by first use


def accuracy_over_time(results: Iterable[ReviewedResult]) -> list[ModelAccuracy]:
    """Per model name and property (sorted), each version's scores across results, versions by first use."""
    by_model: dict[tuple[str, str], dict[str, list[tuple[ReviewedResult, Comparison]]]] = {}
    for result in results:
        for comparison in result.comparisons:
            versions = by_model.setdefault((comparison.model_name, comparison.property), {})
            versions.setdefault(comparison.model_version, []).append((result, comparison))
    accuracies = []
    for (model_name, property_name), versions in sorted(by_model.items()):
        scale = scale_of(property_name)
        units = _single_units(property_name, (c.units for scored in versions.values() for _, c in scored))
        entries = []
        for version, scored in versions.items():
            scored.sort(key=lambda item: (item[0].reviewed_at, item[0].result_id))
            pooled = [pair for _, comparison in scored for pair in comparison.pairs]
            entries.append(
                VersionAccuracy(
                    model_version=version,
                    first_used=scored[0][0].reviewed_at,
                    overall=summarise(pooled, scale),
                    results=tuple(
                        ResultScore(r.result_id, r.reviewed_at, c.summary, r.submission_id) for r, c in scored
                    ),
                )
            )
        entries.sort(key=lambda entry: (entry.first_used, entry.model_version))
        accuracies.append(ModelAccuracy(model_name, property_name, units, scale, tuple(entries)))
    return accuracies
