"""Background worker: the Slicer panel runs segment / classify here, in a separate process.

    python -m BreastCADxLib.scene.worker segment  --job DIR [--roi x0,y0,x1,y1] [--device auto] [--expect-lesion]
    python -m BreastCADxLib.scene.worker classify --job DIR [--device auto]

DIR holds image.nrrd (+ image.json: spacing_known, modality) and, for classify, mask.nrrd. Results are written
into DIR/out/ (segment: mask.nrrd; classify: result.json, heatmap.nrrd). Standard output carries one JSON
object per line: {"progress": f, "message": m}, then {"done": true} or {"error": "..."} (exit 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from BreastCADxLib.errors import BreastCADxError

EXIT_ERROR = 2


def emit(**event) -> None:
    print(json.dumps(event), flush=True)


def _progress(fraction: float, message: str) -> None:
    emit(progress=round(float(fraction), 4), message=message)


def load_job_image(job: Path):
    from BreastCADxLib.io import load_image

    image = load_image(job / "image.nrrd")
    meta_path = job / "image.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        image.spacing_known = bool(meta.get("spacing_known", image.spacing_known))
        image.modality = str(meta.get("modality", image.modality))
    return image


def run_segment(job: Path, roi: str | None, device: str, expect_lesion: bool = False) -> None:
    from BreastCADxLib.analysis.segmentation import get_segmenter, parse_roi
    from BreastCADxLib.io import save_mask

    image = load_job_image(job)
    _progress(0.1, "loading the segmentation model")
    segmenter = get_segmenter(device=device)
    _progress(0.3, f"segmenting on {segmenter.device}")
    result = segmenter.segment(image, roi=parse_roi(roi) if roi else None,
                               progress=lambda f, m: _progress(0.3 + 0.65 * f, m), expect_lesion=expect_lesion)
    out = job / "out"
    out.mkdir(exist_ok=True)
    save_mask(result.mask, image, out / "mask.nrrd")
    (out / "segment.json").write_text(json.dumps({"low_confidence": result.low_confidence}))
    _progress(1.0, "no lesion found" if not result.lesion_found else
              "low-confidence candidate" if result.low_confidence else "lesion found")


def run_classify(job: Path, device: str) -> None:
    from BreastCADxLib.analysis.pipeline import analyze
    from BreastCADxLib.io import load_mask, save_image

    image = load_job_image(job)
    mask = load_mask(job / "mask.nrrd", image)
    _progress(0.1, "loading the models")
    result = analyze(image, mask=mask, device=device, progress=lambda f, m: _progress(0.1 + 0.85 * f, m))
    out = job / "out"
    out.mkdir(exist_ok=True)
    if result.heatmap is not None:
        save_image(image.with_array(result.heatmap.astype("float32")), out / "heatmap.nrrd")
    (out / "result.json").write_text(json.dumps(result.to_json()))
    _progress(1.0, f"malignancy probability {result.probability:.3f}" if result.probability is not None
              else "no lesion in the mask")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m BreastCADxLib.scene.worker")
    ap.add_argument("task", choices=["segment", "classify"])
    ap.add_argument("--job", required=True, type=Path)
    ap.add_argument("--roi")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--expect-lesion", action="store_true")
    args = ap.parse_args(argv)
    _progress(0.0, f"{args.task}: starting")
    try:
        if args.task == "segment":
            run_segment(args.job, args.roi, args.device, args.expect_lesion)
        else:
            run_classify(args.job, args.device)
    except BreastCADxError as e:
        emit(error=str(e))
        return EXIT_ERROR
    except Exception as e:  # reported to the panel as one line; the scene is untouched
        emit(error=f"internal error: {e.__class__.__name__}: {e}")
        return EXIT_ERROR
    emit(done=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
