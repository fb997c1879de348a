"""Cross-validate every fusion mode x classifier family on train+val (5 duplicate-grouped folds).

    python -m training.classification.cv --features runs/features --out runs/classification

Writes OOF probabilities and a table of CV AUCs; the best config (by CV AUC, never by test) is what
`training.classification.ship` fits on all of train+val and packages.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from training.classification.fusion import MODES, build, classifiers


def load(features: Path, kind: str = "reference") -> dict:
    z = np.load(features / f"{kind}.npz")
    return {k: z[k] for k in z.files}


def design(d: dict) -> np.ndarray:
    return np.hstack([d["radiomics"], d["deep"].astype(np.float64)])


def fit_model(mode: str, clf, X, y, groups, n_rad: int):
    model = build(mode, clf, n_rad, X.shape[1], groups)
    if mode == "late":
        return model.fit(X, y, groups=groups)
    return model.fit(X, y)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", type=Path, default=Path("runs/features"))
    ap.add_argument("--out", type=Path, default=Path("runs/classification"))
    ap.add_argument("--modes", nargs="+", default=list(MODES))
    ap.add_argument("--clfs", nargs="+", default=None)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    d = load(args.features)
    dev = d["split"] != "test"
    X, y, folds, groups = design(d)[dev], d["label"][dev], d["fold"][dev], d["group"][dev]
    n_rad = d["radiomics"].shape[1]
    clfs = classifiers()
    names = args.clfs or list(clfs)
    args.out.mkdir(parents=True, exist_ok=True)
    results, oof_all = [], {}
    for mode in args.modes:
        for name in names:
            t0 = time.perf_counter()
            oof = np.zeros(len(y))
            for k in range(5):
                tr, te = folds != k, folds == k
                model = fit_model(mode, clfs[name], X[tr], y[tr], groups[tr], n_rad)
                oof[te] = model.predict_proba(X[te])[:, 1]
            auc = roc_auc_score(y, oof)
            fold_aucs = [roc_auc_score(y[folds == k], oof[folds == k]) for k in range(5)]
            results.append({"mode": mode, "clf": name, "cv_auc": auc, "fold_auc_std": float(np.std(fold_aucs)),
                            "seconds": time.perf_counter() - t0})
            oof_all[f"{mode}/{name}"] = oof
            print(f"{mode:9s} {name:4s} AUC {auc:.4f} ± {np.std(fold_aucs):.3f}  ({time.perf_counter() - t0:.0f} s)",
                  flush=True)
    results.sort(key=lambda r: -r["cv_auc"])
    (args.out / "cv_results.json").write_text(json.dumps({"n": int(len(y)), "results": results}, indent=1))
    np.savez_compressed(args.out / "oof.npz", y=y, case=d["case"][dev], **{k.replace("/", "__"): v
                                                                          for k, v in oof_all.items()})
    print("best:", results[0])


if __name__ == "__main__":
    main()
