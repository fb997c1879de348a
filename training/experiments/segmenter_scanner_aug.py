"""Does more scanner-imitating augmentation let the segmenter travel to a new hospital? A probe on one rotation.

The box member travels because of train/augment.ScannerAugment (p 0.5; without it L5's member AUC falls from 0.894
to 0.837: README), but the segmenter kept the two-site era's p 0.3, never chosen under the three-site protocol.
The held-out site's segmenter fold is trained twice from ImageNet with the shipped recipe (256 px, 12 epochs, the
fold's seed): at the shipped p 0.3 (arm A, shared with segmenter_size's) and at --p. Both are read through the
product's path (lesion expected) on the held-out site's findings and lesion-free views: Dice, the margin's shape
AUC, presence AUC, and a patient-bootstrap CI of the Dice change.

    python -m training.experiments.segmenter_scanner_aug --manifest runs/three_sites.csv --site busbra_l5 [--p 0.6]

About 20 min of training per arm on 2 cores alone (resumable, --work shared with segmenter_size). Non-test rows.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from benchmarks.machine import header, stamp, write_results
from training.experiments.boundary_loss import shape_table
from training.experiments.segmenter_size import SHIPPED_SET, outlines_of


def main() -> None:
    import torch
    from sklearn.metrics import roc_auc_score

    from BreastCADxLib.analysis.registry import load_card
    from BreastCADxLib.analysis.segmentation import DEFAULT_MODEL
    from BreastCADxLib.results.evaluation import dice, group_bootstrap
    from BreastCADxLib.train import segmenter as seg
    from BreastCADxLib.train.pipeline import read_manifest

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--site", default="busbra_l5")
    ap.add_argument("--p", type=float, default=0.6)
    ap.add_argument("--work", type=Path, default=Path("runs/segmenter_size"))
    ap.add_argument("--max-minutes", type=float, default=90.0)
    args = ap.parse_args()
    report = stamp()
    findings, _, normals = read_manifest(args.manifest)
    images = seg.seg_images(findings, normals)
    card = load_card(DEFAULT_MODEL, SHIPPED_SET)
    k = sorted({f.site for f in findings}).index(args.site) + 1  # --folds site: one fold per site, sorted
    train_on = [im for im in images if im.site != args.site]
    common = dict(epochs=seg.EPOCHS, size=seg.SIZE, device=torch.device("cpu"),
                  deadline=time.time() + 60 * args.max_minutes, say=lambda m: print(m, flush=True), seed=k)
    shipped = seg.SCANNER_AUG["US"]
    arms = {f"A: p {shipped:g} (the shipped fold)": seg.fit(train_on, args.work / f"{args.site}_256",
                                                            label=f"{args.site} held out, 256",
                                                            scanner_aug=shipped, **common),
            f"D: p {args.p:g}": seg.fit(train_on, args.work / f"{args.site}_256_aug{args.p:g}",
                                        label=f"{args.site} held out, p {args.p:g}", scanner_aug=args.p, **common)}

    planes = {im.key: im for im in images}
    held = [f for f in findings if f.site == args.site]
    held_normals = [n for n in normals if n.site == args.site]
    passes = {n: outlines_of(card, w, seg.SIZE, [planes[str(f.image)].plane for f in held + held_normals])
              for n, w in arms.items()}
    outlines = {n: masks[:len(held)] for n, (masks, _) in passes.items()}
    names = list(outlines)
    refs = [planes[str(f.image)].mask for f in findings]
    lines = shape_table(findings, refs, outlines, args.site, base=names[0])
    held_refs = [planes[str(f.image)].mask for f in held]
    dices = {n: np.array([dice(m, r) for m, r in zip(outlines[n], held_refs)]) for n in names}
    lines += ["", "| outline | Dice < 0.1 |", "|---|---|",
              *(f"| {n} | {np.mean(d < 0.1):.1%} |" for n, d in dices.items())]
    presence = {}
    if held_normals:
        finding = np.r_[np.ones(len(held)), np.zeros(len(held_normals))]
        presence = {n: float(roc_auc_score(finding, score)) for n, (_, score) in passes.items()}
        lines += ["", f"Presence AUC ({len(held)} finding images against {len(held_normals)} lesion-free views): "
                  + ", ".join(f"{n} {a:.3f}" for n, a in presence.items()) + "."]
    a, d = dices[names[0]], dices[names[1]]
    lo, hi = group_bootstrap(np.array([f.patient for f in held]), lambda i: (d[i] - a[i]).mean())
    lines += ["", f"Mean Dice D - A: {dices[names[1]].mean() - dices[names[0]].mean():+.3f} "
                  f"(95 % patient-bootstrap CI [{lo:+.3f}, {hi:+.3f}]), {len(held)} findings of {args.site}."]
    cmd = (f"python -m training.experiments.segmenter_scanner_aug --manifest {args.manifest} --site {args.site} "
           f"--p {args.p:g}")
    report.update(command=cmd, findings=len(held), mean_dice={n: float(d.mean()) for n, d in dices.items()},
                  dice_change_ci=[lo, hi], presence_auc=presence, loadavg_1min_end=os.getloadavg()[0])
    title = f"Segmenter scanner-imitating augmentation at a held-out hospital ({args.site} held out)"
    write_results(Path("benchmarks/results"), f"segmenter_scanner_aug__{args.site}",
                  report, "\n".join([*header(title, report, f"Made by `{cmd}`."), "", *lines]) + "\n")
    (args.work / f"dice_aug__{args.site}.json").write_text(json.dumps({n: d.tolist() for n, d in dices.items()}))


if __name__ == "__main__":
    main()
