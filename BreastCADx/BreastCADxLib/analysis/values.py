"""The analysis layer's value types, free of torch, MONAI, radiomics and scikit-learn.

The result contract (analysis.result), the case files, the scene logic and Slicer's module start-up import only
these, so the module panel appears in a Slicer whose Python has not yet installed the heavy packages; the models
run behind the job boundary (scene.worker, a separate process).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from BreastCADxLib.analysis.calibration import SUGGESTION_NOTE, assessment_label

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels; x1, y1 exclusive


def to_uint8_range(plane: np.ndarray) -> np.ndarray:
    """Map a 2D plane to float32 0..255: 8-bit data as is, wider data by 0.5-99.5 percentiles."""
    a = np.asarray(plane, dtype=np.float32)
    if plane.dtype == np.uint8:
        return a
    lo, hi = np.percentile(a, [0.5, 99.5])
    if hi <= lo:
        return np.zeros_like(a)
    return np.clip((a - lo) / (hi - lo) * 255.0, 0.0, 255.0)


@dataclass
class InputCheck:
    """What the input guard found; travels with the result."""

    ultrasound_score: float | None = None  # P(breast ultrasound) from the image-level model
    threshold: float | None = None  # refused below it
    reasons: list[str] = field(default_factory=list)  # empty: inside the validated range
    overridden: bool = False  # analysed although outside, on the user's request

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> InputCheck:
        return cls(**d)

    @property
    def flag(self) -> str | None:
        if not self.overridden:
            return None
        return ("input outside what the models were validated on (" + "; ".join(self.reasons)
                + "): analysed on the user's request, do not rely on this result")


@dataclass
class Prediction:
    probability: float  # calibrated malignancy probability
    raw_probability: float
    birads: str
    member_probabilities: dict[str, float]
    flags: list[str]
    top_features: list[dict]  # radiomics features that moved the fused probability most (signed)
    ood_distance: float
    suggestion_note: str = SUGGESTION_NOTE

    @property
    def label(self) -> str:
        """Follows the suggested category (benign for 2-3, suspicious for 4A-4C, highly suggestive of malignancy
        for 5), so a label never reads benign beside a category whose standard action is biopsy."""
        return assessment_label(self.birads)
