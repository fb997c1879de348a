"""Can the segmenter learn to trace a margin the way a reader does? A probe on one rotation: the three-site run's
segmenter fold that held out --site, trained again on the same two sites' images with the same recipe (epochs,
seed, augmentation) and a boundary term added to its loss (binary cross-entropy weighted 1 + W on a 7-pixel band
around the reference outline); then the held-out site's finding images through the product's path (lesion
expected): mean Dice, and the shape features' AUC (pyradiomics shape2D, a logistic regression fitted on the two
training sites' reference outlines) on the reference outline, the shipped fold's automatic outline and the new
one, over all findings and over those whose automatic outline has Dice >= 0.8 (where the shipped fold's outline
loses the margin: training/segmentation/EXPERIMENTS.md, "its margin").

    python -m training.experiments.boundary_loss --run runs/three-site-train --manifest runs/three_sites.csv \
        --site busbra_l5 [--weight 4] [--max-minutes 60]

About 35 min of training on 2 cores (resumable: checkpoints in --work) and 3 min of scoring. Non-test rows only.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def boundary_loss(weight: float):
    """A DiceCELoss factory whose loss adds BCE weighted 1 + weight on a band around the reference outline."""
    import torch.nn.functional as F
    from monai.losses import DiceCELoss

    class BoundaryDiceCE(DiceCELoss):
        def forward(self, logits, y):
            k = 7
            band = F.max_pool2d(y, k, 1, k // 2) + F.max_pool2d(-y, k, 1, k // 2)  # dilated - eroded
            return super().forward(logits, y) + F.binary_cross_entropy_with_logits(logits, y, weight=1 + weight * band)

    return BoundaryDiceCE


def shape_table(findings, refs, outlines: dict[str, list], site: str, base: str = "shipped fold") -> list[str]:
    """Mean Dice and shape-feature AUC per outline kind (LR fitted on the other sites' reference outlines); the
    last column over the findings whose `base` outline has Dice >= 0.8."""
    import logging

    import SimpleITK as sitk
    from radiomics import shape2D
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from BreastCADxLib.results.evaluation import dice

    logging.getLogger("radiomics").setLevel(logging.ERROR)

    def shape(mask) -> np.ndarray | None:
        if mask.sum() < 20:
            return None
        ys, xs = np.nonzero(mask)
        m = mask[max(0, ys.min() - 3):ys.max() + 4, max(0, xs.min() - 3):xs.max() + 4].astype(np.uint8)
        f = shape2D.RadiomicsShape2D(sitk.GetImageFromArray(m.astype(np.float32)), sitk.GetImageFromArray(m),
                                     force2D=True)
        f.enableAllFeatures()
        return np.array([float(v) for _, v in sorted(f.execute().items())])

    y = np.array([int(f.label) for f in findings])
    sites = np.array([f.site for f in findings])
    ref = [shape(m) for m in refs]
    fit = np.flatnonzero(sites != site)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=3000)).fit(
        np.array([ref[i] for i in fit]), y[fit])
    held = np.flatnonzero(sites == site)
    base_dice = np.array([dice(outlines[base][j], refs[i]) for j, i in enumerate(held)])
    lines = [f"| outline | mean Dice | shape AUC, all | shape AUC, {base} Dice >= 0.8 |", "|---|---|---|---|"]
    for name, masks in [("reference", [refs[i] for i in held]), *outlines.items()]:
        feats = [shape(m) for m in masks]
        ok = np.array([f is not None for f in feats])
        x = np.array([f if f is not None else np.zeros_like(ref[held[0]]) for f in feats])
        p = np.where(ok, model.predict_proba(x)[:, 1], 0.5)
        d = np.array([dice(m, refs[i]) for m, i in zip(masks, held)])
        good = base_dice >= 0.8
        good_auc = f"{roc_auc_score(y[held][good], p[good]):.3f}" if len(set(y[held][good])) == 2 else "-"
        lines.append(f"| {name} | {d.mean():.3f} | {roc_auc_score(y[held], p):.3f} | {good_auc} |")
    return lines


def main() -> None:
    from dataclasses import replace

    import monai.losses
    import torch

    from BreastCADxLib.analysis.registry import load_card, sha256_of
    from BreastCADxLib.analysis.segmentation import DEFAULT_MODEL
    from BreastCADxLib.image import Image
    from BreastCADxLib.train import segmenter as seg
    from BreastCADxLib.train.outlines import cached_outline, cached_passes
    from BreastCADxLib.train.pipeline import read_manifest

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--site", default="busbra_l5")
    ap.add_argument("--weight", type=float, default=4.0)
    ap.add_argument("--work", type=Path, default=Path("runs/boundary_loss"))
    ap.add_argument("--max-minutes", type=float, default=60.0)
    args = ap.parse_args()
    findings, _, normals = read_manifest(args.manifest)
    images = seg.seg_images(findings, normals)
    card = load_card(DEFAULT_MODEL, args.run)
    folds = sorted({f.site for f in findings})
    k = folds.index(args.site) + 1  # --folds site: one fold per site, in sorted order
    monai.losses.DiceCELoss = boundary_loss(args.weight)
    weights = seg.fit([im for im in images if im.site != args.site], args.work / f"{args.site}_w{args.weight:g}",
                      epochs=int(card.training["epochs"]), size=card.size[0], device=torch.device("cpu"),
                      deadline=time.time() + 60 * args.max_minutes, say=lambda m: print(m, flush=True),
                      label=f"boundary, {args.site} held out", seed=k, scanner_aug=seg.SCANNER_AUG["US"])
    net = seg.segmenter(replace(card, weights=weights.name, sha256=sha256_of(weights), folder=weights.parent),
                        weights, "cpu")
    planes = {im.key: im for im in images}
    held = [f for f in findings if f.site == args.site]
    packed = cached_passes(args.run / ".work")
    outlines = {"shipped fold": [cached_outline(packed[str(f.image)], planes[str(f.image)].plane.shape) for f in held],
                f"boundary loss (W {args.weight:g})": [net.segment(Image(array=planes[str(f.image)].plane[None]),
                                                                   expect_lesion=True).mask[0] for f in held]}
    refs = [planes[str(f.image)].mask for f in findings]
    print("\n".join(shape_table(findings, refs, outlines, args.site)))


if __name__ == "__main__":
    main()
