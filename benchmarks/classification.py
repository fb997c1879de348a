"""Classification benchmark on the held-out test split (never used for fitting, selection or calibration).

    python -m benchmarks.classification --features runs/features --cv runs/classification --data ../shared/data/busi

Every fusion mode x classifier family, fitted on train+val exactly as in CV (reference + segmenter masks) and
Platt-calibrated on its own out-of-fold probabilities, evaluated with reference masks, auto masks (shipped
segmenter), and reference masks eroded / dilated by 3 px. A lesion the segmenter missed counts as
probability 0 (the system would call the image normal). In-run baseline: all pyradiomics features +
logistic regression, no selection.
Stage timings of the shipped pipeline on this machine, with pyradiomics alone as the in-run reference.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score, roc_auc_score, roc_curve
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from benchmarks.metrics import bootstrap_ci
from benchmarks.segmentation import machine
from BreastCADxLib.analysis.calibration import apply_calibration, expected_calibration_error, fit_platt
from training.classification.cv import DevSet, aligned, fit_model, load, predict_or_zero
from training.classification.fusion import MODES, classifiers

# roi: segmenter inside the reference box + 10 %; expect: segmenter, no box, lesion expected (panel default)
KINDS = ("reference", "auto", "eroded", "dilated", "roi", "expect")


def metrics(y: np.ndarray, p: np.ndarray) -> dict:
    pred = p >= 0.5
    auc = float(roc_auc_score(y, p))
    lo, hi = bootstrap_ci(np.arange(len(y)), stat=lambda idx: _safe_auc(y, p, idx.astype(int)))
    return {"auc": auc, "auc_ci95": [lo, hi], "accuracy": float((pred == y).mean()),
            "sensitivity": float(pred[y == 1].mean()), "specificity": float((~pred[y == 0]).mean()),
            "f1": float(f1_score(y, pred)), "ece": expected_calibration_error(p, y)}


def _safe_auc(y, p, idx):
    yy = y[idx]
    return roc_auc_score(yy, p[idx]) if 0 < yy.sum() < len(yy) else np.nan


def test_set(features: Path, kind: str, ref: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Design matrix for the test lesions under one mask kind; rows for cases without features are NaN."""
    test = ref["split"] == "test"
    return aligned(ref, load(features, kind), test), ref["label"][test], ref["case"][test]


def stage_timings(data: Path, rows: list[dict], n: int = 20) -> dict:
    from BreastCADxLib.analysis.classifier import get_classifier
    from BreastCADxLib.analysis.deep_features import get_deep_features
    from BreastCADxLib.analysis.radiomics_features import extract
    from BreastCADxLib.analysis.segmentation import get_segmenter
    from BreastCADxLib.io import load_image

    clf = get_classifier()
    seg, deep = get_segmenter(device="cpu"), get_deep_features("cpu", clf.card.get("deep_model"))
    stages: dict[str, list[float]] = {k: [] for k in
                                      ("load", "segment", "radiomics", "deep_features", "classify", "gradcam")}
    done = 0
    for r in rows:
        if done == n:
            break
        path = data / r["label"] / f"{r['case']}.png"
        t = time.perf_counter()
        image = load_image(path)
        stages["load"].append(time.perf_counter() - t)
        t = time.perf_counter()
        mask = seg.segment(image).mask
        stages["segment"].append(time.perf_counter() - t)
        if not mask.any():
            continue
        t = time.perf_counter()
        rad = extract(image, mask)
        stages["radiomics"].append(time.perf_counter() - t)
        t = time.perf_counter()
        f = deep.features(image, mask)
        stages["deep_features"].append(time.perf_counter() - t)
        t = time.perf_counter()
        clf.predict(rad, f)
        stages["classify"].append(time.perf_counter() - t)
        t = time.perf_counter()
        deep.gradcam(image, mask, clf.explain_weight, clf.explain_bias)
        stages["gradcam"].append(time.perf_counter() - t)
        done += 1
    out = {k: float(np.mean(v)) for k, v in stages.items()}
    out["total_analyze"] = float(sum(out.values()))
    out["ratio_total_to_radiomics_alone"] = out["total_analyze"] / out["radiomics"]
    out["cases"] = done
    return out


