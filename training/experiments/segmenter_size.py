"""Does a finer input let the segmenter keep a lesion's margin at a new hospital? A probe on one rotation.

The three-site run's segmenter fold that held out --site, trained again on the other two sites with the shipped
recipe at 256 x 256 (arm A), then continued for --extra epochs at --size (arm B: progressive resizing, the
brief's cheap way to a larger input on a CPU) and, as the control for the extra epochs, for as many at 256
(arm C). The held-out site's finding images go through the product's path (lesion expected) with each arm's card
(its own input size): mean Dice, Dice < 0.1, the share whose outline centre lies in the finding, and the shape
features' AUC (pyradiomics shape2D, a logistic regression fitted on the two training sites' reference outlines;
training/segmentation/EXPERIMENTS.md, "its margin"): over all findings and where arm A's outline has Dice >= 0.8.
Paired on the same findings, with a patient-bootstrap CI of the mean Dice change B - C.

    python -m training.experiments.segmenter_size --manifest runs/three_sites.csv --site busbra_l5 \
        [--size 384] [--extra 4] [--max-minutes 150]

About 25 + 20 + 8 min of training on 2 cores alone (resumable: checkpoints in --work), a few of scoring.
Non-test rows only.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.machine import header, stamp, write_results
from training.experiments.boundary_loss import shape_table

SHIPPED_SET = Path("training/sets/three-site-train")


def outlines_of(card, weights: Path, size: int, planes: list[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    """Each plane's outline through the product's path (lesion expected) with the fold's weights at `size`, and its
    presence score (what the set's presence threshold is compared with)."""
    from BreastCADxLib.analysis.registry import sha256_of
    from BreastCADxLib.image import Image
    from BreastCADxLib.train import segmenter as seg

    sized = replace(card, weights=weights.name, sha256=sha256_of(weights), folder=weights.parent,
                    input={**card.input, "height": size, "width": size})
    net = seg.segmenter(sized, weights, "cpu")
    results = [net.segment(Image(array=p[None]), expect_lesion=True) for p in planes]
    return [r.mask[0] for r in results], np.array([r.presence_score or 0.0 for r in results])


def held_out_fold(manifest: Path, site: str) -> tuple[tuple, object, int, list]:
    """(findings, normals, seg_images of both), the shipped segmenter's card, the fold number (its seed) and the
    images the fold that holds out `site` trains on (--folds site: one fold per site, in sorted order)."""
    from BreastCADxLib.analysis.registry import load_card
    from BreastCADxLib.analysis.segmentation import DEFAULT_MODEL
    from BreastCADxLib.train import segmenter as seg
    from BreastCADxLib.train.pipeline import read_manifest

    findings, _, normals = read_manifest(manifest)
    images = seg.seg_images(findings, normals)
    k = sorted({f.site for f in findings}).index(site) + 1
    return (findings, normals, images), load_card(DEFAULT_MODEL, SHIPPED_SET), k, [im for im in images
                                                                                    if im.site != site]


def shipped_fold(train_on: list, work: Path, site: str, k: int, deadline: float, epochs: int | None = None) -> Path:
    """Arm A of every probe here: the fold that holds out `site`, trained again as `train`'s segmenter stage trains
    it (256 px, the fold's seed, the shipped scanner augmentation); finished folds are reused (--work)."""
    import torch

    from BreastCADxLib.train import segmenter as seg

    return seg.fit(train_on, work / f"{site}_256", epochs=epochs or seg.EPOCHS, size=seg.SIZE,
                   device=torch.device("cpu"), deadline=deadline, say=lambda m: print(m, flush=True),
                   label=f"{site} held out, 256", seed=k, scanner_aug=seg.SCANNER_AUG["US"])


def compare_arms(card, arms: dict[str, tuple[Path, int]], data: tuple, site: str, *, change: tuple[int, int],
                 report: dict, cmd: str, title: str, name: str, work: Path) -> None:
    """Each arm (name: (weights, input size)) through the product's path on `site`'s findings and lesion-free views
    (data: read_manifest's findings and normals, seg_images of both): the shape table, misses, outline centres,
    presence AUC and the patient-bootstrap CI of the mean Dice change arms[change[0]] - arms[change[1]];
    written to benchmarks/results/<name>.md / .json, each arm's Dice to work/dice__<name>.json."""
    from scipy import ndimage

    from BreastCADxLib.results.evaluation import dice, group_bootstrap

    findings, normals, images = data
    planes = {im.key: im for im in images}
    held = [f for f in findings if f.site == site]
    refs = [planes[str(f.image)].mask for f in findings]
    held_refs = [planes[str(f.image)].mask for f in held]
    held_normals = [n for n in normals if n.site == site]  # lesion-free views: presence judged too
    passes = {n: outlines_of(card, w, size, [planes[str(f.image)].plane for f in held + held_normals])
              for n, (w, size) in arms.items()}
    outlines = {n: masks[:len(held)] for n, (masks, _) in passes.items()}
    names = list(outlines)
    lines = shape_table(findings, refs, outlines, site, base=names[0])
    dices = {n: np.array([dice(m, r) for m, r in zip(outlines[n], held_refs)]) for n in names}
    lines += ["", "| outline | Dice < 0.1 | outline centre in the finding |", "|---|---|---|"]
    for n in names:
        centre = [bool(r[tuple(int(round(v)) for v in ndimage.center_of_mass(m))]) if m.any() else False
                  for m, r in zip(outlines[n], held_refs)]
        lines.append(f"| {n} | {np.mean(dices[n] < 0.1):.1%} | {np.mean(centre):.1%} |")
    presence = {}
    if held_normals:
        from sklearn.metrics import roc_auc_score

        finding = np.r_[np.ones(len(held)), np.zeros(len(held_normals))]
        presence = {n: float(roc_auc_score(finding, score)) for n, (_, score) in passes.items()}
        lines += ["", f"Presence AUC ({len(held)} finding images against {len(held_normals)} lesion-free views): "
                  + ", ".join(f"{n} {a:.3f}" for n, a in presence.items()) + "."]
    new, old = (names[i] for i in change)
    b, c = dices[new], dices[old]
    lo, hi = group_bootstrap(np.array([f.patient for f in held]), lambda i: (b[i] - c[i]).mean())
    lines += ["", f"Mean Dice {new[0]} - {old[0]}: {b.mean() - c.mean():+.3f} "
                  f"(95 % patient-bootstrap CI [{lo:+.3f}, {hi:+.3f}]), {len(held)} findings of {site}."]
    report.update(command=cmd, findings=len(held), mean_dice={n: float(d.mean()) for n, d in dices.items()},
                  dice_change_ci=[lo, hi], presence_auc=presence, loadavg_1min_end=os.getloadavg()[0])
    write_results(Path("benchmarks/results"), name,
                  report, "\n".join([*header(title, report, f"Made by `{cmd}`."), "", *lines]) + "\n")
    (work / f"dice__{name}.json").write_text(json.dumps({n: d.tolist() for n, d in dices.items()}))


def main() -> None:
    import torch

    from BreastCADxLib.train import segmenter as seg

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--site", default="busbra_l5")
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--extra", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=None, help="arm A's epochs (default: the shipped recipe's)")
    ap.add_argument("--work", type=Path, default=Path("runs/segmenter_size"))
    ap.add_argument("--max-minutes", type=float, default=150.0)
    args = ap.parse_args()
    report = stamp()
    (findings, normals, images), card, k, train_on = held_out_fold(args.manifest, args.site)
    common = dict(device=torch.device("cpu"), deadline=time.time() + 60 * args.max_minutes,
                  say=lambda m: print(m, flush=True), seed=k, scanner_aug=seg.SCANNER_AUG["US"])
    epochs = args.epochs or seg.EPOCHS
    base = shipped_fold(train_on, args.work, args.site, k, common["deadline"], epochs)
    arms = {f"A: 256, {epochs} epochs": (base, seg.SIZE)}
    for size in (args.size, seg.SIZE):
        w = seg.fit(train_on, args.work / f"{args.site}_256_then_{size}", epochs=args.extra, size=size, init=base,
                    label=f"{args.site} held out, +{args.extra} at {size}", **common)
        arms[f"{'B' if size != seg.SIZE else 'C'}: then {args.extra} epochs at {size}"] = (w, size)

    cmd = (f"python -m training.experiments.segmenter_size --manifest {args.manifest} --site {args.site} "
           f"--size {args.size} --extra {args.extra}")
    compare_arms(card, arms, (findings, normals, images), args.site, change=(1, 2), report=report, cmd=cmd,
                 title=f"Segmenter input size at a held-out hospital ({args.site} held out)",
                 name=f"segmenter_size__{args.site}", work=args.work)


if __name__ == "__main__":
    main()
