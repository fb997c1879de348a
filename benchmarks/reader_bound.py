"""Can a rule combining the radiologist's BI-RADS with BreastCADx's score beat the reader at the reader's own
sensitivity? An upper bound on BUS-BRA L5, the one site with the reader's category.

    python -m benchmarks.reader_bound [--busbra ../shared/data/busbra_l5]

The busi-only set never saw L5 (non-test rows of benchmarks.held_out_site: automatic outlines, lesion expected).
The bound: the logistic rule `adapt` fits (reader level, BreastCADx logit), here fitted and judged on the same
lesions, so better than what `adapt` can fit on part of them. Also per reader category: how well BreastCADx ranks the
lesions the reader put there. Writes benchmarks/results/reader_bound.md/json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from benchmarks.machine import header, stamp, write_results
from BreastCADxLib.analysis.calibration import logit
from BreastCADxLib.analysis.site import READER_BIOPSY_LEVEL
from BreastCADxLib.results.evaluation import specificity_at

OUT = Path(__file__).resolve().parent / "results"
ROWS = OUT / "held_out_site__busi-only__busbra_l5__train+val.json"
LEVEL = {"2": 2.0, "3": 3.0, "4": 4.33, "5": 5.0}  # as benchmarks.site_adaptation reads L5's BI-RADS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--busbra", type=Path, default=Path("../shared/data/busbra_l5"))
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    with open(args.busbra / "manifest.csv", newline="") as f:
        reader = {r["case_id"]: LEVEL[r["birads"].strip()] for r in csv.DictReader(f)}
    rows = [r for r in json.loads(ROWS.read_text())["rows"]
            if r["label"] in ("benign", "malignant") and r.get("expect_p") is not None]
    y = np.array([r["label"] == "malignant" for r in rows])
    p = np.array([r["expect_p"] for r in rows], float)
    level = np.array([reader[r["case"]] for r in rows])
    biopsy = level >= READER_BIOPSY_LEVEL
    sens, spec = float(biopsy[y].mean()), float(1 - biopsy[~y].mean())
    x = np.c_[level, logit(p)]
    both = LogisticRegression(C=1e6, max_iter=1000).fit(x, y).decision_function(x)
    report = {**stamp(), "lesions": len(y), "malignant": int(y.sum()),
              "reader": {"sensitivity": sens, "specificity": spec, "auc": float(roc_auc_score(y, level))},
              "breastcadx": {"auc": float(roc_auc_score(y, p)), "specificity_at_reader_sensitivity":
                             specificity_at(y, p, sens)},
              "bound": {"auc": float(roc_auc_score(y, both)), "specificity_at_reader_sensitivity":
                        specificity_at(y, both, sens)}, "by_reader_category": {}}
    lines = ["| | AUC | specificity at the reader's sensitivity |", "|---|---|---|",
             f"| the reader (BI-RADS >= 4: sensitivity {sens:.3f}) | {report['reader']['auc']:.3f} | {spec:.3f} |",
             f"| BreastCADx (busi-only, never saw L5) | {report['breastcadx']['auc']:.3f} | "
             f"{report['breastcadx']['specificity_at_reader_sensitivity']:.3f} |",
             f"| both, logistic fitted and judged on the same lesions (a bound) | {report['bound']['auc']:.3f} | "
             f"{report['bound']['specificity_at_reader_sensitivity']:.3f} |", "",
             "BreastCADx within each of the reader's categories:", "",
             "| reader's BI-RADS | lesions | malignant | BreastCADx AUC within |", "|---|---|---|---|"]
    for name, value in LEVEL.items():
        m = level == value
        auc = float(roc_auc_score(y[m], p[m])) if 0 < y[m].sum() < m.sum() else None
        report["by_reader_category"][name] = {"lesions": int(m.sum()), "malignant": int(y[m].sum()), "auc": auc}
        lines.append(f"| {name} | {m.sum()} | {y[m].sum()} | {'-' if auc is None else f'{auc:.3f}'} |")
    lines += ["", f"The site-adaptation issue's target (specificity 0.10 above the reader's at the reader's "
              f"sensitivity, i.e. {spec + 0.10:.3f}) lies above this bound of the rule `adapt` fits: to keep the "
              "reader's sensitivity while dropping benign lesions, a rule must clear most of the reader's benign 4s "
              "without losing the cancers among them, or add the cancers the reader calls 2 or 3; BreastCADx ranks "
              "neither well enough (AUC within the categories above)."]
    head = header("Reader + BreastCADx on BUS-BRA L5: what any combination rule can reach",
                  {**report, "loadavg_1min_end": os.getloadavg()[0]}, "Made by `python -m benchmarks.reader_bound` "
                  "(per-case outputs of benchmarks.held_out_site; no model runs here).")
    write_results(args.out, "reader_bound", report, "\n".join(head + [""] + lines) + "\n")


if __name__ == "__main__":
    main()
