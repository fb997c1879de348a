"""Patient-grouped, pathology-stratified split of BUS-BRA's GE Logiq 5 part.

Both views of one lesion (``bus_NNNN-l`` / ``-r``) belong to one patient and stay on one side:
test ~20 % of patients, validation ~10 %, train the rest, 5 folds over train+validation.

Usage: python -m training.split_busbra [--data ../shared/data/busbra_l5]
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

SEED = 20261125
OUT = Path(__file__).resolve().parent / "splits"


def assign(patients: dict[str, str], seed: int = SEED) -> dict[str, tuple[str, int]]:
    """patient -> (split, fold), stratified by the patient's pathology."""
    rng = np.random.default_rng(seed)
    out: dict[str, tuple[str, int]] = {}
    for label in sorted(set(patients.values())):
        ids = sorted(p for p, lab in patients.items() if lab == label)
        rng.shuffle(ids)
        n_test, n_val = round(0.2 * len(ids)), round(0.1 * len(ids))
        for i, p in enumerate(ids):
            role = "test" if i < n_test else "val" if i < n_test + n_val else "train"
            out[p] = (role, -1 if role == "test" else (i - n_test) % 5)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/busbra_l5"))
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    with open(args.data / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    labels = defaultdict(set)
    for r in rows:
        labels[r["patient"]].add(r["pathology"])
    mixed = [p for p, s in labels.items() if len(s) > 1]
    if mixed:
        raise SystemExit(f"patients with two pathologies: {mixed}")
    roles = assign({p: next(iter(s)) for p, s in labels.items()})
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "busbra_l5.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["case", "label", "group", "split", "fold"])
        for r in sorted(rows, key=lambda r: r["case_id"]):
            split, fold = roles[r["patient"]]
            w.writerow([r["case_id"], r["pathology"], f"p{int(r['patient']):04d}", split, fold])
    summary: dict = defaultdict(lambda: defaultdict(int))
    for r in rows:
        summary[roles[r["patient"]][0]][r["pathology"]] += 1
    patients = defaultdict(int)
    for split, _ in roles.values():
        patients[split] += 1
    images = {k: dict(v) for k, v in summary.items()}
    (args.out / "busbra_l5_summary.json").write_text(
        json.dumps({"seed": SEED, "images": images, "patients": dict(patients)}, indent=2) + "\n")
    print(json.dumps({k: dict(v) for k, v in summary.items()}), dict(patients))


if __name__ == "__main__":
    main()
