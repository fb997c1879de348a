"""Do the features of an automatic outline rank better at a new hospital when the outline is also read a little
smaller and a little larger? Each finding's automatic outline in a finished `breastcadx train --folds site` run
(the run's cached pass, by the segmenter fold that never saw its site) eroded and dilated by 5 % of its equivalent
diameter (at least a pixel); the product's features of each; then, per held-out site, the automatic-outline bundle
refitted on the other two sites as `train` fits it and
  - "outline TTA": the mean of its logits over the outline and both variants;
  - "fitted on the variants too": the same, with the variants' rows added to the fit;
each fused with the image members at the run's weights and judged against the shipped automatic path
(benchmarks.outline_limits.judge_candidates: AUC, specificity at 0.96 / 0.98, the band, cancers below 5 %, train's
gate).

    python -m training.experiments.outline_tta --run runs/three-site-train --manifest runs/three_sites.csv

The variants' features are cached in --work (about 1 s per outline on 2 cores; a rerun only judges). Non-test
rows only. Writes benchmarks/results/outline_tta.md/json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

VARIANTS = ("eroded", "dilated")
STEP = 0.05  # of the outline's equivalent diameter


def variant(mask: np.ndarray, kind: str) -> np.ndarray:
    """The outline eroded or dilated by STEP of its equivalent diameter (the outline itself if erosion empties it)."""
    from scipy import ndimage

    if not mask.any():
        return mask
    k = max(1, int(round(STEP * 2 * np.sqrt(mask.sum() / np.pi))))
    out = ndimage.binary_erosion(mask, iterations=k) if kind == "eroded" else ndimage.binary_dilation(mask,
                                                                                                     iterations=k)
    return out if out.any() else mask


def variant_features(run: Path, findings: list, work: Path) -> dict[str, tuple]:
    """(rad, deep, ok) of each variant of every finding's automatic outline, cached per variant in work/."""
    from BreastCADxLib.train.members import member_images
    from BreastCADxLib.train.outlines import cached_outline, cached_passes, feature_arrays, outline_features
    from BreastCADxLib.train.pipeline import DESIGN

    packed = cached_passes(run / ".work")
    shapes = {str(f.image): im.plane.shape for f, im in zip(findings, member_images(findings))}
    out = {}
    for kind in VARIANTS:
        outlines = {k: variant(cached_outline(packed[k], s), kind) for k, s in shapes.items()}
        feats = outline_features(findings, outlines, work / kind, "cpu", DESIGN["US"]["descriptors"],
                                 time.time() + 24 * 3600, lambda m, kind=kind: print(f"{kind}: {m}", flush=True))
        first = next(r for r in feats.values() if r is not None)
        rad, deep, ok, _ = feature_arrays(feats, findings, len(first["rad"]), len(first["deep"]))
        out[kind] = (rad, deep.astype(float), ok)
    return out


def candidates(r: dict, var: dict[str, tuple]) -> dict[str, tuple[np.ndarray, str]]:
    """The automatic path's out-of-fold probability under each candidate (fitted per site fold)."""
    from scipy.special import expit, logit

    from BreastCADxLib.train.members import fuse
    from BreastCADxLib.train.outlines import with_automatic
    from BreastCADxLib.train.pipeline import DESIGN, _fusion_proba, fit_fusion

    y, ok, splits = r["y"], r["ok"], r["splits"]
    members, weights = {"box": r["box"], "whole": r["whole"]}, r["cv"]["automatic_outlines"]["member_weights"]
    c = DESIGN["US"]["c"]
    views = [(r["arad"], r["adeep"], ok), *var.values()]
    tta, wide = np.full(len(y), 0.5), np.full(len(y), 0.5)
    for tr, te in splits:
        base = with_automatic(r["rad"], r["deep"], y, r["arad"], r["adeep"], ok, tr, r["redrawn"])
        extra = [(a[tr[k[tr]]], d[tr[k[tr]]], y[tr[k[tr]]]) for a, d, k in views[1:]]
        fits = {"tta": fit_fusion(base, c),
                "wide": fit_fusion(tuple(np.concatenate([b, *(e[i] for e in extra)]) for i, b in enumerate(base)), c)}
        s = te[ok[te]]
        for name, target in (("tta", tta), ("wide", wide)):
            logits = [np.where(k[s], logit(np.clip(_fusion_proba(fits[name], a[s], d[s]), 1e-6, 1 - 1e-6)), np.nan)
                      for a, d, k in views]  # a variant the product cannot classify is left out of the mean
            target[s] = expit(np.nanmean(logits, axis=0))
    return {"shipped": (r["automatic"], "the shipped automatic bundle, members at "
                        + " / ".join(str(w) for w in weights.values())),
            "outline TTA": (fuse(tta, members, weights), "mean logit over the outline, eroded and dilated by 5 %"),
            "fitted on the variants too": (fuse(wide, members, weights), "the same, the variants' rows in the fit")}


def run_study(name: str, title: str, doc: str, make) -> None:
    """The command line of a study of the automatic path on a finished `--folds site` run: its candidates
    (make(run_rows, variant features)) judged per held-out site, written to benchmarks/results/<name>.md/json."""
    from benchmarks.machine import header, stamp, write_results
    from benchmarks.outline_limits import candidate_table, judge_candidates
    from benchmarks.train_weights import run_rows

    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a finished `breastcadx train --folds site` folder")
    ap.add_argument("--manifest", type=Path, required=True, help="the manifest it was trained on")
    ap.add_argument("--work", type=Path, default=Path("runs/outline_tta"), help="the variants' feature cache")
    args = ap.parse_args()
    report = stamp()
    r = run_rows(args.run, args.manifest)
    judged = judge_candidates(make(r, variant_features(args.run, r["findings"], args.work)), r["y"], r["sites"],
                              r["groups"])
    report.update(run=str(args.run), findings=len(r["y"]), step=STEP, candidates=judged)
    head = header(title, report, f"Made by `python -m training.experiments.{name} --run {args.run} --manifest "
                  f"{args.manifest}`: {len(r['y'])} findings of three sites, each site scored by models fitted on the "
                  "other two (the run's out-of-fold record); test splits unread.")
    write_results(Path(__file__).resolve().parents[2] / "benchmarks" / "results", name, report,
                  "\n".join(head + ["", *candidate_table(judged)]) + "\n")


def main() -> None:
    run_study("outline_tta", "An automatic outline read smaller and larger too: outline TTA for the features",
              __doc__, candidates)


if __name__ == "__main__":
    main()
