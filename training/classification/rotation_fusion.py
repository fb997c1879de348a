"""The fused design at a held-out site, per rotation: the feature member fitted on the other sites, the box-crop
CNN and the whole-image CNN trained on them (scored by box_soup on the held-out site's non-test rows), and their
fusion at fixed weights.

    python -m training.classification.rotation_fusion --rotation busbra_l5=runs/box_AC_m3:seg_AC \\
        --rotation busi=runs/box_BC_m3:seg_BC --whole busbra_l5=runs/whole_AC_s --out runs/rotation_fusion

For each rotation `held-out site = box scores : segmenter pass` (that segmenter trained without the site): AUC
and specificity at sensitivity 0.96 / 0.98 of the features alone, the box CNN alone, and
w * logit(box) + (1 - w) * logit(features) for w in WEIGHTS, then (with --whole for the site) that mixed with the
whole-image CNN's logit at WHOLE_WEIGHTS, with the masks the product uses (automatic, ROI box, reference). No
weight is fitted on the held-out site. Non-test rows only.
"""

from __future__ import annotations

import argparse
import json
import shlex
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
WHOLE_WEIGHTS = (0.0, 0.2, 0.4)
KINDS = ("expect", "roi", "reference")


def _probs(folder: Path, kind: str) -> dict[str, float]:
    scores = np.load(folder / "scores.npz", allow_pickle=False)
    return dict(zip(scores[f"{kind}_case"].tolist(), scores[f"{kind}_prob"].tolist()))


def rotation(site: str, box_dir: Path, seg: str, design: str, c: float, whole_dir: Path | None = None) -> dict:
    others = [s for s in SITES if s != site]
    model = BlockModel(DESIGNS[design], c).fit(stack([load(s, k, None) for s in others
                                                      for k in ("reference", "perturbed")]))
    out: dict = {"held_out": site, "fit_sites": others, "box": str(box_dir), "pass": seg,
                 "whole": str(whole_dir) if whole_dir else None}
    for kind in KINDS:
        d = load(site, kind, seg)
        box = _probs(box_dir, kind)
        whole = _probs(whole_dir, "whole") if whole_dir else {}  # the whole image: one score whatever the mask
        keep = np.array([c in box and (not whole_dir or c in whole) for c in d["case"].tolist()])
        y = d["label"][keep]
        pf = model.proba({k: (v[keep] if isinstance(v, np.ndarray) and len(v) == len(keep) else v)
                          for k, v in d.items()})
        pb = np.array([box[c] for c in d["case"][keep].tolist()])
        pw = np.array([whole[c] for c in d["case"][keep].tolist()]) if whole_dir else None
        for w, ww in [(w, ww) for ww in (WHOLE_WEIGHTS if whole_dir else (0.0,)) for w in WEIGHTS]:
            z = fused_logit(logit(pf), logit(pb), w, None if pw is None else logit(pw), ww)
            p = 1 / (1 + np.exp(-z))
            out[f"{kind}:w{w:g}:ww{ww:g}"] = {"auc": float(roc_auc_score(y, p)), "spec96": specificity_at(y, p, 0.96),
                                    "spec98": specificity_at(y, p, 0.98), "n": int(len(y)), "malignant": int(y.sum())}
    return out


def _cell(m: dict) -> str:
    return f"{m['auc']:.3f} / {m['spec96']:.2f} / {m['spec98']:.2f}"


def table(rows: list[dict], ww: float) -> list[str]:
    """One row per held-out site and mask kind, one column per box weight, at whole-image weight `ww`."""
    lines = [f"Whole-image weight {ww:g}:", "",
             "| held out | masks | lesions (malignant) | " + " | ".join(f"w {w:g}: AUC / spec 0.96 / 0.98"
                                                               for w in WEIGHTS) + " |",
             "|---|---|---|" + "---|" * len(WEIGHTS)]
    for r in rows:
        if f"expect:w0:ww{ww:g}" not in r:
            continue
        for kind in KINDS:
            first = r[f"{kind}:w0:ww{ww:g}"]
            cells = [_cell(r[f"{kind}:w{w:g}:ww{ww:g}"]) for w in WEIGHTS]
            lines.append(f"| {r['held_out']} | {kind} | {first['n']} ({first['malignant']}) | " + " | ".join(cells)
                         + " |")
    return lines + [""]


def summary(rows: list[dict]) -> list[str]:
    """Mean and worst over the rotations that have every member, per weight pair and mask kind."""
    full = [r for r in rows if r["whole"]] or rows
    pairs = [(w, ww) for ww in (WHOLE_WEIGHTS if all(r["whole"] for r in full) else (0.0,)) for w in WEIGHTS]
    lines = [f"Over the {len(full)} rotation(s) {', '.join(r['held_out'] for r in full)}: mean (worst) AUC and "
             "specificity at sensitivity 0.96", "",
             "| box w | whole w | " + " | ".join(f"{k}: AUC | {k}: spec 0.96" for k in KINDS) + " |",
             "|---|---|" + "---|---|" * len(KINDS)]
    for w, ww in pairs:
        cells = []
        for kind in KINDS:
            ms = [r[f"{kind}:w{w:g}:ww{ww:g}"] for r in full]
            for key in ("auc", "spec96"):
                v = [m[key] for m in ms]
                cells.append(f"{np.mean(v):.3f} ({min(v):.3f})")
        lines.append(f"| {w:g} | {ww:g} | " + " | ".join(cells) + " |")
    return lines + [""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rotation", action="append", required=True, help="SITE=BOX_SCORES_DIR:PASS")
    ap.add_argument("--whole", action="append", default=[], help="SITE=WHOLE_SCORES_DIR (box_soup --view whole)")
    ap.add_argument("--design", default="rad_all+desc+deep_mask")
    ap.add_argument("--c", type=float, default=0.01)
    ap.add_argument("--out", type=Path, default=Path("runs/rotation_fusion"))
    args = ap.parse_args()
    wholes = dict(w.split("=", 1) for w in args.whole)
    rows = []
    for r in args.rotation:
        site, rest = r.split("=", 1)
        box_dir, seg = rest.rsplit(":", 1)
        rows.append(rotation(site, Path(box_dir), seg, args.design, args.c,
                             Path(wholes[site]) if site in wholes else None))
    from benchmarks.machine import machine

    made = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
            "command": "python -m training.classification.rotation_fusion " + shlex.join(sys.argv[1:]),
            "design": args.design, "C": args.c}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rotation_fusion.json").write_text(json.dumps({**made, "rotations": rows}, indent=1) + "\n")
    lines = ["# The fused design at a held-out site, per rotation (non-test rows)", "",
             f"Date: {made['date']}  \nMachine: {made['machine']['cpu']}, {made['machine']['cores']} cores  \n"
             f"Made by `{made['command']}`; feature member {args.design}, C {args.c:g}, fitted on the other sites' "
             "reference + redrawn outlines; box CNN and whole-image CNN trained on the other sites (box: context "
             "views 5 / 10 / 15 %, mirrored); w = the box CNN's weight against the features in the fused logit "
             "(0: features alone, 1: box CNN alone), then the whole-image CNN's weight against that mix "
             "(analysis.classifier.fused_logit). No calibration step. Cells: AUC / specificity at sensitivity "
             "0.96 / 0.98.", ""]
    lines += summary(rows)
    for ww in WHOLE_WEIGHTS:
        if any(f"expect:w0:ww{ww:g}" in r for r in rows):
            lines += table(rows, ww)
    (args.out / "rotation_fusion.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
