"""One held-out site of a `breastcadx train --folds site` run, read while the run goes on: the feature fusion, each
image member the run has scored on that site, and their fusion as the set would fuse them.

    python -m benchmarks.member_fold --run runs/three-site-train --features runs/three-site-features \
        --manifest runs/three_sites.csv --site busbra_l5 [--name NAME]

The site's fold is the run's own (train/pipeline.fold_splits). Reference
outlines, 95 % CIs by patient bootstrap. Writes benchmarks/results/NAME.md/json.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from benchmarks.machine import header, stamp, write_results

OUT = Path(__file__).resolve().parent / "results"


def main() -> None:
    from BreastCADxLib.train.members import WEIGHTS, fuse
    from BreastCADxLib.train.pipeline import SITE_FOLDS, fold_splits, read_manifest, summary

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="the set folder `train --folds site` is making")
    ap.add_argument("--features", type=Path, required=True, help="a finished features-only run on the same manifest")
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--site", required=True)
    ap.add_argument("--name", default="member_fold")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    report = {**stamp(), "site": args.site, "run": str(args.run)}
    findings = read_manifest(args.manifest)[0]
    sites = np.array([f.site for f in findings])
    m = sites == args.site
    fold = next(k for k, (_, te) in enumerate(fold_splits(None, None, SITE_FOLDS, sites=sites), 1) if m[te].all())
    keys = [f.case_id for f, keep in zip(findings, m) if keep]
    y = np.array([f.label for f in findings])[m]
    groups = np.array([f.patient for f in findings])[m]
    features = np.array(json.loads((args.features / ".work" / "cv.json").read_text())["oof"]["fusion"])[m]
    rows, probs = {"features (fusion)": summary(y, features, groups)}, {}
    for view in WEIGHTS:
        scored = args.run / ".work" / f"member_{view}_fold{fold}" / "scored.json"
        if scored.is_file():
            got = json.loads(scored.read_text())
            probs[view] = np.array([got[k] for k in keys])
            rows[f"{view} member alone"] = summary(y, probs[view], groups)
            fit = json.loads((scored.parent / "fit.json").read_text())
            report[f"{view}_fit"] = {k: fit[k] for k in ("epochs", "images", "seconds") if k in fit} | {
                "scanner_aug": fit.get("run", {}).get("scanner_aug", 0.0)}
    if probs:
        rows["fusion with " + " + ".join(probs) + f" ({', '.join(f'{v} {WEIGHTS[v]}' for v in probs)})"] = summary(
            y, fuse(features, probs), groups)
    report.update(rows={k: {kk: v[kk] for kk in ("auc", "ci95", "n", "malignant", "specificity_at_0.96")}
                        for k, v in rows.items()}, loadavg_1min_end=os.getloadavg()[0])
    head = header(f"breastcadx train --folds site: {args.site} held out", report,
                  f"Made by `python -m benchmarks.member_fold --run {args.run} --features {args.features} --manifest "
                  f"{args.manifest} --site {args.site} --name {args.name}`: fold {fold} of the run (models trained "
                  f"on the other sites), {len(keys)} lesions of {args.site} ({int(y.sum())} malignant), reference "
                  "outlines; 95 % CIs by patient bootstrap.")
    lines = ["", "| model | AUC [95 % CI] | specificity at sensitivity 0.96 |", "|---|---|---|"]
    lines += [f"| {k} | {r['auc']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] | {r['specificity_at_0.96']:.2f} |"
              for k, r in rows.items()]
    lines += ["", "Members' training: " + json.dumps({k: v for k, v in report.items() if k.endswith("_fit")})]
    write_results(args.out, args.name, report, "\n".join(head + lines) + "\n")


if __name__ == "__main__":
    main()
