"""`breastcadx train --from`: a hospital adjusts a set with about 100 of its own cases. Does it beat the set as it
is, and a set trained on those cases alone, on that hospital's other patients?

    python -m benchmarks.train_from [--busuclm ../data/busuclm] [--local 100]

The source set is made by `breastcadx train` on BUSI + BUS-BRA L5 (non-test lesions, reference outlines); the
hospital is BUS-UCLM, which the source never saw: its non-test lesions split by patient into about --local cases
(the set is adjusted with them: `--from`) and the rest (judged). All three sets see the reference outline. Wall
time per stage and peak memory are reported for the source and for the 100-case fine-tune. Test splits are not read.
Writes benchmarks/results/train_from.md/json.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.machine import header, stamp, write_results
from BreastCADxLib.results.evaluation import auc_ci, specificity_at
from BreastCADxLib.train.pipeline import Finding, features, train
from training.data import add_data_args, cases, draw_patients

OUT = Path(__file__).resolve().parent / "results"
SOURCE_SITES = ("busi", "busbra_l5")
HOSPITAL = "busuclm"


def write_manifest(path: Path, rows: list) -> Path:
    lines = ["case_id,image,label,patient,mask"]
    lines += [f"{c.site}_{c.case},{c.image.resolve()},{c.label},{c.site}_{c.group},{c.mask.resolve()}" for c in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_args(ap)
    ap.add_argument("--local", type=int, default=100, help="the hospital's cases the set is adjusted with")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, help="keep the sets and feature caches here (default: a temporary folder)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    report = {**stamp(), "seed": args.seed}
    source_rows = cases(args, SOURCE_SITES, ("train", "val"), lesions_only=True)
    local, judged = draw_patients(cases(args, [HOSPITAL], ("train", "val"), lesions_only=True), args.local,
                                  np.random.default_rng(args.seed))
    from BreastCADxLib.analysis.classifier import load_classifier

    with tempfile.TemporaryDirectory() as tmp:
        t = args.work or Path(tmp)
        t.mkdir(parents=True, exist_ok=True)
        runs = {}
        for name, manifest, start in (
                ("source", write_manifest(t / "source.csv", source_rows), None),
                ("from_source", write_manifest(t / "local.csv", local), "source"),
                ("local_only", t / "local.csv", None)):
            t0 = time.perf_counter()
            cv = train(manifest, "US", t / name, device="cpu", start_from=str(t / start) if start else None)
            runs[name] = {"seconds": round(time.perf_counter() - t0, 1), "stage_seconds": cv["stage_seconds"],
                          "peak_rss_mb": cv["peak_rss_mb"], "cv": {k: {kk: v[kk] for kk in ("auc", "ci95")}
                                                                   for k, v in cv["models"].items()}}
        findings = [Finding(f"{c.site}_{c.case}", c.image, int(c.malignant), f"{c.site}_{c.group}", c.mask)
                    for c in judged]
        rows = features(findings, t / "judged", "cpu", float("inf"), lambda m: None)
        rad = np.array([rows[f.case_id]["rad"] for f in findings])
        deep = np.array([rows[f.case_id]["deep"] for f in findings], float)
        y = np.array([f.label for f in findings])
        groups = np.array([f.patient for f in findings])
        judged_scores = {}
        for name in runs:
            p = load_classifier("lesion_cls_fusion", t / name).raw_proba(rad, deep)[0]
            judged_scores[name] = {**auc_ci(y, p, groups), "specificity_at_0.96": specificity_at(y, p, 0.96)}
    report.update(runs=runs, judged=judged_scores, local={"findings": len(local),
                                                          "patients": len({c.group for c in local}),
                                                          "malignant": sum(c.malignant for c in local)},
                  judged_set={"findings": len(judged), "patients": len({c.group for c in judged}),
                              "malignant": int(sum(c.malignant for c in judged))},
                  loadavg_1min_end=os.getloadavg()[0])
    head = header("breastcadx train --from: a new hospital adjusts a set with its own cases", report,
                  f"Made by `python -m benchmarks.train_from --local {args.local}`; source set: `breastcadx train` on "
                  f"{' + '.join(SOURCE_SITES)} non-test lesions ({len(source_rows)}); hospital {HOSPITAL}, never seen "
                  f"by the source: {report['local']['findings']} lesions of {report['local']['patients']} patients "
                  f"({report['local']['malignant']} malignant) adjust it, {report['judged_set']['findings']} lesions "
                  f"of {report['judged_set']['patients']} other patients ({report['judged_set']['malignant']} "
                  "malignant) judge it. Reference outlines; 95 % CIs by patient bootstrap.")
    lines = ["", "On the hospital's other patients:", "", "| set | AUC [95 % CI] | specificity at sensitivity 0.96 |",
             "|---|---|---|"]
    names = {"source": "the source set as it is", "from_source": "`--from` the source with the local cases",
             "local_only": "the local cases alone"}
    for k, r in judged_scores.items():
        lines.append(f"| {names[k]} | {r['auc']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] | "
                     f"{r['specificity_at_0.96']:.2f} |")
    lines += ["", "Wall time per stage on this machine (s) and peak resident memory:", "",
              "| set | manifest | features | cross-validation | model set | total | peak memory (process so far) |",
              "|---|---|---|---|---|---|---|"]
    for k, r in runs.items():
        s = r["stage_seconds"]
        lines.append(f"| {names[k]} | {s.get('manifest', 0):.1f} | {s.get('features', 0):.1f} | "
                     f"{s.get('cross-validation', 0):.1f} | {s.get('model set', 0):.1f} | {r['seconds']:.0f} | "
                     f"{r['peak_rss_mb']:.0f} MB |")
    write_results(args.out, "train_from", report, "\n".join(head + lines) + "\n")


if __name__ == "__main__":
    main()
