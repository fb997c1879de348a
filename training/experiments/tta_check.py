"""Does test-time augmentation (left-right flip) or the refinement pass earn its time? The shipped two-site
segmenter on the val images of both sites (never test), each variant timed.

    python -m training.experiments.tta_check --out benchmarks/results/segmenter_passes.md

Per variant: lesion Dice with a lesion expected (the panel's default), lesions missed without a prompt, normal
images given a lesion, and the median seconds of `segment` per image (ONNX Runtime, this machine).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from benchmarks.machine import machine
from BreastCADxLib.analysis.segmentation import LesionSegmenter
from BreastCADxLib.image import Image
from BreastCADxLib.results.evaluation import dice
from training.data import add_data_args, cases

VARIANTS = {"flip TTA + refinement (shipped)": (True, True), "refinement only": (False, True),
            "flip TTA only": (True, False), "neither": (False, False)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_args(ap)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/segmenter_passes.md"))
    args = ap.parse_args()
    seg = LesionSegmenter.from_registry()
    margin = seg.refine_margin
    todo = cases(args, ["busi", "busbra_l5"], ("val",))
    data = [(c, *c.load()) for c in todo]
    rows = []
    for name, (flip, refine) in VARIANTS.items():
        seg.flip_tta, seg.refine_margin = flip, (margin if refine else None)
        dices, missed, fp, secs = [], 0, 0, []
        for _c, img, ref in data:
            image = Image(array=img[None])
            t = time.perf_counter()
            res = seg.segment(image)
            secs.append(time.perf_counter() - t)
            m = res.mask[0]
            if ref.any():
                missed += not m.any()
                if not m.any():
                    m = seg.segment(image, expect_lesion=True).mask[0]
                dices.append(dice(m, ref))
            else:
                fp += bool(m.any())
        n_les, n_norm = len(dices), sum(1 for _, _, r in data if not r.any())
        rows.append((name, float(np.mean(dices)), missed, n_les, fp, n_norm, statistics.median(secs)))
        print(rows[-1], flush=True)
    m = machine()
    lines = ["# Segmenter passes: what test-time flip and refinement buy", "",
             f"Date: {time.strftime('%Y-%m-%d')}  ", f"Machine: {m['cpu']}, {m['cores']} cores, ONNX Runtime (CPU)  ",
             f"Made by `python -m training.experiments.tta_check`: the shipped two-site segmenter on the val images "
             f"of both sites ({len(data)} images; test rows unread).", "",
             "| variant | lesion Dice, lesion expected | lesions missed (no prompt) | normal images with a lesion | "
             "median s / image |", "|---|---|---|---|---|"]
    for name, d, mi, nl, fp, nn, s in rows:
        lines.append(f"| {name} | {d:.3f} | {mi} of {nl} | {fp} of {nn} | {s:.3f} |")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
