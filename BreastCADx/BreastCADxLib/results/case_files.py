"""The one case writer (every front door: analyze, batch, pacs analyze, the background worker, the Slicer export)
and the one-screen summary. Same result, same files, whichever door."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from BreastCADxLib.analysis.result import AnalysisResult
from BreastCADxLib.image import Image
from BreastCADxLib.io import save_image, save_mask
from BreastCADxLib.io.atomic import write_atomic
from BreastCADxLib.results.overlay import overlay_rgb

NAMES = {"mask": "mask.nrrd", "heatmap": "heatmap.nrrd", "overlay": "overlay.png", "result": "result.json"}
CASE_FILES = tuple(NAMES.values())  # what write_case writes into a case folder


@dataclass
class CaseOutputs:
    paths: dict[str, Path] = field(default_factory=dict)  # case files, then dicom_seg / dicom_sr / dicom_overlay
    datasets: dict = field(default_factory=dict)  # the DICOM objects written (seg, sr, overlay), to send as they are
    notes: list[str] = field(default_factory=list)  # source values changed to make the DICOM valid


RESEARCH_ONLY = "Research use only - not for diagnosis."


def summary_lines(result: AnalysisResult) -> list[str]:
    if not result.lesion_found:
        return ["No lesion found by automatic segmentation (predicted: normal).",
                "If the image shows a lesion, analyse it with a lesion expected, a box around it or its outline: "
                "the presence threshold misses many lesions at a hospital the set never saw (a site profile from "
                "`breastcadx adapt` fits it to yours).",
                *result.site_lines(), *[f"FLAG {f}" for f in result.flags], RESEARCH_ONLY]
    p = result.prediction
    m = result.measurements
    lines = [f"Malignancy probability: {result.probability * 100:.1f} %  ->  {result.predicted_label}",
             f"BI-RADS-style suggestion: {result.birads_suggestion} ({p.suggestion_note})",
             f"Lesion ({result.mask_origin} mask): area {m['area']:.0f} {m['area_unit']}"
             + (f", longest diameter {m['longest_diameter']:.1f} {m['unit']}" if "longest_diameter" in m else "")]
    lex = [i for i in result.lexicon if i.feature not in ("size", "depth")]
    if lex:
        lines.append("Lexicon: " + "; ".join(f"{i.feature} {i.category}" + ("" if i.confidence == "high" else
                                                                           f" ({i.confidence} confidence)")
                                            for i in lex))
    lines += result.site_lines()
    lines += [f"FLAG {f}" for f in result.flags]
    lines.append(RESEARCH_ONLY)
    return lines


def case_overlay(result: AnalysisResult, image: Image) -> np.ndarray:
    """The result overlay (image, lesion contour, Grad-CAM; the result, every flag, research use only) as RGB."""
    lines = summary_lines(result)
    site = result.site_lines()
    head = [line for line in lines if not line.startswith("FLAG") and line != RESEARCH_ONLY and line not in site][:4]
    return overlay_rgb(image, result.mask, result.heatmap, head + site + [f for f in lines if f.startswith("FLAG")]
                       + [RESEARCH_ONLY])


def write_case(result: AnalysisResult, image: Image, out: Path | None, dicom_out: Path | None = None
               ) -> CaseOutputs:
    """Case files into `out` (mask.nrrd: the mask used, heatmap.nrrd, overlay.png, result.json) and, when
    `dicom_out` is given and a lesion was classified, DICOM SEG + SR + overlay Secondary Capture there.
    The overlay is rendered once for both; every DICOM object is built and every target checked before
    anything is written."""
    overlay = case_overlay(result, image)
    outputs = CaseOutputs()
    dicom_paths: dict[str, Path] = {}
    if dicom_out is not None and result.prediction is not None:
        from BreastCADxLib.results.dicom_export import build_dicom_results, check_writable

        outputs.datasets = build_dicom_results(result, image, overlay, outputs.notes)
        check_writable(dicom_out, tuple(outputs.datasets))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        paths = outputs.paths
        paths["mask"] = save_mask(result.mask, image, out / NAMES["mask"])
        if result.heatmap is not None:
            paths["heatmap"] = save_image(image.with_array(result.heatmap.astype(np.float32)), out / NAMES["heatmap"])
        else:
            (out / NAMES["heatmap"]).unlink(missing_ok=True)  # a previous run's heatmap would no longer match
        paths["overlay"] = write_atomic(out / NAMES["overlay"], lambda tmp: PILImage.fromarray(overlay).save(
            tmp, format="PNG", compress_level=1))  # fast; the size barely matters
        paths["result"] = out / NAMES["result"]
        payload = result.to_json()
        payload["files"] = {k: v.name for k, v in paths.items()}
        # last and whole: a case folder without result.json is unfinished
        write_atomic(paths["result"], lambda tmp: tmp.write_text(json.dumps(payload, indent=1) + "\n"))
    if outputs.datasets:
        from BreastCADxLib.results.dicom_export import save_dicom_results

        dicom_paths = save_dicom_results(outputs.datasets, dicom_out)
    outputs.paths.update({f"dicom_{k}": v for k, v in dicom_paths.items()})
    return outputs


def read_case(folder: Path, image: Image | None = None) -> AnalysisResult:
    """A case folder's result.json as a result (with its mask and heatmap when the image grid is given)."""
    from BreastCADxLib.io import load_image, load_mask

    payload = json.loads((folder / NAMES["result"]).read_text())
    mask = heat = None
    if image is not None:
        mask = load_mask(folder / NAMES["mask"], image)
        if (folder / NAMES["heatmap"]).exists():
            heat = load_image(folder / NAMES["heatmap"]).array
    return AnalysisResult.from_json(payload, mask=mask, heatmap=heat)
