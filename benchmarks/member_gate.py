"""The image members of a `breastcadx train --folds site` run at every held-out site, and what the train gate
decides with them: the AUC-only gate of before 2026-12-06, the band averaged over the sites, and `pipeline.no_worse`
(the high-sensitivity band and the AUC at the worst held-out site).

    python -m benchmarks.member_gate --run runs/three-site-train --manifest runs/three_sites.csv [--name NAME]

Reads the run's cached features (reference and redrawn outlines; the set's fusion is refitted per fold as stage 3
fits it) and each member fold's held-out scores (`member_{view}_fold{k}/scored.json`), so it can run while the
run goes on, once stage 4 has scored every fold. Reference outlines, 95 % CIs by patient bootstrap. Writes
benchmarks/results/NAME.md/json.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from benchmarks.machine import header, stamp, write_results
from benchmarks.site_rows import load_findings

OUT = Path(__file__).resolve().parent / "results"
METRICS = ("auc", "ci95", "n", "malignant", "specificity_at_0.96", "specificity_at_0.98", "specificity_0.90_1.00")


def member_oof(run: Path, view: str, findings: list, folds: list) -> np.ndarray | None:
    """The view's held-out score of every finding from the run's fold folders, or None while a fold is unscored."""
    out = np.full(len(findings), np.nan)
    for k, (_, te) in enumerate(folds, 1):
        scored = run / ".work" / f"member_{view}_fold{k}" / "scored.json"
        if not scored.is_file():
            return None
        got = json.loads(scored.read_text())
        out[te] = [got[findings[i].case_id] for i in te]
    return out


def main() -> None:
    from BreastCADxLib.train.members import WEIGHTS, fuse
    from BreastCADxLib.train.pipeline import (
        DESIGN,
        GATE_AUC_SLACK,
        SITE_FOLDS,
        cross_validate,
        fold_splits,
        no_worse,
        summary,
    )

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="the set folder `train --folds site` is making")
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--name", default="member_gate")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    report = {**stamp(), "run": str(args.run)}
    d = load_findings(args.manifest, args.run)
    y, groups, sites = d["y"], d["groups"], d["sites"]
    (rad, deep), redrawn = d["outlines"]["reference"], d["outlines"]["redrawn"]
    cv = cross_validate(rad, deep, y, groups, SITE_FOLDS, c=DESIGN["US"]["c"], sites=sites, redrawn=redrawn)
    features = np.asarray(cv["oof"]["fusion"])
    folds = fold_splits(y, groups, SITE_FOLDS, sites=sites)
    probs = {v: p for v in WEIGHTS if (p := member_oof(args.run, v, d["findings"], folds)) is not None}
    if not probs:
        raise SystemExit(f"{args.run}: no image member has scored every held-out site yet")
    fused = fuse(features, probs)
    scorings = {"features (the set's fusion)": features, **{f"{v} member alone": p for v, p in probs.items()},
                "fusion with " + " + ".join(f"{v} {WEIGHTS[v]}" for v in probs): fused}
    rows = {s: {k: {m: summary(y[sites == s], p[sites == s], groups[sites == s])[m] for m in METRICS}
                for k, p in scorings.items()} for s in sorted(set(sites))}
    kept, gate = no_worse(y, fused, features, sites)
    pooled = no_worse(y, fused, features)[1]
    auc_only = bool(pooled["candidate"]["auc"] >= pooled["base"]["auc"])  # the rule before 2026-12-06 (pooled)
    mean = {k: {m: float(np.mean([rows[s][name][m] for s in rows])) for m in ("auc", "specificity_0.90_1.00")}
            for k, name in (("candidate", list(scorings)[-1]), ("base", list(scorings)[0]))}
    by_mean = bool(mean["candidate"]["specificity_0.90_1.00"] >= mean["base"]["specificity_0.90_1.00"]
                   and mean["candidate"]["auc"] >= mean["base"]["auc"] - GATE_AUC_SLACK)
    report.update(rows=rows, gate=gate, pooled=pooled, site_mean=mean, kept_by_gate=kept, kept_by_auc_only=auc_only,
                  kept_by_site_mean=by_mean,
                  loadavg_1min_end=os.getloadavg()[0])
    head = header("breastcadx train --folds site: the image members at each held-out site", report,
                  f"Made by `python -m benchmarks.member_gate --run {args.run} --manifest {args.manifest} --name "
                  f"{args.name}`: each site scored by the run's members and features trained on the other sites, "
                  f"{len(y)} lesions ({int(y.sum())} malignant), reference outlines; 95 % CIs by patient bootstrap.")
    lines = ["", "| held out | model | AUC [95 % CI] | specificity at sensitivity 0.96 / 0.98 | mean specificity, "
             "sensitivity 0.90-1.00 |", "|---|---|---|---|---|"]
    for s, by in rows.items():
        lines += [f"| {s} | {k} | {r['auc']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] | "
                  f"{r['specificity_at_0.96']:.2f} / {r['specificity_at_0.98']:.2f} | "
                  f"{r['specificity_0.90_1.00']:.2f} |"
                  for k, r in by.items()]

    def pair(d):
        b, c = d["base"], d["candidate"]
        return (f"AUC {b['auc']:.3f} -> {c['auc']:.3f}, band {b['specificity_0.90_1.00']:.3f} -> "
                f"{c['specificity_0.90_1.00']:.3f}")

    def yes(flag):
        return "**kept**" if flag else "**left out**"

    lines += ["", "Features alone -> with the members, and what each rule decides for the set's fusion (drawn and "
              "corrected outlines; band = mean specificity over sensitivities 0.90-1.00):", "",
              f"- pooled over the sites, AUC only (train's rule before 2026-12-06): {pair(pooled)}: {yes(auc_only)}",
              f"- mean over the held-out sites, band and AUC: {pair(mean)}: {yes(by_mean)}",
              f"- the worst held-out site, band and AUC (train's gate, pipeline.no_worse): {pair(gate)}: {yes(kept)}"]
    write_results(args.out, args.name, report, "\n".join(head + lines) + "\n")


if __name__ == "__main__":
    main()
