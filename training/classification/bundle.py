"""What every classifier bundle gets after its members are fitted: OOD statistics and the deep explainer."""

from __future__ import annotations

import platform
from datetime import date

import numpy as np
import sklearn
from sklearn.linear_model import LogisticRegression

from BreastCADxLib.train.bundle import ood_statistics


def ood_and_explainer(clf, rad: np.ndarray, deep: np.ndarray, y: np.ndarray, arrays: dict, rows: str
                      ) -> tuple[dict, dict]:
    """Mahalanobis statistics of the fused training vectors (threshold: 99th percentile) and a logistic score on
    the deep branch folded back onto the trunk features (what Grad-CAM explains); fills `arrays`, returns the
    card's `ood` and `explain` entries. `rows` names the fitting rows in the card."""
    arrays["ood_mean"], arrays["ood_precision"], threshold = ood_statistics(clf.fused_features(rad, deep))
    ood = {"threshold": threshold, "space": "named z-scores + deep PCA",
           "rule": f"Mahalanobis distance above the 99th percentile of {rows}"}
    deep_member = next(m for m in clf.members if any(b[0] == "deep" for b in m["branches"]))
    db = next(b for b in deep_member["branches"] if b[0] == "deep")
    lr = LogisticRegression(C=0.5, max_iter=5000).fit(clf._branch(db, rad, deep), y)
    _, _, mean, scale, pca_mean, comps = db
    v = comps.T @ lr.coef_[0]
    arrays["explain_deep_weight"] = v / scale
    explain = {"deep_bias": float(lr.intercept_[0] - pca_mean @ v - (mean / scale) @ v),
               "method": "Grad-CAM (monai.visualize.GradCAM, layer trunk.head) of a logistic score on the deep "
                         f"branch, refitted on {rows}"}
    return ood, explain


def exported() -> dict:
    return {"date": date.today().isoformat(), "machine": platform.platform(), "sklearn": sklearn.__version__}
