"""A biopsy operating point chosen leave-site-out, against the ACR 2 % line (a #20 finding; not shipped).

    python -m benchmarks.operating_point      # -> benchmarks/results/operating_point.{md,json}

The shipped suggestion maps the malignancy probability to BI-RADS-style categories by the ACR likelihood ranges;
at "4A or above" (> 2 %) it sends almost every benign lesion to biopsy (benchmarks/results/lexicon.md). Here the
threshold for "biopsy" is instead chosen on leave-site-out predictions of non-test rows (each site predicted by
members fitted on the other; the fused score's automatic, ROI-box and reference rows), as the highest probability
keeping sensitivity at least 0.98 (the senior ultrasonographer's on L5), then applied once to the held-out test
rows of both sites with the shipped two-site classifier (reference and automatic outlines), beside the reader.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np

from benchmarks.leave_site_out import classify
from benchmarks.machine import machine, set_folder
from BreastCADxLib.analysis.calibration import apply_calibration
from BreastCADxLib.analysis.classifier import get_classifier
from training.classification.box_member import lso_calibration
from training.classification.designs import DESIGNS
from training.classification.ship_sites import calibration_rows
from training.lexicon_thresholds import FEATURES

TARGET_SENSITIVITY = 0.98
LSO_ROWS = Path("runs/box_fusion/rows.npz")  # training.classification.box_fusion
SETS = {"L5 test, reference outlines": "busbra_l5__reference__test",
        "L5 test, automatic (lesion expected)": "busbra_l5__expect__two-site__test",
        "BUSI test, reference outlines": "busi__reference__test",
        "BUSI test, automatic (lesion expected)": "busi__expect__two-site__test"}


def test_probabilities(name: str, model_set: str = "two-site") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A set's classifier (by id; with its image members) on test feature rows (this report: the two-site set,
    shipped until 2026-12-05, restored by training.restore_set; its leave-site-out rows come from box_fusion)."""
    z = dict(np.load(FEATURES / f"{name}.npz", allow_pickle=False))
    ok = np.isfinite(z["descriptors"]).all(1) & np.isfinite(z["deep_mask"]).all(1)
    rows = {k: (v[ok] if isinstance(v, np.ndarray) and len(v) == len(ok) else v) for k, v in z.items()}
    rb = rows["birads"].astype(int) if "birads" in rows else np.full(int(ok.sum()), -1)
    return classify(model_set, rows, name.split("__")[1]), rows["label"].astype(bool), rb


def main() -> int:
    clf = get_classifier(model_set=set_folder("two-site"))
    design = clf.card["design"]
    c = float(clf.card["training"]["leave_site_out_scores"]["C"])
    if clf.box_member is not None:  # the fused score's leave-site-out rows (those its calibration was fitted on)
        whole = float(clf.whole_member["weight"]) if clf.whole_member else 0.0
        _, how, raw, y = lso_calibration(LSO_ROWS, float(clf.box_member["weight"]), whole)
    else:
        raw, y, how = calibration_rows(DESIGNS[design], c, ["busi", "busbra_l5"])
    p = apply_calibration(clf.calibration, raw)
    y = y.astype(bool)
    candidates = np.sort(np.unique(p))[::-1]
    t = next(float(v) for v in candidates if (p[y] >= v).mean() >= TARGET_SENSITIVITY)
    res = {"date": str(date.today()), "machine": machine(), "design": design, "C": c, "rows": how,
           "threshold": t, "lso_sensitivity": float((p[y] >= t).mean()), "lso_specificity": float((p[~y] < t).mean()),
           "sets": {}}
    for label, name in SETS.items():
        ps, ys, rb = test_probabilities(name)
        r = {"n": int(len(ys)), "malignant": int(ys.sum()),
             "at_threshold": {"sensitivity": float((ps[ys] >= t).mean()), "specificity": float((ps[~ys] < t).mean())},
             "acr_4a_or_above": {"sensitivity": float((ps[ys] > 0.02).mean()),
                                 "specificity": float((ps[~ys] <= 0.02).mean())}}
        if len(rb) and ((rb >= 2) & (rb <= 5)).all():  # BUSI has no reader category
            r["reader_4_or_above"] = {"sensitivity": float((rb[ys] >= 4).mean()),
                                      "specificity": float((rb[~ys] < 4).mean())}
        res["sets"][label] = r
    out = Path("benchmarks/results")
    (out / "operating_point.json").write_text(json.dumps(res, indent=1) + "\n")
    lines = [f"# A biopsy operating point chosen leave-site-out ({res['date']})", "",
             f"Machine: {res['machine']['cpu']}, {res['machine']['cores']} cores. Command: "
             "`python -m benchmarks.operating_point`. " + __doc__.split("\n\n")[2].replace("\n", " "), "",
             f"Threshold: probability >= {t:.3f} (leave-site-out rows: sensitivity "
             f"{res['lso_sensitivity']:.3f}, specificity {res['lso_specificity']:.3f}).", "",
             "| test rows | lesions (malignant) | at the threshold: sens / spec | ACR >= 4A (> 2 %): sens / spec "
             "| reader >= 4: sens / spec |", "|---|---|---|---|---|"]
    for label, r in res["sets"].items():
        a, b = r["at_threshold"], r["acr_4a_or_above"]
        rd = r.get("reader_4_or_above")
        reader = f"{rd['sensitivity']:.2f} / {rd['specificity']:.2f}" if rd else "(no reader category)"
        lines.append(f"| {label} | {r['n']} ({r['malignant']}) | {a['sensitivity']:.2f} / {a['specificity']:.2f} | "
                     f"{b['sensitivity']:.2f} / {b['specificity']:.2f} | {reader} |")
    (out / "operating_point.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
