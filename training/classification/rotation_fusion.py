"""The fused design at a held-out site, per rotation: the feature member fitted on the other sites, the box-crop
CNN trained on them (scored by box_soup on the held-out site's non-test rows), and their fusion at fixed weights.

    python -m training.classification.rotation_fusion --rotation busbra_l5=runs/box_AC_m3:seg_AC \\
        --rotation busi=runs/box_BC_m3:seg_BC --out runs/rotation_fusion

For each rotation `held-out site = box scores : segmenter pass` (that segmenter trained without the site): AUC
and specificity at sensitivity 0.96 / 0.98 of the features alone, the box CNN alone, and
w * logit(box) + (1 - w) * logit(features) for w in WEIGHTS, with the masks the product uses (automatic, ROI box,
reference). No weight is fitted on the held-out site. Non-test rows only. The whole-image member is not in this
check (its rotation runs come later).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from BreastCADxLib.analysis.calibration import logit
from BreastCADxLib.analysis.classifier import fused_logit
from BreastCADxLib.results.evaluation import specificity_at
from training.classification.designs import DESIGNS, BlockModel, load, stack
from training.data import SITES

WEIGHTS = (0.0, 0.5, 0.75, 1.0)
KINDS = ("expect", "roi", "reference")


def rotation(site: str, box_dir: Path, seg: str, design: str, c: float) -> dict:
    others = [s for s in SITES if s != site]
    model = BlockModel(DESIGNS[design], c).fit(stack([load(s, k, None) for s in others
                                                      for k in ("reference", "perturbed")]))
    scores = np.load(box_dir / "scores.npz", allow_pickle=False)
    out: dict = {"held_out": site, "fit_sites": others, "box": str(box_dir), "pass": seg}
    for kind in KINDS:
        d = load(site, kind, seg)
        box = dict(zip(scores[f"{kind}_case"].tolist(), scores[f"{kind}_prob"].tolist()))
        keep = np.array([c in box for c in d["case"].tolist()])
        y = d["label"][keep]
        pf = model.proba({k: (v[keep] if isinstance(v, np.ndarray) and len(v) == len(keep) else v)
                          for k, v in d.items()})
        pb = np.array([box[c] for c in d["case"][keep].tolist()])
        for w in WEIGHTS:
            p = 1 / (1 + np.exp(-fused_logit(logit(pf), logit(pb), w)))
            out[f"{kind}:w{w:g}"] = {"auc": float(roc_auc_score(y, p)), "spec96": specificity_at(y, p, 0.96),
                                    "spec98": specificity_at(y, p, 0.98), "n": int(len(y)), "malignant": int(y.sum())}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rotation", action="append", required=True, help="SITE=BOX_SCORES_DIR:PASS")
    ap.add_argument("--design", default="rad_all+desc+deep_mask")
    ap.add_argument("--c", type=float, default=0.01)
    ap.add_argument("--out", type=Path, default=Path("runs/rotation_fusion"))
    args = ap.parse_args()
    rows = []
    for r in args.rotation:
        site, rest = r.split("=", 1)
        box_dir, seg = rest.rsplit(":", 1)
        rows.append(rotation(site, Path(box_dir), seg, args.design, args.c))
    from benchmarks.machine import machine

    made = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
            "command": "python -m training.classification.rotation_fusion " + " ".join(sys.argv[1:]),
            "design": args.design, "C": args.c}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rotation_fusion.json").write_text(json.dumps({**made, "rotations": rows}, indent=1) + "\n")
    lines = ["# The fused design at a held-out site, per rotation (non-test rows)", "",
             f"Date: {made['date']}  \nMachine: {made['machine']['cpu']}, {made['machine']['cores']} cores  \n"
             f"Made by `{made['command']}`; feature member {args.design}, C {args.c:g}, fitted on the other sites' "
             "reference + redrawn outlines; box CNN trained on the other sites (context views 5 / 10 / 15 %, "
             "mirrored); w = the box CNN's weight in the fused logit (0: features alone, 1: box CNN alone). No "
             "whole-image member.", "",
             "| held out | masks | lesions (malignant) | " + " | ".join(f"w {w:g}: AUC / spec 0.96 / 0.98"
                                                               for w in WEIGHTS) + " |",
             "|---|---|---|" + "---|" * len(WEIGHTS)]
    for r in rows:
        for kind in KINDS:
            first = r[f"{kind}:w0"]
            cells = [f"{r[f'{kind}:w{w:g}']['auc']:.3f} / {r[f'{kind}:w{w:g}']['spec96']:.2f} / "
                     f"{r[f'{kind}:w{w:g}']['spec98']:.2f}" for w in WEIGHTS]
            lines.append(f"| {r['held_out']} | {kind} | {first['n']} ({first['malignant']}) | " + " | ".join(cells)
                         + " |")
    (args.out / "rotation_fusion.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
