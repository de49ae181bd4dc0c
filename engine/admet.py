"""admet-ai (chemprop ensembles shipped in its wheel, CPU) mapped onto DOMAIN.md property names and units."""

from __future__ import annotations

import csv
import importlib.metadata
import importlib.util
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rdkit import Chem
from rdkit.Chem import Descriptors

from engine import chem
from engine.models import Metrics, Prediction, PropertySpec, reliability_from_r2

HEPATOCELLULARITY = 120.0  # 10^6 cells per g liver
LIVER_G_PER_KG = 25.7
HEPATIC_BLOOD_FLOW = 20.7  # mL/min/kg


def hepatic_clearance(clint_per_million_cells: float) -> float:
    """In vitro hepatocyte CLint → in vivo hepatic clearance (mL/min/kg), well-stirred model with fu = 1."""
    clint = max(0.0, clint_per_million_cells) * HEPATOCELLULARITY * LIVER_G_PER_KG / 1000.0  # mL/min/kg
    return HEPATIC_BLOOD_FLOW * clint / (HEPATIC_BLOOD_FLOW + clint)


@dataclass(frozen=True)
class Endpoint:
    column: str
    units: str
    convert: Callable[[float, Chem.Mol], float]
    note: str


# DOMAIN.md property → admet-ai endpoint and the conversion into DOMAIN.md units.
ENDPOINTS: dict[str, Endpoint] = {
    "solubility": Endpoint("Solubility_AqSolDB", "mg/mL",
                           lambda v, mol: chem.logs_to_mg_per_ml(v, Descriptors.MolWt(mol)),
                           "AqSolDB logS (log10 mol/L) → mg/mL = 10^logS × MW; metrics on the logS scale"),
    "logd": Endpoint("Lipophilicity_AstraZeneca", "–", lambda v, mol: v,
                     "logD at pH 7.4 (AstraZeneca lipophilicity set)"),
    "permeability": Endpoint("Caco2_Wang", "cm/s", lambda v, mol: 10.0**v,
                             "Caco-2 apparent permeability; model output is log10(cm/s) → cm/s = 10^x"),
    "clearance": Endpoint("Clearance_Hepatocyte_AZ", "mL/min/kg", lambda v, mol: hepatic_clearance(v),
                          "human hepatic blood clearance scaled from predicted hepatocyte CLint "
                          "(µL/min/10^6 cells) by the well-stirred liver model: 120e6 cells/g liver, "
                          "25.7 g liver/kg, Qh 20.7 mL/min/kg, fu = 1 (protein binding ignored, so highly bound "
                          "drugs come out too high); metrics are on the CLint scale"),
    "half_life": Endpoint("Half_Life_Obach", "h", lambda v, mol: max(0.0, v),
                          "human half-life in hours (Obach); negative outputs clipped to 0; held-out R² is "
                          "negative, so confidence is 0: treat as a rough indication only"),
    "bioavailability": Endpoint("Bioavailability_Ma", "%", lambda v, mol: 100.0 * v,
                                "classifier: the value is the PROBABILITY (in %) that oral bioavailability is "
                                "≥ 20% (Ma et al.), not the bioavailability fraction itself"),
}


# admet.csv labels Caco2_Wang "log(10^-6 cm/s)", but the model outputs log10(cm/s) (≈ −4.5 for aspirin).
METRIC_UNITS = {"Caco2_Wang": "log10(cm/s)"}


def _resources() -> Path:
    spec = importlib.util.find_spec("admet_ai")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("admet-ai is not installed in this venv")
    return Path(spec.submodule_search_locations[0]) / "resources"


def _number(row: dict[str, str], key: str) -> float | None:
    return round(float(row[key]), 4) if row.get(key) else None


def _shipped_metrics() -> dict[str, Metrics]:
    """Test-set metrics that admet-ai ships for each endpoint (resources/data/admet.csv)."""
    out = {}
    with open(_resources() / "data" / "admet.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            out[row["id"]] = Metrics(
                r2=_number(row, "R^2"), mae=_number(row, "MAE"), n=int(row["size"] or 0),
                dataset=f"admet-ai's shipped test metrics for {row['id']} (n = size of the whole TDC dataset)",
                units=METRIC_UNITS.get(row["id"], row["units"]), auroc=_number(row, "AUROC"))
    return out


