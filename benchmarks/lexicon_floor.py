"""Would a lexicon floor stop confident benign calls on cancers at a hospital the set never saw?

    python -m benchmarks.lexicon_floor

Found in `confident_benign__held-out-busi__busi.md`: the cancers BUSI's held-out set scores below 5 % were outlined
fairly, and 4 of 5 carry a suspicious sign in BreastCADx's own lexicon (irregular shape, or an angular /
microlobulated / spiculated margin). A radiologist calls any suspicious sign at least 4A. The rule checked here:
the probability is raised to a floor F when the lesion's lexicon (from its automatic outline, lesion expected)
shows such a sign. Per held-out rotation (non-test rows, the set never trained at that site): the fused
probability of `benchmarks.held_out_site` and the descriptors of the same segmenter's lesion-expected outline
(`training.classification.site_features` over its pass; the pass's outline is the product's but for the presence
threshold of its first pass): AUC, specificity at sensitivity 0.96 / 0.98, cancers below 5 %, the share of benign
lesions lifted. The lexicon's cut-points were fitted on the non-test rows of all three sites (a small in-site
advantage for the sign itself). Writes benchmarks/results/lexicon_floor.md/json.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from benchmarks.machine import header, stamp, write_results
from BreastCADxLib.analysis.lexicon import categories
from BreastCADxLib.results.evaluation import specificity_at

OUT = Path(__file__).resolve().parent / "results"
ROTATIONS = {  # held-out site -> (held_out_site rows, the same segmenter's lesion-expected features)
    "busi": ("held_out_site__held-out-busi__busi__train+val.json", "runs/site_features/busi__expect__seg_BC.npz"),
    "busbra_l5": ("held_out_site__busi-only__busbra_l5__train+val.json",
                  "runs/site_features/busbra_l5__expect__busi-only.npz"),
    "busuclm": ("held_out_site__two-site__busuclm__train+val.json",
                "runs/site_features/busuclm__expect__two-site.npz"),
}
SIGNS = {
    "irregular shape": lambda c: c["shape"] == "irregular",
    "irregular shape or angular/spiculated margin": lambda c: c["shape"] == "irregular" or "angular" in c["margin"],
    "irregular shape and not circumscribed margin":
        lambda c: c["shape"] == "irregular" and c["margin"] != "circumscribed",
    # the shipped flag's pair, counted only where neither is a low-confidence call (the open question of 2026-12-06)
    "the same pair, neither of low confidence":
        lambda c: c["shape"] == "irregular" and c["margin"] != "circumscribed"
        and "low" not in (c["shape_confidence"], c["margin_confidence"]),
}
FLOORS = (0.02, 0.05, 0.10)


def site_rows(rows_file: str, features: str) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """(malignant, fused probability, lexicon categories) of the lesions both files hold."""
    rows = {r["case"]: r for r in json.loads((OUT / rows_file).read_text())["rows"]
            if r["label"] in ("benign", "malignant") and r.get("expect_p") is not None}
    z = np.load(features, allow_pickle=False)
    names = [str(n) for n in z["descriptor_names"]]
    y, p, cats = [], [], []
    for case, d in zip(z["case"].tolist(), z["descriptors"]):
        if case not in rows:
            continue
        y.append(rows[case]["label"] == "malignant")
        p.append(rows[case]["expect_p"])
        found = categories(dict(zip(names, map(float, d))))
        cats.append({i.feature: i.category for i in found} | {f"{i.feature}_confidence": i.confidence for i in found})
    return np.array(y), np.array(p, float), cats


def scores(y: np.ndarray, p: np.ndarray) -> dict:
    return {"auc": float(roc_auc_score(y, p)), "spec_096": specificity_at(y, p, 0.96),
            "spec_098": specificity_at(y, p, 0.98), "cancers_below_5": int(((p < 0.05) & y).sum())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    report = {**stamp(), "sites": {}}
    lines = ["| held-out site | rule | AUC | spec. at sens. 0.96 | at 0.98 | cancers below 5 % | benign lifted |",
             "|---|---|---|---|---|---|---|"]
    mean: dict[str, list[float]] = {}
    for site, (rows_file, features) in ROTATIONS.items():
        if not Path(features).is_file():
            lines.append(f"| {site} | features {features} missing | | | | | |")
            continue
        y, p, cats = site_rows(rows_file, features)
        out = {"lesions": len(y), "malignant": int(y.sum()), "rules": {}}
        rules = {"as shipped": p}
        for sign, test in SIGNS.items():
            on = np.array([test(c) for c in cats])
            out[f"sign: {sign}"] = {"cancers": float(on[y].mean()), "benign": float(on[~y].mean())}
            for f in FLOORS:
                rules[f"{sign}: at least {f:.0%}"] = np.where(on, np.maximum(p, f), p)
        for name, q in rules.items():
            r = {**scores(y, q), "benign_lifted": float((q > p)[~y].mean())}
            out["rules"][name] = r
            mean.setdefault(name, []).append(r["spec_096"])
            lines.append(f"| {site} ({len(y)}, {int(y.sum())} malignant) | {name} | {r['auc']:.3f} | "
                         f"{r['spec_096']:.2f} | {r['spec_098']:.2f} | {r['cancers_below_5']} | "
                         f"{100 * r['benign_lifted']:.0f} % |")
        report["sites"][site] = out
    lines += ["", "Mean specificity at sensitivity 0.96 over the held-out sites:", ""]
    lines += [f"- {name}: {np.mean(v):.3f} ({len(v)} sites)" for name, v in mean.items()]
    head = header("A lexicon floor against confident benign calls on cancers, at hospitals the set never saw",
                  {**report, "loadavg_1min_end": os.getloadavg()[0]}, "Made by `python -m benchmarks.lexicon_floor`.")
    write_results(args.out, "lexicon_floor", report, "\n".join(head + [""] + lines) + "\n")


if __name__ == "__main__":
    main()
