"""Writing one analysed case to a folder, and the one-screen summary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from BreastCADxLib.analysis.pipeline import AnalysisResult
from BreastCADxLib.image import Image
from BreastCADxLib.io import save_image, save_mask
from BreastCADxLib.results.overlay import overlay_rgb

NAMES = {"mask": "mask.nrrd", "heatmap": "heatmap.nrrd", "overlay": "overlay.png", "result": "result.json"}
CASE_FILES = tuple(NAMES.values())  # what write_case writes


def summary_lines(result: AnalysisResult) -> list[str]:
    if not result.lesion_found:
        return ["No lesion found by automatic segmentation (predicted: normal).",
                "Draw or load a mask to classify a lesion the segmenter missed."]
    p = result.prediction
    m = result.measurements
    lines = [f"Malignancy probability: {result.probability * 100:.1f} %  ->  {result.predicted_label}",
             f"BI-RADS-style suggestion: {result.birads_suggestion} ({p.suggestion_note})",
             f"Lesion ({result.mask_source} mask): area {m['area']:.0f} {m['area_unit']}"
             + (f", longest diameter {m['longest_diameter']:.1f} {m['unit']}" if "longest_diameter" in m else "")]
    if p.top_features:
        top = ", ".join(f"{f['feature'].replace('original_', '')} {f['contribution']:+.3f}" for f in p.top_features[:3])
        lines.append(f"Top radiomics evidence: {top}")
    lines += [f"FLAG {f}" for f in p.flags]
    lines.append("Research use only - not for diagnosis.")
    return lines


def case_overlay(result: AnalysisResult, image: Image) -> np.ndarray:
    """The result overlay (image, lesion contour, Grad-CAM, the first summary lines) as RGB uint8."""
    return overlay_rgb(image, result.mask, result.heatmap, summary_lines(result)[:4])


def write_case(result: AnalysisResult, image: Image, out: Path, overlay: np.ndarray | None = None
               ) -> dict[str, Path]:
    """mask.nrrd (the mask used), heatmap.nrrd, overlay.png, result.json; returns the paths written.
    `overlay`: the case_overlay when the caller has rendered it already."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"mask": save_mask(result.mask, image, out / NAMES["mask"])}
    if result.heatmap is not None:
        paths["heatmap"] = save_image(image.with_array(result.heatmap.astype(np.float32)), out / NAMES["heatmap"])
    else:
        (out / NAMES["heatmap"]).unlink(missing_ok=True)  # a previous run's heatmap would no longer match
    paths["overlay"] = out / NAMES["overlay"]
    PILImage.fromarray(case_overlay(result, image) if overlay is None else overlay).save(paths["overlay"])
    payload = result.to_json()
    payload["files"] = {k: v.name for k, v in paths.items()}
    paths["result"] = out / NAMES["result"]
    paths["result"].write_text(json.dumps(payload, indent=1) + "\n")
    return paths
