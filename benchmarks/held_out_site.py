"""One model set at one site, through the product's own code (`pipeline.analyze`, as `analyze` / `batch` run it):
everything the generalisation targets name, for a site the set never saw.

    python -m benchmarks.held_out_site --site busuclm --model-set runs/two-site --roles train,val

- the default path (no prompt, no --expect-lesion): "no lesion found" on lesion images, false lesions on
  lesion-free images;
- lesion expected (`--expect-lesion`): Dice against the reference mask (share below 0.1) and the malignancy
  ranking: AUC with a patient-bootstrap CI (a case not classified scores 0.5), specificity at sensitivity 0.96 and
  0.98, the mean specificity over sensitivity 0.90-1.00 (partial AUC / 0.1), cancers scored below 5 %;
- a drawn box (the reference box + 10 %): "no lesion found" inside it, Dice, AUC;
- images the input guard refuses.
Non-test roles by default (test only for a final report). Writes benchmarks/results/held_out_site__SET__SITE.md/json
and the per-case rows beside them.
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_curve

from benchmarks.machine import header, machine, set_id, write_results
from BreastCADxLib.analysis.pipeline import analyze
from BreastCADxLib.analysis.preprocessing import expand_box, mask_bbox
from BreastCADxLib.errors import BreastCADxError
from BreastCADxLib.io import load_image, load_mask
from BreastCADxLib.results.evaluation import auc_ci, dice, group_bootstrap, specificity_at
from training.data import add_data_args, cases

OUT = Path(__file__).resolve().parent / "results"
CONFIDENT_BENIGN = 0.05


def mean_specificity_above(y: np.ndarray, p: np.ndarray, lo: float = 0.9) -> float:
    """Partial AUC over sensitivity lo..1, divided by (1 - lo): the mean specificity where a biopsy decision sits."""
    fpr, tpr, _ = roc_curve(y, p)
    grid = np.linspace(lo, 1.0, 201)
    spec = np.array([1 - fpr[tpr >= t - 1e-12].min() for t in grid])
    return float(np.trapezoid(spec, grid) / (1 - lo))


def ranking(y: np.ndarray, p: np.ndarray, groups: np.ndarray) -> dict:
    out = auc_ci(y, p, groups)
    for s in (0.96, 0.98):
        out[f"spec_at_sens_{s:.2f}"] = specificity_at(y, p, s)
        out[f"spec_at_sens_{s:.2f}_ci95"] = group_bootstrap(
            groups, lambda i, s=s: specificity_at(y[i], p[i], s) if len(set(y[i].tolist())) == 2 else np.nan)
    out["mean_spec_sens_0.90_1.00"] = mean_specificity_above(y, p)
    out["cancers_below_5pct"] = int(((p < CONFIDENT_BENIGN) & (y == 1)).sum())
    return out


def one_case(c, model_set: str) -> dict:
    row = {"case": c.case, "label": c.label, "group": c.group}
    try:
        img = load_image(c.image)
        default = analyze(img, heatmap=False, device="cpu", model_set=model_set)
    except BreastCADxError as e:
        return {**row, "refused": str(e)}
    row["default_found"] = default.lesion_found
    if c.label == "normal":
        return row
    ref = load_mask(c.mask, img)
    expect = default if default.lesion_found else analyze(img, heatmap=False, device="cpu", model_set=model_set,
                                                          expect_lesion=True)
    row.update(expect_dice=dice(expect.mask, ref), expect_p=expect.probability)
    box = expand_box(mask_bbox(ref[0]), 0.1, ref[0].shape)
    roi = analyze(img, roi=box, heatmap=False, device="cpu", model_set=model_set)
    row.update(roi_found=roi.lesion_found, roi_dice=dice(roi.mask, ref), roi_p=roi.probability,
               roi_flags=[f.code for f in roi.flags])
    return row


def summarise(rows: list[dict]) -> dict:
    ok = [r for r in rows if "refused" not in r]
    lesions = [r for r in ok if r["label"] != "normal"]
    normals = [r for r in ok if r["label"] == "normal"]
    out = {"images": len(rows), "refused_by_guard": len(rows) - len(ok),
           "refused_lesion_images": sum(1 for r in rows if "refused" in r and r["label"] != "normal"),
           "lesion_images": len(lesions), "lesion_free_images": len(normals)}
    if normals:
        out["default_false_lesion_rate"] = float(np.mean([r["default_found"] for r in normals]))
    if not lesions:
        return out
    d = np.array([r["expect_dice"] for r in lesions])
    out.update(default_no_lesion_rate=float(1 - np.mean([r["default_found"] for r in lesions])),
               expect_dice_mean=float(d.mean()), expect_dice_below_0_1=float((d < 0.1).mean()),
               roi_no_lesion_rate=float(1 - np.mean([r["roi_found"] for r in lesions])),
               roi_dice_mean=float(np.mean([r["roi_dice"] for r in lesions])))
    y = np.array([r["label"] == "malignant" for r in lesions], int)
    groups = np.array([r["group"] for r in lesions])
    if 0 < y.sum() < len(y):
        for key in ("expect", "roi"):
            p = np.array([0.5 if r[f"{key}_p"] is None else r[f"{key}_p"] for r in lesions], float)
            out[f"{key}_ranking"] = ranking(y, p, groups)
            out[f"{key}_unclassified"] = int(sum(r[f"{key}_p"] is None for r in lesions))
    return out


def to_markdown(s: dict) -> str:
    pct = lambda v: f"{100 * v:.1f} %"  # noqa: E731
    lines = ["| | value |", "|---|---|",
             f"| images / refused by the input guard (of them lesion images) | {s['images']} / "
             f"{s['refused_by_guard']} ({s['refused_lesion_images']}) |"]
    if "default_false_lesion_rate" in s:
        lines.append(f"| default path: false lesion on lesion-free images ({s['lesion_free_images']}) | "
                     f"{pct(s['default_false_lesion_rate'])} |")
    if "default_no_lesion_rate" in s:
        lines += [f"| default path: \"no lesion found\" on lesion images ({s['lesion_images']}) | "
                  f"{pct(s['default_no_lesion_rate'])} |",
                  f"| lesion expected: Dice mean (share < 0.1) | {s['expect_dice_mean']:.3f} "
                  f"({pct(s['expect_dice_below_0_1'])}) |",
                  f"| box (reference + 10 %): \"no lesion found\" / Dice mean | {pct(s['roi_no_lesion_rate'])} / "
                  f"{s['roi_dice_mean']:.3f} |"]
    for key, name in (("expect", "lesion expected"), ("roi", "box")):
        r = s.get(f"{key}_ranking")
        if r:
            lines += [f"| {name}: AUC [95 % CI] ({r['n']} lesions, {r['malignant']} malignant; "
                      f"{s[f'{key}_unclassified']} unclassified scored 0.5) | {r['auc']:.3f} "
                      f"[{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] |",
                      f"| {name}: specificity at sensitivity 0.96 / 0.98 | {r['spec_at_sens_0.96']:.2f} "
                      f"[{r['spec_at_sens_0.96_ci95'][0]:.2f}, {r['spec_at_sens_0.96_ci95'][1]:.2f}] / "
                      f"{r['spec_at_sens_0.98']:.2f} |",
                      f"| {name}: mean specificity over sensitivity 0.90-1.00 | {r['mean_spec_sens_0.90_1.00']:.3f} |",
                      f"| {name}: cancers scored below 5 % | {r['cancers_below_5pct']} |"]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_args(ap)
    ap.add_argument("--site", default="busuclm")
    ap.add_argument("--model-set", required=True, help="a set that never saw --site (its folder)")
    ap.add_argument("--roles", default="train,val", help="split roles scored (test only for a final report)")
    ap.add_argument("--limit", type=int, default=0, help="first N cases only (a quick check)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    todo = cases(args, [args.site], tuple(args.roles.split(",")))[:args.limit or None]
    report = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
              "loadavg_1min": os.getloadavg()[0], "site": args.site, "model_set": args.model_set,
              "roles": args.roles}
    t0 = time.time()
    rows = []
    for i, c in enumerate(todo, 1):
        rows.append(one_case(c, args.model_set))
        if i % 50 == 0:
            print(f"{i}/{len(todo)} cases, {time.time() - t0:.0f} s", flush=True)
    report["seconds"] = time.time() - t0
    report["summary"] = summarise(rows)
    name = f"held_out_site__{set_id(args.model_set)}__{args.site}__{args.roles.replace(',', '+')}"
    lines = header(f"{set_id(args.model_set)} set at {args.site} ({args.roles}), the product's own path",
                   {**report, "loadavg_1min_end": os.getloadavg()[0]},
                   f"Made by `python -m benchmarks.held_out_site --site {args.site} --model-set {args.model_set} "
                   f"--roles {args.roles}` in {report['seconds'] / 60:.1f} min; CIs resample whole patients.")
    report["rows"] = rows
    write_results(args.out, name, report, "\n".join(lines) + "\n\n" + to_markdown(report["summary"]))


if __name__ == "__main__":
    main()
