"""Probability calibration (Platt / isotonic, stored as JSON), ECE, and the BI-RADS-style suggestion."""

from __future__ import annotations

import numpy as np

# ACR BI-RADS likelihood-of-malignancy ranges: 3 <= 2 %, 4A > 2-10 %, 4B > 10-50 %, 4C > 50-< 95 %, 5 >= 95 %
BIRADS_RANGES = (("3", 0.02), ("4A", 0.10), ("4B", 0.50), ("4C", 0.95))
SUGGESTION_NOTE = "algorithm suggestion from the malignancy probability, not a radiologist's assessment"


def birads_suggestion(p: float) -> str:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"probability {p} outside [0, 1]")
    if p >= 0.95:
        return "5"
    for category, upper in BIRADS_RANGES:
        if p <= upper:
            return category
    return "4C"


# the wording of the ACR BI-RADS assessment categories: the label never contradicts the suggested category
ASSESSMENT_LABELS = {"0": "incomplete", "2": "benign", "3": "benign", "4A": "suspicious", "4B": "suspicious",
                     "4C": "suspicious", "5": "highly suggestive of malignancy"}
# ACR BI-RADS 0, "incomplete: needs additional evaluation": what an uncertain automatic outline gets instead of a
# category (at a hospital the models never saw, most cancers scored below 5 % had such an outline elsewhere)
INCOMPLETE = "0"
INCOMPLETE_NOTE = ("no category: the automatic outline is uncertain (no region passed the segmenter's presence "
                   "threshold, so the one used may not be the lesion); draw a box around the lesion, or outline it, "
                   "and classify again")


def assessment_label(category: str) -> str:
    return ASSESSMENT_LABELS[category]


def logit(p) -> np.ndarray:
    """log(p / (1 - p)), p clipped to [1e-6, 1 - 1e-6]."""
    p = np.clip(np.asarray(p, float), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def fit_platt(p: np.ndarray, y: np.ndarray) -> dict:
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=1e6, max_iter=1000).fit(logit(p)[:, None], y)
    return {"kind": "platt", "a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0])}


def fit_platt_toward_identity(p: np.ndarray, y: np.ndarray, prior: float) -> dict:
    """Platt's a * logit(p) + b, fitted with a Gaussian prior of precision `prior` centred on the identity
    (a = 1, b = 0): the maximum a posteriori fit. A few cases move the calibration only as far as they can show;
    many cases make it Platt's."""
    from scipy.optimize import minimize

    z, y = logit(p), np.asarray(y, float)

    def objective(w):
        t = w[0] * z + w[1]
        g = 1.0 / (1.0 + np.exp(-t)) - y
        d = np.array([w[0] - 1.0, w[1]])
        return float(np.sum(np.logaddexp(0.0, t) - y * t) + 0.5 * prior * d @ d), \
            np.array([g @ z, g.sum()]) + prior * d

    a, b = minimize(objective, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B").x
    return {"kind": "platt", "a": float(a), "b": float(b), "prior": float(prior)}


def apply_calibration(cal: dict, p) -> np.ndarray:
    p = np.asarray(p, float)
    if cal["kind"] == "platt":
        return 1.0 / (1.0 + np.exp(-(cal["a"] * logit(p) + cal["b"])))
    if cal["kind"] == "isotonic":
        return np.interp(p, cal["x"], cal["y"])
    if cal["kind"] == "identity":
        return p
    raise ValueError(f"unknown calibration kind {cal['kind']!r}")


def expected_calibration_error(p, y, bins: int = 10) -> float:
    """ECE with equal-width bins: sum over bins of |mean predicted - observed rate| weighted by bin size."""
    p, y = np.asarray(p, float), np.asarray(y, float)
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    return float(sum(abs(p[idx == b].mean() - y[idx == b].mean()) * (idx == b).mean()
                     for b in range(bins) if (idx == b).any()))
