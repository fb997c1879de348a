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

from BreastCADxLib.analysis.calibration import apply_calibration, expected_calibration_error, fit_platt, logit
from BreastCADxLib.analysis.classifier import fused_logit
from training.classification.designs import DESIGNS, BlockModel, fit_rows, load, parse_own_pass
from training.segmentation.site_pass import OUT as PASSES

DESIGN = ("rad_all", "desc", "deep_mask")
KINDS = ("expect", "roi", "reference")
WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)  # weight of the box CNN in the fused logit


def ece(y: np.ndarray, p: np.ndarray) -> float:
    return expected_calibration_error(p, y)


def box_scores(runs: list[Path], kind: str) -> dict[str, float]:
    """Per-case probability of one box CNN run, or of an ensemble of runs (mean logit, as the product scores)."""
    per = []
    for run in runs:
        z = np.load(run / "scores.npz", allow_pickle=False)
        per.append(dict(zip(z[f"{kind}_case"].tolist(), z[f"{kind}_prob"].tolist())))
    common = set.intersection(*(set(p) for p in per))
    return {c: float(1 / (1 + np.exp(-np.mean([logit(np.array(p[c])) for p in per])))) for c in common}


def fuse(v: dict, w: float, w_low: float, w_whole: float = 0.0) -> np.ndarray:
    """Fused logit of one direction's rows: box weight w, or w_low where the automatic mask is low-confidence; then,
    with a whole-image member, (1 - w_whole) x that + w_whole x its logit."""
    return fused_logit(v["design"], v["box"], np.where(v["low"], w_low, w), v["whole"] if w_whole else None, w_whole)


def calibration_choice(dirs: dict, w: float, w_whole: float = 0.0) -> list[dict]:
    """Cross-site ECE of the fused score (box weight w) per direction and mask kind: raw, with a Platt fitted on the
    other direction's rows pooled over kinds (what the two-site set ships), and with one Platt per mask source
    (automatic vs drawn: ROI box and reference)."""
    fused = {n: {k: 1 / (1 + np.exp(-fuse(v, w, w, w_whole))) for k, v in d.items()} for n, d in dirs.items()}
    out = []
    for name, other in (("busi->busbra_l5", "busbra_l5->busi"), ("busbra_l5->busi", "busi->busbra_l5")):
        pooled, auto, drawn = (fit_platt(np.concatenate([fused[other][k] for k in kinds]),
                                         np.concatenate([dirs[other][k]["label"] for k in kinds]))
                               for kinds in (KINDS, ("expect",), ("roi", "reference")))
        for kind in KINDS:
            p, y = fused[name][kind], dirs[name][kind]["label"]
            out.append({"rows": f"{name}:{kind}", "raw": ece(y, p), "pooled": ece(y, apply_calibration(pooled, p)),
                        "per_source": ece(y, apply_calibration(auto if kind == "expect" else drawn, p))})
    return out


def low_confidence(seg_pass: str, site: str) -> dict[str, bool]:
    """case -> the automatic mask is a kept candidate that did not pass presence (flagged low-confidence)."""
    z = np.load(PASSES / f"{seg_pass}__{site}__train+val.npz", allow_pickle=False)
    return dict(zip(z["case"].tolist(), z["low_confidence"].tolist()))


