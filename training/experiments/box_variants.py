"""Inside a drawn box, can the outline get closer to the reference? Each finding of a finished `breastcadx train
--folds site` run through its segmenter fold that never saw its site, with the box = reference box + 10 % or + 30 %
each side: the product's in-box path against a plain threshold (0.25 / 0.35 / 0.5, largest region, holes filled),
the same on the mean with the left-right mirror, and a second pass in the first outline's box + 20 %.

    python -m training.experiments.box_variants --run runs/three-site-train --manifest runs/three_sites.csv

Prints mean Dice (share below 0.5) per held-out site; about 15 min on 2 cores. Non-test rows only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from BreastCADxLib.results.evaluation import dice
from BreastCADxLib.train.augment import largest_filled


def _largest(m: np.ndarray) -> np.ndarray:
    """The largest region of a mask, holes filled (the mask itself when empty)."""
    return largest_filled(m, m)


def in_box(net, plane: np.ndarray, box, mirror: bool = False) -> np.ndarray:
    x0, y0, x1, y1 = box
    crop = plane[y0:y1, x0:x1]
    p = np.zeros(plane.shape, np.float32)
    p[y0:y1, x0:x1] = net.probability(crop) if not mirror else net.probability(crop[:, ::-1])[:, ::-1]
    return p


def variants(net, plane: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    from BreastCADxLib.analysis.preprocessing import expand_box, mask_bbox
    from BreastCADxLib.image import Image

    out = {}
    for margin in (0.1, 0.3):
        box = expand_box(mask_bbox(ref), margin, ref.shape)
        out[f"product, +{margin:.0%}"] = dice(net.segment(Image(array=plane[None]), roi=box).mask[0], ref)
        p, pm = in_box(net, plane, box), in_box(net, plane, box, mirror=True)
        for t in (0.25, 0.35, 0.5):
            out[f"threshold {t}, +{margin:.0%}"] = dice(_largest(p >= t), ref)
            out[f"threshold {t} with mirror, +{margin:.0%}"] = dice(_largest((p + pm) / 2 >= t), ref)
        first = _largest(p >= 0.35)
        second = in_box(net, plane, expand_box(mask_bbox(first), 0.2, ref.shape)) if first.any() else None
        out[f"second pass, +{margin:.0%}"] = dice(_largest(second >= 0.35), ref) if second is not None \
            else out[f"product, +{margin:.0%}"]
    return out


def main() -> None:
    from BreastCADxLib.train import segmenter as seg
    from BreastCADxLib.train.members import member_images
    from BreastCADxLib.train.pipeline import read_manifest

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--manifest", type=Path, required=True)
    args = ap.parse_args()
    findings = read_manifest(args.manifest)[0]
    images = {str(f.image): (f, im) for f, im in zip(findings, member_images(findings))}
    rows = []
    for net, judged in seg.fold_segmenters(args.run):
        held_out = [r["image"] for r in judged if r["finding"]]
        for key in held_out:
            f, im = images[key]
            rows.append({"site": f.site, **variants(net, im.plane, im.mask)})
    sites = sorted({r["site"] for r in rows})
    print("| variant | " + " | ".join(sites) + " |\n|---|" + "---|" * len(sites))
    for k in (k for k in rows[0] if k != "site"):
        cells = [np.array([r[k] for r in rows if r["site"] == s]) for s in sites]
        print(f"| {k} | " + " | ".join(f"{v.mean():.3f} ({(v < 0.5).mean():.0%})" for v in cells) + " |")


if __name__ == "__main__":
    main()
