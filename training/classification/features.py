"""Extract radiomics + deep features for every BUSI lesion case (benign/malignant), cached to NPZ.

    python -m training.classification.features --data ../shared/data/busi --out runs/features

Masks: `reference` (radiologists' masks) and `auto` (shipped segmenter) for every case; `eroded` and `dilated`
(reference -/+ 3 px), `roi` (shipped segmenter inside the reference box + 10 %, i.e. the box prompt) and
`expect` (shipped segmenter, no box, lesion expected: the panel's default) for val and test (benchmark).
On train images the segmenter's masks are optimistic (it was fitted there) but have its outline style, which
is what classifier training can use them for.
Features come from the same library code as `analyze`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from BreastCADxLib.analysis.deep_features import DeepFeatures
from BreastCADxLib.analysis.preprocessing import expand_box, mask_bbox
from BreastCADxLib.analysis.radiomics_features import extract
from BreastCADxLib.errors import MaskError
from BreastCADxLib.image import Image
from training.common import load_case, read_split

MASK_KINDS = ("reference", "auto", "eroded", "dilated", "roi", "expect")


def variant_mask(kind: str, img: np.ndarray, ref: np.ndarray, segmenter) -> np.ndarray:
    if kind == "reference":
        return ref
    if kind == "eroded":
        return ndimage.binary_erosion(ref, iterations=3)
    if kind == "dilated":
        return ndimage.binary_dilation(ref, iterations=3)
    if kind == "roi":  # the radiologist's box prompt: reference box + 10 % margin, as in the segmentation benchmark
        box = expand_box(mask_bbox(ref), 0.1, ref.shape)
        return segmenter.segment(Image(array=img), roi=box).mask[0]
    return segmenter.segment(Image(array=img), expect_lesion=kind == "expect").mask[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/busi"))
    ap.add_argument("--split", type=Path, default=Path("training/splits/busi.csv"))
    ap.add_argument("--out", type=Path, default=Path("runs/features"))
    ap.add_argument("--kinds", nargs="+", default=list(MASK_KINDS), choices=MASK_KINDS)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--deep-model", nargs="+", default=[""],
                    help="shipped lesion CNN ids for the deep features ('' = frozen ImageNet Lite0); with several, "
                         "OUT/<id>/ holds one feature set each (radiomics and masks computed once)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [r for r in read_split(args.split) if r["label"] != "normal"]
    models = {m: DeepFeatures("auto", m or None) for m in args.deep_model}
    outs = {m: args.out / (m or "imagenet_frozen") if len(models) > 1 else args.out for m in models}
    segmenter = None
    if {"auto", "roi", "expect"} & set(args.kinds):
        from BreastCADxLib.analysis.segmentation import get_segmenter

        segmenter = get_segmenter()
    for out in outs.values():
        out.mkdir(parents=True, exist_ok=True)
    for kind in args.kinds:
        todo = rows if kind in ("reference", "auto") else [r for r in rows if r["split"] in ("val", "test")]
        names, rad, ok, errors = None, [], [], []
        dfeat: dict[str, list] = {m: [] for m in models}
        t0 = time.perf_counter()
        for r in todo:
            img, ref = load_case(args.data, r)
            image = Image(array=img)
            mask = variant_mask(kind, img, ref, segmenter)[None]
            try:
                feats = extract(image, mask)
            except MaskError as e:  # e.g. auto mask empty: recorded, scored as a miss by the benchmark
                errors.append(f"{r['case']}: {e.cause}")
                continue
            names = names or list(feats)
            rad.append([feats[n] for n in names])
            for m, deep in models.items():
                dfeat[m].append(deep.features(image, mask))
            ok.append(r)
        for m, out in outs.items():
            np.savez_compressed(
                out / f"{kind}.npz",
                case=np.array([r["case"] for r in ok]), label=np.array([int(r["label"] == "malignant") for r in ok]),
                split=np.array([r["split"] for r in ok]), fold=np.array([int(r["fold"]) for r in ok]),
                group=np.array([r["group"] for r in ok]), radiomics=np.array(rad, np.float64),
                deep_model=np.array(m), radiomics_names=np.array(names), deep=np.array(dfeat[m], np.float32),
                errors=np.array(errors),
            )
        print(f"{kind}: {len(ok)} cases, {len(errors)} without features, {time.perf_counter() - t0:.0f} s", flush=True)

if __name__ == "__main__":
    main()
