"""Where the automatic outline loses at a hospital the models never saw, and what was tried against it.

    python -m benchmarks.outline_limits --run runs/three-site-train --manifest runs/three_sites.csv

From a finished `breastcadx train --folds site` run (every site scored by models trained on the other two; test
splits unread; `train_weights.run_rows`): (1) each member's AUC on the automatic outline against the drawn one, by
the automatic outline's Dice; (2) how far the features move between the two outlines of the same lesion; (3) the
candidates for the automatic path, each fitted on two sites and judged at the third, with train's gate against the
shipped design (pipeline.no_worse: the worst held-out site's band of specificity over sensitivity 0.90-1.00, AUC at
most 0.01 lower, no site's band lost beyond noise). The deep features of the crop variants are computed once
(about 4 min on 2 cores) and cached in the run's work folder. Writes benchmarks/results/NAME.md / .json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np

from benchmarks.machine import header, stamp, write_results
from benchmarks.train_weights import run_rows

OUT = Path(__file__).resolve().parent / "results"
DICE_BINS = ((0.0, 0.1), (0.1, 0.5), (0.5, 0.8), (0.8, 1.01))
GROUPS = {"shape": "original_shape2D", "first order": "original_firstorder", "texture": "original_g",
          "lexicon descriptors": "descriptor_"}
ROBUST = 0.7  # Spearman rho between a feature on the drawn and on the automatic outline (training sites)


def crop_variants(run: Path, findings: list) -> dict[str, np.ndarray]:
    """Deep features without the crop's hard mask channel, on each finding's drawn, redrawn and automatic outline:
    "box" (grey x 3) and "soft" (grey, the ROI-blended grey, grey). Cached in the run's work folder."""
    from BreastCADxLib.analysis.deep_features import get_deep_features, roi_crop
    from BreastCADxLib.train.augment import redrawn as redraw
    from BreastCADxLib.train.outlines import cached_outline, cached_passes
    from BreastCADxLib.train.pipeline import on_grid

    work = run / ".work"
    passes = cached_passes(work)
    digest = hashlib.sha256("".join(f.case_id + hashlib.sha256(passes[str(f.image)]).hexdigest()
                                    for f in findings).encode()).hexdigest()
    cache = work / "outline_limits_deep.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            if str(z["digest"]) == digest:
                return {k: z[k] for k in z.files if k != "digest"}
    net = get_deep_features("cpu", "box")

    def soft(image, mask):
        t = roi_crop(image, mask, kind="mask").tensor.clone()
        t[2] = t[0]
        return net.engine(t[None])[0].numpy()

    out = {f"{v}_{o}": [] for v in ("box", "soft") for o in ("reference", "redrawn", "automatic")}
    for i, f in enumerate(findings):
        image, ref = on_grid(f)
        red = np.stack([redraw(p, f.case_id) if p.any() else p for p in ref])
        auto = cached_outline(passes[str(f.image)], ref[0].shape)[None]
        for name, m in (("reference", ref), ("redrawn", red), ("automatic", auto)):
            empty = np.zeros(1280, np.float32)
            out[f"box_{name}"].append(net.features(image, m) if m.any() else empty)
            out[f"soft_{name}"].append(soft(image, m) if m.any() else empty)
        if (i + 1) % 200 == 0:
            print(f"crop variants: {i + 1}/{len(findings)}", flush=True)
    arrays = {k: np.array(v, np.float32) for k, v in out.items()}
    np.savez(cache, digest=digest, **arrays)
    return arrays


