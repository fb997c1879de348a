"""The cancers a set scores below 5 % at a site it never saw: what they look like and what each member says.

    python -m benchmarks.confident_benign --rows benchmarks/results/held_out_site__two-site__busuclm__train+val.json

For every malignant case of a held_out_site run whose lesion-expected probability was below 5 %: the automatic
outline's Dice, the fused probability and each member's own with the automatic outline, with the reference outline
and inside the reference box, the lexicon categories with the reference outline, and what the site's manifest says
of the image (caliper marks, colour Doppler, two panes) where it says it. Non-test rows only (as the run's).
Writes benchmarks/results/confident_benign__SET__SITE.md/json.
"""

from __future__ import annotations

import argparse
import csv
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from benchmarks.machine import header, machine, set_folder, set_id, write_results
from BreastCADxLib.analysis.pipeline import analyze
from BreastCADxLib.analysis.preprocessing import expand_box, mask_bbox
from BreastCADxLib.io import load_image, load_mask
from training.data import add_data_args, cases, data_dir

OUT = Path(__file__).resolve().parent / "results"
MEMBERS = ("fusion", "box_cnn", "whole_image_cnn")


def members(result) -> dict:
    p = result.prediction
    return {"p": p.probability, **{k: p.member_probabilities.get(k) for k in MEMBERS},
            "flags": [f.code for f in p.flags]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_args(ap)
    ap.add_argument("--rows", type=Path, required=True, help="a benchmarks.held_out_site result (.json)")
    ap.add_argument("--below", type=float, default=0.05)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    run = json.loads(args.rows.read_text())
    site, model_set = run["site"], run["model_set"]
    folder = set_folder(model_set)  # a held-out set is a training output, used by folder
    model_set = set_id(folder)  # the set's own id (a folder given as the set names it in the file)
    manifest = {}
    if (data_dir(args, site) / "manifest.csv").is_file():
        with open(data_dir(args, site) / "manifest.csv", newline="") as f:
            manifest = {r.get("case_id", r.get("case")): r for r in csv.DictReader(f)}
    by_case = {c.case: c for c in cases(args, [site], tuple(run["roles"].split(",")))}
    picked = [r for r in run["rows"] if r["label"] == "malignant" and r.get("expect_p") is not None
              and r["expect_p"] < args.below]
    out = []
    for r in picked:
        c = by_case[r["case"]]
        img = load_image(c.image)
        ref = load_mask(c.mask, img)
        kw = {"heatmap": False, "device": "cpu", "model_set": folder, "allow_unvalidated": True}  # studied
        auto = analyze(img, expect_lesion=True, **kw)
        drawn = analyze(img, mask=ref, **kw)
        box = analyze(img, roi=expand_box(mask_bbox(ref[0]), 0.1, ref[0].shape), **kw)
        m = manifest.get(c.case, {})
        out.append({"case": c.case, "patient": c.group, "auto_dice": r["expect_dice"], "auto": members(auto),
                    "reference": members(drawn), "box": members(box),
                    "lexicon": {i.feature: i.category for i in drawn.lexicon},
                    "image": {k: m[k] for k in ("calipers", "doppler", "combined", "lesions") if k in m}})
    lines = header(f"Cancers below {args.below:.0%} at {site}, {model_set} set (never trained there)",
                   {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine()},
                   f"Made by `python -m benchmarks.confident_benign --rows {args.rows}`; {len(out)} of "
                   f"{sum(r['label'] == 'malignant' for r in run['rows'])} cancers ({run['roles']}).")
    lines += ["", "| case | auto Dice | auto: p (features / box CNN / whole CNN) | reference outline: p (same) | "
                  "box: p | lexicon (reference outline) | image |", "|---|---|---|---|---|---|---|"]

    def cell(d):
        parts = " / ".join("-" if d[k] is None else f"{100 * d[k]:.0f}" for k in MEMBERS)
        return f"{100 * d['p']:.1f} % ({parts})"

    for o in out:
        lex = ", ".join(f"{k} {v}" for k, v in o["lexicon"].items() if k not in ("size", "depth"))
        img = ", ".join(k for k, v in o["image"].items() if v in ("True", "true")) or "-"
        lines.append(f"| {o['case']} | {o['auto_dice']:.2f} | {cell(o['auto'])} | {cell(o['reference'])} | "
                     f"{100 * o['box']['p']:.1f} % | {lex} | {img} |")
    if out:
        ref_low = sum(o["reference"]["p"] < args.below for o in out)
        good = sum(o["auto_dice"] >= 0.8 for o in out)
        whole_hi = sum((o["auto"]["whole_image_cnn"] or 0) >= 0.5 for o in out)
        lines += ["", f"- {ref_low} of {len(out)} stay below {args.below:.0%} with the reference outline; "
                      f"{good} were outlined well (Dice >= 0.8) automatically.",
                  f"- The whole-image CNN alone says >= 50 % for {whole_hi} of them; median member probabilities "
                  "with the automatic outline: " + ", ".join(
                      f"{k} {100 * float(np.median([o['auto'][k] for o in out if o['auto'][k] is not None])):.1f} %"
                      for k in MEMBERS if any(o["auto"][k] is not None for o in out)) + "."]
    write_results(args.out, f"confident_benign__{model_set}__{site}", {"site": site, "model_set": model_set,
                                                                       "rows": out}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