BACKBONE_CONFIGS = ("deep/LR", "late/LR", "early/LR")
BACKBONE_NAMES = {"imagenet_frozen": "EfficientNet-Lite0, ImageNet weights, frozen",
                  "lesion_cnn_lite0": "EfficientNet-Lite0, ImageNet init, fine-tuned on BUSI train",
                  "lesion_cnn_mnhybrid": "MN hybrid (MobileNet-ResNeXt), trained from scratch on BUSI train"}


def backbone_comparison(root: Path) -> dict:
    """Same recipe (train+val, reference + auto rows) per deep backbone; uncalibrated test AUC."""
    out = {}
    for folder in sorted(p for p in root.iterdir() if (p / "reference.npz").exists()):
        ds = DevSet.load(folder)
        ref, n_rad = ds.d, ds.n_rad
        Xt, yt, gt = ds.training_rows()
        tests = {k: test_set(folder, k, ref) for k in ("reference", "auto")}
        y = tests["reference"][1]
        out[folder.name] = {}
        for key in BACKBONE_CONFIGS:
            mode, cname = key.split("/")
            model = fit_model(mode, classifiers()[cname], Xt, yt, gt, n_rad)
            out[folder.name][key] = {k: metrics(y, predict_or_zero(model, tests[k][0])) for k in tests}
        print(folder.name, {k: round(v["auto"]["auc"], 3) for k, v in out[folder.name].items()}, flush=True)
    return out


