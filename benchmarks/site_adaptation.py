"""Adapting at a new hospital (`breastcadx adapt`): how many labelled cases does a site need, and what do they buy?

    python -m benchmarks.site_adaptation

Each site is "the new hospital" for a model set that never saw it, through the product's own per-case outputs
(benchmarks.held_out_site rows: automatic outlines with a lesion expected, non-test roles) and segmenter passes
(training.segmentation.site_pass):
- BUS-UCLM (C) for the two-site set (classification and presence);
- BUS-BRA L5 (B) for the busi-only set (classification and the ultrasonographer's BI-RADS; no lesion-free views);
- BUSI (A) for the held-out-busi set (the three-site design trained on B+C: classification and presence).
For n = 25, 50, 100 labelled cases drawn by patient (20 draws), `results.adapt.fit_profile` is fitted on the draw
and the rest of the site is scored: ECE, sensitivity / specificity at the biopsy threshold asked at 0.98, against
no adaptation (the set's "4A or above", > 2 %) and the oracle (the threshold chosen on the scored cases themselves);
presence: lesions found and false lesions at the fitted threshold against the set's own; on L5 the reader rule
against the reader alone (BI-RADS >= 4). Writes benchmarks/results/site_adaptation.md/json.

    python -m benchmarks.site_adaptation --run runs/three-site-train --manifest runs/three_sites.csv

does the same for the shipped design from a finished `breastcadx train --folds site` run: every site is the new
hospital for the models trained on the other two (its out-of-fold record: the automatic-outline bundle fused with
the members at the run's weights, lesion expected; presence scores of the segmenter fold that never saw the site;
the set's presence threshold is the run's). Writes site_adaptation_three_site.md/json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from benchmarks.machine import header, machine, write_results
from BreastCADxLib.analysis.calibration import apply_calibration, expected_calibration_error
from BreastCADxLib.analysis.segmentation import presence_score
from BreastCADxLib.analysis.site import READER_BIOPSY_LEVEL, combined
from BreastCADxLib.results.adapt import PLATT_PRIOR, AdaptError, SiteCase, fit_presence, fit_profile, found
from BreastCADxLib.results.evaluation import specificity_at
from training.data import draw_patients

OUT = Path(__file__).resolve().parent / "results"
SIZES = (25, 50, 100)
DRAWS = 20
SENSITIVITY = 0.98
SET_PRESENCE = 0.97  # the shipped sets' presence threshold
ROWS = {"busuclm": ("two-site", OUT / "held_out_site__two-site__busuclm__train+val.json"),
        "busbra_l5": ("busi-only", OUT / "held_out_site__busi-only__busbra_l5__train+val.json"),
        "busi": ("held-out-busi", OUT / "held_out_site__held-out-busi__busi__train+val.json")}
PASSES = {"busuclm": Path("runs/site_pass/two-site__busuclm__train+val.npz"),
          "busi": Path("runs/site_pass/seg_BC__busi__train+val.npz")}
L5_LEVEL = {"2": 2.0, "3": 3.0, "4": 4.33, "5": 5.0}


def classification_cases(site: str, busbra: Path) -> tuple[list[SiteCase], int]:
    """Lesions with the set's probability on its automatic outline (lesion expected); (cases, not classified)."""
    rows = json.loads(ROWS[site][1].read_text())["rows"]
    reader = reader_levels(busbra) if site == "busbra_l5" else {}
    lesions = [r for r in rows if r["label"] in ("benign", "malignant")]
    out = [SiteCase(r["case"], int(r["label"] == "malignant"), r["group"], float(r["expect_p"]), "auto", None,
                    reader.get(r["case"])) for r in lesions if r.get("expect_p") is not None]
    return out, len(lesions) - len(out)


def presence_cases(site: str) -> list[SiteCase]:
    """Every image of a segmenter pass over the site: its presence score and whether it holds a lesion."""
    from training.segmentation.site_pass import BASE_POSTPROCESSING, load_pass

    split = {r["case"]: r for r in csv.DictReader(open(Path("training/splits") / f"{site}.csv", newline=""))}
    post = BASE_POSTPROCESSING
    out = []
    for case, r in load_pass(PASSES[site]).items():
        prob = r["prob"]
        label = split[case]["label"]
        out.append(SiteCase(case, None if label == "normal" else int(label == "malignant"), split[case]["group"],
                            None, "auto", presence_score(prob, post["threshold"], post["min_area_fraction"]), None))
    return out


def reader_levels(busbra: Path, prefix: str = "") -> dict[str, float]:
    """The ultrasonographer's BI-RADS of each L5 case (on READER_LEVELS), keyed prefix + case_id."""
    with open(busbra / "manifest.csv", newline="") as f:
        return {prefix + r["case_id"]: L5_LEVEL[r["birads"].strip()] for r in csv.DictReader(f)}


