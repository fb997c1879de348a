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
import time
from pathlib import Path

from benchmarks.machine import stamp
from training.experiments.segmenter_size import compare_arms, held_out_fold, shipped_fold


def main() -> None:
    import torch

    from BreastCADxLib.train import segmenter as seg

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--site", default="busbra_l5")
    ap.add_argument("--p", type=float, default=0.6)
    ap.add_argument("--work", type=Path, default=Path("runs/segmenter_size"))
    ap.add_argument("--max-minutes", type=float, default=90.0)
    args = ap.parse_args()
    report = stamp()
    (findings, normals, images), card, k, train_on = held_out_fold(args.manifest, args.site)
    common = dict(epochs=seg.EPOCHS, size=seg.SIZE, device=torch.device("cpu"),
                  deadline=time.time() + 60 * args.max_minutes, say=lambda m: print(m, flush=True), seed=k)
    shipped = seg.SCANNER_AUG["US"]
    arms = {f"A: p {shipped:g} (the shipped fold)": (shipped_fold(train_on, args.work, args.site, k,
                                                                  common["deadline"]), seg.SIZE),
            f"D: p {args.p:g}": (seg.fit(train_on, args.work / f"{args.site}_256_aug{args.p:g}",
                                         label=f"{args.site} held out, p {args.p:g}", scanner_aug=args.p, **common),
                                 seg.SIZE)}

    cmd = (f"python -m training.experiments.segmenter_scanner_aug --manifest {args.manifest} --site {args.site} "
           f"--p {args.p:g}")
    compare_arms(card, arms, (findings, normals, images), args.site, change=(1, 0), report=report, cmd=cmd,
                 title=f"Segmenter scanner-imitating augmentation at a held-out hospital ({args.site} held out)",
                 name=f"segmenter_scanner_aug__{args.site}", work=args.work)


if __name__ == "__main__":
    main()
