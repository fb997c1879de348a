"""The image members' fusion weights of a finished `breastcadx train --folds site` run, judged at each held-out site.

    python -m benchmarks.train_weights --run runs/three-site-train --manifest runs/three_sites.csv

`train` fused its members at the three-site recipe's weights (box 0.75, whole image 0.2: chosen over the recipe's
rotations, `rotation_fusion.md`) and only gated them in or out; this check found the drawn-outline bundle better
off with the box member at a lower weight, and `train` now chooses each bundle's weights (train/members.py
choose_weights, WEIGHT_GRID). Here a wider grid is scored on a finished run's own out-of-fold record, every site
scored by models that never saw it: on the findings' own outlines (the drawn-outline bundle: features, box and
whole-image members out of fold, `.work/cv.json`) and on the automatic outlines (the bundle fitted on both
outlines refitted per site fold from the cached features, the box member's fold scores on those outlines' boxes,
`.work/member_box_fold*/scored_auto.json`). Every cell is that site's; the choice shown is by `train`'s gate
against the recipe's weights (pipeline.no_worse: the worst held-out site's mean specificity over sensitivities
0.90-1.00, AUC at most 0.01 lower), the best band. Nothing is trained; test splits are not read (the manifest's
rows are non-test). Writes benchmarks/results/NAME.md / .json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks.machine import header, stamp, write_results
from benchmarks.site_rows import load_findings

OUT = Path(__file__).resolve().parent / "results"
BOX = (0.0, 0.25, 0.5, 0.75, 0.9)
WHOLE = (0.0, 0.1, 0.2, 0.3)
SHIPPED = (0.75, 0.2)


def auto_rows(work: Path, findings: list) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The cached features of each finding's automatic outline (outlines.outline_features): rad, deep, usable,
    Dice (0 where the product cannot classify the outline)."""
    from BreastCADxLib.train.outlines import cached_features, feature_arrays

    feats = cached_features(work, findings)
    first = next(r for r in feats.values() if r is not None)
    rad, deep, ok, dice = feature_arrays(feats, findings, len(first["rad"]), len(first["deep"]))
    return rad, deep.astype(float), ok, dice


def box_auto(work: Path, findings: list, splits: list) -> np.ndarray:
    """Each fold's box member on its held-out findings' automatic outlines (NaN: empty outline)."""
    out = np.full(len(findings), np.nan)
    for k, (_, te) in enumerate(splits):
        scores = json.loads((work / f"member_box_fold{k + 1}" / "scored_auto.json").read_text())["scores"]
        out[te] = [np.nan if scores[findings[i].case_id] is None else scores[findings[i].case_id] for i in te]
    return out


def grid(y, sites, groups, features, probs) -> list[dict]:
    from BreastCADxLib.train.members import fuse
    from BreastCADxLib.train.pipeline import summary

    rows = []
    for wb in BOX:
        for ww in WHOLE:
            p = fuse(features, probs, {"box": wb, "whole": ww})
            rows.append({"box": wb, "whole": ww, "p": p, "sites": {
                s: summary(y[sites == s], p[sites == s], groups[sites == s]) for s in sorted(set(sites))}})
    return rows


def choose(y, sites, rows) -> dict:
    """train's gate against the shipped weights: of the weights it keeps, the best worst-site band."""
    from BreastCADxLib.train.pipeline import no_worse

    base = next(r for r in rows if (r["box"], r["whole"]) == SHIPPED)
    kept = []
    for r in rows:
        ok, gate = no_worse(y, r["p"], base["p"], sites)
        r["worst_band"], r["worst_auc"] = gate["candidate"]["specificity_0.90_1.00"], gate["candidate"]["auc"]
        if ok:
            kept.append(r)
    best = max(kept, key=lambda r: (r["worst_band"], r["worst_auc"]))
    return {"box": best["box"], "whole": best["whole"], "worst_band": best["worst_band"],
            "worst_auc": best["worst_auc"], "shipped_worst_band": base["worst_band"],
            "shipped_worst_auc": base["worst_auc"]}