def run_sources(run: Path, manifest: Path, busbra: Path) -> tuple[dict, dict, float]:
    """From a `--folds site` run's out-of-fold record: {site: (label, lesion cases, not classified)}, {site:
    (label, presence cases)} for the sites with lesion-free images, and the set's presence threshold."""
    from benchmarks.train_weights import run_rows
    from BreastCADxLib.train.segmenter import judged_rows

    r = run_rows(run, manifest)
    p = r["automatic"]
    reader = reader_levels(busbra, "busbra_l5_")
    cls = {}
    for s in sorted(set(r["sites"])):
        idx = np.flatnonzero(r["sites"] == s)
        cases = [SiteCase(r["findings"][i].case_id, int(r["y"][i]), r["groups"][i], float(p[i]), "auto", None,
                          reader.get(r["findings"][i].case_id)) for i in idx if r["ok"][i]]
        cls[s] = ("held out of the run", cases, int((~r["ok"][idx]).sum()))
    judged = judged_rows(run / ".work")
    pres = {}
    for s in sorted({x["site"] for x in judged if not x["finding"]}):
        pres[s] = ("the run's fold", [SiteCase(x["image"], 1 if x["finding"] else None, x["patient"], None, "auto",
                                               x["score"], None) for x in judged if x["site"] == s])
    post = json.loads((run / "lesion_seg_lite0.json").read_text())["postprocessing"]
    return cls, pres, float(post["presence"])


def draw(cases: list[SiteCase], n: int, rng) -> tuple[list[SiteCase], list[SiteCase]]:
    """Whole patients in random order until n cases; (drawn, rest)."""
    return draw_patients(cases, n, rng)


def score_classification(cases: list[SiteCase], n: int, seed: int) -> dict:
    drawn, rest = draw(cases, n, np.random.default_rng(seed))
    y = np.array([c.label for c in rest])
    p = np.array([c.probability for c in rest])
    out = {"n_fit": len(drawn), "malignant_fit": sum(c.label for c in drawn), "n_scored": len(rest),
           "auc": float(roc_auc_score(y, p)), "ece_before": expected_calibration_error(p, y),
           "sens_4a": float((p > 0.02)[y == 1].mean()), "spec_4a": float(1 - (p > 0.02)[y == 0].mean()),
           "oracle_spec": specificity_at(y, p, SENSITIVITY)}
    try:
        body, _ = fit_profile(drawn, sensitivity=SENSITIVITY, n_boot=0, seed=seed)
    except AdaptError as e:
        return {**out, "refused": str(e)[:160]}
    cal = body["calibration"]["auto"]
    after = apply_calibration(cal["fit"], p)
    pos = after >= body["biopsy"]["threshold"]
    by_cv, _ = fit_profile(drawn, sensitivity=SENSITIVITY, n_boot=0, seed=seed, calibration="cv")
    out.update(ece_after_cv=expected_calibration_error(apply_calibration(by_cv["calibration"]["auto"]["fit"], p), y),
               ece_floor=ece_floor(p, y, seed))
    out.update(method=cal["method"], ece_after=expected_calibration_error(after, y),
               sens_site=float(pos[y == 1].mean()), spec_site=float(1 - pos[y == 0].mean()))
    rule = body.get("reader_rule")
    read = np.array([c.reader is not None for c in rest])
    if rule and read.all():
        level = np.array([c.reader for c in rest])
        reader_pos = level >= READER_BIOPSY_LEVEL
        comb_pos = combined(rule, level, after) >= rule["threshold"]
        out.update(reader_sens=float(reader_pos[y == 1].mean()), reader_spec=float(1 - reader_pos[y == 0].mean()),
                   comb_sens=float(comb_pos[y == 1].mean()), comb_spec=float(1 - comb_pos[y == 0].mean()))
    return out


def ece_floor(p: np.ndarray, y: np.ndarray, seed: int) -> float:
    """The ECE a perfectly calibrated model would show on these scored cases: Platt fitted on them (the oracle),
    the labels drawn from its probabilities. Below this, an ECE target cannot be told from noise."""
    from BreastCADxLib.analysis.calibration import fit_platt

    q = apply_calibration(fit_platt(np.clip(p, 0.002, 0.998), y), p)
    return expected_calibration_error(q, (np.random.default_rng(seed).random(len(q)) < q).astype(float))


