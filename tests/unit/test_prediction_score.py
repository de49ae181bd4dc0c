"""The desirability score's documented thresholds and its handling of missing values."""

from __future__ import annotations

import math

import pytest

from services.prediction.domain.score import COMPONENTS, desirability

IDEAL = {
    "molecular_weight": 300, "logp": 2, "tpsa": 60, "num_h_donors": 0, "solubility": 1.0,
    "permeability": 3e-5, "clearance": 5, "half_life": 12, "bioavailability": 90,
}  # fmt: skip


def test_ideal_molecule_scores_one_and_each_component_can_pull_it_down() -> None:
    assert desirability(IDEAL) == 1.0
    worst = {
        "molecular_weight": 650, "logp": 7, "tpsa": 10, "num_h_donors": 5, "solubility": 1e-4,
        "permeability": 1e-7, "clearance": 80, "half_life": 0.5, "bioavailability": 5,
    }  # fmt: skip
    assert set(worst) == set(COMPONENTS)
    for name, bad in worst.items():
        assert desirability(IDEAL | {name: bad}) < 1.0, name
    assert desirability(worst) == 0.0


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("molecular_weight", 430, 0.5),  # halfway down 360 → 500
        ("logp", 4, 0.5),
        ("tpsa", 30, 0.5),
        ("tpsa", 105, 0.5),
        ("num_h_donors", 2, 0.5),
        ("solubility", 0.01, 0.5),  # log scale: halfway between 1 µg/mL and 100 µg/mL
        ("permeability", 10**-5.5, 0.5),
        ("bioavailability", 45, 0.5),
        ("solubility", 0.0, 0.0),
    ],
)
def test_ramps(name: str, value: float, expected: float) -> None:
    assert COMPONENTS[name](value) == pytest.approx(expected)


def test_mean_over_present_components_weighted() -> None:
    calculated_only = {k: IDEAL[k] for k in ("molecular_weight", "logp", "tpsa", "num_h_donors")}
    assert desirability(calculated_only | {"logp": 4}) == pytest.approx(3.5 / 4)
    # clearance weighs half: (4 + 0.5 * 0) / 4.5
    assert desirability(calculated_only | {"clearance": 60}) == pytest.approx(round(4 / 4.5, 4))
    assert desirability({"ic50": 5.0}) is None
    assert desirability({"logp": math.nan}) is None
