"""Cross-validate every fusion mode x classifier family on train+val (5 duplicate-grouped folds).

    python -m training.classification.cv --features runs/features --out runs/classification

Training folds use the reference masks plus the shipped segmenter's masks of the same cases (teaches
invariance to outline style; see training/classification/robustness.py for the val evidence). Held-out folds
are scored with both mask kinds (a lesion the segmenter missed scores 0); configs are ranked by the mean of
the two AUCs. The best config (never chosen on test) is what `training.classification.ship` packages.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from training.classification.fusion import MODES, build, classifiers


def load(features: Path, kind: str = "reference") -> dict:
    z = np.load(features / f"{kind}.npz")
    return {k: z[k] for k in z.files}


def design(d: dict) -> np.ndarray:
    return np.hstack([d["radiomics"], d["deep"].astype(np.float64)])


def aligned(d_ref: dict, d_other: dict, rows: np.ndarray) -> np.ndarray:
    """Design rows of d_other for the cases of d_ref[rows]; NaN where d_other has no features."""
    index = {c: i for i, c in enumerate(d_other["case"])}
    X = np.full((int(rows.sum()), design(d_ref).shape[1]), np.nan)
    Xo = design(d_other)
    for i, c in enumerate(d_ref["case"][rows]):
        if c in index:
            X[i] = Xo[index[c]]
    return X


@dataclass
class DevSet:
    """Train+val rows of a feature set: reference-mask design, auto-mask design (NaN where the segmenter
    found nothing), labels, folds, duplicate groups."""

    d: dict
    X: np.ndarray
    Xa: np.ndarray
    y: np.ndarray
    folds: np.ndarray
    groups: np.ndarray
    n_rad: int

    @classmethod
    def load(cls, features: Path) -> DevSet:
        d = load(features)
        dev = d["split"] != "test"
        return cls(d, design(d)[dev], aligned(d, load(features, "auto"), dev), d["label"][dev], d["fold"][dev],
                   d["group"][dev], d["radiomics"].shape[1])

    @property
    def found(self) -> np.ndarray:
        return ~np.isnan(self.Xa).any(axis=1)

    def training_rows(self, sel: np.ndarray | None = None):
        return training_rows(self.X, self.Xa, self.y, self.groups, np.ones(len(self.y), bool) if sel is None else sel)

    def calibration_rows(self, oofs, key: str) -> tuple[np.ndarray, np.ndarray]:
        """Out-of-fold probabilities of config `key` with both mask kinds (missed lesions left out), on the rows
        that ranked the configs (val only when the deep features come from a CNN fitted on train)."""
        r = oofs["rank_rows"] if "rank_rows" in oofs.files else np.ones(len(self.y), bool)
        k = key.replace("/", "__")
        return (np.concatenate([oofs[k][r], oofs[k + "__auto"][self.found & r]]),
                np.concatenate([self.y[r], self.y[self.found & r]]))


def predict_or_zero(model, X: np.ndarray) -> np.ndarray:
    p = np.zeros(len(X))
    ok = ~np.isnan(X).any(axis=1)
    if ok.any():
        p[ok] = model.predict_proba(X[ok])[:, 1]
    return p


def training_rows(X, Xa, y, groups, sel):
    """Reference rows of the selected cases plus their auto-mask rows where available."""
    ok = sel & ~np.isnan(Xa).any(axis=1)
    return (np.vstack([X[sel], Xa[ok]]), np.concatenate([y[sel], y[ok]]),
            np.concatenate([groups[sel], groups[ok]]))


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
    ap.add_argument("--rank-on", choices=["dev", "val"], default="dev",
                    help="rows that rank configs: all train+val, or val only (use 'val' when the deep features "
                         "come from a CNN fitted on train: its train-row features are in-sample)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    ds = DevSet.load(args.features)
    d, X, Xa, y, folds, n_rad = ds.d, ds.X, ds.Xa, ds.y, ds.folds, ds.n_rad
    dev = d["split"] != "test"
    rank_rows = d["split"][dev] == "val" if args.rank_on == "val" else np.ones(len(y), bool)
    clfs = classifiers()
    names = args.clfs or list(clfs)
    args.out.mkdir(parents=True, exist_ok=True)
    results, oof_all = [], {}
    for mode in args.modes:
        for name in names:
            t0 = time.perf_counter()
            oof, oof_auto = np.zeros(len(y)), np.zeros(len(y))
            for k in range(5):
                te = folds == k
                model = fit_model(mode, clfs[name], *ds.training_rows(folds != k), n_rad)
                oof[te] = model.predict_proba(X[te])[:, 1]
                oof_auto[te] = predict_or_zero(model, Xa[te])
            r = rank_rows
            auc, auc_auto = roc_auc_score(y[r], oof[r]), roc_auc_score(y[r], oof_auto[r])
            fold_aucs = [roc_auc_score(y[folds == k], oof[folds == k]) for k in range(5)]
            results.append({"mode": mode, "clf": name, "cv_auc": auc, "cv_auc_auto": auc_auto,
                            "score": (auc + auc_auto) / 2, "fold_auc_std": float(np.std(fold_aucs)),
                            "seconds": time.perf_counter() - t0})
            oof_all[f"{mode}/{name}"] = oof
            oof_all[f"{mode}/{name}/auto"] = oof_auto
            print(f"{mode:9s} {name:4s} AUC ref {auc:.4f} ± {np.std(fold_aucs):.3f}  auto {auc_auto:.4f}"
                  f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    results.sort(key=lambda r: -r["score"])
    (args.out / "cv_results.json").write_text(json.dumps(
        {"n": int(len(y)), "rank_on": args.rank_on, "n_ranked": int(rank_rows.sum()),
         "deep_model": str(d.get("deep_model", "")), "results": results}, indent=1))
    np.savez_compressed(args.out / "oof.npz", y=y, case=d["case"][dev], rank_rows=rank_rows,
                        **{k.replace("/", "__"): v
                                                                          for k, v in oof_all.items()})
    print("best:", results[0])


if __name__ == "__main__":
    main()
