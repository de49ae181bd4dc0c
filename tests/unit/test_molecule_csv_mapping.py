"""The molecule import's column mapping (services/molecule/domain/csv_mapping.py): suggestions from
header names and validation. Reading the file itself is tests/unit/test_runtime_csv_format.py."""

import random
from collections.abc import Sequence

import pytest

from services.molecule.domain.csv_mapping import MappingError, suggest_mapping, validate_mapping
from services.runtime.csv_format import normalize_header, preview
from tests.data.csv import corpus

# DOMAIN.md's known properties (the catalogue is wired by the lead; these tests must not depend on it).
_DOMAIN_PROPERTIES = (
    "molecular_weight exact_mass logp tpsa num_atoms num_heavy_atoms num_rings num_rotatable_bonds "
    "num_h_donors num_h_acceptors solubility melting_point boiling_point pka pkb ic50 ec50 binding_affinity "
    "permeability clearance half_life bioavailability volume_of_distribution"
)
KNOWN = frozenset(_DOMAIN_PROPERTIES.split())


def test_preview_suggests_the_molecule_mapping_of_realistic_samples() -> None:
    def suggest(headers: Sequence[str]) -> dict[str, str]:
        return suggest_mapping(headers, KNOWN)

    chembl = preview(corpus.SAMPLES["chembl_export.csv"], suggest=suggest)
    assert chembl.suggested_mapping == {
        "Molecule ChEMBL ID": "custom_molecule_chembl_id",
        "Molecule Name": "name",
        "Molecular Weight": "molecular_weight",
        "AlogP": "logp",
        "Polar Surface Area": "tpsa",
        "HBA": "num_h_acceptors",
        "HBD": "num_h_donors",
        "#RO5 Violations": "custom_ro5_violations",  # lipinski_violations is not in KNOWN here
        "Smiles": "smiles",
        "Standard Type": "custom_standard_type",
        "Standard Value": "custom_standard_value",
        "Standard Units": "custom_standard_units",
    }

    excel = preview(corpus.SAMPLES["excel_windows1252.csv"], suggest=suggest)
    assert excel.suggested_mapping["Structure"] == "smiles"
    assert excel.suggested_mapping["MW (g/mol)"] == "molecular_weight"
    assert excel.suggested_mapping["Solubilité (mg/mL)"] == "custom_solubilite"

    pandas = preview(corpus.SAMPLES["pandas_index.csv"], suggest=suggest)
    assert pandas.suggested_mapping == {
        "column_1": "ignore",
        "smiles": "smiles",
        "name": "name",
        "logp": "logp",
        "TPSA": "tpsa",
    }


def test_suggested_mapping_follows_the_synonyms() -> None:
    headers = [
        "SMILES",
        "Compound ID",
        "IC50 (nM)",
        "MW",
        "cLogP",
        "TPSA",
        "H-bond donors",
        "HBA",
        "MP (°C)",
        "Solubility (mg/mL)",
        "pKa",
        "t1/2 [h]",
        "Ki_nM",
        "Assay (A)",
        "Assay [B]",
        "custom_purity",
        "Purity",
        "Canonical SMILES",
        "structure",
        "Name",
        "ID",
    ]
    assert suggest_mapping(headers, KNOWN) == {
        "SMILES": "smiles",
        "Compound ID": "custom_compound_id",  # "Name" ranks higher for name; ids are kept as data
        "IC50 (nM)": "ic50",
        "MW": "molecular_weight",
        "cLogP": "logp",
        "TPSA": "tpsa",
        "H-bond donors": "num_h_donors",
        "HBA": "num_h_acceptors",
        "MP (°C)": "melting_point",
        "Solubility (mg/mL)": "solubility",
        "pKa": "pka",
        "t1/2 [h]": "half_life",
        "Ki_nM": "binding_affinity",
        "Assay (A)": "custom_assay",
        "Assay [B]": "custom_assay_2",
        "custom_purity": "custom_purity",
        "Purity": "custom_purity_2",
        "Canonical SMILES": "ignore",  # only one structure column: the best one
        "structure": "ignore",
        "Name": "name",
        "ID": "custom_id",
    }
    assert normalize_header("IC50 (nM)") == ("ic50", "nM")
    assert normalize_header("Solubility (mg/mL)") == ("solubility", "mg/mL")
    assert suggest_mapping(["structure", "mol", "smi"], KNOWN) == {
        "structure": "ignore",
        "mol": "ignore",
        "smi": "smiles",
    }


def test_properties_outside_the_catalogue_become_custom() -> None:
    assert suggest_mapping(["smiles", "MW", "logD"], {"logp"}) == {
        "smiles": "smiles",
        "MW": "custom_mw",
        "logD": "custom_logd",
    }


def test_every_suggestion_is_a_valid_mapping() -> None:
    rng = random.Random(5)
    vocabulary = [
        "SMILES",
        "smi",
        "Structure",
        "Name",
        "ID",
        "MW",
        "mw (g/mol)",
        "LogP",
        "IC50 (nM)",
        "IC50 [uM]",
        "x",
        "X ",
        "(nM)",
        "???",
        "Ünïcödé",
        "column 3",
        "custom_a",
        "a" * 80,
        "pKa",
        "HBD",
    ]
    for _ in range(300):
        headers = list(dict.fromkeys(rng.sample(vocabulary, rng.randint(1, 8))))
        headers = [
            h
            for i, h in enumerate(headers)
            if h.strip().casefold() not in {g.strip().casefold() for g in headers[:i]}
        ]
        mapping = suggest_mapping(headers, KNOWN)
        assert set(mapping) == set(headers)
        if "smiles" in mapping.values():
            validate_mapping(headers, mapping, KNOWN)


def test_mapping_violations_are_all_named() -> None:
    headers = ["SMILES", "smi", "IC50", "Name"]
    validate_mapping(headers, {"SMILES": "smiles", "IC50": "ic50", "smi": "ignore"}, KNOWN)
    validate_mapping(headers, {"SMILES": "smiles", "IC50": "custom_ic50_raw"}, KNOWN)
    cases = {
        "no column is mapped to smiles": {"IC50": "ic50"},
        '"SMILES", "smi" are all mapped to smiles': {"SMILES": "smiles", "smi": "smiles"},
        'unknown target "potency"': {"SMILES": "smiles", "IC50": "potency"},
        'unknown target "custom_"': {"SMILES": "smiles", "IC50": "custom_"},
        'unknown target "SMILES"': {"SMILES": "SMILES"},
        '"MW" is not a column of the file': {"SMILES": "smiles", "MW": "molecular_weight"},
        '"IC50", "Name" are all mapped to ic50': {"SMILES": "smiles", "IC50": "ic50", "Name": "ic50"},
    }
    for fragment, mapping in cases.items():
        with pytest.raises(MappingError) as raised:
            validate_mapping(headers, mapping, KNOWN)
        assert fragment in raised.value.message
        assert raised.value.field_violations and raised.value.code == "VALIDATION_ERROR"
    with pytest.raises(MappingError, match=r'duplicate column name "SMILES" \(columns 1, 2\)'):
        validate_mapping(["SMILES", "smiles"], {"SMILES": "smiles"}, KNOWN)
    with pytest.raises(MappingError) as raised:
        validate_mapping(headers, {"MW": "potency"}, KNOWN)
    assert [field for field, _ in raised.value.field_violations] == ["mapping.MW", "mapping.MW", "mapping"]
