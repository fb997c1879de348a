"""The automatic path of `breastcadx train`'s design at a held-out site: does the bundle fitted on automatic
outlines too (the automatic-outline stage) classify a new hospital's automatic outlines better?

    python -m benchmarks.train_automatic --manifest runs/three_sites.csv --features runs/three-site-features \
        --pass busbra_l5=runs/site_pass/seg_AC__busbra_l5__train+val.npz \
        --pass busi=runs/site_pass/seg_BC__busi__train+val.npz \
        --pass busuclm=runs/site_pass/two-site__busuclm__train+val.npz --work runs/train_automatic

Each site's automatic outlines (lesion expected, the panel's default) come from a segmenter pass by a segmenter
trained on the other two sites (training.segmentation.site_pass), as `train --folds site` outlines each site by its
held-out fold. Per held-out site, the feature fusion of `train`'s ultrasound design fitted on the other sites'
reference + redrawn outlines, against the same plus their automatic outlines, each scoring the held-out site's
automatic outlines (an outline that cannot be classified ranks 0.5). Features only (no image members); 95 % CIs by
patient bootstrap. Writes benchmarks/results/train_automatic.md/json.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from benchmarks.machine import header, stamp, write_results
from benchmarks.site_rows import load_findings, row_text, site_row

OUT = Path(__file__).resolve().parent / "results"


def main() -> None:
    from BreastCADxLib.train.outlines import outline_features
    from BreastCADxLib.train.pipeline import DESIGN, SITE_FOLDS, _fusion, _fusion_proba, fit_rows, fold_splits
    from training.segmentation.site_pass import load_pass

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--features", type=Path, required=True, help="a features-only `train` run on the manifest")
    ap.add_argument("--pass", dest="passes", action="append", required=True, metavar="SITE=NPZ",
                    help="each site's segmenter pass by a segmenter that never saw the site")
    ap.add_argument("--work", type=Path, required=True, help="feature cache of the automatic outlines")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    report = stamp()
    data = load_findings(args.manifest, args.features)
    findings, y, groups, sites = data["findings"], data["y"], data["groups"], data["sites"]
    design = DESIGN["US"]
    passes = {site: (Path(npz), load_pass(Path(npz))) for site, npz in (p.split("=", 1) for p in args.passes)}
    outlines = {}
    for f in findings:
        case = f.case_id.removeprefix(f"{f.site}_")
        outlines[str(f.image)] = passes[f.site][1][case]["expect"]
    report["passes"] = {s: str(p) for s, (p, _) in passes.items()}
    auto = outline_features(findings, outlines, args.work, "cpu", design["descriptors"], float("inf"), lambda m: None)
    (rad, deep), redrawn = data["outlines"]["reference"], data["outlines"]["redrawn"]
    ok = np.array([auto[f.case_id] is not None for f in findings])
    arad = np.array([auto[f.case_id]["rad"] if ok[i] else np.zeros(rad.shape[1]) for i, f in enumerate(findings)])
    adeep = np.array([auto[f.case_id]["deep"] if ok[i] else np.zeros(deep.shape[1]) for i, f in enumerate(findings)])
    dice = np.array([auto[f.case_id]["dice"] if auto[f.case_id] else 0.0 for f in findings])
    oof = {"reference + redrawn": np.full(len(y), 0.5), "reference + redrawn + automatic": np.full(len(y), 0.5)}
    for tr, te in fold_splits(y, groups, SITE_FOLDS, sites=sites):
        r, d, t = fit_rows(rad, deep, y, tr, redrawn)
        both = tr[ok[tr]]
        fits = {"reference + redrawn": _fusion(r, d, t, c=design["c"]),
                "reference + redrawn + automatic": _fusion(np.vstack([r, arad[both]]), np.vstack([d, adeep[both]]),
                                                           np.r_[t, y[both]], c=design["c"])}
        scored = te[ok[te]]
        for k, m in fits.items():
            oof[k][scored] = _fusion_proba(m, arad[scored], adeep[scored])
    table = {}
    for site in sorted(set(sites)):
        s = sites == site
        for k, p in oof.items():
            table[f"{site} | {k}"] = {**site_row(y[s], p[s], groups[s]), "dice_mean": float(dice[s].mean()),
                                      "unclassifiable": int((~ok[s]).sum())}
    report.update(rows=table, loadavg_1min_end=os.getloadavg()[0])
    head = header("train's automatic-outline bundle at a held-out site", report,
                  f"Made by `python -m benchmarks.train_automatic --manifest {args.manifest} --features "
                  f"{args.features} " + " ".join(f"--pass {p}" for p in args.passes) + f" --work {args.work}`: "
                  f"{len(y)} lesions ({int(y.sum())} malignant) of {len(set(sites))} sites, each site's automatic "
                  "outlines (lesion expected) by a segmenter trained on the other two; the feature fusion of "
                  "`train`'s ultrasound design fitted on the other sites; test splits unread.")
    lines = ["", "| held-out site | fitted on (other sites) | mean Dice of its automatic outlines | AUC [95 % CI] | "
             "spec at sens 0.96 | spec at 0.98 |", "|---|---|---|---|---|---|"]
    for k, r in table.items():
        lines.append(f"| {k} | {r['dice_mean']:.2f} ({r['unclassifiable']} unclassifiable) | {row_text(r)} |")
    lines += ["", "Mean over the held-out sites (AUC; specificity at 0.96):", ""]
    for k in oof:
        rows = [r for key, r in table.items() if key.endswith(f"| {k}")]
        lines.append(f"- fitted on {k}: {np.mean([r['auc'] for r in rows]):.3f}; "
                     f"{np.mean([r['specificity_at_0.96'] for r in rows]):.2f}")
    write_results(args.out, "train_automatic", report, "\n".join(head + lines) + "\n")


if __name__ == "__main__":
    main()