def score_presence(cases: list[SiteCase], n: int, seed: int, default: float = SET_PRESENCE) -> dict:
    drawn, rest = draw(cases, n, np.random.default_rng(seed))
    les = np.array([c.presence_score for c in drawn if c.label is not None])
    free = np.array([c.presence_score for c in drawn if c.label is None])
    rl = np.array([c.presence_score for c in rest if c.label is not None])
    rf = np.array([c.presence_score for c in rest if c.label is None])
    out = {"n_fit": len(drawn), "lesion_free_fit": len(free), "found_default": float(found(rl, default).mean()),
           "false_default": float(found(rf, default).mean())}
    if len(free) < 10 or len(les) < 20:
        return {**out, "refused": f"{len(les)} lesion and {len(free)} lesion-free images"}
    t = fit_presence(les, free, 0.95)["threshold"]
    return {**out, "threshold": t, "found_site": float(found(rl, t).mean()), "false_site": float(found(rf, t).mean())}


def normal_fit_threshold(p_malignant: np.ndarray, sensitivity: float) -> float:
    """The alternative to the empirical quantile: a normal fit on the malignant logits."""
    from scipy.stats import norm

    from BreastCADxLib.analysis.calibration import logit

    z = logit(p_malignant)
    return float(1 / (1 + np.exp(-(z.mean() - norm.ppf(sensitivity) * z.std(ddof=1)))))


def threshold_rules(cases: list[SiteCase], n: int, seed: int) -> dict | None:
    """Sensitivity / specificity on the rest for each candidate biopsy-threshold rule (raw probabilities)."""
    from BreastCADxLib.results.adapt import threshold_at_sensitivity

    drawn, rest = draw(cases, n, np.random.default_rng(seed))
    yd = np.array([c.label for c in drawn])
    if yd.sum() < 10:
        return None
    pm = np.array([c.probability for c in drawn])[yd == 1]
    y = np.array([c.label for c in rest])
    p = np.array([c.probability for c in rest])
    emp, fit = threshold_at_sensitivity(pm, SENSITIVITY), normal_fit_threshold(pm, SENSITIVITY)
    out = {}
    for name, t in (("empirical quantile (shipped)", emp), ("normal fit", fit), ("lower of the two", min(emp, fit))):
        out[name] = (float((p >= t)[y == 1].mean()), float(1 - (p >= t)[y == 0].mean()))
    return out


def med(rows: list[dict], key: str) -> str:
    v = [r[key] for r in rows if key in r]
    return f"{np.median(v):.2f}" if v else "-"


