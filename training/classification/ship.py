"""Fit the best CV configuration on all of train+val, calibrate, and write the pickle-free bundle.

    python -m training.classification.ship --features runs/features --cv runs/classification

Choice by cross-validated AUC on train+val only (runs/classification/cv_results.json); the test split is
not read here. The bundle is checked to reproduce the scikit-learn model's probabilities.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

from BreastCADxLib.analysis.calibration import apply_calibration, expected_calibration_error, fit_platt
from BreastCADxLib.analysis.classifier import DEFAULT_CLASSIFIER, load_classifier
from BreastCADxLib.analysis.registry import MODELS_DIR, sha256_of
from training.classification.bundle import exported, ood_and_explainer, write_and_verify
from training.classification.cv import DevSet, fit_model
from training.classification.fusion import classifiers


def estimator_spec(clf, prefix: str, folder: Path) -> dict:
    from lightgbm import LGBMClassifier
    from xgboost import XGBClassifier

    if isinstance(clf, LogisticRegression):
        return {"kind": "logistic", "coef": clf.coef_[0].tolist(), "intercept": float(clf.intercept_[0])}
    if isinstance(clf, XGBClassifier):
        clf.get_booster().save_model(str(folder / f"{prefix}.xgb.json"))
        return {"kind": "xgboost", "file": f"{prefix}.xgb.json"}
    if isinstance(clf, LGBMClassifier):
        clf.booster_.save_model(str(folder / f"{prefix}.lgbm.txt"))
        return {"kind": "lightgbm", "file": f"{prefix}.lgbm.txt"}
    import skops.io as sio

    sio.dump(clf, folder / f"{prefix}.skops")
    return {"kind": "skops", "file": f"{prefix}.skops"}


def export_pipeline(pipe, name: str, names: list[str], arrays: dict, folder: Path) -> dict:
    branches = []
    for bname, trans, _ in pipe.named_steps["features"].transformers_:
        if bname == "rad":
            sel = trans.named_steps["select"].selected_
            arrays[f"{name}_rad_mean"] = trans.named_steps["scale"].mean_
            arrays[f"{name}_rad_scale"] = trans.named_steps["scale"].scale_
            branches.append({"kind": "radiomics", "selected": [names[i] for i in sel],
                             "mean": f"{name}_rad_mean", "scale": f"{name}_rad_scale"})
        elif bname == "deep":
            sc, pca = trans.named_steps["scale"], trans.named_steps["pca"]
            for key, val in (("mean", sc.mean_), ("scale", sc.scale_), ("pca_mean", pca.mean_),
                             ("pca_components", pca.components_)):
                arrays[f"{name}_deep_{key}"] = val
            branches.append({"kind": "deep", **{k: f"{name}_deep_{k}" for k in
                                                ("mean", "scale", "pca_mean", "pca_components")}})
    est = estimator_spec(pipe.named_steps["clf"], f"{DEFAULT_CLASSIFIER}_{name}", folder)
    return {"name": name, "branches": branches, "estimator": est}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", type=Path, default=Path("runs/features"))
    ap.add_argument("--cv", type=Path, default=Path("runs/classification"))
    ap.add_argument("--models", type=Path, default=MODELS_DIR)
    ap.add_argument("--config", help="mode/clf to ship instead of the CV best (e.g. late/LR)")
    ap.add_argument("--modes", nargs="+", default=["early", "late", "stacking"],
                    help="modes the shipped model may use: the product fuses radiomics and deep features, so "
                         "radiomics-only and deep-only are ablations by default")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    cv = json.loads((args.cv / "cv_results.json").read_text())
    best = next(r for r in cv["results"] if r["mode"] in args.modes)
    mode, cname = args.config.split("/") if args.config else (best["mode"], best["clf"])
    oofs = np.load(args.cv / "oof.npz")
    ds = DevSet.load(args.features)
    d, yr = ds.d, ds.y
    oof, y_oof = ds.calibration_rows(oofs, f"{mode}/{cname}")
    X, y, groups = ds.training_rows()
    names = [str(n) for n in d["radiomics_names"]]
    n_rad = len(names)
    model = fit_model(mode, classifiers()[cname], X, y, groups, n_rad)

    folder = args.models
    for old in folder.glob(f"{DEFAULT_CLASSIFIER}*"):
        old.unlink()
    arrays: dict[str, np.ndarray] = {}
    if mode in ("radiomics", "deep", "early"):
        members, combine = [export_pipeline(model, mode, names, arrays, folder)], {"kind": "single"}
    elif mode == "late":
        members = [export_pipeline(p, n, names, arrays, folder) for p, n in zip(model.members_, ("rad", "deep"))]
        combine = {"kind": "weighted", "weights": model.weights_.tolist()}
    else:
        members = [export_pipeline(p, n, names, arrays, folder) for p, n in zip(model.estimators_, ("rad", "deep"))]
        fe = model.final_estimator_
        combine = {"kind": "stacking", "coef": fe.coef_[0].tolist(), "intercept": float(fe.intercept_[0])}

    calibration = fit_platt(oof, y_oof)
    # OOD statistics and the deep explainer need the fused training vectors: built via a temporary card
    arrays.update(ood_mean=np.zeros(1), ood_precision=np.zeros((1, 1)), explain_deep_weight=np.zeros(1))
    card = {"id": DEFAULT_CLASSIFIER, "weights": f"{DEFAULT_CLASSIFIER}.npz", "sha256": "", "arrays":
            f"{DEFAULT_CLASSIFIER}.npz", "mode": mode, "classifier": cname, "radiomics_names": names,
            "members": members, "combine": combine, "calibration": calibration,
            "deep_model": cv.get("deep_model") or None,
            "ood": {"threshold": 0.0}, "explain": {"deep_bias": 0.0}, "files": {}}
    np.savez(folder / card["arrays"], **arrays)
    (folder / f"{DEFAULT_CLASSIFIER}.json").write_text(json.dumps(card))
    clf = load_classifier(DEFAULT_CLASSIFIER, folder)
    rad, deep = X[:, :n_rad], X[:, n_rad:]
    card["ood"], card["explain"] = ood_and_explainer(clf, rad, deep, y, arrays, "train+val")
    np.savez(folder / card["arrays"], **arrays)
    files = sorted(p.name for p in folder.glob(f"{DEFAULT_CLASSIFIER}*") if p.suffix != ".json")
    card["files"] = {f: sha256_of(folder / f) for f in files}
    card["sha256"] = card["files"][card["arrays"]]
    raw = model.predict_proba(X)[:, 1]
    card.update({
        "task": "benign vs malignant breast lesion (ultrasound), from a lesion mask",
        "features": {"radiomics": "pyradiomics, Resources/Radiomics/ultrasound_2d.yaml (102 features)",
                     "deep": (f"trunk of the shipped lesion CNN '{cv['deep_model']}'" if cv.get("deep_model") else
                              "ImageNet EfficientNet-Lite0 trunk (frozen)")
                             + " on a mask-aware ROI crop (grey, ROI-blended grey, mask), pooled -> standardised"
                               " -> PCA (fitted in folds)",
                     "selection": "Mann-Whitney U (p<0.05) -> Spearman |rho|<0.9 pruning -> LASSO, in folds"},
        "training": {"data": "BUSI benign+malignant, train+val of training/splits/busi.csv (duplicate-grouped)",
                     "n_cases": int(len(yr)), "n_rows": int(len(y)), "malignant_cases": int(yr.sum()),
                     "masks": "reference masks + the shipped segmenter's masks of the same cases",
                     "selection": "best fusion config (early/late/stacking) by the mean of 5-fold CV AUC with "
                                  "reference and with auto masks, scored on "
                                  + ("the val rows (the CNN was fitted on train)" if cv.get("rank_on") == "val"
                                     else "all train+val rows"),
                     "cv_auc_reference": float(best["cv_auc"]) if not args.config else None,
                     "cv_auc_auto": float(best["cv_auc_auto"]) if not args.config else None,
                     "cv_top": cv["results"][:10],
                     "calibration": "Platt scaling on out-of-fold probabilities of the ranking rows",
                     "oof_ece_before": expected_calibration_error(oof, y_oof),
                     "oof_ece_after": expected_calibration_error(apply_calibration(calibration, oof), y_oof),
                     "command": f"python -m training.classification.cv --features {args.features} --out {args.cv}"
                                + (" --rank-on val" if cv.get("rank_on") == "val" else "")
                                + " && python -m training.classification.ship"
                                + f" --features {args.features} --cv {args.cv}"
                                + (f" --config {args.config}" if args.config else "")},
        "exported": exported(),
        "metrics": "see benchmarks/results/classification.md (test split)",
        "intended_use": "Research only; not for diagnosis.",
    })
    write_and_verify(card, folder, rad, deep, raw, 1e-5, f"{mode}/{cname}")


if __name__ == "__main__":
    main()
