"""Patient-grouped split of BUS-UCLM (site C: Ciudad Real, Siemens ACUSON S2000), stratified by the patient's worst
finding (malignant > benign > normal): all views of one patient, lesion-free views included, stay on one side.
Test ~20 % of patients, validation ~10 %, train the rest, 5 folds over train+validation (patient-held-out folds for
the lesion-free views' false-lesion rate).

Usage: python -m training.split_busuclm --data ../data/busuclm   (the folder prepare.py wrote)
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path

from training.split_busbra import assign

SEED = 20261205
OUT = Path(__file__).resolve().parent / "splits"
RANK = {"normal": 0, "benign": 1, "malignant": 2}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../data/busuclm"))
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    with open(args.data / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    worst: dict[str, str] = {}
    for r in rows:
        worst[r["patient"]] = max(worst.get(r["patient"], "normal"), r["pathology"], key=RANK.__getitem__)
    roles = assign(worst, SEED)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "busuclm.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["case", "label", "group", "split", "fold"])
        for r in sorted(rows, key=lambda r: r["case_id"]):
            split, fold = roles[r["patient"]]
            w.writerow([r["case_id"], r["pathology"], r["patient"], split, fold])
    images: dict = defaultdict(lambda: defaultdict(int))
    patients: dict = defaultdict(lambda: defaultdict(int))
    for r in rows:
        images[roles[r["patient"]][0]][r["pathology"]] += 1
    for p, lab in worst.items():
        patients[roles[p][0]][lab] += 1
    summary = {"seed": SEED, "images": {k: dict(v) for k, v in images.items()},
               "patients_by_worst_finding": {k: dict(v) for k, v in patients.items()}}
    (args.out / "busuclm_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
