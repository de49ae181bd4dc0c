"""The known molecule properties (DOMAIN.md "Known properties") as data: name, label, type, canonical
units, allowed range, and whether RDKit calculates them or the AI engine predicts them.

Shared because more than one service reads it (the molecule service stores and imports values, the CRO
service validates uploaded results against the same units and ranges): a range or a unit is written
down exactly once. Pure data, no I/O.

Decisions:
- Dimensionless properties have units "" (DOMAIN.md writes "–"); proto strings default to "".
- `logd` has no range in DOMAIN.md; it gets the logp range (−10–10).
- Ranges are inclusive at both ends.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType


class ValueType(StrEnum):
    NUMERIC = "numeric"
    INTEGER = "integer"
    STRING = "string"
    BOOLEAN = "boolean"


@dataclass(frozen=True)
class PropertyDefinition:
    name: str
    label: str
    # None only for custom_* properties, whose type is decided per value (numbers stay numbers).
    value_type: ValueType | None
    units: str = ""
    minimum: float | None = None
    maximum: float | None = None
    calculated: bool = False  # computed by RDKit on registration (source CALCULATED)
    predictable: bool = False  # the AI engine may be asked for it
    custom: bool = False


def _numeric(name: str, label: str, units: str, low: float, high: float, **flags: bool) -> PropertyDefinition:
    return PropertyDefinition(name, label, ValueType.NUMERIC, units, low, high, **flags)


def _integer(name: str, label: str, low: int, high: int, **flags: bool) -> PropertyDefinition:
    return PropertyDefinition(name, label, ValueType.INTEGER, "", low, high, **flags)


_CATALOGUE = (
    _numeric("molecular_weight", "Molecular weight", "g/mol", 0, 2000, calculated=True),
    _numeric("exact_mass", "Exact mass", "g/mol", 0, 2000, calculated=True),
    _numeric("logp", "LogP (Crippen)", "", -10, 10, calculated=True, predictable=True),
    _numeric("tpsa", "Topological polar surface area", "Å²", 0, 500, calculated=True),
    _integer("num_atoms", "Atoms (including hydrogens)", 1, 1000, calculated=True),
    _integer("num_heavy_atoms", "Heavy atoms", 1, 500, calculated=True),
    _integer("num_rings", "Rings", 0, 50, calculated=True),
    _integer("num_rotatable_bonds", "Rotatable bonds", 0, 100, calculated=True),
    _integer("num_h_donors", "H-bond donors", 0, 50, calculated=True),
    _integer("num_h_acceptors", "H-bond acceptors", 0, 50, calculated=True),
    _integer("lipinski_violations", "Lipinski rule-of-five violations", 0, 4, calculated=True),
    _numeric("logd", "LogD", "", -10, 10, predictable=True),
    _numeric("solubility", "Solubility", "mg/mL", 0, 1000, predictable=True),
    _numeric("melting_point", "Melting point", "K", 0, 1000),
    _numeric("boiling_point", "Boiling point", "K", 0, 1500),
    _numeric("pka", "pKa", "", -10, 20, predictable=True),
    _numeric("pkb", "pKb", "", -10, 20, predictable=True),
    _numeric("ic50", "IC50", "nM", 0, 1e6, predictable=True),
    _numeric("ec50", "EC50", "nM", 0, 1e6, predictable=True),
    _numeric("binding_affinity", "Binding affinity", "nM", 0, 1e6, predictable=True),
    _numeric("permeability", "Permeability", "cm/s", 0, 1, predictable=True),
    _numeric("clearance", "Clearance", "mL/min/kg", 0, 1000, predictable=True),
    _numeric("half_life", "Half-life", "h", 0, 100, predictable=True),
    _numeric("bioavailability", "Bioavailability", "%", 0, 100, predictable=True),
    _numeric("volume_of_distribution", "Volume of distribution", "L/kg", 0, 100),
    # Computed by the prediction service; arrives as a PredictedValue in PredictionCompleted (stored PREDICTED).
    _numeric("desirability_score", "Desirability score (multi-parameter, 0–1)", "", 0, 1),
)

KNOWN_PROPERTIES: Mapping[str, PropertyDefinition] = MappingProxyType({d.name: d for d in _CATALOGUE})
CALCULATED_PROPERTIES: tuple[str, ...] = tuple(d.name for d in _CATALOGUE if d.calculated)
PREDICTABLE_PROPERTIES: tuple[str, ...] = tuple(d.name for d in _CATALOGUE if d.predictable)
