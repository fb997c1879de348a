"""A `breastcadx train` manifest of the project's sites, from their committed splits (test rows never).

    python -m training.train_manifest --sites busi,busbra_l5,busuclm --out runs/three_sites.csv
    breastcadx train runs/three_sites.csv --modality US --out runs/three-site-train   # the shipped set's design

Rows: case_id (site_case), image, label (benign / malignant / normal), patient (site_group: BUS-BRA's and
BUS-UCLM's patient, BUSI's duplicate group), mask (lesions; lesion-free views have none), site and the site's
data citation (the set's cards carry it, as BUS-UCLM's licence asks).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from training.data import CITATIONS, add_data_args, cases


def write(path: Path, rows: list) -> Path:
    """The manifest of these training.data cases; never replaces a file."""
    if path.exists():
        raise SystemExit(f"{path} exists: a manifest is never replaced")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case_id", "image", "label", "patient", "mask", "site", "citation"])
        for c in rows:
            w.writerow([f"{c.site}_{c.case}", c.image.resolve(), c.label, f"{c.site}_{c.group}",
                        "" if c.label == "normal" else c.mask.resolve(), c.site, CITATIONS[c.site]])
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_args(ap)
    ap.add_argument("--sites", default="busi,busbra_l5,busuclm")
    ap.add_argument("--roles", default="train,val", help="split roles (test rows are for the final report only)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    roles = tuple(args.roles.split(","))
    if "test" in roles:
        raise SystemExit("test rows are for the final report only")
    rows = cases(args, args.sites.split(","), roles)
    write(args.out, rows)
    counts = {k: sum(c.label == k for c in rows) for k in ("benign", "malignant", "normal")}
    print(f"{len(rows)} rows ({counts}) of {args.sites} -> {args.out}")


if __name__ == "__main__":
    main()
