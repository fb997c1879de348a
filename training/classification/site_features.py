"""Features of every lesion of one site under the masks the product really uses.

    python -m training.classification.site_features --site busbra_l5 \
        --pass runs/site_pass/seg_A__busbra_l5__train+val.npz
    python -m training.classification.site_features --site busi --masks reference,perturbed

Mask kinds: `reference` (the site's outline), `perturbed` (the reference redrawn by another hand: a smooth random
boundary shift of about 5 % of the lesion size, imitating a user-corrected mask), `smoothed` (the reference without
the hand's boundary detail, size shifted: an automatic outline's style, for fitting only), and from a segmenter pass
(training.segmentation.site_pass): `roi` (segmenter in the reference box + 10 %) and `expect` (no prompt, a lesion
expected: the panel's default automatic mask). Feature families: pyradiomics (the shipped parameter file),
lexicon descriptors, frozen ImageNet EfficientNet-Lite0 on the lesion's box crop (`deep_box`, no mask channel)
and on the mask-aware crop (`deep_mask`). Writes runs/site_features/<site>__<kind>[__<pass>].npz.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from BreastCADxLib.analysis.deep_features import DeepFeatures
from BreastCADxLib.analysis.descriptors import NAMES as DESCRIPTOR_NAMES
from BreastCADxLib.analysis.descriptors import describe
from BreastCADxLib.analysis.radiomics_features import extract
from BreastCADxLib.errors import MaskError
from BreastCADxLib.image import Image
from BreastCADxLib.results.evaluation import dice as mask_dice
from BreastCADxLib.train.augment import largest_filled, redrawn
from training.data import Case, add_data_args, cases
from training.segmentation.site_pass import load_pass

OUT = Path("runs/site_features")
SEED = 11  # smoothed(); perturbed() is the library's redrawn() (the same seed)


def perturbed(ref: np.ndarray, case: str) -> np.ndarray:
    """The reference outline redrawn (the library's, which `breastcadx train` fits on too)."""
    return redrawn(ref, case)


def smoothed(ref: np.ndarray, case: str) -> np.ndarray:
    """The reference as a segmenter would draw it: the hand's boundary detail blurred away (the signed distance
    smoothed over a fifth of the lesion size) and the size shifted by up to 8 % either way, largest island."""
    rng = np.random.default_rng([SEED + 1, *case.encode()])
    scale = float(np.sqrt(ref.sum()))
    sdt = ndimage.distance_transform_edt(~ref) - ndimage.distance_transform_edt(ref)
    out = ndimage.gaussian_filter(sdt, sigma=max(2.0, 0.2 * scale)) + rng.uniform(-0.08, 0.08) * scale < 0
    return largest_filled(out, ref)


def family_rows(img: np.ndarray, mask: np.ndarray, deep_box: DeepFeatures, deep_mask: DeepFeatures) -> dict:
    image = Image(array=img)
    m = mask[None]
    rad = extract(image, m)
    return {"radiomics": rad, "descriptors": describe(img, mask), "deep_box": deep_box.features(image, m),
            "deep_mask": deep_mask.features(image, m)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_args(ap)
    ap.add_argument("--site", required=True)
    ap.add_argument("--roles", default="train,val")
    ap.add_argument("--masks", default="", help="reference,perturbed (default: roi,expect with --pass)")
    ap.add_argument("--pass", dest="pass_file", type=Path, help="a site_pass NPZ (for roi / expect masks)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    kinds = (args.masks or ("roi,expect" if args.pass_file else "reference,perturbed")).split(",")
    passed = load_pass(args.pass_file) if args.pass_file else {}
    todo: list[Case] = cases(args, [args.site], tuple(args.roles.split(",")), lesions_only=True)
    deep_box, deep_mask = DeepFeatures("cpu", crop="box"), DeepFeatures("cpu", crop="mask")
    args.out.mkdir(parents=True, exist_ok=True)
    for kind in kinds:
        t0 = time.time()
        rows, ok, errors, dice = [], [], [], []
        for c in todo:
            img, ref = c.load()
            if kind == "reference":
                mask = ref
            elif kind == "perturbed":
                mask = perturbed(ref, c.case)
            elif kind == "smoothed":
                mask = smoothed(ref, c.case)
            else:
                mask = passed[c.case][kind]
            d = mask_dice(mask, ref)
            try:
                rows.append(family_rows(img, mask, deep_box, deep_mask))
            except (MaskError, ValueError) as e:
                errors.append(f"{c.case}: {e}")
                continue
            ok.append(c)
            dice.append(d)
        names = list(rows[0]["radiomics"])
        suffix = f"__{args.pass_file.stem.split('__')[0]}" if kind in ("roi", "expect") else ""
        suffix += "__test" if args.roles == "test" else ""
        path = args.out / f"{args.site}__{kind}{suffix}.npz"
        np.savez_compressed(
            path, case=np.array([c.case for c in ok]), label=np.array([int(c.malignant) for c in ok]),
            group=np.array([c.group for c in ok]), split=np.array([c.split for c in ok]),
            fold=np.array([c.fold for c in ok]), birads=np.array([c.birads or 0 for c in ok]),
            dice=np.array(dice), radiomics_names=np.array(names),
            radiomics=np.array([[r["radiomics"][n] for n in names] for r in rows]),
            descriptor_names=np.array(DESCRIPTOR_NAMES),
            descriptors=np.array([[r["descriptors"][n] for n in DESCRIPTOR_NAMES] for r in rows]),
            deep_box=np.array([r["deep_box"] for r in rows], np.float32),
            deep_mask=np.array([r["deep_mask"] for r in rows], np.float32), errors=np.array(errors))
        print(f"{path}: {len(ok)} lesions, {len(errors)} without features, mean Dice to reference "
              f"{np.mean(dice):.3f}, {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
