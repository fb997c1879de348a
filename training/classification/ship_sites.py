"""Fit the chosen classifier design on one or both sites, calibrate it, and write the pickle-free bundle.

    python -m training.classification.ship_sites --design rad_inv+desc+deep_box --c 0.1 --sites busi,busbra_l5
    python -m training.classification.ship_sites --design rad_inv+desc+deep_box --c 0.1 --sites busi \\
        --models BreastCADx/Resources/Models/busi-only

The design and C come from training.classification.leave_site_out (runs/lso_cls/designs.md). Fitting rows: the
train+val rows of each site with reference and perturbed outlines. Calibration (Platt): with two sites, on
leave-site-out predictions (fit on one site, predict the other, pooled), so the probability keeps its meaning at
a new hospital; with one site, on grouped 5-fold out-of-fold predictions of that site. Test rows are not read.
The bundle is checked to reproduce the scikit-learn model's probabilities.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from BreastCADxLib.analysis.box_classifier import BOX_MODEL, WHOLE_MODEL
from BreastCADxLib.analysis.calibration import apply_calibration, expected_calibration_error, fit_platt
from BreastCADxLib.analysis.cards import FusionCard
from BreastCADxLib.analysis.classifier import DEFAULT_CLASSIFIER, load_classifier
from BreastCADxLib.analysis.registry import MODELS_DIR, write_modelset
from BreastCADxLib.train.bundle import write_bundle
from training.classification.box_cnn import margins_of
from training.classification.box_member import export_box_model, lso_calibration, val_calibration
from training.classification.bundle import exported, ood_and_explainer
from training.classification.designs import DESIGNS, BlockModel, fit_rows, named_columns, named_matrix, parse_own_pass
from training.data import SITE_NAMES, citations, set_name, split_text

NAMED_BLOCKS = {"rad_all": "all pyradiomics features of Resources/Radiomics/ultrasound_2d.yaml (102)",
                "rad_inv": "the dimensionless pyradiomics features (no size in pixels, no absolute grey level)",
                "desc": "lexicon descriptors (analysis/descriptors.py)"}
FIT_TEXT = {"reference": "the reference outline", "perturbed": "a perturbed redraw of it",
            "smoothed": "a smoothed redraw of it",
            "expect": "the set's own segmenter's automatic mask (lesion expected) on its training images",
            "roi": "that segmenter's mask in the reference box + 10 %"}


def subset(d: dict, keep: np.ndarray) -> dict:
    return {k: (v[keep] if isinstance(v, np.ndarray) and v.shape[:1] == keep.shape else v) for k, v in d.items()}


def calibration_rows(blocks, c, sites: list[str], kinds: tuple[str, ...], own: dict[str, str]
                     ) -> tuple[np.ndarray, np.ndarray, str]:
    if len(sites) > 1:
        p, y = [], []
        for s in sites:
            model = BlockModel(blocks, c).fit(fit_rows([t for t in sites if t != s], kinds, own))
            d = fit_rows([s], kinds, own)
            p.append(model.proba(d))
            y.append(d["label"])
        return np.concatenate(p), np.concatenate(y), "leave-site-out predictions (fit on one site, predict the other)"
    d = fit_rows(sites, kinds, own)
    folds = d["fold"]
    p = np.zeros(len(d["label"]))
    for f in sorted(set(folds.tolist())):
        model = BlockModel(blocks, c).fit(subset(d, folds != f))
        p[folds == f] = model.proba(subset(d, folds == f))
    return p, d["label"], "grouped 5-fold out-of-fold predictions of the site (its committed folds)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--design", required=True, choices=list(DESIGNS))
    ap.add_argument("--c", type=float, default=0.1)
    ap.add_argument("--sites", default="busi,busbra_l5")
    ap.add_argument("--models", type=Path, default=MODELS_DIR)
    ap.add_argument("--selection", type=Path, default=Path("runs/lso_cls3/designs.json"),
                    help="the leave-site-out comparison that chose the design (quoted in the card)")
    ap.add_argument("--box-run", type=Path, help="box_cnn run of the image-level member (trained on --sites)")
    ap.add_argument("--box-weight", type=float, default=0.5, help="its weight in the fused logit")
    ap.add_argument("--box-margins", default="0.25", help="context margins of its views (box_cnn --eval-margins)")
    ap.add_argument("--box-fusion", type=Path, default=Path("runs/box_fusion"),
                    help="box_fusion output: leave-site-out rows (two sites) and the cross-site figures")
    ap.add_argument("--cross-site-from", type=Path,
                    help="without box_fusion rows for these sites: the box member card whose leave-site-out figures "
                         "chose the weights (quoted; the calibration must then be identity)")
    ap.add_argument("--box-val-run", type=Path, help="one site: box_cnn run trained on the train rows, scored on val")
    ap.add_argument("--box-pass", default="seg_B", help="one site: segmenter pass of its automatic val masks")
    ap.add_argument("--fit-masks", default="reference,perturbed",
                    help="fitting rows of the feature member (training.classification.designs.fit_rows)")
    ap.add_argument("--fit-pass", default="",
                    help="for fit masks expect/roi: the set's own segmenter pass per site, "
                         "e.g. busi=two-site,busbra_l5=two-site")
    ap.add_argument("--whole-run", type=Path, help="box_cnn --view whole run: the whole-image member (with --box-run)")
    ap.add_argument("--whole-weight", type=float, default=0.2, help="its weight in the fused logit")
    ap.add_argument("--whole-val-run", type=Path, help="one site: the whole-image run trained on the train rows")
    ap.add_argument("--id", default=DEFAULT_CLASSIFIER, help="the bundle's id (its file names)")
    ap.add_argument("--automatic-masks", metavar="ID",
                    help="the bundle for the segmenter's own masks (shipped with --id ID), named in this card")
    ap.add_argument("--calibration", choices=["platt", "identity"], default="platt",
                    help="identity: ship the fused score as it is (box_fusion's cross-site ECE table decides)")
    args = ap.parse_args()
    if args.whole_run and not args.box_run:
        raise SystemExit("--whole-run joins the fusion of --box-run")
    whole_weight = args.whole_weight if args.whole_run else 0.0
    blocks, sites = DESIGNS[args.design], args.sites.split(",")
    deep = [b for b in blocks if b.startswith("deep")]
    if len(deep) != 1 or not set(blocks) - set(deep) <= {"rad_all", "rad_inv", "desc"}:
        raise SystemExit("the bundle ships designs of named blocks (rad_all, rad_inv, desc) plus one deep block")
    kinds, own = tuple(args.fit_masks.split(",")), parse_own_pass(args.fit_pass)
    d = fit_rows(sites, kinds, own)
    model = BlockModel(blocks, args.c).fit(d)
    names = named_columns(blocks, [str(n) for n in d["radiomics_names"]])
    named = [b for b in blocks if b in ("rad_all", "rad_inv", "desc")]
    mean = np.concatenate([model.pre_[b].named_steps["scale"].mean_ for b in named])
    scale = np.concatenate([model.pre_[b].named_steps["scale"].scale_ for b in named])
    dp = model.pre_[deep[0]]
    arrays = {"m_rad_mean": mean, "m_rad_scale": scale, "m_deep_mean": dp.named_steps["scale"].mean_,
              "m_deep_scale": dp.named_steps["scale"].scale_, "m_deep_pca_mean": dp.named_steps["pca"].mean_,
              "m_deep_pca_components": dp.named_steps["pca"].components_}
    # the bundle's member input is [named z-scores, deep PCA]: reorder the LR coefficients to that order
    widths = {b: (len(model.pre_[b].named_steps["scale"].mean_) if b in named else 32) for b in blocks}
    starts = dict(zip(blocks, np.cumsum([0] + [widths[b] for b in blocks])[:-1]))
    coef = model.lr_.coef_[0]
    ordered = np.concatenate([coef[starts[b]:starts[b] + widths[b]] for b in named + deep])
    member = {"name": "fusion", "estimator": {"kind": "logistic", "coef": ordered.tolist(),
                                               "intercept": float(model.lr_.intercept_[0])},
              "branches": [{"kind": "radiomics", "selected": names, "mean": "m_rad_mean", "scale": "m_rad_scale"},
                           {"kind": "deep", **{k: f"m_deep_{k}" for k in ("mean", "scale", "pca_mean",
                                                                            "pca_components")}}]}
    from_card = json.loads(args.cross_site_from.read_text())["cross_site"] if args.cross_site_from else None
    if from_card and args.calibration != "identity":
        raise SystemExit("--cross-site-from has no rows to fit a calibration on: use --calibration identity")
    if args.box_run and from_card:  # the weights' figures come from another set's rotations: nothing to fit on
        calibration, cal_how, p_cal, y_cal = {"kind": "identity"}, "", None, None
    elif args.box_run:
        if len(sites) > 1:
            calibration, cal_how, p_cal, y_cal = lso_calibration(args.box_fusion / "rows.npz", args.box_weight,
                                                                 whole_weight)
        else:
            calibration, cal_how, p_cal, y_cal = val_calibration(sites[0], blocks, args.c, args.box_val_run,
                                                                 args.box_pass, args.box_weight, kinds, own,
                                                                 args.whole_val_run, whole_weight)
    else:
        p_cal, y_cal, cal_how = calibration_rows(blocks, args.c, sites, kinds, own)
        calibration = fit_platt(p_cal, y_cal)
    cal_text = f"Platt scaling on {cal_how}"
    if p_cal is None:
        cal_text = (f"none (identity): no leave-site-out rows of {args.sites} yet; as chosen for the set of "
                    f"{args.cross_site_from}")
    elif args.calibration == "identity":
        calibration, cal_text = {"kind": "identity"}, f"none (identity); rows it was judged on: {cal_how}"

    folder = args.models
    folder.mkdir(parents=True, exist_ok=True)
    for old in [folder / f"{args.id}.json", folder / f"{args.id}.npz", *folder.glob(f"{BOX_MODEL}.*"),
                *folder.glob(f"{WHOLE_MODEL}.*")]:
        old.unlink(missing_ok=True)
    box_member = None
    if args.box_run and from_card:
        cross_site = {**from_card, "weights_chosen_by": f"the leave-site-out figures of {args.cross_site_from} "
                      "(that set's sites; quoted here as they were)"}
    elif args.box_run:
        fusion = json.loads((args.box_fusion / "box_fusion.json").read_text())
        chosen_row = next(r for r in fusion["rows"] if abs(r["w_box"] - args.box_weight) < 1e-9
                          and abs(r.get("w_whole", 0.0) - whole_weight) < 1e-9)
        cross_site = {"leave_site_out": chosen_row, "counts": fusion["counts"],
                      "compared": str(args.box_fusion / "box_fusion.md")}
    if args.box_run:
        export_box_model(args.box_run, folder, sites, cross_site, margins_of(args.box_margins))
        box_member = {"model": BOX_MODEL, "weight": args.box_weight}
        if args.whole_run:
            export_box_model(args.whole_run, folder, sites, cross_site, view="whole")
    rad = named_matrix(d, names)
    deepx = d[deep[0]].astype(float)
    arrays.update(ood_mean=np.zeros(1), ood_precision=np.zeros((1, 1)), explain_deep_weight=np.zeros(1))
    card = {"id": args.id, "weights": f"{args.id}.npz", "sha256": "0" * 64, "arrays": f"{args.id}.npz",
            "mode": "early", "classifier": "LR", "design": args.design,
            "radiomics_names": names, "members": [member], "combine": {"kind": "single"},
            "calibration": calibration, "deep_model": None, "deep_crop": deep[0].split("_")[1],
            "ood": {"threshold": 0.0}, "explain": {"deep_bias": 0.0}, "files": {}}
    if box_member:
        card["box_member"] = box_member
    if args.whole_run:
        card["image_member"] = {"model": WHOLE_MODEL, "weight": whole_weight}
    selection = json.loads(args.selection.read_text()) if args.selection.exists() else None
    chosen = next((r for r in selection["results"] if r["design"] == args.design and r["C"] == args.c), None) \
        if selection else None
    card.update({
        "task": "benign vs malignant breast lesion (ultrasound B-mode), from a lesion mask",
        "model_set": set_name(sites),
        "features": {
            "named": " + ".join(NAMED_BLOCKS[b] for b in named),
            "deep": "frozen ImageNet EfficientNet-Lite0 trunk on the lesion's " +
                    ("box crop (grey in all channels, no mask channel)" if deep[0] == "deep_box" else
                     "mask-aware crop") + ", pooled -> standardised -> PCA 32",
            "classifier": f"L2 logistic regression, C={args.c:g}",
            "image_member": (f"{BOX_MODEL}: EfficientNet-Lite0 fine-tuned on the lesion's box crop; raw = "
                             f"sigmoid({args.box_weight:g} logit(box) + {1 - args.box_weight:g} logit(features)), "
                             f"then the calibration ({args.calibration})") if args.box_run else None,
            "whole_image_member": (f"{WHOLE_MODEL}: the same network fine-tuned on the whole image (no outline); raw = "
                                   f"sigmoid({1 - whole_weight:g} z + {whole_weight:g} logit(whole)), z the fused "
                                   "logit above") if args.whole_run else None},
        "training": {
            "sites": [SITE_NAMES[s] for s in sites],
            "data_citations": citations(sites),
            "rows": f"train+val rows of {split_text(sites)}; each lesion once per fitting mask: "
                    + ", ".join(FIT_TEXT[k] for k in kinds)
                    + (f" (segmenter passes {', '.join(f'{s}: {p}' for s, p in own.items())})" if own else "")
                    + " (training.classification.site_features)",
            "n_rows": int(len(d["label"])), "malignant_rows": int(d["label"].sum()),
            "protocol": "design, C and calibration chosen by leave-site-out scores (fit on the other sites, score the "
                        "held-out one with automatic, ROI-box, perturbed and reference masks); test splits unread",
            "leave_site_out_scores": chosen,
            "calibration": cal_text,
            "calibration_ece_before": None if p_cal is None else expected_calibration_error(p_cal, y_cal),
            "calibration_ece_after": None if p_cal is None else
            expected_calibration_error(apply_calibration(calibration, p_cal), y_cal),
            "command": "python -m training.classification.ship_sites " + shlex.join(sys.argv[1:])},
        "exported": exported(),
        "metrics": "benchmarks/results/leave_site_out.md",
        "intended_use": "Research only; not for diagnosis. Breast ultrasound B-mode lesions.",
    })
    if args.automatic_masks:
        card["automatic_masks"] = args.automatic_masks
    # first without OOD / explainer (they need the loaded bundle), then with them, checked against the fit
    typed, _ = write_bundle(folder, FusionCard.from_json(card), arrays)
    ood, explain = ood_and_explainer(load_classifier(args.id, folder), rad, deepx, d["label"], arrays,
                                     "the fitting rows")
    typed, diff = write_bundle(folder, replace(typed, ood=ood, explain=explain), arrays,
                               check=(rad, deepx, model.proba(d)))
    print(f"shipped {args.design} C={args.c:g} on {sites} -> {folder}; bundle vs scikit-learn max |dp| {diff:.2e}")
    write_modelset(folder, id=card["model_set"], modality="US", sites=sites)


if __name__ == "__main__":
    main()