class AdmetAI:
    """admet-ai 2.x. Confidence = endpoint reliability (held-out R², or 2·(AUROC−0.5) for the classifier)
    × agreement of the ensemble members × applicability domain against admet-ai's shipped DrugBank
    approved-drug reference set (its training sets are not shipped, so approved drugs stand in as the
    chemical space it was built for)."""

    name = "admet-ai"

    def __init__(self) -> None:
        os.environ.setdefault("TQDM_DISABLE", "1")
        from admet_ai import ADMETModel  # heavy: torch + chemprop

        self.version = importlib.metadata.version("admet-ai")
        self.description = "admet-ai chemprop ensembles (weights shipped in the wheel), CPU inference"
        self._model = ADMETModel(num_workers=0)
        shipped = _shipped_metrics()
        self.properties: dict[str, PropertySpec] = {}
        for prop, ep in ENDPOINTS.items():
            metrics = shipped[ep.column]
            if metrics.auroc is not None:
                reliability = max(0.0, min(1.0, 2.0 * (metrics.auroc - 0.5)))
            else:
                reliability = reliability_from_r2(metrics.r2)
            self.properties[prop] = PropertySpec(prop, ep.units, ep.column, metrics, ep.note, reliability)
        self._columns = {ep.column for ep in ENDPOINTS.values()}
        self._reference = []
        with open(_resources() / "data" / "drugbank_approved.csv", newline="") as fh:
            for row in csv.DictReader(fh):
                mol = Chem.MolFromSmiles(row.get("smiles") or row.get("SMILES") or "")
                if mol is not None:
                    self._reference.append(chem.fingerprint(mol))

    def members(self, mols: list[Chem.Mol]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per endpoint column: (mean, std) over the ensemble members, one entry per molecule.

        admet-ai's own predict() keeps only the mean; this runs the same loaded ensembles (its pinned 2.0.1
        attributes task_lists/model_lists and its dataloader) and keeps the spread for the confidence.
        """
        import lightning.pytorch as pl
        import torch

        loader = self._model._build_dataloader(mols=mols)
        out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        with torch.inference_mode():
            trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                                 enable_model_summary=False, accelerator="cpu", devices=1)
            for tasks, members in zip(self._model.task_lists, self._model.model_lists, strict=True):
                columns = [i for i, task in enumerate(tasks) if task in self._columns]
                if not columns:
                    continue
                preds = torch.stack([torch.cat(trainer.predict(model=m, dataloaders=loader), dim=0)
                                     for m in members]).numpy()  # members × molecules × tasks
                for i in columns:
                    out[tasks[i]] = (preds[:, :, i].mean(axis=0), preds[:, :, i].std(axis=0))
        return out

    def predict(self, mols: list[Chem.Mol], properties: list[str]) -> list[dict[str, Prediction]]:
        wanted = [p for p in properties if p in ENDPOINTS]
        if not wanted or not mols:
            return [{} for _ in mols]
        ensemble = self.members(mols)
        out: list[dict[str, Prediction]] = []
        for j, mol in enumerate(mols):
            domain = chem.domain_score(chem.max_similarity(mol, self._reference))
            row = {}
            for prop in wanted:
                spec = self.properties[prop]
                mean, std = ensemble[ENDPOINTS[prop].column]
                value, spread = float(mean[j]), float(std[j])
                if not math.isfinite(value):
                    continue
                # Member agreement: regression spread against the endpoint's held-out MAE; a classifier's
                # probability spread against its maximum (0.5).
                scale = spec.metrics.mae if spec.metrics.auroc is None and spec.metrics.mae else 0.5
                agreement = max(0.0, 1.0 - spread / scale)
                row[prop] = Prediction(ENDPOINTS[prop].convert(value, mol), spec.reliability * agreement * domain)
            out.append(row)
        return out
