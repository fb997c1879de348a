"""Leave-site-out check of the fine-tuned box-crop CNN (training.classification.box_cnn) alone and fused with the
shipped feature design, with the masks the product uses.

    python -m training.classification.box_fusion --box-a runs/box_A --box-b runs/box_B \
        --pass-a seg_B --pass-b seg_A --out runs/box_fusion

For each direction (fit on one site's non-test rows, score the other's): the feature design (`rad_all + desc +
deep_mask`, C 0.1, fitted on reference + perturbed outlines), the box CNN trained on the fitting site only, and
their fusion `w * logit(box) + (1 - w) * logit(design)` for a few fixed w (no weight is fitted on the scored site;
w is chosen by the mean cross-site AUC of automatic and ROI-box masks over both directions, as every other design
decision). Also the ECE of each after a Platt calibration fitted on the other direction's scores (the probability
a new hospital would get from a calibration made on another site). Test splits are not read.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from training.classification.designs import BlockModel, load, stack

DESIGN = ("rad_all", "desc", "deep_mask")
KINDS = ("expect", "roi", "reference")
WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)  # weight of the box CNN in the fused logit


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def ece(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(p, edges) - 1, 0, bins - 1)
    return float(sum(abs(y[idx == b].mean() - p[idx == b].mean()) * (idx == b).mean()
                     for b in range(bins) if (idx == b).any()))


def box_scores(runs: list[Path], kind: str) -> dict[str, float]:
    """Per-case probability of one box CNN run, or of an ensemble of runs (mean logit, as the product scores)."""
    per = []
    for run in runs:
        z = np.load(run / "scores.npz", allow_pickle=False)
        per.append(dict(zip(z[f"{kind}_case"].tolist(), z[f"{kind}_prob"].tolist())))
    common = set.intersection(*(set(p) for p in per))
    return {c: float(1 / (1 + np.exp(-np.mean([logit(np.array(p[c])) for p in per])))) for c in common}


def direction(src: str, dst: str, box_run: list[Path], seg_pass: str) -> dict[str, dict]:
    """kind -> {case, label, design logit, box logit} on the scored site, rows where both exist."""
    model = BlockModel(DESIGN, 0.1).fit(stack([load(src, k, None) for k in ("reference", "perturbed")]))
    out = {}
    for kind in KINDS:
        d = load(dst, kind, seg_pass if kind != "reference" else None)
        box = box_scores(box_run, kind)
        keep = np.array([c in box for c in d["case"].tolist()])
        p_design = model.proba(d)[keep]
        out[kind] = {"case": d["case"][keep], "label": d["label"][keep], "design": logit(p_design),
                     "box": logit(np.array([box[c] for c in d["case"][keep].tolist()])),
                     "dropped": int((~keep).sum())}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--box-a", type=Path, nargs="+", default=[Path("runs/box_A")],
                    help="box CNN run(s) trained on BUSI (several: their ensemble)")
    ap.add_argument("--box-b", type=Path, nargs="+", default=[Path("runs/box_B")],
                    help="box CNN run(s) trained on BUS-BRA L5 (several: their ensemble)")
    ap.add_argument("--pass-a", default="seg_B", help="segmenter pass over BUSI, trained without BUSI")
    ap.add_argument("--pass-b", default="seg_A", help="segmenter pass over BUS-BRA L5, trained without it")
    ap.add_argument("--out", type=Path, default=Path("runs/box_fusion"))
    args = ap.parse_args()
    dirs = {"busi->busbra_l5": direction("busi", "busbra_l5", args.box_a, args.pass_b),
            "busbra_l5->busi": direction("busbra_l5", "busi", args.box_b, args.pass_a)}
    rows = []
    for w in WEIGHTS:
        row: dict = {"w_box": w}
        fused = {name: {k: w * v["box"] + (1 - w) * v["design"] for k, v in d.items()} for name, d in dirs.items()}
        for name, d in dirs.items():
            for kind, v in d.items():
                row[f"{name}:{kind}"] = float(roc_auc_score(v["label"], fused[name][kind]))
        # ECE: Platt on the other direction's automatic-mask scores, applied to this direction's
        for name, other in (("busi->busbra_l5", "busbra_l5->busi"), ("busbra_l5->busi", "busi->busbra_l5")):
            cal = LogisticRegression(C=1e6).fit(fused[other]["expect"][:, None], dirs[other]["expect"]["label"])
            p = cal.predict_proba(fused[name]["expect"][:, None])[:, 1]
            row[f"{name}:expect_ece"] = ece(dirs[name]["expect"]["label"], p)
        row["score"] = float(np.mean([row[f"{n}:{k}"] for n in dirs for k in ("expect", "roi")]))
        rows.append(row)
        print(json.dumps({k: round(v, 3) for k, v in row.items()}), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    # every scored row, for the calibration of a shipped fusion (training.classification.box_member)
    np.savez(args.out / "rows.npz", **{f"{n}:{k}:{f}": v[f] for n, d in dirs.items() for k, v in d.items()
                                       for f in ("case", "label", "design", "box")})
    counts = {f"{n}:{k}": {"n": len(v["label"]), "malignant": int(v["label"].sum()), "dropped": v["dropped"]}
              for n, d in dirs.items() for k, v in d.items()}
    (args.out / "box_fusion.json").write_text(json.dumps({"rows": rows, "counts": counts, "design": DESIGN,
                                                          "passes": [args.pass_a, args.pass_b]}, indent=1))
    cols = [f"{n}:{k}" for n in dirs for k in KINDS] + [f"{n}:expect_ece" for n in dirs]
    lines = ["| w (box CNN) | score | " + " | ".join(cols) + " |", "|---" * (len(cols) + 2) + "|"]
    for r in rows:
        lines.append(f"| {r['w_box']:g} | {r['score']:.3f} | " + " | ".join(f"{r[c]:.3f}" for c in cols) + " |")
    (args.out / "box_fusion.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
