"""Should `breastcadx train` fit its fusion on redrawn outlines too? Judged leaving one site out.

    python -m benchmarks.train_redrawn --manifest runs/three_sites.csv --features runs/three-site-features

Each finding's features from its reference outline (the features-only run's cache) and from that outline redrawn
as another hand would draw it (train/augment.redrawn: a corrected or user-drawn mask; cached beside it). Per held-out
site: the shipped design's fusion fitted on the other sites' reference outlines, against the same fitted on their
reference + redrawn outlines (classes balanced, as `train` fits; or sites and classes balanced: each training site
weighs the same), each scoring the held-out site's reference and redrawn outlines. 95 % CIs by patient bootstrap;
specificity at sensitivity 0.96 and 0.98. Writes benchmarks/results/train_redrawn.md/json.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from benchmarks.machine import header, stamp, write_results
from benchmarks.site_rows import load_findings, row_text, site_row

OUT = Path(__file__).resolve().parent / "results"


def site_weights(y: np.ndarray, sites: np.ndarray) -> np.ndarray:
    """Each (site, class) cell weighs the same in total."""
    w = np.zeros(len(y))
    cells = [(s, c) for s in sorted(set(sites)) for c in (0, 1)]
    for s, c in cells:
        m = (sites == s) & (y == c)
        w[m] = len(y) / (len(cells) * max(m.sum(), 1))
    return w


def main() -> None:
    from BreastCADxLib.train.pipeline import DESIGN, SITE_FOLDS, _fusion, _fusion_proba, fold_splits

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--features", type=Path, required=True, help="a features-only `train` run on the manifest")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    report = stamp()
    design = DESIGN["US"]
    t0 = time.perf_counter()
    data = load_findings(args.manifest, args.features)
    report["features_seconds"] = round(time.perf_counter() - t0, 1)
    outlines, y, groups, sites = data["outlines"], data["y"], data["groups"], data["sites"]
    fits = {"reference": ("reference",), "reference + redrawn": ("reference", "redrawn"),
            "reference + redrawn, sites balanced": ("reference", "redrawn")}
    oof = {(fit, o): np.zeros(len(y)) for fit in fits for o in outlines}
    for tr, te in fold_splits(y, groups, SITE_FOLDS, sites=sites):
        for fit, kinds in fits.items():
            t = np.concatenate([y[tr]] * len(kinds))
            where = np.concatenate([sites[tr]] * len(kinds))
            weight = site_weights(t, where) if "balanced" in fit else None
            m = _fusion(np.vstack([outlines[k][0][tr] for k in kinds]), np.vstack([outlines[k][1][tr] for k in kinds]),
                        t, c=design["c"], sample_weight=weight)
            for o, (rad, deep) in outlines.items():
                oof[(fit, o)][te] = _fusion_proba(m, rad[te], deep[te])
    table = {}
    for site in sorted(set(sites)):
        s = sites == site
        for (fit, o), p in oof.items():
            table[f"{site} | {fit} | {o}"] = site_row(y[s], p[s], groups[s])
    report.update(rows=table, loadavg_1min_end=os.getloadavg()[0])
    head = header("Fitting the fusion on redrawn outlines too, leaving one site out", report,
                  f"Made by `python -m benchmarks.train_redrawn --manifest {args.manifest} --features "
                  f"{args.features}`: {len(y)} lesions ({int(y.sum())} malignant) of {len(set(sites))} sites; the "
                  f"shipped design's features (pyradiomics + lexicon descriptors + Lite0 deep PCA, L2 logistic C "
                  f"{design['c']}); each site scored by fits on the others; test splits unread.")
    lines = ["", "| held-out site | fitted on | scored outline | AUC [95 % CI] | spec at sens 0.96 | spec at 0.98 |",
             "|---|---|---|---|---|---|"]
    for k, r in table.items():
        lines.append(f"| {k} | {row_text(r)} |")
    means = {}
    for fit in fits:
        for o in outlines:
            keys = [k for k in table if k.endswith(f"| {fit} | {o}")]
            means[(fit, o)] = [np.mean([table[k][m] for k in keys]) for m in ("auc", "specificity_at_0.96")]
    lines += ["", "Mean over the held-out sites (AUC; specificity at 0.96):", ""]
    lines += [f"- fitted on {fit}, scoring {o} outlines: {a:.3f}; {b:.2f}" for (fit, o), (a, b) in means.items()]
    write_results(args.out, "train_redrawn", report, "\n".join(head + lines) + "\n")


if __name__ == "__main__":
    main()
