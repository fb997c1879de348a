"""`breastcadx adapt --fine-tune` at a hospital the set never saw, through the product's own commands.

    python -m benchmarks.adapt_fine_tune [--busuclm ../data/busuclm] [--local 100] [--draws 0,1,2]

For each draw: BUS-UCLM's non-test lesions split by patient into about --local cases (the site's labelled
cases) and the rest (judged). The site runs `breastcadx batch` on its cases with the two-site set (BUSI + BUS-BRA
L5: never saw BUS-UCLM; reference outlines given as masks), then `breastcadx adapt --fine-tune` with its labels;
the judged cases go through `breastcadx batch` with the set as it is and with what adapt made (the profile, and the
set it carries when the fine-tune was kept), and `evaluate`'s figures are taken on them: AUC (paired patient-
bootstrap CI of the change), specificity at sensitivity 0.96 and at the profile's biopsy threshold, calibration.
Test splits are not read. Writes benchmarks/results/adapt_fine_tune.md/json (after every draw).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.machine import header, stamp, write_results
from BreastCADxLib.analysis.calibration import expected_calibration_error
from BreastCADxLib.results.evaluation import auc_ci, group_bootstrap, specificity_at
from training.data import add_data_args, cases, draw_patients
from training.restore_set import TWO_SITE, TWO_SITE_COMMIT

OUT = Path(__file__).resolve().parent / "results"
HOSPITAL = "busuclm"


def cli(*args: str) -> None:
    """A breastcadx command; a batch whose cases partly failed (a refused image) still counts: its rows say so."""
    r = subprocess.run([sys.executable, "-m", "BreastCADxLib.cli.main", *args], capture_output=True, text=True)
    batch_done = args[0] == "batch" and (Path(args[args.index("--out") + 1]) / "results.csv").is_file()
    if r.returncode and not batch_done:
        raise SystemExit(f"breastcadx {' '.join(args)} failed:\n{r.stderr[-3000:]}")


def write_site(folder: Path, name: str, rows: list) -> tuple[Path, Path]:
    """The site's batch manifest (image + reference mask) and labels (with the patient as group)."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest, labels = folder / f"{name}.csv", folder / f"{name}_labels.csv"
    with open(manifest, "w", newline="") as f:
        csv.writer(f).writerows([["case_id", "image", "mask"]] + [[c.case, str(c.image.resolve()),
                                                                   str(c.mask.resolve())] for c in rows])
    with open(labels, "w", newline="") as f:
        csv.writer(f).writerows([["case_id", "label", "group"]] + [[c.case, "malignant" if c.malignant else "benign",
                                                                    c.group] for c in rows])
    return manifest, labels


def probabilities(results: Path, rows: list) -> np.ndarray:
    got = {r["case_id"]: r for r in csv.DictReader(open(results, newline=""))}
    return np.array([float(got[c.case]["malignancy_probability"]) if got[c.case]["status"] == "ok" else np.nan
                     for c in rows])


def figures(y, p, groups, threshold: float | None) -> dict:
    ok = ~np.isnan(p)
    y, p, groups = y[ok], p[ok], groups[ok]
    out = {**auc_ci(y, p, groups), "specificity_at_0.96": specificity_at(y, p, 0.96),
           "ece": expected_calibration_error(p, y), "classified": int(ok.sum())}
    if threshold is not None:
        pos = p >= threshold
        out.update(sensitivity_at_threshold=float(pos[y == 1].mean()), specificity_at_threshold=float(
            1 - pos[y == 0].mean()))
    return out


def one_draw(args, seed: int, work: Path) -> dict:
    local, judged = draw_patients(cases(args, [HOSPITAL], ("train", "val"), lesions_only=True), args.local,
                                  np.random.default_rng(seed))
    w = work / f"draw{seed}"
    m_local, l_local = write_site(w, "local", local)
    m_judged, _ = write_site(w, "judged", judged)
    t0 = time.perf_counter()
    if not (w / "batch_local" / "results.csv").is_file():
        cli("batch", str(m_local), "--model-set", str(args.source), "--out", str(w / "batch_local"))
    cli("adapt", str(w / "batch_local" / "results.csv"), "--labels", str(l_local), "--out", str(w / "profile"),
        "--fine-tune", str(m_local)) if not (w / "profile" / "site.json").is_file() else None
    adapt_s = time.perf_counter() - t0
    body = json.loads((w / "profile" / "site.json").read_text())
    ft = body["fine_tune"]
    use = (["--model-set", str(w / "profile" / ft["model_set_folder"])] if ft["kept"] else
           ["--model-set", str(args.source)]) + ["--site", str(w / "profile")]
    for name, extra in (("as_is", ["--model-set", str(args.source)]), ("adapted", use)):
        if not (w / f"batch_{name}" / "results.csv").is_file():
            cli("batch", str(m_judged), *extra, "--out", str(w / f"batch_{name}"))
    y = np.array([int(c.malignant) for c in judged])
    groups = np.array([c.group for c in judged])
    p0 = probabilities(w / "batch_as_is" / "results.csv", judged)
    p1 = probabilities(w / "batch_adapted" / "results.csv", judged)
    both = ~np.isnan(p0) & ~np.isnan(p1)
    from sklearn.metrics import roc_auc_score

    delta = roc_auc_score(y[both], p1[both]) - roc_auc_score(y[both], p0[both])
    lo, hi = group_bootstrap(groups[both], lambda i: roc_auc_score(y[both][i], p1[both][i])
                             - roc_auc_score(y[both][i], p0[both][i]))
    t = body["biopsy"]["threshold"]
    return {"seed": seed, "kept": ft["kept"], "gate": {k: ft["gate"].get(k) for k in ("candidate", "base")},
            "local": {"lesions": len(local), "malignant": int(sum(c.malignant for c in local)),
                      "patients": len({c.group for c in local})},
            "judged": {"lesions": len(judged), "malignant": int(y.sum()), "patients": len(set(groups))},
            "as_is": figures(y, p0, groups, None), "adapted": figures(y, p1, groups, t),
            "auc_change": [float(delta), lo, hi], "biopsy_threshold": t, "adapt_seconds": round(adapt_s, 1),
            "fine_tune_stage_seconds": ft.get("stage_seconds")}


