"""One case end to end: image (+ optional mask / ROI) -> segmentation -> features -> calibrated result."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from BreastCADxLib import __version__
from BreastCADxLib.analysis.classifier import Prediction, get_classifier
from BreastCADxLib.analysis.deep_features import get_deep_features, lesion_frame
from BreastCADxLib.analysis.descriptors import describe
from BreastCADxLib.analysis.radiomics_features import check_lesion_mask, extract
from BreastCADxLib.analysis.registry import DEFAULT_MODEL_SET
from BreastCADxLib.analysis.segmentation import Box, get_segmenter
from BreastCADxLib.errors import MaskError
from BreastCADxLib.image import Image

Progress = Callable[[float, str], None]


@dataclass
class AnalysisResult:
    source: str
    lesion_found: bool
    mask_source: str  # "user" or "auto"
    mask: np.ndarray  # bool, on the input grid
    probability: float | None = None
    predicted_label: str = "normal"  # benign | malignant | normal (no lesion)
    birads_suggestion: str | None = None
    prediction: Prediction | None = None
    heatmap: np.ndarray | None = None  # float32 0..1 on the input grid
    radiomics: dict[str, float] = field(default_factory=dict)
    measurements: dict = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    models: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        pred = asdict(self.prediction) if self.prediction else None
        return {
            "source": self.source, "lesion_found": self.lesion_found, "mask_source": self.mask_source,
            "malignancy_probability": self.probability, "predicted_label": self.predicted_label,
            "birads_suggestion": self.birads_suggestion,
            "birads_note": pred["suggestion_note"] if pred else None,
            "flags": pred["flags"] if pred else [], "top_features": pred["top_features"] if pred else [],
            "member_probabilities": pred["member_probabilities"] if pred else {},
            "ood_distance": pred["ood_distance"] if pred else None,
            "raw_probability": pred["raw_probability"] if pred else None,
            "measurements": self.measurements, "radiomics": self.radiomics, "seconds": self.seconds,
            "models": self.models, "research_use_only": True,
        }


def measurements(image: Image, mask: np.ndarray, radiomics: dict[str, float]) -> dict:
    unit = "mm" if image.spacing_known else "px"
    pixel_area = image.spacing[0] * image.spacing[1] if image.spacing_known else 1.0
    out = {"unit": unit, "lesion_pixels": int(mask.sum()), "area": float(mask.sum() * pixel_area),
           "area_unit": f"{unit}^2"}
    for key in ("original_shape2D_MaximumDiameter", "original_shape_Maximum3DDiameter"):
        if key in radiomics:
            out["longest_diameter"] = radiomics[key]
    return out


DESCRIPTOR_PREFIX = "descriptor_"


def lesion_descriptors(image: Image, mask: np.ndarray) -> dict[str, float]:
    """Lexicon-style descriptors of the lesion's largest frame, named for the classifier ("descriptor_...")."""
    k = lesion_frame(mask)
    row, col = (image.spacing[1], image.spacing[0]) if image.spacing_known else (1.0, 1.0)
    values = describe(image.array[k], mask[k], spacing=(row, col))
    return {f"{DESCRIPTOR_PREFIX}{n}": v for n, v in values.items()}


LOW_CONFIDENCE_FLAG = ("low-confidence segmentation: no region passed the segmenter's presence threshold; "
                       "the most probable region was used because a lesion was expected - check the mask")


def analyze(image: Image, mask: np.ndarray | None = None, roi: Box | None = None, heatmap: bool = True,
            progress: Progress | None = None, should_cancel: Callable[[], bool] | None = None,
            device: str = "auto", expect_lesion: bool = False, model_set: str = DEFAULT_MODEL_SET) -> AnalysisResult:
    """Classify the lesion in `mask` (user's), else in the auto-segmented mask. Never modifies `mask`.
    expect_lesion: for the automatic mask, keep the best candidate when nothing passes presence (flagged)."""
    report = progress or (lambda f, m: None)
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    classifier = get_classifier(model_set=model_set)
    models = {"breastcadx": __version__, "model_set": model_set, "classifier": classifier.card["id"],
              "classifier_sha256": classifier.card["sha256"], "classifier_config":
              f"{classifier.card['mode']}/{classifier.card['classifier']}",
              "deep_model": classifier.card.get("deep_model") or "imagenet_lite0_frozen"}
    if mask is None:
        segmenter = get_segmenter(device=device, model_set=model_set)
        models.update(segmenter=segmenter.card["id"], segmenter_sha256=segmenter.card["sha256"])
        report(0.05, "segmenting")
        seg = segmenter.segment(image, roi=roi, should_cancel=should_cancel, expect_lesion=expect_lesion)
        mask, source, low_confidence = seg.mask, "auto", seg.low_confidence
        seconds["segment"] = time.perf_counter() - t
        if not mask.any():
            report(1.0, "no lesion found")
            return AnalysisResult(source=image.source, lesion_found=False, mask_source=source, mask=mask,
                                  seconds=seconds, models=models)
    else:
        if mask.shape != image.array.shape:
            raise MaskError(f"mask shape {mask.shape} does not match image shape {image.array.shape}", image.source)
        mask, source, low_confidence = mask.astype(bool).copy(), "user", False
        check_lesion_mask(mask, image.source or None)
    report(0.4, "radiomics")
    t = time.perf_counter()
    rad = extract(image, mask)
    seconds["radiomics"] = time.perf_counter() - t
    if any(n.startswith(DESCRIPTOR_PREFIX) for n in classifier.radiomics_names):
        rad = {**rad, **lesion_descriptors(image, mask)}
    report(0.6, "deep features")
    t = time.perf_counter()
    deep_model = get_deep_features(device, classifier.card.get("deep_model"), classifier.card.get("deep_crop", "mask"))
    deep = deep_model.features(image, mask)
    seconds["deep_features"] = time.perf_counter() - t
    t = time.perf_counter()
    pred = classifier.predict(rad, deep)
    if low_confidence:
        pred.flags.insert(0, LOW_CONFIDENCE_FLAG)
    seconds["classify"] = time.perf_counter() - t
    heat = None
    if heatmap:
        report(0.8, "Grad-CAM")
        t = time.perf_counter()
        heat = deep_model.gradcam(image, mask, classifier.explain_weight, classifier.explain_bias)
        seconds["gradcam"] = time.perf_counter() - t
    report(1.0, "done")
    return AnalysisResult(source=image.source, lesion_found=True, mask_source=source, mask=mask,
                          probability=pred.probability, predicted_label=pred.label,
                          birads_suggestion=pred.birads, prediction=pred, heatmap=heat, radiomics=rad,
                          measurements=measurements(image, mask, rad), seconds=seconds, models=models)