def plots(out: Path, curves: dict, y: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 4.6))
    for name, p in curves.items():
        fpr, tpr, _ = roc_curve(y, p)
        ax[0].plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y, p):.3f})")
        bins = np.linspace(0, 1, 11)
        idx = np.clip(np.digitize(p, bins[1:-1]), 0, 9)
        xs = [p[idx == b].mean() for b in range(10) if (idx == b).any()]
        ys = [y[idx == b].mean() for b in range(10) if (idx == b).any()]
        ax[1].plot(xs, ys, "o-", label=name)
        th = np.linspace(0.01, 0.6, 60)
        nb = [((p >= t) & (y == 1)).mean() - ((p >= t) & (y == 0)).mean() * t / (1 - t) for t in th]
        ax[2].plot(th, nb, label=name)
    prev = y.mean()
    th = np.linspace(0.01, 0.6, 60)
    ax[2].plot(th, prev - (1 - prev) * th / (1 - th), "k--", label="biopsy all")
    ax[2].axhline(0, color="grey", lw=0.8)
    ax[0].plot([0, 1], [0, 1], "k:")
    ax[1].plot([0, 1], [0, 1], "k:")
    ax[0].set(title="ROC (test split)", xlabel="1 - specificity", ylabel="sensitivity")
    ax[1].set(title="Calibration (10 bins)", xlabel="predicted probability", ylabel="observed malignant rate")
    ax[2].set(title="Decision curve", xlabel="threshold probability", ylabel="net benefit", ylim=(-0.05, 0.4))
    for a in ax:
        a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "classification_curves.png", dpi=90)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", type=Path, default=Path("runs/features"))
    ap.add_argument("--cv", type=Path, default=Path("runs/classification"))
    ap.add_argument("--data", type=Path, default=Path("../shared/data/busi"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--selection-note", default="", help="how backbone and config were chosen (for the report)")
    ap.add_argument("--backbones", type=Path, default=None,
                    help="folder of feature sets, one per deep backbone (features.py with several --deep-model)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    # timed first, in a fresh process: timed after all the fitting below, the same stages read 1.6x slower
    timings = stage_timings(args.data, [r for r in _rows(args) if r["label"] != "normal"])
    ds = DevSet.load(args.features)
    ref, Xd, yd, n_rad = ds.d, ds.X, ds.y, ds.n_rad
    Xt, yt, gt = ds.training_rows()
    oof = np.load(args.cv / "oof.npz")
    shipped = json.loads(Path("BreastCADx/Resources/Models/lesion_cls_fusion.json").read_text())
    shipped_key = f"{shipped['mode']}/{shipped['classifier']}"
    tests = {k: test_set(args.features, k, ref) for k in KINDS}
    y = tests["reference"][1]
    missed = {k: int(np.isnan(tests[k][0]).any(axis=1).sum()) for k in KINDS}
    res: dict = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
                 "test_lesions": int(len(y)), "malignant": int(y.sum()), "shipped": shipped_key,
                 "no_features": missed, "configs": {}, "selection_note": args.selection_note}
    curves = {}
    # the brief's baseline: all radiomics + LR, fitted on reference masks as usually published
    base = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=5000)).fit(Xd[:, :n_rad], yd)
    res["baseline_all_radiomics_LR"] = {k: metrics(y, predict_or_zero(base, np.where(np.isnan(tests[k][0][:, :n_rad]),
                                                                                 np.nan, tests[k][0][:, :n_rad])))
                                        for k in KINDS}
    for mode in MODES:
        for cname, clf in classifiers().items():
            key = f"{mode}/{cname}"
            t0 = time.perf_counter()
            model = fit_model(mode, clf, Xt, yt, gt, n_rad)  # exactly as shipped: reference + auto masks
            cal = fit_platt(*ds.calibration_rows(oof, key))
            entry = {}
            for k in KINDS:
                p = apply_calibration(cal, predict_or_zero(model, tests[k][0]))
                p[np.isnan(tests[k][0]).any(axis=1)] = 0.0  # missed lesion: called normal
                entry[k] = metrics(y, p)
                if key == shipped_key and k in ("reference", "auto", "roi", "expect"):
                    curves[f"shipped {k} masks"] = p
                if key == shipped_key and k == "auto":
                    ok = ~np.isnan(tests[k][0]).any(axis=1)
                    res["shipped_auto_found_auc"] = float(roc_auc_score(y[ok], p[ok]))
            res["configs"][key] = entry
            print(f"{key:16s} " + " ".join(f"{k} {entry[k]['auc']:.3f}" for k in KINDS)
                  + f" ({time.perf_counter() - t0:.0f} s)", flush=True)
    if args.backbones:
        res["backbones"] = backbone_comparison(args.backbones)
    res["timings_seconds"] = timings
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "classification.json").write_text(json.dumps(res, indent=1) + "\n")
    plots(args.out, curves, y)
    (args.out / "classification.md").write_text(markdown(res))
    card_path = Path("BreastCADx/Resources/Models/lesion_cls_fusion.json")
    card = json.loads(card_path.read_text())
    shipped_res = res["configs"][shipped_key]
    card["metrics"] = {"test_split": f"{res['test_lesions']} lesions of training/splits/busi.csv", "date": res["date"],
                       **{f"{k}_masks": {m: shipped_res[k][m] for m in ("auc", "auc_ci95", "accuracy", "sensitivity",
                                                                         "specificity", "ece")} for k in KINDS},
                       "details": "benchmarks/results/classification.md"}
    card_path.write_text(json.dumps(card, indent=1) + "\n")
    print(markdown(res))


def _rows(args) -> list[dict]:
    from training.common import read_split

    return [r for r in read_split(Path("training/splits/busi.csv")) if r["split"] == "test"]