def direction(src: str, dst: str, box_run: list[Path], seg_pass: str,
              fit_masks: tuple[str, ...] = ("reference", "perturbed"), own_pass: dict[str, str] | None = None,
              whole_run: list[Path] | None = None, drawn_fit_masks: tuple[str, ...] | None = None,
              design: tuple[str, ...] = DESIGN) -> dict[str, dict]:
    """kind -> {case, label, design logit, box logit, [whole-image logit,] low} on the scored site, rows where
    all exist. drawn_fit_masks: the reference rows are scored by a feature member fitted on these instead (a
    bundle per mask provenance, as a card's `automatic_masks` ships it)."""
    model = BlockModel(design, 0.1).fit(fit_rows([src], fit_masks, own_pass))
    drawn = BlockModel(DESIGN, 0.1).fit(fit_rows([src], drawn_fit_masks, own_pass)) if drawn_fit_masks else model
    low = low_confidence(seg_pass, dst)
    whole = box_scores(whole_run, "whole") if whole_run else None
    out = {}
    for kind in KINDS:
        d = load(dst, kind, seg_pass if kind != "reference" else None)
        box = box_scores(box_run, kind)
        keep = np.array([c in box and (whole is None or c in whole) for c in d["case"].tolist()])
        p_design = (drawn if kind == "reference" else model).proba(d)[keep]
        cases = d["case"][keep]
        out[kind] = {"case": cases, "label": d["label"][keep], "design": logit(p_design),
                     "box": logit(np.array([box[c] for c in cases.tolist()])),
                     "low": np.array([kind == "expect" and low[c] for c in cases.tolist()]),
                     "dropped": int((~keep).sum())}
        if whole is not None:
            out[kind]["whole"] = logit(np.array([whole[c] for c in cases.tolist()]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--box-a", type=Path, nargs="+", default=[Path("runs/box_A")],
                    help="box CNN run(s) trained on BUSI (several: their ensemble)")
    ap.add_argument("--box-b", type=Path, nargs="+", default=[Path("runs/box_B")],
                    help="box CNN run(s) trained on BUS-BRA L5 (several: their ensemble)")
    ap.add_argument("--pass-a", default="seg_B", help="segmenter pass over BUSI, trained without BUSI")
    ap.add_argument("--pass-b", default="seg_A", help="segmenter pass over BUS-BRA L5, trained without it")
    ap.add_argument("--fit-masks", default="reference,perturbed", help="outlines the feature member is fitted on")
    ap.add_argument("--fit-pass", default="",
                    help="for fit masks expect/roi: the fitting site's own segmenter pass, "
                         "e.g. busi=busi-only,busbra_l5=seg_B")
    ap.add_argument("--drawn-fit-masks", help="a feature member per provenance: drawn outlines' fitting masks")
    ap.add_argument("--w-low", type=float, nargs="*", default=[],
                    help="also: the box weight for automatic masks flagged low-confidence (w elsewhere)")
    ap.add_argument("--whole-a", type=Path, nargs="*", default=[],
                    help="whole-image member run(s) trained on BUSI (box_cnn --view whole)")
    ap.add_argument("--whole-b", type=Path, nargs="*", default=[], help="the same, trained on BUS-BRA L5")
    ap.add_argument("--w-whole", type=float, nargs="*", default=[0.0],
                    help="weights of the whole-image member tried (with --whole-a/--whole-b)")
    ap.add_argument("--calibration-w", type=float, default=0.75, help="box weight of the calibration comparison")
    ap.add_argument("--calibration-w-whole", type=float, default=0.0, help="its whole-image weight")
    ap.add_argument("--design", default="rad_all+desc+deep_mask", choices=sorted(DESIGNS),
                    help="feature design of the member for automatic / ROI masks (with --drawn-fit-masks, the "
                         "drawn-outline member keeps the shipped one)")
    ap.add_argument("--out", type=Path, default=Path("runs/box_fusion"))
    args = ap.parse_args()
    fit = tuple(args.fit_masks.split(","))
    own = parse_own_pass(args.fit_pass)
    if bool(args.whole_a) != bool(args.whole_b):
        raise SystemExit("--whole-a and --whole-b go together (both directions)")
    w_wholes = args.w_whole if args.whole_a else [0.0]
    drawn = tuple(args.drawn_fit_masks.split(",")) if args.drawn_fit_masks else None
    design = DESIGNS[args.design]
    dirs = {"busi->busbra_l5": direction("busi", "busbra_l5", args.box_a, args.pass_b, fit, own, args.whole_a, drawn,
                                         design),
            "busbra_l5->busi": direction("busbra_l5", "busi", args.box_b, args.pass_a, fit, own, args.whole_b, drawn,
                                         design)}
    rows = []
    grid = [(w, None) for w in WEIGHTS] + [(w, wl) for w in WEIGHTS[1:-1] for wl in args.w_low]
    for ww, (w, w_low) in [(ww, g) for ww in w_wholes for g in grid]:
        row: dict = {"w_box": w, "w_low": w if w_low is None else w_low, "w_whole": ww}
        fused = {name: {k: fuse(v, w, row["w_low"], ww) for k, v in d.items()} for name, d in dirs.items()}
        for name, d in dirs.items():
            for kind, v in d.items():
                row[f"{name}:{kind}"] = float(roc_auc_score(v["label"], fused[name][kind]))
        # ECE: Platt on the other direction's automatic-mask scores, applied to this direction's
        for name, other in (("busi->busbra_l5", "busbra_l5->busi"), ("busbra_l5->busi", "busi->busbra_l5")):
            cal = LogisticRegression(C=1e6).fit(fused[other]["expect"][:, None], dirs[other]["expect"]["label"])
            p = cal.predict_proba(fused[name]["expect"][:, None])[:, 1]
            row[f"{name}:expect_ece"] = ece(dirs[name]["expect"]["label"], p)
        row["score"] = float(np.mean([row[f"{n}:{k}"] for n in dirs for k in ("expect", "roi")]))
        row["score_with_drawn"] = float(np.mean([row[f"{n}:{k}"] for n in dirs for k in KINDS]))
        rows.append(row)
        print(json.dumps({k: round(v, 3) for k, v in row.items()}), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    # every scored row, for the calibration of a shipped fusion (training.classification.box_member)
    np.savez(args.out / "rows.npz", **{f"{n}:{k}:{f}": v[f] for n, d in dirs.items() for k, v in d.items()
                                       for f in ("case", "label", "design", "box", "whole") if f in v})
    choice = calibration_choice(dirs, args.calibration_w, args.calibration_w_whole)
    counts = {f"{n}:{k}": {"n": len(v["label"]), "malignant": int(v["label"].sum()), "dropped": v["dropped"]}
              for n, d in dirs.items() for k, v in d.items()}
    (args.out / "box_fusion.json").write_text(json.dumps({
        "rows": rows, "counts": counts, "design": design, "fit_masks": fit, "fit_pass": own, "drawn_fit_masks": drawn,
        "passes": [args.pass_a, args.pass_b],
        "box_a": [str(r) for r in args.box_a], "box_b": [str(r) for r in args.box_b],
        "whole_a": [str(r) for r in args.whole_a], "whole_b": [str(r) for r in args.whole_b],
        "calibration_choice": {"w_box": args.calibration_w, "w_whole": args.calibration_w_whole, "rows": choice}},
        indent=1))
    cols = [f"{n}:{k}" for n in dirs for k in KINDS] + [f"{n}:expect_ece" for n in dirs]
    lines = ["| w whole image | w (box CNN) | w low-confidence | auto + ROI score | auto + ROI + reference score | "
             + " | ".join(cols) + " |", "|---" * (len(cols) + 5) + "|"]
    for r in rows:
        lines.append(f"| {r['w_whole']:g} | {r['w_box']:g} | {r['w_low']:g} | {r['score']:.3f} | "
                     f"{r['score_with_drawn']:.3f} | " + " | ".join(f"{r[c]:.3f}" for c in cols) + " |")
    lines += ["", f"Cross-site ECE at w = {args.calibration_w:g}, w whole image = {args.calibration_w_whole:g}: raw, "
              "Platt from the other direction (pooled), "
              "Platt per mask source", "", "| rows | raw | pooled | per source |", "|---|---|---|---|"]
    lines += [f"| {c['rows']} | {c['raw']:.3f} | {c['pooled']:.3f} | {c['per_source']:.3f} |" for c in choice]
    lines.append("| mean | " + " | ".join(f"{np.mean([c[k] for c in choice]):.3f}"
                                            for k in ("raw", "pooled", "per_source")) + " |")
    (args.out / "box_fusion.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
