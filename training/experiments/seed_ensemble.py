"""A box member made of two networks (another seed averaged in, mean logit): a candidate of the generalisation
issue, judged at each held-out site of a `breastcadx train --folds site` run.

    PYTHONPATH=. python -m training.experiments.seed_ensemble --run runs/w/three-site-train \
        --manifest runs/three_sites.csv --folds 1 [--seed 101] [--out runs/seed_ensemble] [--max-minutes 120]

For each fold asked for whose box member the run has trained and scored (member_box_fold<k>: fit.json,
scored.json), a second box member is trained exactly as train's members stage trains it (same findings, epochs,
scanner augmentation, ImageNet start) with another seed, and scored on the fold's held-out findings through the
product's scorer on their drawn outlines. Reported per held-out site: the run's member, the new one, and their
mean logit (AUC with patient-bootstrap CI, specificity at sensitivity 0.96 / 0.98, the band 0.90-1.00, cancers
below 5 %), and the ensemble's paired patient-bootstrap CI of the band's and the AUC's change. Drawn outlines
only: the automatic path needs the run's segmenter folds. Resumable (checkpoints per epoch in --out); nothing of
the run is changed. Writes benchmarks/results/seed_ensemble.md / .json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.machine import header, stamp, write_results

OUT = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def fold_scores(run: Path, manifest: Path, fold: int, seed: int, work: Path, deadline: float) -> dict:
    """{case_id: (label, patient, site, the run's P, the new seed's P)} of one fold's held-out findings."""
    from BreastCADxLib.analysis.registry import choose_device
    from BreastCADxLib.train import members as mem
    from BreastCADxLib.train.pipeline import read_manifest

    src = run / ".work" / f"member_box_fold{fold}"
    spec = json.loads((src / "fit.json").read_text())["run"]
    base = json.loads((src / "scored.json").read_text())
    if spec["init"] is not None or spec.get("site_balanced"):
        raise SystemExit(f"{src}: not the members stage's plain fold (from a set, or site-balanced)")
    findings = read_manifest(manifest)[0]
    by_id = {f.case_id: f for f in findings}
    train_f = [by_id[k] for k in spec["images"]]
    test_f = [by_id[k] for k in base]
    folder = work / f"member_box_fold{fold}_seed{seed}"
    scored = folder / "scored.json"
    if not scored.is_file():
        dev = choose_device("cpu")
        weights = mem.fit(mem.member_images(train_f), folder, "box", epochs=spec["epochs"], device=dev,
                          deadline=deadline, say=lambda m: print(m, flush=True), label=f"seed {seed} fold {fold}",
                          seed=seed, scanner_aug=spec.get("scanner_aug", 0.0))
        p = mem.score("box", weights, mem.member_images(test_f), dev)
        scored.write_text(json.dumps({f.case_id: float(q) for f, q in zip(test_f, p)}))
    new = json.loads(scored.read_text())
    return {k: (by_id[k].label, by_id[k].patient, by_id[k].site, base[k], new[k]) for k in base}


def mean_logit(a, b) -> np.ndarray:
    from scipy.special import expit

    from BreastCADxLib.analysis.calibration import logit  # clipped to [1e-6, 1 - 1e-6]

    return expit(0.5 * (logit(a) + logit(b)))


def judge(rows: dict) -> dict:
    """Per held-out site: each scoring's summary, cancers below 5 %, and the ensemble's paired changes."""
    from sklearn.metrics import roc_auc_score as auc

    from BreastCADxLib.analysis.values import LOW_SCORE
    from BreastCADxLib.results.evaluation import group_bootstrap
    from BreastCADxLib.train.pipeline import band_gain_ci, summary

    out = {}
    for site in sorted({r[2] for r in rows.values()}):
        keys = [k for k, r in rows.items() if r[2] == site]
        y = np.array([rows[k][0] for k in keys])
        groups = np.array([rows[k][1] for k in keys])
        base, new = (np.array([rows[k][i] for k in keys]) for i in (3, 4))
        both = mean_logit(base, new)
        cells = {name: {**summary(y, p, groups), "cancers_below_5": int(((p < LOW_SCORE) & (y == 1)).sum())}
                 for name, p in (("run", base), ("seed", new), ("ensemble", both))}

        def auc_gain(i, y=y, both=both, base=base):
            return np.nan if len(set(y[i].tolist())) < 2 else auc(y[i], both[i]) - auc(y[i], base[i])

        out[site] = {"findings": len(keys), "malignant": int(y.sum()), **cells,
                     "band_gain_ci": list(band_gain_ci(y, both, base, groups)),
                     "auc_gain_ci": list(group_bootstrap(groups, auc_gain, n=500))}
    return out


def table(report: dict) -> list[str]:
    lines = ["| held out | findings (malignant) | scoring | AUC [95 % CI] | spec 0.96 / 0.98 | band | cancers < 5 % |",
             "|---|---|---|---|---|---|---|"]
    for site, r in report.items():
        for name, label in (("run", "the run's box member"), ("seed", "another seed"),
                            ("ensemble", "both, mean logit")):
            c = r[name]
            lines.append(f"| {site} | {r['findings']} ({r['malignant']}) | {label} | {c['auc']:.3f} "
                         f"[{c['ci95'][0]:.3f}, {c['ci95'][1]:.3f}] | {c['specificity_at_0.96']:.2f} / "
                         f"{c['specificity_at_0.98']:.2f} | {c['specificity_0.90_1.00']:.2f} | "
                         f"{c['cancers_below_5']} |")
    lines += ["", "Paired patient-bootstrap 95 % CI of the ensemble's change against the run's member:", "",
              "| held out | AUC | band |", "|---|---|---|"]
    lines += [f"| {s} | [{r['auc_gain_ci'][0]:+.3f}, {r['auc_gain_ci'][1]:+.3f}] | "
              f"[{r['band_gain_ci'][0]:+.2f}, {r['band_gain_ci'][1]:+.2f}] |" for s, r in report.items()]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--folds", default="1,2,3", help="which folds (1-based), where the run has scored them")
    ap.add_argument("--seed", type=int, default=101)
    ap.add_argument("--out", type=Path, default=Path("runs/seed_ensemble"))
    ap.add_argument("--max-minutes", type=float, default=0.0)
    args = ap.parse_args()
    deadline = time.time() + 60 * args.max_minutes if args.max_minutes else float("inf")
    rows: dict = {}
    folds = [int(k) for k in args.folds.split(",")]
    for k in folds:
        if (args.run / ".work" / f"member_box_fold{k}" / "scored.json").is_file():
            rows.update(fold_scores(args.run, args.manifest, k, args.seed, args.out, deadline))
        else:
            print(f"fold {k}: the run has not scored its box member yet; left out")
    report = judge(rows)
    cmd = ("PYTHONPATH=. python -m training.experiments.seed_ensemble --run " f"{args.run} --manifest {args.manifest}"
           f" --folds {args.folds} --seed {args.seed}")
    report = {**stamp(), "command": cmd, "sites": report}
    md = [*header("A box member of two seeds at each held-out site (drawn outlines)", report, f"Made by `{cmd}`."),
          "",
          f"Each held-out site's findings scored by box members trained on the other two sites, as `train`'s "
          f"members stage trains them: the run's (seed = fold), one more with seed {args.seed}, and both "
          "(mean logit; the scorer's six views each). Non-test rows.", "", *table(report["sites"])]
    write_results(OUT, "seed_ensemble", report, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
