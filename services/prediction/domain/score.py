"""The desirability score: one number in [0, 1] to rank molecules by, stored as `desirability_score`.

A multi-parameter score in the spirit of CNS MPO (Wager et al. 2010) and QED (Bickerton et al. 2012):
each property is mapped onto a desirability in [0, 1] by a piecewise-linear function (1 inside the
preferred range, falling linearly to 0 at the edge of the tolerated one), and the score is the
weighted mean of the desirabilities of the properties the molecule has. Means, not products, so a
missing prediction lowers confidence in the ranking, not the score itself; and the four calculated
components (always present after registration) keep every score comparable.

| property | source | desirable (1) | undesirable (0) | weight |
|---|---|---|---|---|
| molecular_weight | calculated | ≤ 360 g/mol | ≥ 500 | 1 |
| logp (Crippen) | calculated / predicted | ≤ 3 | ≥ 5 | 1 |
| tpsa | calculated | 40–90 Å² | ≤ 20 or ≥ 120 | 1 |
| num_h_donors | calculated | ≤ 0.5 | ≥ 3.5 | 1 |
| solubility | predicted | ≥ 0.1 mg/mL | ≤ 0.001 mg/mL (log scale) | 1 |
| permeability | predicted | ≥ 1e-5 cm/s | ≤ 1e-6 cm/s (log scale) | 1 |
| clearance | predicted | ≤ 10 mL/min/kg | ≥ 50 | 0.5 |
| half_life | predicted | ≥ 6 h | ≤ 1 h | 0.5 |
| bioavailability | predicted | ≥ 70 % | ≤ 20 % | 1 |

The first four rows are CNS MPO's thresholds for MW, ClogP, TPSA and HBD; the ADME rows use the
usual medicinal-chemistry cut-offs (Caco-2 high/low permeability, kinetic solubility 100 µg/mL,
%F). Pure Python: the prediction worker computes it for each molecule of a batch from the values
the molecule had when the job was requested (read through BatchGetMolecules, every source) with the
batch's new predictions in place of older PREDICTED ones, and sends it in PredictionCompleted as one
more PredictedValue; the molecule service stores it like any other prediction.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

SCORE_PROPERTY = "desirability_score"
SCORE_MODEL = "molbridge-desirability"
SCORE_VERSION = "1"
# DOMAIN.md: a property's effective value is the one of the first source present in this order.
PRECEDENCE = ("EXPERIMENTAL", "IMPORTED", "PREDICTED", "CALCULATED")
PREDICTED = "PREDICTED"


@dataclass(frozen=True)
class SourcedValue:
    """One numeric value a molecule has for a property, and where it came from (a PRECEDENCE name)."""

    name: str
    source: str
    value: float


@dataclass(frozen=True)
class Ramp:
    """Desirability 0 at or below `low0`, 1 from `low1` to `high1`, 0 at or above `high0` (on a
    log10 scale when `log`); an infinite bound means the function never falls on that side."""

    low0: float
    low1: float
    high1: float = math.inf
    high0: float = math.inf
    log: bool = False
    weight: float = 1.0

    def __call__(self, value: float) -> float:
        if self.log:
            if value <= 0:
                return 0.0 if self.low0 > -math.inf else 1.0
            value = math.log10(value)
        if value < self.low1:
            return 0.0 if value <= self.low0 else (value - self.low0) / (self.low1 - self.low0)
        if value > self.high1:
            return 0.0 if value >= self.high0 else (self.high0 - value) / (self.high0 - self.high1)
        return 1.0


COMPONENTS: Mapping[str, Ramp] = {
    "molecular_weight": Ramp(-math.inf, -math.inf, 360, 500),
    "logp": Ramp(-math.inf, -math.inf, 3, 5),
    "tpsa": Ramp(20, 40, 90, 120),
    "num_h_donors": Ramp(-math.inf, -math.inf, 0.5, 3.5),
    "solubility": Ramp(-3, -1, log=True),
    "permeability": Ramp(-6, -5, log=True),
    "clearance": Ramp(-math.inf, -math.inf, 10, 50, weight=0.5),
    "half_life": Ramp(1, 6, weight=0.5),
    "bioavailability": Ramp(20, 70),
}


def desirability(values: Mapping[str, float]) -> float | None:
    """The score of a molecule's property values (name → number; others are ignored), rounded to 4
    places; None when it has none of the components (nothing to rank it by)."""
    total = weights = 0.0
    for name, ramp in COMPONENTS.items():
        value = values.get(name)
        if value is None or not math.isfinite(value):
            continue
        total += ramp.weight * ramp(value)
        weights += ramp.weight
    return round(total / weights, 4) if weights else None


def effective_values(values: Iterable[SourcedValue]) -> dict[str, float]:
    """Each property's value from its highest-precedence source (unknown sources rank last)."""
    rank = {source: i for i, source in enumerate(PRECEDENCE)}
    best: dict[str, tuple[int, float]] = {}
    for item in values:
        order = rank.get(item.source, len(rank))
        if item.name not in best or order < best[item.name][0]:
            best[item.name] = (order, item.value)
    return {name: value for name, (_, value) in best.items()}


def score_after_prediction(known: Iterable[SourcedValue], predicted: Mapping[str, float]) -> float | None:
    """The score once `predicted` (property → new value) is stored: the new predictions replace the
    molecule's older PREDICTED values of the same properties; other sources keep their precedence."""
    kept = [v for v in known if not (v.source == PREDICTED and v.name in predicted)]
    fresh = [SourcedValue(name, PREDICTED, value) for name, value in predicted.items()]
    return desirability(effective_values([*kept, *fresh]))


def is_component(name: str) -> bool:
    """Whether a property feeds the score (only those are worth keeping for it)."""
    return name in COMPONENTS
