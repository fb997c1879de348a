"""Choose the classifier design by leave-site-out scores: fit on the other sites, score the held-out one, every
rotation.

    python -m training.classification.leave_site_out --sites busi,busbra_l5,busuclm \\
        --passes busi=seg_BC,busbra_l5=seg_AC,busuclm=two-site --out runs/lso_cls3
    python -m training.classification.leave_site_out --sites busi,busbra_l5 \\
        --passes busi=seg_B,busbra_l5=seg_A --out runs/lso_cls

Inputs: runs/site_features/<site>__<kind>[__<pass>].npz (training.classification.site_features) for the
non-test rows of every site. Fitting masks: the fit sites' reference outlines plus the same outlines redrawn
(`perturbed`) unless --fit-masks says otherwise. Scored at the held-out site with the masks the product uses:
`expect` (automatic, lesion expected; from a segmenter trained without that site: --passes), `roi` (that segmenter
in the reference box + 10 %), `perturbed` (a user-corrected outline) and `reference`.
Selection score: mean AUC over the rotations of the automatic and the ROI-box masks; beside it the mean
specificity at sensitivity 0.96 with automatic masks (the biopsy operating point).
Writes OUT/designs.json and OUT/designs.md; test splits are not read.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from BreastCADxLib.results.evaluation import specificity_at
from training.classification.designs import DESIGNS, SCORED, BlockModel, load, parse_own_pass, stack


def auc(y, p) -> float:
    return float(roc_auc_score(y, p)) if len(set(y.tolist())) == 2 else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", default="busi,busbra_l5,busuclm")
    ap.add_argument("--passes", default="busi=seg_BC,busbra_l5=seg_AC,busuclm=two-site",
                    help="per held-out site: the pass of a segmenter trained without it")
    ap.add_argument("--fit-masks", default="reference,perturbed")
    ap.add_argument("--c", type=float, nargs="+", default=[0.01, 0.1, 1.0])
    ap.add_argument("--designs", default="", help="comma-separated subset of the designs (default all)")
    ap.add_argument("--out", type=Path, default=Path("runs/lso_cls3"))
    args = ap.parse_args()
    sites, passes = args.sites.split(","), parse_own_pass(args.passes)
    fit_kinds = args.fit_masks.split(",")
    designs = args.designs.split(",") if args.designs else list(DESIGNS)
    fit_data = {s: stack([load(s, k, None) for k in fit_kinds]) for s in sites}
    scored = {(t, k): load(t, k, passes.get(t)) for t in sites for k in SCORED
              if k not in ("expect", "roi") or t in passes}
    results = []
    for name in designs:
        for c in args.c:
            row: dict = {"design": name, "C": c}
            for t in sites:
                model = BlockModel(DESIGNS[name], c).fit(stack([fit_data[s] for s in sites if s != t]))
                for kind in SCORED:
                    if (t, kind) in scored:
                        d = scored[t, kind]
                        p = model.proba(d)
                        row[f"->{t}:{kind}"] = auc(d["label"], p)
                        if kind == "expect":
                            row[f"->{t}:spec96"] = float(specificity_at(d["label"], p, 0.96))
            main_cols = [row[f"->{t}:{k}"] for t in sites for k in ("expect", "roi") if f"->{t}:{k}" in row]
            row["score"] = float(np.mean(main_cols)) if main_cols else float("nan")
            row["worst_expect"] = min((row[f"->{t}:expect"] for t in sites if f"->{t}:expect" in row),
                                      default=float("nan"))
            spec = [row[f"->{t}:spec96"] for t in sites if f"->{t}:spec96" in row]
            row["spec96"] = float(np.mean(spec)) if spec else float("nan")
            results.append(row)
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    from benchmarks.machine import machine

    made = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
            "command": "python -m training.classification.leave_site_out " + " ".join(sys.argv[1:])}
    (args.out / "designs.json").write_text(json.dumps({**made, "sites": sites, "passes": passes,
                                                       "fit_masks": fit_kinds, "results": results}, indent=2))
    cols = [f"->{t}:{k}" for t in sites for k in (*SCORED, "spec96")]
    lines = [f"# Feature design, leave-one-site-out ({', '.join(sites)})", "",
             f"Date: {made['date']}  \nMachine: {made['machine']['cpu']}, {made['machine']['cores']} cores  \n"
             f"Made by `{made['command']}`; non-test rows only", "",
             f"Fit on the other sites' {' + '.join(fit_kinds)} rows; held-out site's passes: {passes}", "",
             "| design | C | score | worst expect | spec@0.96 | " + " | ".join(cols) + " |",
             "|---" * (len(cols) + 5) + "|"]
    for r in sorted(results, key=lambda r: -np.nan_to_num(r["score"])):
        lines.append(f"| {r['design']} | {r['C']:g} | {r['score']:.3f} | {r['worst_expect']:.3f} | {r['spec96']:.2f} | "
                     + " | ".join(f"{r[c]:.3f}" if c in r else "" for c in cols) + " |")
    (args.out / "designs.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