def rho(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rho of each column of a with the same column of b (0 for a constant column)."""
    from scipy.stats import rankdata

    ra, rb = rankdata(a, axis=0), rankdata(b, axis=0)
    ra, rb = ra - ra.mean(0), rb - rb.mean(0)
    den = np.sqrt((ra ** 2).sum(0) * (rb ** 2).sum(0))
    return np.where(den > 0, (ra * rb).sum(0) / np.where(den > 0, den, 1), 0.0)


def site_cells(y, p, base, sites, groups, gains: dict | None = None) -> dict:
    """Per held-out site: the candidate's figures, and its band minus the shipped design's on the same patients
    (paired patient bootstrap, 95 % CI; taken from `gains`, the gate's record, where it has them)."""
    from BreastCADxLib.train.pipeline import band_gain_ci, summary

    out = {}
    for s in sorted(set(sites)):
        m = sites == s
        ys, ps, bs = y[m], p[m], base[m]
        r = summary(ys, ps, groups[m])
        out[s] = {k: r[k] for k in ("auc", "specificity_at_0.96", "specificity_at_0.98", "specificity_0.90_1.00")}
        out[s]["cancers_below_5"] = int((ps[ys == 1] < 0.05).sum())
        out[s]["band_gain_ci95"] = (gains or {}).get(s) or band_gain_ci(ys, ps, bs, groups[m])
    return out


def judge_candidates(cands: dict[str, tuple[np.ndarray, str]], y, sites, groups) -> dict:
    """Each candidate ({name: (out-of-fold probability, what)}, "shipped" among them) per held-out site against the
    shipped design, with train's gate (pipeline.no_worse: the worst site's band and AUC, no site's band lost
    beyond noise)."""
    from BreastCADxLib.train.pipeline import no_worse

    base, out = cands["shipped"][0], {}
    for k, (p, what) in cands.items():
        kept, gate = no_worse(y, p, base, sites, groups)
        out[k] = {"what": what, "sites": site_cells(y, p, base, sites, groups, gate.get("per_site_band_gain_ci95")),
                  "passes_gate": kept,
                  "worst_band": gate["candidate"]["specificity_0.90_1.00"], "worst_auc": gate["candidate"]["auc"]}
    return out


def candidate_table(candidates: dict) -> list[str]:
    """judge_candidates as markdown: one row per candidate, a cell per site, and which gain beyond noise."""
    sites = sorted(next(iter(candidates.values()))["sites"])
    lines = ["Cells: AUC / specificity at sensitivity 0.96 / 0.98 / band (mean specificity over sensitivity "
             "0.90-1.00) / cancers below 5 % / the band's gain over the shipped design on the same patients [95 % CI, "
             "paired patient bootstrap].", "",
             "| candidate | " + " | ".join(sites) + " | worst band | worst AUC | passes train's gate |",
             "|---|" + "---|" * len(sites) + "---|---|---|"]
    for k, c in candidates.items():
        cells = " | ".join(f"{v['auc']:.3f} / {v['specificity_at_0.96']:.2f} / {v['specificity_at_0.98']:.2f} / "
                           f"{v['specificity_0.90_1.00']:.2f} / {v['cancers_below_5']} / "
                           f"[{v['band_gain_ci95'][0]:+.2f}, {v['band_gain_ci95'][1]:+.2f}]" for v in
                           (c["sites"][s] for s in sites))
        lines.append(f"| {k}: {c['what']} | {cells} | {c['worst_band']:.3f} | {c['worst_auc']:.3f} | "
                     f"{'yes' if c['passes_gate'] else 'no'} |")
    clear = [k for k, c in candidates.items() if k != "shipped" and c["passes_gate"]
             and all(v["band_gain_ci95"][0] > 0 for v in c["sites"].values())]
    return lines + ["", "Passing the gate and gaining at every site beyond the paired bootstrap's noise (CI above "
                    "0): " + (", ".join(clear) if clear else "none") + "."]


def candidates(r: dict, variants: dict, presence: np.ndarray) -> dict[str, tuple[np.ndarray, str]]:
    """The automatic path's out-of-fold probability under each candidate design (fitted per site fold)."""
    from BreastCADxLib.train.members import fuse
    from BreastCADxLib.train.outlines import with_automatic
    from BreastCADxLib.train.pipeline import DESIGN, _fusion_proba, fit_fusion

    y, ok, splits = r["y"], r["ok"], r["splits"]
    members, weights = {"box": r["box"], "whole": r["whole"]}, r["cv"]["automatic_outlines"]["member_weights"]
    c = DESIGN["US"]["c"]

    def bundle(rad, deep, arad, adeep, red, cols=None) -> np.ndarray:
        p = np.full(len(y), 0.5)
        for tr, te in splits:
            cr, cd = cols(tr) if cols else (slice(None), slice(None))
            fit = fit_fusion(with_automatic(rad[:, cr], deep[:, cd], y, arad[:, cr], adeep[:, cd], ok, tr,
                                            (red[0][:, cr], red[1][:, cd])), c)
            s = te[ok[te]]
            p[s] = _fusion_proba(fit, arad[s][:, cr], adeep[s][:, cd])
        return p

    def robust(tr):  # features that keep their ranking between the two outlines on the training sites
        k = tr[ok[tr]]
        cr = rho(r["rad"][k], r["arad"][k]) >= ROBUST
        cd = rho(r["deep"][k], r["adeep"][k]) >= ROBUST
        return cr, cd if cd.sum() >= 2 else np.argsort(-rho(r["deep"][k], r["adeep"][k]))[:2]

    out = {"shipped": (r["automatic"], "the shipped automatic bundle, members at "
                       + " / ".join(str(w) for w in weights.values()))}
    for v, what in (("box", "deep crop without the mask channel (grey x 3)"),
                    ("soft", "deep crop without the mask channel (grey, blended, grey)")):
        p = bundle(r["rad"], variants[f"{v}_reference"], r["arad"], variants[f"{v}_automatic"],
                   (r["redrawn"][0], variants[f"{v}_redrawn"]))
        out[f"crop {v}"] = (fuse(p, members, weights), what)
    p = bundle(r["rad"], r["deep"], r["arad"], r["adeep"], r["redrawn"], robust)
    out["robust features"] = (fuse(p, members, weights), f"only features with rho >= {ROBUST} between the outlines")
    weak = presence < 0.5
    out["weak outline leans on the image"] = (
        fuse(r["both"], members, {"box": np.where(weak, 0.3, weights["box"]), "whole": np.where(weak, 0.7,
                                                                                                 weights["whole"])}),
        "presence score < 0.5: box 0.3, whole image 0.7")
    shipped = out["shipped"][0]
    out["features floor"] = (np.maximum(shipped, 0.3 * r["both"]), "at least 0.3 x the features' probability")
    return out


def presence_scores(work: Path, findings: list) -> np.ndarray:
    """Each finding image's presence score from its held-out segmenter fold."""
    from BreastCADxLib.train.segmenter import judged_rows

    judged = {x["image"]: x["score"] for x in judged_rows(work)}
    return np.array([judged[str(f.image)] for f in findings])


def main() -> None:
    from sklearn.metrics import roc_auc_score

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a finished `breastcadx train --folds site` folder")
    ap.add_argument("--manifest", type=Path, required=True, help="the manifest it was trained on")
    ap.add_argument("--name", default="outline_limits")
    args = ap.parse_args()
    report = stamp()
    r = run_rows(args.run, args.manifest)
    work = args.run / ".work"
    findings, y, sites, groups = r["findings"], r["y"], r["sites"], r["groups"]
    dice = r["dice"]
    names = json.loads((args.run / "lesion_cls_fusion_auto.json").read_text())["radiomics_names"]
    auto = {"fused": r["automatic"], "features": r["both"], "box member": r["box"], "whole image": r["whole"]}
    drawn = {"features": np.asarray(r["cv"]["oof"]["fusion"]), "box member": np.asarray(r["cv"]["oof"]["box_cnn"])}
    bins = {}
    for s in sorted(set(sites)):
        bins[s] = []
        for lo, hi in DICE_BINS:
            m = (sites == s) & (dice >= lo) & (dice < hi)
            row = {"dice": [lo, min(hi, 1.0)], "n": int(m.sum()), "malignant": int(y[m].sum())}
            if len(set(y[m].tolist())) == 2:
                row.update({f"auto {k}": float(roc_auc_score(y[m], p[m])) for k, p in auto.items()})
                row.update({f"drawn {k}": float(roc_auc_score(y[m], p[m])) for k, p in drawn.items()})
            bins[s].append(row)
    good = r["ok"] & (dice >= 0.8)
    moves = {g: float(np.median(rho(r["rad"][good][:, c], r["arad"][good][:, c])))
             for g, pre in GROUPS.items() if (c := np.array([n.startswith(pre) for n in names])).any()}
    dr = rho(r["deep"][good], r["adeep"][good])
    moves.update({"deep (crop with mask channel)": float(np.median(dr))})
    variants = crop_variants(args.run, findings)
    for v in ("box", "soft"):
        moves[f"deep ({v} crop)"] = float(np.median(rho(variants[f"{v}_reference"][good],
                                                        variants[f"{v}_automatic"][good])))
    report["robust_deep_dims"] = int((dr >= ROBUST).sum())
    cands = candidates(r, variants, presence_scores(work, findings))
    report.update(run=str(args.run), findings=len(y), dice_bins=bins, feature_rho_dice_08=moves,
                  candidates=judge_candidates(cands, y, sites, groups))
    write_results(OUT, args.name, report, markdown(report, args))


def markdown(report: dict, args) -> str:
    lines = header("Where the automatic outline loses at a held-out site, and what was tried", report,
                   f"Made by `python -m benchmarks.outline_limits --run {args.run} --manifest {args.manifest}`: "
                   f"{report['findings']} findings of three sites, each site scored by models trained on the other "
                   "two (the run's out-of-fold record); test splits unread.")
    lines += ["", "## 1. AUC by the automatic outline's Dice (each site held out)", "",
              "| site | Dice | lesions (malignant) | auto: fused | features | box member | whole image | "
              "drawn outline: features | box member |", "|---|---|---|---|---|---|---|---|---|"]
    cols = ("auto fused", "auto features", "auto box member", "auto whole image", "drawn features", "drawn box member")
    for s, rows in report["dice_bins"].items():
        for b in rows:
            cells = " | ".join(f"{b[c]:.3f}" if c in b else "-" for c in cols)
            lines.append(f"| {s} | {b['dice'][0]:.1f}-{b['dice'][1]:.1f} | {b['n']} ({b['malignant']}) | {cells} |")
    lines += ["", "## 2. How far the features move between the drawn and the automatic outline of the same lesion",
              "", "Median Spearman rho over the features of each group, lesions whose automatic outline has Dice "
              f">= 0.8 ({report['robust_deep_dims']} of the 1280 deep features (mask-channel crop) keep rho >= "
              f"{ROBUST}):", "",
              "| features | median rho |", "|---|---|"]
    lines += [f"| {g} | {v:.2f} |" for g, v in report["feature_rho_dice_08"].items()]
    lines += ["", "## 3. Candidates for the automatic path (fitted on two sites, judged at the third)", ""]
    lines += candidate_table(report["candidates"])
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