def sources(args) -> tuple[dict, dict, float, str]:
    """The cases each table is made of: the held_out_site rows and site passes, or a train run's record."""
    if args.run:
        cls, pres, presence = run_sources(args.run, args.manifest, args.busbra)
        return cls, pres, presence, "site_adaptation_three_site"
    cls = {}
    for site, (model_set, _) in ROWS.items():
        cases, unclassified = classification_cases(site, args.busbra)
        cls[site] = (model_set, cases, unclassified)
    pres = {site: (path.name.split("__")[0], presence_cases(site) if path.exists() else None)
            for site, path in PASSES.items()}
    return cls, pres, SET_PRESENCE, "site_adaptation"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--busbra", type=Path, default=Path("../shared/data/busbra_l5"))
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--run", type=Path, help="a finished `breastcadx train --folds site` folder (its record)")
    ap.add_argument("--manifest", type=Path, help="the manifest that run was trained on (with --run)")
    args = ap.parse_args()
    if bool(args.run) != bool(args.manifest):
        ap.error("--run and --manifest go together")
    t0 = time.perf_counter()
    report = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
              "loadavg_1min": os.getloadavg()[0], "sensitivity_asked": SENSITIVITY, "draws": DRAWS,
              "classification": {}, "presence": {}}
    cls, pres, presence, name = sources(args)
    report["set_presence"] = presence
    lines = ["## Classification: automatic outlines, lesion expected (median over draws)", "",
             "| site (set) | n drawn | refused | method | ECE before | ECE after | ECE after, method chosen by CV "
             "| ECE noise floor | sens / spec at 4A (no adaptation) | sens / spec at the site threshold | oracle spec "
             "at 0.98 | reader sens / spec | reader + BreastCADx sens / spec |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for site, (model_set, cases, unclassified) in cls.items():
        report["classification"][site] = {"model_set": model_set, "lesions": len(cases),
                                          "not_classified": unclassified, "by_n": {}}
        for n in SIZES:
            rows = [score_classification(cases, n, seed) for seed in range(DRAWS)]
            report["classification"][site]["by_n"][n] = rows
            ok = [r for r in rows if "refused" not in r]
            methods = [r["method"] for r in ok]
            lines.append(
                f"| {site} ({model_set}) | {n} | {len(rows) - len(ok)}/{len(rows)} | "
                f"{max(set(methods), key=methods.count) if methods else '-'} | {med(rows, 'ece_before')} | "
                f"{med(ok, 'ece_after')} | {med(ok, 'ece_after_cv')} | {med(ok, 'ece_floor')} | "
                f"{med(rows, 'sens_4a')} / {med(rows, 'spec_4a')} | "
                f"{med(ok, 'sens_site')} / {med(ok, 'spec_site')} | {med(rows, 'oracle_spec')} | "
                f"{med(ok, 'reader_sens')} / {med(ok, 'reader_spec')} | {med(ok, 'comb_sens')} / "
                f"{med(ok, 'comb_spec')} |")
    lines += ["", f"Method: the profile's calibration rule (`adapt --calibration`; default Platt toward the "
              f"identity, prior {PLATT_PRIOR:g}, chosen on draws 100-119; the rows are draws 0-{DRAWS - 1}). "
              "Chosen by CV: none, Platt or isotonic by cross-validated log loss (the rule before 2026-12-06). "
              "Noise floor: the ECE a perfectly calibrated model shows on the same scored cases (Platt fitted on "
              "them, labels drawn from it): an ECE target below it cannot be told from chance."]
    lines += ["", "## The biopsy threshold's rule (sensitivity / specificity on the rest, median over draws)", "",
              "| site | n drawn | empirical quantile (shipped) | normal fit on the malignant logits | lower of both |",
              "|---|---|---|---|---|"]
    for site, (_, cases, _) in cls.items():
        for n in (50, 100):
            got = [r for r in (threshold_rules(cases, n, seed) for seed in range(DRAWS)) if r]
            cells = [f"{np.median([g[k][0] for g in got]):.2f} / {np.median([g[k][1] for g in got]):.2f}"
                     for k in got[0]]
            lines.append(f"| {site} | {n} | " + " | ".join(cells) + " |")
    lines += ["", "## Presence (default path, no lesion expected; median over draws)", "",
              f"| site (segmenter) | n drawn | refused | lesions found / false lesions at the set's {presence:.4g} | "
              "at the fitted threshold (asked: find 0.95) | fitted threshold |", "|---|---|---|---|---|---|"]
    for site, (segmenter, cases) in pres.items():
        if cases is None:
            lines.append(f"| {site} | - | pass {PASSES[site]} missing | | | |")
            continue
        report["presence"][site] = {"segmenter": segmenter, "images": len(cases), "by_n": {}}
        for n in SIZES:
            rows = [score_presence(cases, n, seed, presence) for seed in range(DRAWS)]
            report["presence"][site]["by_n"][n] = rows
            ok = [r for r in rows if "refused" not in r]
            lines.append(f"| {site} ({segmenter}) | {n} | {len(rows) - len(ok)}/{len(rows)} | "
                         f"{med(rows, 'found_default')} / {med(rows, 'false_default')} | "
                         f"{med(ok, 'found_site')} / {med(ok, 'false_site')} | {med(ok, 'threshold')} |")
    lines += ["", "## Targets (50 labelled cases, median over draws)", ""]
    for site, r in report["classification"].items():
        ok = [x for x in r["by_n"][50] if "refused" not in x]
        if not ok:
            continue
        m = {k: float(np.median([x[k] for x in ok if k in x])) for k in ok[0] if isinstance(ok[0][k], float)}
        better = "comb_spec" in m and m["comb_spec"] >= m["reader_spec"] + 0.1 and m["comb_sens"] >= m["reader_sens"]
        lines.append(f"- {site}: ECE after {m['ece_after']:.3f} (target <= 0.05: "
                     f"{'met' if m['ece_after'] <= 0.05 else 'not met'}; a perfectly calibrated model would show "
                     f"{m['ece_floor']:.3f} on these cases); sensitivity at the site threshold "
                     f"{m['sens_site']:.2f} (>= 0.95: {'met' if m['sens_site'] >= 0.95 else 'not met'}), specificity "
                     f"{m['spec_site']:.2f} against the oracle's {m['oracle_spec']:.2f} (within 0.05: "
                     f"{'met' if m['spec_site'] >= m['oracle_spec'] - 0.05 else 'not met'})"
                     + (f"; reader + BreastCADx {m['comb_sens']:.2f} / {m['comb_spec']:.2f} against the reader's "
                        f"{m['reader_sens']:.2f} / {m['reader_spec']:.2f} (specificity +0.10 at no loss of "
                        f"sensitivity: {'met' if better else 'not met'})"
                        if "comb_spec" in m else "") + ".")
    report["seconds"] = time.perf_counter() - t0
    report["loadavg_1min_end"] = os.getloadavg()[0]
    made = (f"Made by `python -m benchmarks.site_adaptation --run {args.run} --manifest {args.manifest}` (the run's "
            "out-of-fold record, each site held out; no model runs here)." if args.run else
            "Made by `python -m benchmarks.site_adaptation` (per-case outputs of benchmarks.held_out_site and "
            "the site passes; no model runs here).")
    head = header("Site adaptation: labelled cases at a new hospital", report, made)
    write_results(args.out, name, report, "\n".join(head + [""] + lines) + "\n")


if __name__ == "__main__":
    main()
