"""Segmentation and summary metrics used by the benchmarks."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    denom = pred.sum() + ref.sum()
    return 1.0 if denom == 0 else float(2 * np.logical_and(pred, ref).sum() / denom)


def iou(pred: np.ndarray, ref: np.ndarray) -> float:
    union = np.logical_or(pred, ref).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, ref).sum() / union)


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask)


def hd95(pred: np.ndarray, ref: np.ndarray) -> float:
    """95th percentile symmetric surface distance in pixels; NaN when one mask is empty."""
    if not pred.any() or not ref.any():
        return float("nan")
    sp, sr = _surface(pred), _surface(ref)
    d_to_ref = ndimage.distance_transform_edt(~sr)[sp]
    d_to_pred = ndimage.distance_transform_edt(~sp)[sr]
    return float(np.percentile(np.concatenate([d_to_ref, d_to_pred]), 95))


def bootstrap_ci(values, n: int = 2000, seed: int = 0, stat=np.mean) -> tuple[float, float]:
    """95 % percentile bootstrap CI of a statistic over cases."""
    v = np.asarray([x for x in values if np.isfinite(x)], float)
    if len(v) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    boots = [stat(v[rng.integers(0, len(v), len(v))]) for _ in range(n)]
    return float(np.nanpercentile(boots, 2.5)), float(np.nanpercentile(boots, 97.5))


def summary(values) -> dict:
    v = np.asarray([x for x in values if np.isfinite(x)], float)
    lo, hi = bootstrap_ci(v)
    return {"n": int(len(v)), "mean": float(v.mean()) if len(v) else float("nan"),
            "std": float(v.std(ddof=1)) if len(v) > 1 else float("nan"), "ci95": [lo, hi],
            "median": float(np.median(v)) if len(v) else float("nan")}
