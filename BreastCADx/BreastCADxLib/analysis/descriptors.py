"""Quantitative lesion descriptors in the spirit of the ACR BI-RADS ultrasound lexicon (5th edition).

Each value is measured relative to the image itself (grey levels against the surrounding tissue, shape as
ratios), so it means the same under another scanner's gain or resolution. Rows are depth (skin at the top).

- orientation: lesion depth extent / width extent (> 1: "taller than wide", the lexicon's not-parallel sign);
- solidity: area / convex-hull area (irregular, lobulated or angular shapes fall below ~0.9);
- compactness: 4 pi area / perimeter^2 (1 for a circle);
- margin_roughness: std / mean of the boundary's distance to the centroid after removing the best-fit
  ellipse's smooth part (spiculated, microlobulated or angular margins raise it);
- margin_sharpness: mean grey step across the boundary (outside ring - inside rim) / tissue spread
  (indistinct margins lower it);
- echo_contrast: (lesion median - surrounding tissue median) / tissue spread (negative: hypoechoic);
- echo_heterogeneity: lesion interquartile range / tissue interquartile range;
- posterior_ratio: mean grey below the lesion / mean grey beside that band at the same depth
  (> 1 enhancement, < 1 shadowing);
- depth_fraction: lesion centre depth / image depth.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

NAMES = ("orientation", "solidity", "compactness", "margin_roughness", "margin_sharpness", "echo_contrast",
         "echo_heterogeneity", "posterior_ratio", "depth_fraction")


def _convex_area(mask: np.ndarray) -> float:
    from scipy.spatial import ConvexHull

    edge = mask & ~ndimage.binary_erosion(mask)  # the hull of the boundary pixels is the hull of all of them
    ys, xs = np.nonzero(edge if edge.any() else mask)
    pts = np.column_stack([xs, ys]).astype(float)
    # pixel corners so a one-row lesion still has a hull
    corners = np.concatenate([pts + d for d in ((0, 0), (1, 0), (0, 1), (1, 1))])
    try:
        return float(ConvexHull(corners).volume)
    except Exception:  # degenerate (collinear) hull
        return float(mask.sum())


def _perimeter(mask: np.ndarray) -> float:
    edge = mask & ~ndimage.binary_erosion(mask)
    return float(edge.sum())


def _ring(mask: np.ndarray, width: int) -> np.ndarray:
    return ndimage.binary_dilation(mask, iterations=width) & ~mask


def describe(plane: np.ndarray, mask: np.ndarray, spacing: tuple[float, float] = (1.0, 1.0)) -> dict[str, float]:
    """Descriptor values of one 2D lesion; `spacing` (row, col) makes orientation physical when known."""
    img = np.asarray(plane, np.float32)
    m = np.asarray(mask, bool)
    ys, xs = np.nonzero(m)
    if len(ys) < 4:
        raise ValueError("lesion mask has fewer than 4 pixels")
    rows, _ = m.shape
    h = (ys.max() - ys.min() + 1) * spacing[0]
    w = (xs.max() - xs.min() + 1) * spacing[1]
    area = float(m.sum())
    size = max(2, int(round(0.15 * np.sqrt(area))))
    ring = _ring(m, size)
    rim = m & ~ndimage.binary_erosion(m, iterations=max(1, size // 2))
    tissue = img[ring] if ring.any() else img[~m]
    t_med = float(np.median(tissue))
    q = np.percentile(tissue, [25, 75])
    spread = float(max(q[1] - q[0], 1.0))
    les = img[m]
    lq = np.percentile(les, [25, 75])
    # boundary distance profile against the centroid, minus its smooth (low-order Fourier) part
    edge = m & ~ndimage.binary_erosion(m)
    ey, ex = np.nonzero(edge)
    cy, cx = ys.mean(), xs.mean()
    r = np.hypot(ey - cy, ex - cx)
    ang = np.arctan2(ey - cy, ex - cx)
    order = np.argsort(ang)
    r, ang = r[order], ang[order]
    basis = np.column_stack([np.ones_like(ang)] + [f(k * ang) for k in (1, 2) for f in (np.cos, np.sin)])
    coef, *_ = np.linalg.lstsq(basis, r, rcond=None)
    resid = r - basis @ coef
    # posterior: a band below the lesion (half its height) against same-depth bands left and right
    y1 = ys.max() + 1
    band = max(2, (ys.max() - ys.min() + 1) // 2)
    x0, x1 = xs.min(), xs.max() + 1
    bw = x1 - x0
    below = img[y1:min(rows, y1 + band), x0:x1]
    sides = np.concatenate([img[y1:min(rows, y1 + band), max(0, x0 - bw):x0].ravel(),
                            img[y1:min(rows, y1 + band), x1:x1 + bw].ravel()])
    posterior = float(below.mean() / max(sides.mean(), 1.0)) if below.size and sides.size else 1.0
    return {
        "orientation": float(h / w),
        "solidity": float(area / max(_convex_area(m), area)),
        "compactness": float(min(1.0, 4 * np.pi * area / max(_perimeter(m), 1.0) ** 2)),
        "margin_roughness": float(resid.std() / max(r.mean(), 1.0)),
        "margin_sharpness": float((img[ring].mean() - img[rim].mean()) / spread) if ring.any() and rim.any() else 0.0,
        "echo_contrast": float((np.median(les) - t_med) / spread),
        "echo_heterogeneity": float((lq[1] - lq[0]) / spread),
        "posterior_ratio": posterior,
        "depth_fraction": float(cy / rows),
    }
