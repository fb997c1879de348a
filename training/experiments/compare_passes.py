"""Compare segmenter passes of one site (site_pass outputs) on the same lesion images: Dice of the lesion-expected
and the ROI-box masks against the reference outlines (presence-threshold free), and the share of lesions missed.

    python -m training.experiments.compare_passes runs/site_pass/seg_A__busbra_l5__train+val.npz \
        runs/site_pass/seg_A_lite2__busbra_l5__train+val.npz --site busbra_l5 --roles train,val
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from BreastCADxLib.results.evaluation import dice
from training.data import add_data_args, cases
from training.segmentation.site_pass import load_pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("passes", nargs="+", type=Path)
    ap.add_argument("--site", required=True)
    ap.add_argument("--roles", default="train,val")
    add_data_args(ap)
    args = ap.parse_args()
    refs = {c.case: c.load()[1] for c in cases(args, [args.site], roles=tuple(args.roles.split(",")))
            if c.label != "normal"}
    print("| pass | lesions | Dice, lesion expected | Dice, ROI box | missed (expected) |\n|---|---|---|---|---|")
    for p in args.passes:
        d = load_pass(p)
        common = [c for c in refs if c in d]
        de = [dice(d[c]["expect"], refs[c]) for c in common]
        dr = [dice(d[c]["roi"], refs[c]) for c in common]
        missed = np.mean([dice(d[c]["expect"], refs[c]) < 0.1 for c in common])
        print(f"| {p.stem} | {len(common)} | {np.mean(de):.3f} | {np.mean(dr):.3f} | {100 * missed:.1f} % |")


if __name__ == "__main__":
    main()
