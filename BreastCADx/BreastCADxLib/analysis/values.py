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


# every flag a result can carry: a stable code (results.csv, SR, the panel's corner, `evaluate`) and what it means
FLAG_CODES = {
    "input_unvalidated": "the input is outside what the models were validated on; analysed on the user's request",
    "low_confidence_segmentation": "no region passed the segmenter's presence threshold; the best candidate is used",
    "box_outline_fallback": "no distinct region inside the drawn box; the box's inscribed ellipse is the outline",
    "out_of_distribution": "the lesion's features are far from the training data",
    "members_disagree": "the classifier's members disagree strongly",
    "measurement": "sizes could not be measured as usual (pixels, or several regions)",
    "edited_mask": "the automatic outline was corrected by the user before classification",
    "frame_selected": "one frame of a multi-frame image (a cine) was analysed",
    "box_prompt_outline": "a set without a segmenter: the drawn box's inscribed ellipse is the finding's outline",
    "input_corrected": "the file's header contradicted its pixels and was read the way the pixels show",
    "orientation_uncertain": "the image may be upside down (its depth profile is unlike 99 % of the training "
                             "images); the reader checks that the skin line is at the top",
    "suspicious_sign_low_score": "a score below 5 %, but the outline shows the lexicon's suspicious signs (an "
                                 "irregular shape with a not circumscribed margin): not a confident benign call",
    "member_dissent_low_score": "a score below 5 %, but one of the classifier's members scores the lesion at 50 % or "
                                "more: not a confident benign call",
    "reader_disagreement": "the site profile's rule on the radiologist's category and BreastCADx's score decides "
                           "otherwise than the radiologist's category",
}


# what each member of a fused classifier is called where a reader sees it (panel table, flags)
MEMBER_LABELS = {"fusion": "outline features", "box_cnn": "box-crop CNN", "whole_image_cnn": "whole-image CNN"}
LOW_SCORE = 0.05  # a score below it is a confident benign call (benchmarks: "cancers below 5 %")


@dataclass(frozen=True)
class Flag:
    """A caution the reader must see beside the numbers: a code from FLAG_CODES and its sentence."""

    code: str
    text: str

    def __post_init__(self) -> None:
        if self.code not in FLAG_CODES:
            raise ValueError(f"unknown flag code {self.code!r} (known: {', '.join(FLAG_CODES)})")

    def __str__(self) -> str:
        return self.text

    def to_json(self) -> dict:
        return {"code": self.code, "text": self.text}

    @classmethod
    def from_json(cls, d: dict | str) -> Flag:
        if isinstance(d, dict):
            return cls(d["code"], d["text"])
        return cls.from_legacy(d)

    @classmethod
    def from_legacy(cls, text: str) -> Flag:
        """A flag of a breastcadx-result/2 file (free text): its code recovered once, when the file is read."""
        legacy = {"input outside": "input_unvalidated", "low-confidence segmentation": "low_confidence_segmentation",
                  "box outline": "box_outline_fallback", "out_of_distribution": "out_of_distribution",
                  "members_disagree": "members_disagree", "measurement": "measurement",
                  "edited mask": "edited_mask"}
        code = next((c for prefix, c in legacy.items() if text.startswith(prefix)), None)
        if code is None:
            raise ValueError(f"unrecognised flag in an older result file: {text[:60]!r}")
        return cls(code, text)


@dataclass
class InputCheck:
    """What the input guard found; travels with the result."""

    ultrasound_score: float | None = None  # P(breast ultrasound) from the image-level model
    threshold: float | None = None  # refused below it
    reasons: list[str] = field(default_factory=list)  # empty: inside the validated range
    overridden: bool = False  # analysed although outside, on the user's request
    notes: list[str] = field(default_factory=list)  # what the reader corrected in the file (a lying header)
    cautions: list[str] = field(default_factory=list)  # not refused, but to be checked (orientation)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> InputCheck:
        return cls(**d)

    @property
    def flags(self) -> list[Flag]:
        out = [Flag("input_corrected", "input corrected: " + "; ".join(self.notes))] if self.notes else []
        out += [Flag("orientation_uncertain", c) for c in self.cautions]
        if self.overridden:
            out.insert(0, Flag("input_unvalidated", "input outside what the models were validated on ("
                               + "; ".join(self.reasons) + "): analysed on the user's request, do not rely on "
                               "this result"))
        return out

    @property
    def flag(self) -> Flag | None:
        """The override's flag (None when the input was inside what the models were validated on)."""
        return next((f for f in self.flags if f.code == "input_unvalidated"), None)


@dataclass
class Prediction:
    probability: float  # calibrated malignancy probability
    raw_probability: float
    birads: str
    member_probabilities: dict[str, float]
    flags: list[Flag]
    top_features: list[dict]  # radiomics features that moved the fused probability most (signed)
    ood_distance: float
    suggestion_note: str = SUGGESTION_NOTE

    @property
    def label(self) -> str:
        """Follows the suggested category (benign for 2-3, suspicious for 4A-4C, highly suggestive of malignancy
        for 5), so a label never reads benign beside a category whose standard action is biopsy."""
        return assessment_label(self.birads)
