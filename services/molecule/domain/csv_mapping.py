"""The column mapping of a CSV of molecules: which header is the SMILES, the name, a property.

Reading the file itself (dialect, header, rows, chunks) is services/runtime/csv_format.py; this is what
its columns mean to the molecule import. Unmapped headers are ignored by the import; suggestions never
map two headers to one target.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence

from services.runtime.csv_format import duplicate_columns, normalize_header
from services.runtime.errors import ValidationError

SMILES, NAME, IGNORE = "smiles", "name", "ignore"
CUSTOM_PREFIX = "custom_"

_CUSTOM_TARGET = re.compile(r"^custom_[a-z0-9_]{1,57}$")  # same rule as properties.is_custom_name


class MappingError(ValidationError):
    """A column mapping that cannot be imported; `field_violations` name each problem."""


# Normalised header (see normalize_header) → target, best first where several compete for one target.
# fmt: off
SYNONYMS: Mapping[str, tuple[str, ...]] = {
    SMILES: ("smiles", "canonical_smiles", "isomeric_smiles", "smiles_string", "molecule_smiles", "smile",
             "smi", "structure", "mol"),
    NAME: ("name", "molecule_name", "compound_name", "mol_name", "compound", "title", "compound_id",
           "molecule_id", "cmpd_id", "chembl_id", "molecule_chembl_id", "id", "identifier"),
    "molecular_weight": ("mw", "molwt", "mol_wt", "mol_weight", "molecular_mass", "weight", "average_mass"),
    "exact_mass": ("monoisotopic_mass", "monoisotopic_weight", "exact_mw"),
    "logp": ("clogp", "alogp", "xlogp", "xlogp3", "slogp", "mlogp", "log_p", "c_log_p"),
    "logd": ("log_d", "clogd", "logd7_4", "logd_7_4"),
    "tpsa": ("psa", "polar_surface_area", "topological_polar_surface_area"),
    "num_atoms": ("atoms", "atom_count", "n_atoms", "natoms"),
    "num_heavy_atoms": ("heavy_atoms", "heavy_atom_count", "hac", "n_heavy_atoms"),
    "num_rings": ("rings", "ring_count", "n_rings"),
    "num_rotatable_bonds": ("rotatable_bonds", "rot_bonds", "rotb", "nrotb", "num_rot_bonds",
                            "rotatable_bond_count"),
    "num_h_donors": ("hbd", "h_bond_donors", "hbond_donors", "h_donors", "num_hbd", "hbd_count", "donors",
                     "hbd_lipinski"),
    "num_h_acceptors": ("hba", "h_bond_acceptors", "hbond_acceptors", "h_acceptors", "num_hba", "hba_count",
                        "acceptors", "hba_lipinski"),
    "lipinski_violations": ("ro5_violations", "num_ro5_violations", "rule_of_five_violations"),
    "solubility": ("sol", "aq_solubility", "aqueous_solubility", "water_solubility"),
    "melting_point": ("mp", "m_p", "mpt", "melting_temp"),
    "boiling_point": ("bp", "b_p", "boiling_temp"),
    "ic50": ("ic_50",),
    "ec50": ("ec_50",),
    "binding_affinity": ("affinity", "ki", "kd"),
    "permeability": ("papp", "caco2", "caco_2", "caco2_permeability", "pampa"),
    "clearance": ("cl", "clint", "cl_int"),
    "half_life": ("halflife", "t1_2", "t_1_2", "t_half", "thalf"),
    "bioavailability": ("oral_bioavailability", "f_oral"),
    "volume_of_distribution": ("vd", "vdss", "vss", "v_d"),
}
# fmt: on
_RANKED = {key: (target, rank) for target, keys in SYNONYMS.items() for rank, key in enumerate(keys, 1)}
# Units written into the name itself ("IC50_nM"), tried when the whole name is not recognised.
_UNIT_SUFFIX = re.compile(
    r"_(?:nm|um|mm|pm|m|mg_ml|ug_ml|g_l|mg_l|g_mol|da|k|c|deg_c|h|hr|min|pct|percent|"
    r"cm_s|ml_min_kg|l_kg|a2)$"
)
_PLACEHOLDER = re.compile(r"^(?:column|unnamed)_?\d+$")


def _recognise(key: str, known: Collection[str]) -> tuple[str, int] | None:
    for candidate in (key, _UNIT_SUFFIX.sub("", key)):
        if candidate in known or candidate in (SMILES, NAME):
            return candidate, 0
        target, rank = _RANKED.get(candidate, ("", 0))
        if target in known or target in (SMILES, NAME):
            return target, rank
    return None


def suggest_mapping(headers: Sequence[str], known_targets: Collection[str]) -> dict[str, str]:
    """A valid mapping for every header: smiles, name, a known property, a custom_* name or ignore.

    Where several headers look like one target the best-ranked (then the leftmost) gets it; the other
    structure columns are ignored, the others become custom properties.
    """
    known = set(known_targets)
    recognised = {header: _recognise(normalize_header(header)[0], known) for header in headers}
    winners: dict[str, tuple[int, int, str]] = {}
    for position, (header, found) in enumerate(recognised.items()):
        if found and (found[0] not in winners or (found[1], position) < winners[found[0]][:2]):
            winners[found[0]] = (found[1], position, header)
    mapping: dict[str, str] = {}
    used = {target for target in winners}
    for position, header in enumerate(headers, 1):
        found = recognised[header]
        key = normalize_header(header)[0]
        if found and winners[found[0]][2] == header:
            mapping[header] = found[0]
        elif (found and found[0] == SMILES) or _PLACEHOLDER.match(key):
            mapping[header] = IGNORE
        else:
            mapping[header] = _custom_name(key, position, used)
            used.add(mapping[header])
    return mapping


def _custom_name(key: str, position: int, used: set[str]) -> str:
    slug = key.removeprefix(CUSTOM_PREFIX) or f"column_{position}"
    base = CUSTOM_PREFIX + slug[:50].rstrip("_")
    name, n = base, 2
    while name in used:
        name, n = f"{base}_{n}", n + 1
    return name


def is_valid_target(target: str, known_targets: Collection[str]) -> bool:
    return target in (SMILES, NAME, IGNORE) or target in known_targets or bool(_CUSTOM_TARGET.match(target))


def validate_mapping(
    headers: Sequence[str], mapping: Mapping[str, str], known_targets: Collection[str]
) -> None:
    """Raise MappingError naming every problem; headers absent from `mapping` are ignored by the import."""
    violations = [("headers", f"duplicate column name {found}") for found in duplicate_columns(headers)]
    present = set(headers)
    by_target: dict[str, list[str]] = {}
    for header, target in mapping.items():
        if header not in present:
            violations.append((f"mapping.{header}", f'"{header}" is not a column of the file'))
        if not is_valid_target(target, known_targets):
            violations.append(
                (
                    f"mapping.{header}",
                    f'unknown target "{target}": use smiles, name, ignore, a known property or custom_<name>',
                )
            )
        elif target != IGNORE:
            by_target.setdefault(target, []).append(header)
    if SMILES not in by_target:
        violations.append(("mapping", "no column is mapped to smiles"))
    for target, mapped in by_target.items():
        if len(mapped) > 1:
            names = ", ".join(f'"{h}"' for h in mapped)
            violations.append(("mapping", f"{names} are all mapped to {target}; a target takes one column"))
    if violations:
        raise MappingError(
            "invalid column mapping: " + "; ".join(message for _, message in violations),
            detail="INVALID_MAPPING",
            field_violations=violations,
        )
