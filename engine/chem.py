"""Shared chemistry for the engine's models: parsing, descriptors, fingerprints, applicability domain."""

from __future__ import annotations

import numpy as np
from rdkit import Chem, DataStructs, RDLogger
from rdkit.Chem import Descriptors, rdFingerprintGenerator
from rdkit.Chem.MolStandardize import rdMolStandardize

RDLogger.DisableLog("rdApp.*")

MAX_SMILES_LENGTH = 1000
_MORGAN = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
DESCRIPTOR_NAMES = [name for name, _ in Descriptors._descList]
_DESCRIPTOR_FUNCS = [fn for _, fn in Descriptors._descList]


def parent_mol(smiles: str) -> Chem.Mol | None:
    """Parse and reduce to the neutral largest fragment (salts and counter-ions do not dissolve the drug)."""
    mol = Chem.MolFromSmiles(smiles)
    if mol is None or mol.GetNumAtoms() == 0:
        return None
    mol = rdMolStandardize.LargestFragmentChooser().choose(mol)
    return rdMolStandardize.Uncharger().uncharge(mol)


def descriptors(mols: list[Chem.Mol]) -> np.ndarray:
    """RDKit 2D descriptors; a failing or non-finite descriptor becomes 0 and extremes are clipped (Ipc)."""
    rows = []
    for mol in mols:
        row = []
        for fn in _DESCRIPTOR_FUNCS:
            try:
                row.append(float(fn(mol)))
            except Exception:  # a descriptor that cannot handle this molecule
                row.append(0.0)
        rows.append(row)
    x = np.nan_to_num(np.asarray(rows, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(x, -1e6, 1e6)


def fingerprint(mol: Chem.Mol) -> DataStructs.ExplicitBitVect:
    return _MORGAN.GetFingerprint(mol)


def max_similarity(mol: Chem.Mol, reference: list[DataStructs.ExplicitBitVect]) -> float:
    """Highest Tanimoto similarity of the molecule's Morgan fingerprint to a reference set."""
    if not reference:
        return 0.0
    return float(max(DataStructs.BulkTanimotoSimilarity(fingerprint(mol), reference)))


def domain_score(similarity: float) -> float:
    """Applicability domain in [0, 1]: 0 at max similarity <= 0.2, 1 at >= 0.5, linear between.

    A nearest training neighbour below ~0.3 Tanimoto means the model extrapolates, so confidence is low.
    """
    return float(min(1.0, max(0.0, (similarity - 0.2) / 0.3)))


def logs_to_mg_per_ml(log_s: float, mol_weight: float) -> float:
    """logS (log10 mol/L) → mg/mL: 10^logS mol/L × MW g/mol = g/L = mg/mL."""
    return float(10.0**log_s * mol_weight)
