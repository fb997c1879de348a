"""Probe (val only): would a second model, re-checking candidates below the presence threshold in a zoomed box,
recover missed lesions without adding false ones? Prints the table in training/segmentation/EXPERIMENTS.md.

    python -m training.segmentation.verifier_probe --verifier runs/seg_lite0_neg/model.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from BreastCADxLib.models import load_card
from BreastCADxLib.networks import lesion_unet
from BreastCADxLib.segmentation import DEFAULT_MODEL, LesionSegmenter
from training.common import load_case, read_split, seg_score


def candidate_mean(seg: LesionSegmenter, img: np.ndarray) -> tuple[np.ndarray, float]:
    """The verifier's refined best candidate on a plane and its mean probability."""
    prob = seg.probability(img)
    region = seg.candidate(img, prob, refine=True)
    return region, float(prob[region].mean()) if region.any() else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--verifier", type=Path, required=True, help="weights (state dict) of the verifier")
    ap.add_argument("--data", type=Path, default=Path("../shared/data/busi"))
    ap.add_argument("--split", type=Path, default=Path("training/splits/busi.csv"))
    args = ap.parse_args()
    shipped = LesionSegmenter.from_registry()
    net = lesion_unet(pretrained=False)
    net.load_state_dict(torch.load(args.verifier, map_location="cpu", weights_only=True))
    verifier = LesionSegmenter(load_card(DEFAULT_MODEL), net, shipped.device.type)
    rows = [r for r in read_split(args.split) if r["split"] == "val"]
    found, plain, checked = [], [], []  # per image: shipped found?, its score, (verifier, empty score, mean)
    for r in rows:
        img, ref = load_case(args.data, r)
        mask = shipped.mask_from(shipped.refine(img, shipped.probability(img)))  # the default path, 2D
        found.append(bool(mask.any()))
        plain.append(seg_score(mask, ref))
        region, mean = candidate_mean(verifier, img)
        checked.append((seg_score(region, ref), seg_score(np.zeros_like(ref), ref), mean))
    lesion = np.array([r["label"] != "normal" for r in rows])
    print("| t | val score | lesion Dice | normal images with a lesion |\n|---|---|---|---|")
    for t in (None, 0.8, 0.85, 0.9):
        s = np.array([p if f or t is None else (v if m >= t else e)
                      for f, p, (v, e, m) in zip(found, plain, checked)])
        name = "shipped alone" if t is None else f"{t:.2f}"
        print(f"| {name} | {s.mean():.3f} | {s[lesion].mean():.3f} | {int((s[~lesion] == 0).sum())} of "
              f"{int((~lesion).sum())} |")

if __name__ == "__main__":
    main()