def run_rows(run: Path, manifest: Path) -> dict:
    """A finished `--folds site` run's out-of-fold record, every site scored by models that never saw it: the
    findings (y, sites, groups), their cached features (reference, redrawn, automatic outline) and the automatic
    outlines' Dice, the site splits, the bundle fitted on both outlines refitted per fold ("both", checked against
    the run's own record), the members' scores (whole image; the box member on the automatic outlines' boxes, 0.5
    where the outline is empty, as train ranks it), and each path's fused probability at the run's own member
    weights ("automatic": the automatic-outline bundle, "drawn": the set's fusion on the findings' outlines)."""
    from BreastCADxLib.train.members import fuse
    from BreastCADxLib.train.outlines import automatic_oof
    from BreastCADxLib.train.pipeline import DESIGN, SITE_FOLDS, fold_splits, summary

    work = run / ".work"
    cv = json.loads((work / "cv.json").read_text())
    if cv.get("folds") != SITE_FOLDS:
        raise SystemExit(f"{run}: not a --folds site run")
    d = load_findings(manifest, run)  # the run's cached features: nothing computed
    y, sites, groups = d["y"], d["sites"], d["groups"]
    (rad, deep), redrawn = d["outlines"]["reference"], d["outlines"]["redrawn"]
    arad, adeep, ok, dice = auto_rows(work, d["findings"])
    splits = fold_splits(y, groups, SITE_FOLDS, sites=sites)
    both = automatic_oof(rad, deep, y, arad, adeep, ok, splits, DESIGN["US"]["c"], redrawn=redrawn)["both_fit"]
    for site, r in cv["automatic_outlines"]["by_site"].items():  # the refit reproduces train's own record
        m = site == sites
        got = summary(y[m], both[m], groups[m])["auc"]
        if abs(got - r["both_fit"]["auc"]) > 1e-6:
            raise SystemExit(f"the refitted automatic-outline bundle at {site} gives AUC {got:.6f}, the run's record "
                             f"{r['both_fit']['auc']:.6f}: not the same fits")
    box = box_auto(work, d["findings"], splits)
    box, whole = np.where(np.isnan(box), 0.5, box), np.asarray(cv["oof"]["whole_cnn"])
    if cv["automatic_outlines"].get("member_weights") is None:  # a record older than train's weight choice
        card = json.loads((run / "lesion_cls_fusion_auto.json").read_text())
        cv["automatic_outlines"]["member_weights"] = {v: card[k]["weight"] for v, k in
                                                      (("box", "box_member"), ("whole", "image_member")) if card.get(k)}
    return {**d, "cv": cv, "rad": rad, "deep": deep, "redrawn": redrawn, "arad": arad, "adeep": adeep, "ok": ok,
            "dice": dice, "splits": splits, "both": both, "whole": whole, "box": box,
            "automatic": fuse(both, {"box": box, "whole": whole}, cv["automatic_outlines"]["member_weights"]),
            "drawn": np.asarray(cv["oof"]["fusion_with_members"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a finished `breastcadx train --folds site` folder")
    ap.add_argument("--manifest", type=Path, required=True, help="the manifest it was trained on")
    ap.add_argument("--name", default="train_weights")
    args = ap.parse_args()
    report = stamp()
    r = run_rows(args.run, args.manifest)
    y, sites, groups, cv, whole, box = r["y"], r["sites"], r["groups"], r["cv"], r["whole"], r["box"]
    paths = {
        "reference": (np.asarray(cv["oof"]["fusion"]), {"box": np.asarray(cv["oof"]["box_cnn"]), "whole": whole}),
        "automatic": (r["both"], {"box": box, "whole": whole}),
    }
    report["run"], report["paths"] = str(args.run), {}
    for name, (feat, probs) in paths.items():
        rows = grid(y, sites, groups, feat, probs)
        chosen = choose(y, sites, rows)
        report["paths"][name] = {"chosen": chosen, "features_alone": {
            s: r for s, r in next(r for r in rows if (r["box"], r["whole"]) == (0.0, 0.0))["sites"].items()},
            "grid": [{k: v for k, v in r.items() if k != "p"} for r in rows]}
    write_results(OUT, args.name, report, markdown(report, args))


def markdown(report: dict, args) -> str:
    lines = header("Fusion weights of the image members, judged at each held-out site", report,
                   f"`python -m benchmarks.train_weights --run {args.run} --manifest {args.manifest}`")
    lines += ["", __doc__.split("\n\n")[2].replace("\n", " "), ""]
    for name, rec in report["paths"].items():
        sites = sorted(rec["grid"][0]["sites"])
        lines += [f"## {name} outlines", "", "| box | whole | worst-site band | worst-site AUC | "
                  + " | ".join(f"{s}: AUC / spec 0.96 / 0.98" for s in sites) + " |",
                  "|---|---|---|---|" + "---|" * len(sites)]
        for r in rec["grid"]:
            mark = " **(shipped)**" if (r["box"], r["whole"]) == SHIPPED else ""
            lines.append(f"| {r['box']}{mark} | {r['whole']} | {r['worst_band']:.3f} | {r['worst_auc']:.3f} | "
                         + " | ".join(f"{r['sites'][s]['auc']:.3f} / {r['sites'][s]['specificity_at_0.96']:.2f} / "
                                      f"{r['sites'][s]['specificity_at_0.98']:.2f}" for s in sites) + " |")
        c = rec["chosen"]
        lines += ["", f"By train's gate against the shipped weights: box {c['box']}, whole {c['whole']} (worst-site "
                      f"band {c['worst_band']:.3f} against {c['shipped_worst_band']:.3f}, worst-site AUC "
                      f"{c['worst_auc']:.3f} against {c['shipped_worst_auc']:.3f}).", ""]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
