"""Is this B-mode image the right way round? Two physical properties of ultrasound speckle, no model.

- Lateral resolution is coarser than axial: speckle is elongated across the beam, so the fine-detail correlation
  at 1-3 pixels is higher along a row than down a column. Negative on an image turned by 90 degrees.
- Speckle is multiplicative: where tissue is brighter it also varies more, so local mean and local spread
  correlate positively. Negative on an inverted (negative) image, or a MONOCHROME1 header on bright-lesion data.
Both flip sign; the cuts sit below the lowest value of the three sites' 2,259 genuine images (-0.031 and -0.264,
both BUS-BRA L5: at 0 it would have refused 12 of them) with a margin: -0.05 and -0.30
(benchmarks/results/speckle_orientation.md).
- Depth runs down: the near field (skin, fat) is brighter than the far field (chest wall, attenuation), and the
  beam widens past its focus, so lateral speckle correlation changes with depth. Three measures, each of which
  changes sign when the image is upside down, weighted into one depth score (> 0: upright). Its spread across
  hospitals is wide, so it refuses only below the lowest genuine score with a margin, and flags
  (orientation_uncertain) below the genuine images' 1st percentile.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

DETAIL = 9  # high-pass window (pixels): what remains is speckle-scale detail
LOCAL = 7  # window of the local mean / spread
MIN_CONTENT = 2000  # pixels of tissue needed to say anything
ANISOTROPY_CUT = -0.05
POLARITY_CUT = -0.30
# weights of (brightness-depth correlation, near minus far brightness, deep minus shallow lateral correlation) and
# the depth score's cuts, from `python -m benchmarks.speckle_orientation` (three sites' non-test images)
DEPTH_WEIGHTS = (-0.341, 1.94, -2.272)
DEPTH_REFUSE_CUT = -3.16
DEPTH_FLAG_CUT = -0.33


@dataclass(frozen=True)
class SpeckleCheck:
    anisotropy: float  # row minus column detail correlation (lags 1-3); < 0: turned by 90 degrees
    polarity: float  # correlation of local mean and local spread over tissue; < 0: inverted
    measures: tuple[float, float, float] | None = None  # depth_measures (None: too few tissue rows)

    @property
    def depth(self) -> float | None:
        """The depth score, DEPTH_WEIGHTS . measures; < 0: looks upside down."""
        return None if self.measures is None else float(np.dot(DEPTH_WEIGHTS, self.measures))

    def reasons(self) -> list[str]:
        out = []
        if self.anisotropy < ANISOTROPY_CUT:
            out.append(f"its speckle runs up and down, not across (anisotropy {self.anisotropy:.2f} < "
                       f"{ANISOTROPY_CUT}): the "
                       "image looks turned by 90 degrees; depth must run down the image")
        if self.polarity < POLARITY_CUT:
            out.append(f"bright and dark look inverted (speckle polarity {self.polarity:.2f} < {POLARITY_CUT}): a "
                       "negative image, or a MONOCHROME1 header on data whose tissue is bright")
        if self.depth is not None and self.depth < DEPTH_REFUSE_CUT:
            out.append(f"it looks upside down (depth score {self.depth:.2f} < {DEPTH_REFUSE_CUT}): the skin line "
                       "must be at the top and depth must run down the image")
        return out

    def cautions(self) -> list[str]:
        """What does not refuse the image but must be checked by the reader."""
        if self.depth is not None and DEPTH_REFUSE_CUT <= self.depth < DEPTH_FLAG_CUT:
            return [f"the image may be upside down (depth score {self.depth:.2f} < {DEPTH_FLAG_CUT}, lower than "
                    "99 % of the training hospitals' images): check that the skin line is at the top"]
        return []


def _lag_correlation(hp: np.ndarray, tissue: np.ndarray, dy: int, dx: int) -> float:
    h, w = hp.shape
    a, b = hp[dy:, dx:], hp[:h - dy, :w - dx]
    m = tissue[dy:, dx:] & tissue[:h - dy, :w - dx]
    return float((a * b)[m].mean() / max(float(np.sqrt((a * a)[m].mean() * (b * b)[m].mean())), 1e-6))


def depth_measures(g: np.ndarray, tissue: np.ndarray, hp: np.ndarray) -> tuple[float, float, float] | None:
    """(brightness-depth correlation, near minus far brightness / mean, deep minus shallow lateral speckle
    correlation) over the field of view's rows; each changes sign when the image is upside down."""
    count = tissue.sum(1)
    rows = np.flatnonzero(count > 0.3 * tissue.shape[1])
    if len(rows) < 40:
        return None
    top, bottom = int(rows[0]), int(rows[-1]) + 1
    prof = (np.where(tissue, g, 0.0).sum(1) / np.maximum(count, 1))[top:bottom]
    depth = np.arange(len(prof), dtype=np.float64)
    corr = float(np.corrcoef(depth, prof)[0, 1]) if prof.std() > 0 else 0.0
    q = max(3, len(prof) // 10)
    near_far = float((prof[:q].mean() - prof[-q:].mean()) / (prof.mean() + 1.0))
    half = top + (bottom - top) // 2

    def lateral(lo: int, hi: int) -> float:
        band = np.zeros_like(tissue)
        band[lo:hi] = tissue[lo:hi]
        return float(np.mean([_lag_correlation(hp, band, 0, k) for k in (1, 2, 3)]))

    return corr, near_far, lateral(half, bottom) - lateral(top, half)


def speckle_check(plane: np.ndarray) -> SpeckleCheck | None:
    """The two measures on a grey plane (0..255 range); None when it holds too little tissue to tell."""
    g = np.asarray(plane, np.float32)
    local = ndimage.uniform_filter(g, DETAIL)
    tissue = local > 15  # not the black background around the field of view
    if tissue.sum() < MIN_CONTENT or min(g.shape) < 4 * DETAIL:
        return None
    hp = g - local
    across = np.mean([_lag_correlation(hp, tissue, 0, k) for k in (1, 2, 3)])
    down = np.mean([_lag_correlation(hp, tissue, k, 0) for k in (1, 2, 3)])
    mean = ndimage.uniform_filter(g, LOCAL)
    spread = np.sqrt(np.maximum(ndimage.uniform_filter(g * g, LOCAL) - mean * mean, 0.0))
    step = max(1, int(tissue.sum() // 50000))  # ~50,000 tissue pixels are plenty
    m, s = mean[tissue][::step], spread[tissue][::step]
    polarity = float(np.corrcoef(m, s)[0, 1]) if m.std() > 0 and s.std() > 0 else 0.0
    return SpeckleCheck(float(across - down), polarity, depth_measures(g, tissue, hp))


__all__ = ["SpeckleCheck", "speckle_check", "depth_measures"]
