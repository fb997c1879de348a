"""Which features lose their ranking when the outline is the segmenter's, at a hospital neither model saw? Per
held-out site of a finished `breastcadx train --folds site` run: a logistic regression on one feature group (C
0.01, as the fusion) fitted on the other two sites' drawn outlines, scoring the held-out site's findings on their
drawn outline and on their automatic one (the run's cached features; the automatic outline by the segmenter fold
that never saw the site), over all findings and over those whose automatic outline has Dice >= 0.8. Then the
lexicon's shape and margin categories (analysis.lexicon, from the same cached descriptors) on both outlines of the
findings whose automatic outline has Dice >= 0.8: how often each outline calls a cancer and a benign lesion
irregular / not circumscribed, and how often the two outlines agree.

    python -m training.experiments.feature_groups --run runs/three-site-train --manifest runs/three_sites.csv

Prints two markdown tables; under a minute. Non-test rows only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def group_aucs(r: dict, names: list[str]) -> list[str]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from benchmarks.outline_limits import GROUPS

    y, sites, ok, dice = r["y"], r["sites"], r["ok"], r["dice"]
    groups = [(g, np.array([n.startswith(p) for n in names])) for g, p in GROUPS.items()] + [("deep", None)]
    lines = ["| held-out site | features | drawn outline | automatic outline | drawn, Dice >= 0.8 | automatic, Dice "
             ">= 0.8 |", "|---|---|---|---|---|---|"]
    for site in sorted(set(sites)):
        fit, scored = sites != site, (sites == site) & ok
        good = scored & (dice >= 0.8)
        for g, cols in groups:
            drawn, auto = (r["rad"][:, cols], r["arad"][:, cols]) if cols is not None else (r["deep"], r["adeep"])
            model = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=3000)).fit(drawn[fit], y[fit])
            cells = [roc_auc_score(y[m], model.predict_proba(x[m])[:, 1])
                     for m in (scored, good) for x in (drawn, auto)]
            lines.append(f"| {site} ({scored.sum()}; {good.sum()} at Dice >= 0.8) | {g} | " +
                         " | ".join(f"{c:.3f}" for c in cells) + " |")
    return lines


def lexicon_agreement(r: dict, names: list[str]) -> list[str]:
    from BreastCADxLib.analysis.lexicon import categories

    cols = {n.removeprefix("descriptor_"): i for i, n in enumerate(names) if n.startswith("descriptor_")}

    def read(row) -> dict:
        return {i.feature: i.category for i in categories({k: float(row[j]) for k, j in cols.items()})}

    y, sites, ok, dice = r["y"], r["sites"], r["ok"], r["dice"]
    lines = ["| held-out site | lesions (Dice >= 0.8) | shape irregular: drawn / automatic | margin not circumscribed: "
             "drawn / automatic | shape: same category | margin: same category |", "|---|---|---|---|---|---|"]
    for site in sorted(set(sites)):
        for label, name in ((1, "cancers"), (0, "benign")):
            idx = np.flatnonzero((sites == site) & (y == label) & ok & (dice >= 0.8))
            drawn, auto = [read(r["rad"][i]) for i in idx], [read(r["arad"][i]) for i in idx]

            def share(rows, feature, test):
                return np.mean([test(x[feature]) for x in rows])

            irregular = [share(x, "shape", lambda c: c == "irregular") for x in (drawn, auto)]
            open_margin = [share(x, "margin", lambda c: c != "circumscribed") for x in (drawn, auto)]
            same = [np.mean([a[f] == b[f] for a, b in zip(drawn, auto)]) for f in ("shape", "margin")]
            lines.append(f"| {site} | {len(idx)} {name} | {irregular[0]:.2f} / {irregular[1]:.2f} | "
                         f"{open_margin[0]:.2f} / {open_margin[1]:.2f} | {same[0]:.2f} | {same[1]:.2f} |")
    return lines


def main() -> None:
    from benchmarks.train_weights import run_rows

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--manifest", type=Path, required=True)
    args = ap.parse_args()
    names = json.loads((args.run / "lesion_cls_fusion_auto.json").read_text())["radiomics_names"]
    r = run_rows(args.run, args.manifest)
    print("\n".join(group_aucs(r, names) + [""] + lexicon_agreement(r, names)))


if __name__ == "__main__":
    main()
