"""Is this B-mode image the right way round? Two physical properties of ultrasound speckle, no model.

- Lateral resolution is coarser than axial: speckle is elongated across the beam, so the fine-detail correlation
  at 1-3 pixels is higher along a row than down a column. Negative on an image turned by 90 degrees.
- Speckle is multiplicative: where tissue is brighter it also varies more, so local mean and local spread
  correlate positively. Negative on an inverted (negative) image, or a MONOCHROME1 header on bright-lesion data.
Both flip sign; the cuts sit below the lowest value of the three sites' 2,259 genuine images (-0.031 and -0.264,
both BUS-BRA L5: at 0 it would have refused 12 of them) with a margin: -0.05 and -0.30
(benchmarks/results/speckle_orientation.md). An upside-down image keeps both and is left to the image-level guard.
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


@dataclass(frozen=True)
class SpeckleCheck:
    anisotropy: float  # row minus column detail correlation (lags 1-3); < 0: turned by 90 degrees
    polarity: float  # correlation of local mean and local spread over tissue; < 0: inverted

    def reasons(self) -> list[str]:
        out = []
        if self.anisotropy < ANISOTROPY_CUT:
            out.append(f"its speckle runs up and down, not across (anisotropy {self.anisotropy:.2f} < "
                       f"{ANISOTROPY_CUT}): the "
                       "image looks turned by 90 degrees; depth must run down the image")
        if self.polarity < POLARITY_CUT:
            out.append(f"bright and dark look inverted (speckle polarity {self.polarity:.2f} < {POLARITY_CUT}): a "
                       "negative image, or a MONOCHROME1 header on data whose tissue is bright")
        return out


def _lag_correlation(hp: np.ndarray, tissue: np.ndarray, dy: int, dx: int) -> float:
    h, w = hp.shape
    a, b = hp[dy:, dx:], hp[:h - dy, :w - dx]
    m = tissue[dy:, dx:] & tissue[:h - dy, :w - dx]
    return float((a * b)[m].mean() / max(float(np.sqrt((a * a)[m].mean() * (b * b)[m].mean())), 1e-6))


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
    return SpeckleCheck(float(across - down), polarity)


__all__ = ["SpeckleCheck", "speckle_check"]
