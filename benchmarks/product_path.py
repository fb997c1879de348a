"""The product's own path across hospitals: `breastcadx batch` (input guard, segmenter, both image members,
the feature bundle the mask's origin picks) over one site's images with a model set that never saw that site,
the way the project's external test is measured. Non-test rows only by default.

    python -m benchmarks.product_path --site busbra_l5 --model-set BreastCADx/Testing/Data/model_sets/busi-only \
        --roles train,val \
        --rows runs/box_fusion/rows.npz --rows-key "busi->busbra_l5:expect"

Reports the AUC with every case counted (a case the product does not classify scored 0.5, as the leave-site-out
benchmark does) and over the classified ones, why cases were not classified, the flags given, and, with --rows,
how close the product's fused logits come to the leave-site-out rows of the same cases (the benchmark's numbers
are only the product's if they agree). Writes benchmarks/results/product_path.{md,json}.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from benchmarks.machine import BUSI_ONLY, header, machine, set_id, write_results
from BreastCADxLib.results.evaluation import evaluate, to_markdown
from training.data import add_data_args, cases

OUT = Path(__file__).resolve().parent / "results"


def run_batch(todo: list, model_set: str, out: Path) -> list[dict]:
    """`breastcadx batch --expect-lesion` over the cases (a new process, as a user runs it); its results.csv rows."""
    manifest = out / "manifest.csv"
    with manifest.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case_id", "image"])
        w.writerows([c.case, str(c.image.resolve())] for c in todo)
    cmd = [sys.executable, "-m", "BreastCADxLib.cli.main", "batch", str(manifest), "--out", str(out / "batch"),
           "--model-set", model_set, "--expect-lesion", "--device", "cpu"]
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode not in (0, 1) or not (out / "batch" / "results.csv").exists():  # 1: some cases failed
        raise SystemExit(f"breastcadx batch failed ({done.returncode}): {done.stderr[-2000:]}")
    with (out / "batch" / "results.csv").open() as f:
        return list(csv.DictReader(f))


def compare_rows(rows_npz: Path, key: str, model_set: str, cases: list[str], y: np.ndarray,
                 logits: np.ndarray) -> dict:
    """The product's fused logits against the leave-site-out rows of the same cases, fused by the shipped card."""
    from BreastCADxLib.analysis.classifier import classifier_for, fused_logit

    z = np.load(rows_npz, allow_pickle=False)  # the members' logits
    clf = classifier_for(model_set, "auto")
    whole = clf.whole_member
    fused = fused_logit(z[f"{key}:design"], z[f"{key}:box"], float(clf.box_member["weight"]),
                        z[f"{key}:whole"] if whole else None, float(whole["weight"]) if whole else 0.0)
    bench = dict(zip(z[f"{key}:case"].tolist(), fused.tolist()))
    both = [i for i, c in enumerate(cases) if c in bench]
    a, b = logits[both], np.array([bench[cases[i]] for i in both])
    return {"rows": str(rows_npz), "key": key, "n_common": len(both),
            "logit_correlation": float(np.corrcoef(a, b)[0, 1]),
            "median_abs_logit_difference": float(np.median(np.abs(a - b))),
            "max_abs_logit_difference": float(np.max(np.abs(a - b))),
            "auc_product_common": float(roc_auc_score(y[both], a)), "auc_rows_common": float(roc_auc_score(y[both], b))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_args(ap)
    ap.add_argument("--site", default="busbra_l5")
    ap.add_argument("--model-set", default=str(BUSI_ONLY))
    ap.add_argument("--roles", default="train,val", help="split roles scored (test only for a final report)")
    ap.add_argument("--rows", type=Path, help="leave-site-out rows (box_fusion rows.npz) of the same cases")
    ap.add_argument("--rows-key", default="busi->busbra_l5:expect")
    ap.add_argument("--work", type=Path, default=Path("runs/product_path"), help="the batch's own output folder")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    todo = [c for c in cases(args, [args.site], tuple(args.roles.split(","))) if c.label != "normal"]
    report = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
              "loadavg_1min": os.getloadavg()[0], "site": args.site, "model_set": args.model_set,
              "roles": args.roles}
    work = args.work / f"{set_id(args.model_set)}__{args.site}__{args.roles.replace(',', '+')}"
    work.mkdir(parents=True, exist_ok=True)
    rows = run_batch(todo, args.model_set, work)  # batch resumes: finished cases of an earlier run are kept
    labels = work / "labels.csv"  # what a hospital would hand to `breastcadx evaluate`
    with labels.open("w", newline="") as f:
        csv.writer(f).writerows([("case_id", "label", "group")] + [(c.case, c.label, c.group) for c in todo])
    report.update(evaluate(work / "batch" / "results.csv", labels))
    rows_arg = f" --rows {args.rows} --rows-key '{args.rows_key}'" if args.rows else ""
    lines = header(f"The product's path across hospitals: `breastcadx batch`, {set_id(args.model_set)} set on "
                   f"{args.site}",
                   {**report, "loadavg_1min_end": os.getloadavg()[0]},
                   f"Made by `python -m benchmarks.product_path --site {args.site} --model-set {args.model_set} "
                   f"--roles {args.roles}{rows_arg}`; `--expect-lesion`, automatic masks, one new `breastcadx batch` "
                   "process, scored by `breastcadx evaluate` (CIs by patient).")
    lines += ["", to_markdown(report).rstrip("\n")]
    if args.rows:
        by_case = {r["case_id"]: r for r in rows}
        done = [c for c in todo if by_case[c.case]["status"] == "ok" and by_case[c.case]["malignancy_probability"]]
        pd = np.clip([float(by_case[c.case]["malignancy_probability"]) for c in done], 1e-12, 1 - 1e-12)
        cmp = compare_rows(args.rows, args.rows_key, args.model_set, [c.case for c in done],
                           np.array([int(c.label == "malignant") for c in done]), np.log(pd / (1 - pd)))
        report["rows_comparison"] = cmp
        lines += ["", f"Against the leave-site-out rows `{args.rows_key}` ({cmp['n_common']} cases in both): logit "
                      f"correlation {cmp['logit_correlation']:.4f}, median |difference| "
                      f"{cmp['median_abs_logit_difference']:.3f}, largest {cmp['max_abs_logit_difference']:.3f}; "
                      f"AUC on these cases {cmp['auc_product_common']:.3f} (product) and "
                      f"{cmp['auc_rows_common']:.3f} (rows)."]
    write_results(args.out, "product_path", report, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
