"""Small typed results for tests of the consumers (DICOM export, MRML tables): known numbers, no models run."""

from __future__ import annotations

import numpy as np

from BreastCADxLib.analysis.classifier import Prediction
from BreastCADxLib.analysis.result import AnalysisResult, ModelRef, Provenance

SEGMENTER = ModelRef("lesion_seg_lite0", "a" * 64)
CLASSIFIER = ModelRef("lesion_cls_fusion", "b" * 64)


def fake_result(probability: float | None = 0.42, birads: str = "4B", mask: np.ndarray | None = None,
                origin: str = "auto") -> AnalysisResult:
    prov = Provenance(breastcadx="0.0.test", model_set="three-site", classifier=CLASSIFIER,
                      classifier_config="single/lr", deep_model="imagenet_lite0_frozen", mask_origin=origin,
                      segmenter=None if origin == "user" else SEGMENTER)
    pred = None if probability is None else Prediction(
        probability=probability, raw_probability=probability, birads=birads, member_probabilities={},
        flags=[], top_features=[{"feature": "original_shape2D_Elongation", "value": 0.61, "contribution": 0.1}],
        ood_distance=1.0)
    return AnalysisResult(source="test", lesion_found=pred is not None, provenance=prov, mask=mask, prediction=pred,
                          measurements={"area": 123.0, "longest_diameter": 17.5})