def report_text(report: dict, args) -> str:
    head = header("adapt --fine-tune at a hospital the set never saw (BUS-UCLM, two-site set)", report,
                  f"Made by `python -m benchmarks.adapt_fine_tune --local {args.local}`; the set: the two-site set "
                  f"(BUSI + BUS-BRA L5, commit {TWO_SITE_COMMIT}), never trained on {HOSPITAL}. Each draw: about "
                  f"{args.local} lesions of whole patients are the site's labelled cases (`batch` with their "
                  "reference outlines, then `adapt --fine-tune`); the other patients' lesions are judged through "
                  "`batch` with the set as it is and with what adapt made (the profile, with the set it carries "
                  "when the fine-tune was kept). 95 % CIs by patient bootstrap; the AUC change's CI is paired.")
    lines = ["", "| draw | site cases (malignant, patients) | judged (malignant) | fine-tune kept (out of fold on the "
             "site's cases: AUC / band, fine-tuned vs as is) | AUC as is | AUC adapted | change [95 % CI] | "
             "specificity at 0.96 as is / adapted | sensitivity / specificity at the profile's threshold | ECE as "
             "is / adapted | adapt wall time |", "|---" * 11 + "|"]
    for d in report["draws"]:
        g, a, b = d["gate"], d["as_is"], d["adapted"]
        gate = (f"{'yes' if d['kept'] else 'no'} ({g['candidate']['auc']:.3f} / "
                f"{g['candidate']['specificity_0.90_1.00']:.2f} vs {g['base']['auc']:.3f} / "
                f"{g['base']['specificity_0.90_1.00']:.2f})" if g.get("candidate") else str(d["kept"]))
        ch = d["auc_change"]
        lines.append(f"| {d['seed']} | {d['local']['lesions']} ({d['local']['malignant']}, {d['local']['patients']}) "
                     f"| {d['judged']['lesions']} ({d['judged']['malignant']}) | {gate} | "
                     f"{a['auc']:.3f} [{a['ci95'][0]:.3f}, {a['ci95'][1]:.3f}] | "
                     f"{b['auc']:.3f} [{b['ci95'][0]:.3f}, {b['ci95'][1]:.3f}] | {ch[0]:+.3f} [{ch[1]:+.3f}, "
                     f"{ch[2]:+.3f}] | {a['specificity_at_0.96']:.2f} / {b['specificity_at_0.96']:.2f} | "
                     f"{b['sensitivity_at_threshold']:.2f} / {b['specificity_at_threshold']:.2f} | {a['ece']:.3f} / "
                     f"{b['ece']:.3f} | {d['adapt_seconds'] / 60:.0f} min |")
    changes = [d["auc_change"][0] for d in report["draws"]]
    lines += ["", f"Median AUC change over {len(changes)} draw(s): {np.median(changes):+.3f} (min {min(changes):+.3f},"
              f" max {max(changes):+.3f}); the fine-tune was kept in {sum(d['kept'] for d in report['draws'])} of "
              f"{len(changes)}."]
    return "\n".join(head + lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_args(ap)
    ap.add_argument("--local", type=int, default=100, help="the site's labelled cases per draw")
    ap.add_argument("--draws", default="0,1,2", help="comma-separated seeds")
    ap.add_argument("--source", type=Path, default=TWO_SITE, help="the two-site set (restored if missing)")
    ap.add_argument("--work", type=Path, default=Path("runs/adapt_fine_tune"), help="resumable work folder")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    if not (args.source / "modelset.json").is_file():
        subprocess.run([sys.executable, "-m", "training.restore_set", "--commit", TWO_SITE_COMMIT, "--out",
                        str(args.source)], check=True)
    report = {**stamp(), "source": str(args.source), "draws": []}
    for seed in (int(s) for s in args.draws.split(",")):
        report["draws"].append(one_draw(args, seed, args.work))
        report["loadavg_1min_end"] = os.getloadavg()[0]
        write_results(args.out, "adapt_fine_tune", report, report_text(report, args))


if __name__ == "__main__":
    main()
