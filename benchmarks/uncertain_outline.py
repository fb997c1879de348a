"""What to do with an uncertain automatic outline at a hospital the models never saw (held-out rotations).

    python -m benchmarks.uncertain_outline benchmarks/results/held_out_site__two-site__busuclm__train+val.json \
        benchmarks/results/held_out_site__busi-only__busbra_l5__train+val.json

An automatic outline is uncertain when no region passed the segmenter's presence threshold and the lesion-expected
path kept its best candidate. Compared per held-out site (benchmarks.held_out_site rows, non-test), lesion images:
- as before: that outline's probability and category;
- BI-RADS 0 counted as referred: the case is positive at every operating point (a pessimistic bound);
- the workflow the product now asks for: BI-RADS 0 says "draw a box", and the box's result is the answer
  (the rows' box = the reference box + 10 %).
Writes benchmarks/results/uncertain_outline.md/json.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from benchmarks.held_out_site import CONFIDENT_BENIGN
from benchmarks.machine import header, machine, write_results
from BreastCADxLib.results.evaluation import specificity_at

OUT = Path(__file__).resolve().parent / "results"


def compare(run: dict) -> dict:
    rows = [r for r in run["rows"] if r["label"] != "normal" and "refused" not in r]
    y = np.array([r["label"] == "malignant" for r in rows], int)
    p = np.array([0.5 if r["expect_p"] is None else r["expect_p"] for r in rows])
    box = np.array([0.5 if r["roi_p"] is None else r["roi_p"] for r in rows])
    uncertain = np.array([not r["default_found"] for r in rows])
    ways = {"as before": p, "BI-RADS 0 referred": np.where(uncertain, 2.0, p),
            "BI-RADS 0, then a box": np.where(uncertain, box, p)}
    out = {"site": run["site"], "model_set": run["model_set"], "lesions": len(rows), "malignant": int(y.sum()),
           "uncertain_share": float(uncertain.mean()),
           "uncertain_share_benign": float(uncertain[y == 0].mean()),
           "uncertain_share_malignant": float(uncertain[y == 1].mean())}
    for name, s in ways.items():
        out[name] = {"auc": float(roc_auc_score(y, np.minimum(s, 1.0))) if name != "BI-RADS 0 referred" else None,
                     "spec_at_sens_0.96": specificity_at(y, s, 0.96), "spec_at_sens_0.98": specificity_at(y, s, 0.98),
                     "cancers_below_5pct": int(((s < CONFIDENT_BENIGN) & (y == 1)).sum())}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    res = [compare(json.loads(p.read_text())) for p in args.runs]
    report = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(), "sites": res}
    lines = header("An uncertain automatic outline at a hospital the models never saw", report,
                   "Made by `python -m benchmarks.uncertain_outline " + " ".join(map(str, args.runs)) + "`.")
    lines += ["", "| held-out site (set) | uncertain outlines (benign / malignant) | way | AUC | spec. at sens. 0.96 "
                  "| at 0.98 | cancers below 5 % |", "|---|---|---|---|---|---|---|"]
    for r in res:
        share = (f"{100 * r['uncertain_share']:.1f} % ({100 * r['uncertain_share_benign']:.0f} / "
                 f"{100 * r['uncertain_share_malignant']:.0f} %)")
        for way in ("as before", "BI-RADS 0 referred", "BI-RADS 0, then a box"):
            w = r[way]
            auc = "-" if w["auc"] is None else f"{w['auc']:.3f}"
            lines.append(f"| {r['site']} ({r['model_set']}; {r['lesions']} lesions) | {share} | {way} | {auc} | "
                         f"{w['spec_at_sens_0.96']:.3f} | {w['spec_at_sens_0.98']:.3f} | {w['cancers_below_5pct']} |")
    write_results(args.out, "uncertain_outline", report, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