def markdown(res: dict) -> str:
    m = res["machine"]
    s = res["configs"][res["shipped"]]
    b = res["baseline_all_radiomics_LR"]
    t = res["timings_seconds"]
    lines = [
        "# Classification benchmark (benign vs malignant)\n",
        f"Date: {res['date']}  \nMachine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} "
        f"({m['torch_threads']} threads)  \nTest split: {res['test_lesions']} lesions ({res['malignant']} malignant)"
        " from `training/splits/busi.csv` (duplicate-grouped; never used for fitting, selection or calibration).  \n"
        f"Shipped configuration (best mean 5-fold CV AUC with reference and auto masks): "
        f"**{res['shipped']}**. Cases without features "
        f"(auto mask empty): {res['no_features']['auto']} of {res['test_lesions']}, scored as probability 0; "
        f"AUC of the shipped model on the lesions the segmenter found: {res['shipped_auto_found_auc']:.3f}. "
        "`roi` = the segmenter prompted with the reference box + 10 % (the radiologist drags a box), "
        f"{res['no_features']['roi']} without features; `expect` = the segmenter without a box but told the image "
        "has a lesion (`--expect-lesion`, the panel's default: the most probable region is kept, flagged, when "
        f"nothing passes the presence threshold), {res['no_features']['expect']} without features.  \n"
        f"Backbone and configuration were chosen on val rows only: {res.get('selection_note', '')}\n",
        "## Shipped model vs the in-run baseline\n",
        "| masks | model | AUC [95 % CI] | accuracy | sensitivity | specificity | F1 | ECE |",
        "|---|---|---|---|---|---|---|---|"]
    for k in KINDS:
        for name, e in ((res["shipped"], s[k]), ("baseline: all radiomics + LR", b[k])):
            lines.append(f"| {k} | {name} | {e['auc']:.3f} [{e['auc_ci95'][0]:.3f}, {e['auc_ci95'][1]:.3f}] | "
                         f"{e['accuracy']:.3f} | {e['sensitivity']:.3f} | {e['specificity']:.3f} | {e['f1']:.3f} | "
                         f"{e['ece']:.3f} |")
    lines += ["\n## Every fusion mode x classifier (test AUC; ECE with reference masks)\n",
              "| config | reference | auto | eroded 3 px | dilated 3 px | roi box | lesion expected | ECE (ref) |",
              "|---|---|---|---|---|---|---|---|"]
    for key, e in res["configs"].items():
        mark = " **(shipped)**" if key == res["shipped"] else ""
        lines.append(f"| {key}{mark} | " + " | ".join(f"{e[k]['auc']:.3f}" for k in KINDS) +
                     f" | {e['reference']['ece']:.3f} |")
    if res.get("backbones"):
        lines += ["\n## Deep backbones compared (same recipe; test AUC, uncalibrated; auto = shipped segmenter)\n",
                  "| backbone | " + " | ".join(f"{c} ref | {c} auto" for c in BACKBONE_CONFIGS) + " |",
                  "|---|" + "---|---|" * len(BACKBONE_CONFIGS)]
        for name, e in res["backbones"].items():
            lines.append(f"| {BACKBONE_NAMES.get(name, name)} | " + " | ".join(
                f"{e[c]['reference']['auc']:.3f} | {e[c]['auto']['auc']:.3f}" for c in BACKBONE_CONFIGS) + " |")
        lines.append("\nFor the trained CNNs the train rows' deep features are in-sample (the CNN saw those "
                     "images); the test rows never were, so these test numbers are fair. The shipped classifier "
                     "was chosen and calibrated on val rows only for that reason.\n")
    lines += ["\n## Seconds per case, shipped pipeline on this machine (models loaded)\n",
              "| load | segment | radiomics | deep features | classify | Grad-CAM | total | total / radiomics alone |",
              "|---|---|---|---|---|---|---|---|",
              f"| {t['load']:.3f} | {t['segment']:.3f} | {t['radiomics']:.3f} | {t['deep_features']:.3f} | "
              f"{t['classify']:.3f} | {t['gradcam']:.3f} | {t['total_analyze']:.3f} | "
              f"{t['ratio_total_to_radiomics_alone']:.1f}x |",
              f"\n({t['cases']} test cases with a lesion found.) Curves: `classification_curves.png` (ROC, "
              "reliability diagram, decision curve) for the shipped model with reference and auto masks.\n"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
