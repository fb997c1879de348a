"""Choose the classifier design by leave-site-out scores: fit on one site, score on the other, both ways.

    python -m training.classification.leave_site_out --pass-a seg_A --pass-b seg_B --out runs/lso_cls

Inputs: runs/site_features/<site>__<kind>[__<pass>].npz (training.classification.site_features) for the
non-test rows of both sites. Fitting masks: the site's reference outlines plus the same outlines redrawn
(`perturbed`) unless --fit-masks says otherwise. Scored on the other site with the masks the product uses:
`expect` (automatic, lesion expected; from a segmenter trained on the fitting site only), `roi` (that segmenter
in the reference box + 10 %), `perturbed` (a user-corrected outline) and `reference`.
Selection score: mean AUC over both directions of the automatic and the ROI-box masks.
Writes OUT/designs.json and OUT/designs.md; test splits are not read.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from training.classification.designs import DESIGNS, SCORED, BlockModel, load, stack


def auc(y, p) -> float:
    return float(roc_auc_score(y, p)) if len(set(y.tolist())) == 2 else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pass-a", default="shipped", help="segmenter pass over BUSI... trained on BUS-BRA (B->A)")
    ap.add_argument("--pass-b", default="shipped", help="segmenter pass over BUS-BRA, trained on BUSI (A->B)")
    ap.add_argument("--fit-masks", default="reference,perturbed")
    ap.add_argument("--c", type=float, nargs="+", default=[0.01, 0.1, 1.0])
    ap.add_argument("--out", type=Path, default=Path("runs/lso_cls"))
    args = ap.parse_args()
    passes = {"busi": args.pass_a, "busbra_l5": args.pass_b}
    fit_kinds = args.fit_masks.split(",")
    results = []
    for name, blocks in DESIGNS.items():
        for c in args.c:
            row: dict = {"design": name, "C": c}
            for src, dst in (("busi", "busbra_l5"), ("busbra_l5", "busi")):
                model = BlockModel(blocks, c).fit(stack([load(src, k, None) for k in fit_kinds]))
                for kind in SCORED:
                    try:
                        d = load(dst, kind, passes[dst])
                    except FileNotFoundError:
                        continue
                    row[f"{src}->{dst}:{kind}"] = auc(d["label"], model.proba(d))
            ab = [row.get(f"{s}->{t}:{k}") for s, t in (("busi", "busbra_l5"), ("busbra_l5", "busi"))
                  for k in ("expect", "roi")]
            row["score"] = float(np.nanmean([v for v in ab if v is not None])) if any(ab) else float("nan")
            results.append(row)
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "designs.json").write_text(json.dumps({"passes": passes, "fit_masks": fit_kinds,
                                                       "results": results}, indent=2))
    cols = [f"{s}->{t}:{k}" for s, t in (("busi", "busbra_l5"), ("busbra_l5", "busi")) for k in SCORED]
    lines = ["| design | C | score | " + " | ".join(cols) + " |", "|---" * (len(cols) + 3) + "|"]
    for r in sorted(results, key=lambda r: -np.nan_to_num(r["score"])):
        lines.append(f"| {r['design']} | {r['C']:g} | {r['score']:.3f} | "
                     + " | ".join(f"{r[c]:.3f}" if c in r else "" for c in cols) + " |")
    (args.out / "designs.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
