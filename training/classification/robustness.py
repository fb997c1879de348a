"""Does the classifier hold up with automatic masks? Decided on the validation split, never on test.

    python -m training.classification.robustness --features runs/features

Fits each config on the train split (reference masks only, or reference + segmenter masks as augmentation)
and scores the val split with reference masks and with the shipped segmenter's masks (val images were not
used to fit the segmenter, so their auto masks are realistic). A lesion the segmenter missed scores 0.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from training.classification.cv import design, fit_model, load
from training.classification.fusion import classifiers

CONFIGS = ("radiomics/LR", "radiomics/SVM", "deep/SVM", "early/LR", "early/SVM", "late/LR", "late/SVM",
           "stacking/SVM")


def rows_for(d: dict, split: str, cases=None) -> np.ndarray:
    sel = d["split"] == split
    if cases is not None:
        sel &= np.isin(d["case"], cases)
    return sel


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", type=Path, default=Path("runs/features"))
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    ref, auto = load(args.features, "reference"), load(args.features, "auto")
    n_rad = ref["radiomics"].shape[1]
    tr = rows_for(ref, "train")
    va = rows_for(ref, "val")
    val_cases, y_val = ref["case"][va], ref["label"][va]
    auto_index = {c: i for i, c in enumerate(auto["case"])}
    Xa_val = np.full((len(val_cases), design(ref).shape[1]), np.nan)
    for i, c in enumerate(val_cases):
        if c in auto_index:
            Xa_val[i] = design(auto)[auto_index[c]]
    aug = rows_for(auto, "train")
    print(f"val: {len(val_cases)} lesions, auto masks missing for {int(np.isnan(Xa_val).any(1).sum())}")
    print("config          training masks     val AUC ref   val AUC auto")
    for cfg in CONFIGS:
        mode, cname = cfg.split("/")
        for label, X, y, g in (
            ("reference", design(ref)[tr], ref["label"][tr], ref["group"][tr]),
            ("reference+auto", np.vstack([design(ref)[tr], design(auto)[aug]]),
             np.concatenate([ref["label"][tr], auto["label"][aug]]),
             np.concatenate([ref["group"][tr], auto["group"][aug]])),
        ):
            model = fit_model(mode, classifiers()[cname], X, y, g, n_rad)
            p_ref = model.predict_proba(design(ref)[va])[:, 1]
            ok = ~np.isnan(Xa_val).any(1)
            p_auto = np.zeros(len(y_val))
            p_auto[ok] = model.predict_proba(Xa_val[ok])[:, 1]
            print(f"{cfg:15s} {label:18s} {roc_auc_score(y_val, p_ref):.4f}        "
                  f"{roc_auc_score(y_val, p_auto):.4f}", flush=True)


if __name__ == "__main__":
    main()
